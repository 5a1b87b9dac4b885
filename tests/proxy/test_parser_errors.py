"""Requests aiohttp's HTTP parser refuses before any handler runs get the OpenAI envelope, as
`ctxgate serve` runs the app, and no stack trace in the log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from proxy.app import create_app
from proxy.demo.fake_upstream import FakeUpstream
from proxy.edge.server import make_runner
from tests.conftest import gateway_settings


@pytest.fixture
async def served(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[int]:
    settings = gateway_settings(upstream, tmp_path)
    runner = make_runner(create_app(settings), settings)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("raw", [
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="request line too long"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n", id="header too long"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", id="NUL in a header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n", id="bare CR in a header"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(200)) + b"\r\n",
                 id="too many headers"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 id="bad content length"),
])
async def test_what_the_parser_refuses_gets_the_envelope(
    served: int, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with structlog.testing.capture_logs() as logs:
        head, body = await exchange(served, raw)
    assert head.split(b" ")[1].startswith(b"4"), head
    assert b"application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_http_request"
    assert [entry["event"] for entry in logs] == ["request_refused_by_parser"]
    aiohttp_errors = [r.getMessage() for r in caplog.records
                      if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR]
    assert aiohttp_errors == []  # aiohttp's own
