"""A property: whatever headers and JSON a client sends, every call the gateway answered as
forwarded is recorded, and the calls that follow are recorded too. (A single record that
could not be stored once stopped capture for everyone.)"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.records import InteractionQuery
from proxy.app import create_app
from proxy.appkeys import CAPTURE_WRITER, STORE
from proxy.demo.fake_upstream import FakeUpstream
from proxy.edge.server import server_options
from tests.conftest import MODEL, gateway_settings


@dataclass
class Running:
    """A gateway served from a thread of its own, so hypothesis can drive it synchronously."""

    loop: asyncio.AbstractEventLoop
    app: web.Application
    port: int

    def run(self, coroutine: Any, timeout: float = 20) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    upstream = FakeUpstream()
    tmp = tmp_path_factory.mktemp("property")

    async def start() -> tuple[web.AppRunner, Running]:
        await upstream.start()
        settings_ = gateway_settings(upstream, Path(tmp))
        app = create_app(settings_)
        runner = web.AppRunner(app, **server_options(settings_))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream.keep_received = False
        return runner, Running(loop, app, runner.addresses[0][1])

    runner, gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield gateway
    gateway.run(runner.cleanup())
    gateway.run(upstream.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def send(port: int, headers: dict[str, bytes], body: bytes) -> tuple[int, str | None]:
    """(status, X-Ctxgate-Interaction-Id) of one raw request."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers.items())
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(head + body)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    header_lines = response.partition(b"\r\n\r\n")[0].split(b"\r\n")
    status = int(header_lines[0].split(b" ")[1])
    interaction_id = next((line.split(b":", 1)[1].strip().decode() for line in header_lines[1:]
                           if line.lower().startswith(b"x-ctxgate-interaction-id:")), None)
    return status, interaction_id


# Bytes a header value may carry on the wire (the parser refuses CR, LF and NUL outright).
header_value = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
                                                      .replace(b"\x00", b"").strip() or b"v")
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    extra: Any = draw(json_value)
    for _ in range(draw(st.sampled_from([0, 0, 1, 60, 127, 200, 300, 1100]))):
        extra = [extra]
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": draw(st.text(max_size=30)) or "x"}],
        draw(st.sampled_from(["metadata", "user", "seed", "x_extra", "session_id"])): extra,
    }
    if draw(st.booleans()):
        body["stream"] = True
    return json.dumps(body).encode()  # stdlib: it writes integers and nesting orjson will not


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(
        st.sampled_from(["X-Ctxgate-Session", "X-Ctxgate-Client", "X-Ctxgate-Project", "session-id",
                         "User-Agent", "X-Claude-Code-Session-Id", "Authorization"]),
        header_value, max_size=3),
    body=chat_bodies(),
)
def test_no_headers_or_body_stop_capture_for_the_calls_that_follow(
    running: Running, headers: dict[str, bytes], body: bytes
) -> None:
    writer = running.app[CAPTURE_WRITER]
    before = writer.written_total
    status, answered = send(running.port, headers, body)
    assert status < 500
    status, after = send(running.port, {}, json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "the next call"}]}).encode())
    assert status == 200 and after is not None
    expected = before + 1 + (answered is not None)
    running.run(writer.wait_written(expected))
    recorded = running.run(running.app[STORE].list_interactions(InteractionQuery(limit=2)))
    assert {r.id for r in recorded} >= {after} | ({answered} if answered else set())
    assert writer.dead_letters_total == 0 and writer.dropped_total == 0 and writer.store_error is None
