"""What a provider says reaches the client as it said it: its Retry-After, every streamed
choice's finish, and a stream it cut short as an error rather than a clean stop."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from proxy.demo.fake_upstream import FakeUpstream
from tests.conftest import MODEL, Gateway, make_gateway

CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def behind(aiohttp_server: Any, tmp_path: Path, handler: Handler, transport: str) -> Gateway:
    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(provider)
    return await make_gateway(aiohttp_server, FakeUpstream(base_url=str(server.make_url("/v1"))), tmp_path,
                              transport=transport)


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def streaming(body: bytes) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(body)
        return response

    return answer


@pytest.mark.parametrize("stream", [False, True])
async def test_a_providers_429_keeps_its_retry_after(
    aiohttp_server: Any, tmp_path: Path, transport: str, stream: bool
) -> None:
    async def busy(_: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down", "type": "requests", "param": None,
                                            "code": "rate_limit_exceeded"}}, status=429, headers={"Retry-After": "17"})

    gateway = await behind(aiohttp_server, tmp_path, busy, transport)
    with pytest.raises(openai.RateLimitError) as caught:
        await gateway.client().chat.completions.create(**CHAT, stream=stream)
    assert caught.value.response.headers["Retry-After"] == "17"
    assert caught.value.body == {"message": "slow down", "type": "rate_limit_error", "param": None,
                                 "code": "rate_limit_exceeded"}


async def test_a_stream_the_provider_cuts_short_is_an_error_not_a_stop(
    aiohttp_server: Any, tmp_path: Path, transport: str
) -> None:
    cut = sse(chunk(0, {"role": "assistant", "content": "half an ans"}), done=False)
    gateway = await behind(aiohttp_server, tmp_path, streaming(cut), transport)
    received = []
    with pytest.raises(openai.APIError, match="ended before its answer was finished"):
        async for part in await gateway.client().chat.completions.create(**CHAT, stream=True):
            received += [c.finish_reason for c in part.choices]
    assert "stop" not in received
    [record] = await gateway.recorded(1)
    assert record.status == "upstream_error" and record.response["content"] == "half an ans"


async def test_every_streamed_choice_gets_its_finish_reason(
    aiohttp_server: Any, tmp_path: Path, transport: str
) -> None:
    answer = sse(chunk(0, {"role": "assistant", "content": "one"}), chunk(1, {"role": "assistant", "content": "two"}),
                 chunk(0, {}, "stop"), chunk(1, {}, "length"))
    gateway = await behind(aiohttp_server, tmp_path, streaming(answer), transport)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True, "n": 2})
        text = await response.text()
    finished = {c["index"]: c["finish_reason"] for line in text.splitlines() if line.startswith("data: {")
                for c in json.loads(line[6:])["choices"] if c.get("finish_reason")}
    assert set(finished) == {0, 1}  # litellm passes choice 1's on without its reason; it is finished all the same
    [record] = await gateway.recorded(1)
    assert record.status == "ok" and [m["content"] for m in record.response] == ["one", "two"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_200_that_is_not_an_answer_is_a_502_recorded_as_upstream_error(
    aiohttp_server: Any, tmp_path: Path, transport: str, stream: bool
) -> None:
    async def login_page(_: web.Request) -> web.Response:  # a proxy in front of the provider, say
        return web.Response(text="<html><body>Please sign in</body></html>", content_type="text/html")

    gateway = await behind(aiohttp_server, tmp_path, login_page, transport)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": stream})
        body = await response.json()
    assert response.status == 502 and body["error"]["type"] == "upstream_error"
    [record] = await gateway.recorded(1)
    assert record.status == "upstream_error"


async def test_a_stream_longer_than_the_timeout_that_keeps_coming_is_not_cut(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str
) -> None:
    """The upstream timeout bounds each wait for the provider, not a whole answer."""
    from proxy.demo.fake_upstream import Reply

    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, transport=transport, upstream_timeout_s=0.4)
    upstream.push(Reply(text="a" * 24, fragment=2, chunk_interval_s=0.1))  # 12 pieces over 1.2 s
    text = ""
    async for part in await gateway.client().chat.completions.create(**CHAT, stream=True):
        text += "".join(c.delta.content or "" for c in part.choices)
    assert text == "a" * 24


@pytest.mark.parametrize(("transport", "drop_params", "status", "sent"), [
    ("native", False, 200, True),  # the provider judges its own parameters
    ("translate", False, 400, False),  # litellm believes gpt-4o-mini lacks it, and says so
    ("translate", True, 200, False),  # litellm_settings.drop_params: litellm drops it
])
async def test_a_parameter_litellm_thinks_a_model_lacks(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str, drop_params: bool, status: int,
    sent: bool,
) -> None:
    from proxy.config.settings import ModelRoute

    route = ModelRoute(model_name=MODEL, model="openai/gpt-4o-mini", api_base=upstream.base_url, api_key="k",
                       transport=transport)
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,), drop_params=drop_params)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "reasoning_effort": "low"})
    assert response.status == status, await response.text()
    if status == 200:
        assert ("reasoning_effort" in upstream.received[-1].body) == sent
