"""When something fails (the provider echoes a key, the store goes away mid-decision, the client
leaves, a client dribbles its request, a bug of ours mid-stream), the client gets a clear answer,
nothing secret leaks, and the record says what happened."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.lib.streaming.chat import ChatCompletionStreamState

from capture.store import StoreUnavailable
from policy.rules import parse_policy
from proxy.appkeys import STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.config.keys import digest, parse_keys
from proxy.edge.redaction import Redactor
from proxy.config.settings import ModelRoute
from tests.conftest import CLIENT_KEY, MODEL, PROVIDER_KEY, Gateway, make_gateway

CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def echoing_provider(aiohttp_server: Any) -> str:
    """A provider whose 401 repeats the Authorization header it was sent, as some do."""
    async def refuse(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        return web.json_response({"error": {
            "message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}. You sent '{sent}'.",
            "type": "invalid_request_error", "param": "api_key", "code": "invalid_api_key"}}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_key_echoed_in_an_error_reaches_neither_client_nor_record(
    aiohttp_server: Any, tmp_path: Path, stream: bool, transport: str
) -> None:
    base = await echoing_provider(aiohttp_server)
    route = ModelRoute(model_name=MODEL, model="openai/fake-model", api_base=base, api_key=PROVIDER_KEY,
                       transport=transport)
    gateway = await make_gateway(aiohttp_server, FakeUpstream(base_url=base), tmp_path, models=(route,))
    with pytest.raises(openai.AuthenticationError) as caught:
        await gateway.client().chat.completions.create(**CHAT, stream=stream)
    error = caught.value.body
    assert isinstance(error, dict)
    assert PROVIDER_KEY not in json.dumps(error) and "[redacted]" in error["message"]
    assert error["message"].startswith("Incorrect API key provided")  # litellm's prefixes dropped
    assert (error["param"], error["code"]) == ("api_key", "invalid_api_key")  # the provider's, kept
    [record] = await gateway.recorded(1)
    assert PROVIDER_KEY not in (record.error or "") and "Incorrect API key" in (record.error or "")


async def test_the_callers_own_key_and_a_virtual_key_are_scrubbed_too(
    aiohttp_server: Any, tmp_path: Path, transport: str
) -> None:
    base = await echoing_provider(aiohttp_server)
    # No key in the route: with no keys configured the client's own bearer goes upstream.
    route = ModelRoute(model_name=MODEL, model="openai/fake-model", api_base=base, transport=transport)
    gateway = await make_gateway(aiohttp_server, FakeUpstream(base_url=base), tmp_path, models=(route,))
    with pytest.raises(openai.AuthenticationError) as caught:
        await gateway.client(api_key="client-own-provider-key-91c2").chat.completions.create(**CHAT)
    assert "client-own-provider-key-91c2" not in json.dumps(caught.value.body)
    virtual = "ctxg-" + "v" * 43
    assert Redactor().scrub(f"rejected {virtual} for you") == "rejected [redacted] for you"


def test_a_short_secret_does_not_turn_words_into_redactions() -> None:
    redactor = Redactor(["k", "sk-abc123456789012"])
    assert redactor.scrub("no keys configured; key k was sent") == "no keys configured; key [redacted] was sent"
    assert redactor.scrub("got sk-abc123456789012.") == "got [redacted]."


def test_environment_provider_keys_are_known_secrets() -> None:
    from proxy.config.settings import load_settings

    settings = load_settings(environ={"OPENAI_API_KEY": "sk-env-key-123456", "HOME": "/root", "SHORT_TOKEN": "abc"})
    assert "sk-env-key-123456" in settings.secrets and "/root" not in settings.secrets and "abc" not in settings.secrets


TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("file_edit", "ls")]


async def ask(gateway: Gateway, stream: bool) -> Any:
    options: dict[str, Any] = {**CHAT, "tools": TOOLS}
    if not stream:
        return await gateway.client().chat.completions.create(**options)
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    async for chunk in await gateway.client().chat.completions.create(**options, stream=True):
        state.handle_chunk(chunk)
    return state.get_final_completion()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_store_failing_during_a_tool_decision_denies_the_call(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    policy = parse_policy({"default": {"mode": "allow", "restricted_tools": ["file_edit"]}})
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=policy)

    async def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("disk detached")

    store = gateway.app[STORE]
    store.allowed_always = down  # type: ignore[method-assign]
    store.insert_approval = down  # type: ignore[method-assign]
    upstream.push(Reply(tool_calls=(ToolCall("file_edit", '{"path": "/srv/a"}', id="c1"),
                                    ToolCall("ls", "{}", id="c2")), fragment=4))
    completion = await ask(gateway, stream)
    calls = [c.function.name for c in completion.choices[0].message.tool_calls or []]
    assert calls == ["ls"]  # allowed by rule without the store; the one needing a person is refused
    [record] = await gateway.recorded(1)
    assert record.status == "ok"
    decisions = {d["tool"]: d for d in record.tool_decisions}
    assert decisions["file_edit"]["action"] == "deny" and decisions["file_edit"]["decided_by"] == "store_unavailable"
    assert decisions["ls"]["action"] == "allow"


async def test_a_client_that_leaves_a_plain_call_cancels_it_upstream_and_is_recorded(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="slow answer", delay_s=5))
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(gateway.url + "/v1/chat/completions", json=CHAT))
        await gateway.upstream.wait_for_calls(1)
        request.cancel()  # the client hangs up while the provider is still working
        with pytest.raises(asyncio.CancelledError):
            await request
    [record] = await gateway.recorded(1)
    assert record.status == "client_disconnected"
    assert record.latency_ms is not None and record.latency_ms < 4000  # not run to the provider's end


async def test_a_bug_mid_stream_ends_the_stream_with_an_error_event(gateway: Gateway) -> None:
    from proxy.dialects.openai_chat import relay

    original = relay.StreamAssembler.add
    seen = 0

    def failing_add(self: Any, chunk: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1
        if seen == 3:
            raise RuntimeError("a bug of ours")
        original(self, chunk)

    relay.StreamAssembler.add = failing_add  # type: ignore[method-assign]
    try:
        gateway.upstream.push(Reply(text="abcdefghijkl", fragment=2))
        async with aiohttp.ClientSession() as session:
            response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True})
            raw = (await response.read()).decode()
    finally:
        relay.StreamAssembler.add = original  # type: ignore[method-assign]
    assert response.status == 200
    assert "HTTP/1.1 500" not in raw
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert events[-1] == {"error": {"message": "the gateway failed while streaming this answer; see its log",
                                    "type": "internal_error", "param": None, "code": "gateway_error"}}
    [record] = await gateway.recorded(1)
    assert record.status == "gateway_error"


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, body_timeout_s=0.3)
    host, port = gateway.server.host, gateway.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"mod")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert upstream.received == []


async def test_a_connection_that_does_not_finish_its_headers_is_closed(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, header_timeout_s=0.3)
    reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway, within the bound
    writer.close()


ADMIN = "admin-key-for-metrics"


@pytest.mark.parametrize(("overrides", "token", "status"), [
    ({}, None, 200),  # nothing guarded: open, as the gateway says at start-up
    ({"admin_key": ADMIN}, None, 401),
    ({"admin_key": ADMIN}, ADMIN, 200),
    ({"admin_key": ADMIN, "metrics_token": "scrape-token-1"}, "scrape-token-1", 200),
    ({"admin_key": ADMIN, "metrics_token": "scrape-token-1"}, "wrong", 401),
    ({"keys": parse_keys([{"sha256": digest("ctxg-k"), "client": "a"}], "k")}, "ctxg-k", 401),
    ({"admin_key": ADMIN, "is_metrics_public": True}, None, 200),
])
async def test_metrics_are_behind_a_key_where_keys_guard_the_gateway(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, overrides: dict[str, Any], token: str | None,
    status: int,
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, **overrides)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        response = await session.get(gateway.url + "/metrics", headers=headers)
        text = await response.text()
    assert response.status == status
    assert ("ctxgate_capture_dead_letters_total" in text) == (status == 200)
    assert CLIENT_KEY not in text


async def test_a_client_that_leaves_mid_body_is_one_info_line(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    import structlog

    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"model\": ")
        await writer.drain()
        await asyncio.sleep(0.05)  # the gateway is reading the body when the client goes
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the handler learns of it from its read; bounded at 2 s
            if any(entry["event"] == "request_completed" for entry in logs):
                break
            await asyncio.sleep(0.02)
    [line] = [entry for entry in logs if entry["event"] == "request_completed"]
    assert line["status"] == 499 and line["log_level"] == "info"
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []
    aiohttp_errors = [r.getMessage() for r in caplog.records
                      if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR]
    assert aiohttp_errors == []  # aiohttp's own
    assert gateway.upstream.received == []
