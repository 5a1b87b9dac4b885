"""`POST /v1/completions` (OpenAI's legacy completions) through the gateway with the real openai
SDK: carried natively to an OpenAI-compatible route, whole and streamed, and through litellm when
the route is pinned to translate, whole only; the prompt reaches the provider untouched (no
pack), and each call is one record with the prompt, the text and the usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import orjson
import openai
import pytest

from proxy.config.settings import ModelRoute
from proxy.demo.fake_upstream import FakeUpstream, Reply
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway

COMPLETER = "instruct-test"
PROMPT = "def fibonacci(n):\n    "
TEXT = "return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)"


async def gateway_to(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str) -> Gateway:
    route = ModelRoute(model_name=COMPLETER, model="openai/fake-instruct", api_base=upstream.base_url,
                       api_key=PROVIDER_KEY, transport=transport)
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,))
    async with aiohttp.ClientSession() as session:  # knowledge that a pack would carry, were there one
        await session.post(gateway.url + "/memories", json={"project": "default", "content": "fibonacci is slow"})
    return gateway


@pytest.fixture(params=["native", "translate"])
async def gateway(request: pytest.FixtureRequest, aiohttp_server: Any, upstream: FakeUpstream,
                  tmp_path: Path) -> Gateway:
    return await gateway_to(aiohttp_server, upstream, tmp_path, request.param)


@pytest.fixture
async def native(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    """Streamed legacy completions are carried natively only (see the test of the refusal)."""
    return await gateway_to(aiohttp_server, upstream, tmp_path, "native")


def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)


async def assert_the_stream_fails_and_is_recorded_so(gateway: Gateway) -> None:
    """The SDK's stream raises instead of ending as an answer, and the record says upstream_error."""
    with pytest.raises(openai.APIError):
        stream = await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT, stream=True)
        async for _ in stream:
            pass
    [record] = await gateway.recorded()
    assert record.status == "upstream_error"


async def test_a_completion_reaches_the_sdk_and_the_prompt_the_provider_untouched(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT))
    answer = await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT, max_tokens=40, temperature=0)
    assert answer.choices[0].text == TEXT and answer.choices[0].finish_reason == "stop"
    assert answer.model == COMPLETER and answer.usage is not None and answer.usage.completion_tokens == len(TEXT.split())
    [sent] = upstream.received
    assert sent.body["prompt"] == PROMPT and sent.body["model"] == "fake-instruct" and sent.body["max_tokens"] == 40
    [record] = await gateway.recorded()
    assert record.wire == "openai_completions" and record.status == "ok" and record.prompt == PROMPT
    assert record.response == {"choices": [{"index": 0, "text": TEXT, "finish_reason": "stop"}]}
    assert (record.prompt_tokens, record.completion_tokens) == (answer.usage.prompt_tokens, len(TEXT.split()))
    assert record.params["max_tokens"] == 40 and record.context_pack is None


async def test_a_streamed_completion_arrives_in_pieces_and_is_recorded_whole(
    native: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, fragment=6))
    stream = await client(native).completions.create(model=COMPLETER, prompt=PROMPT, stream=True,
                                                      stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == TEXT and len(pieces) > 5
    assert all(c.model == COMPLETER for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(TEXT.split())
    [record] = await native.recorded()
    assert record.status == "ok" and record.response["choices"][0]["text"] == TEXT
    assert record.completion_tokens == len(TEXT.split())


async def test_a_stream_the_provider_cuts_ends_in_an_error_and_is_recorded_so(
    native: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, fragment=6, reset_after_chunks=3))
    await assert_the_stream_fails_and_is_recorded_so(native)


async def test_bad_input_is_refused_before_the_provider_is_called(gateway: Gateway, upstream: FakeUpstream) -> None:
    async with aiohttp.ClientSession() as session:
        for body, param in (({"model": COMPLETER}, "prompt"), ({"model": COMPLETER, "prompt": []}, "prompt"),
                            ({"model": COMPLETER, "prompt": "x", "stream": "yes"}, "stream")):
            response = await session.post(gateway.url + "/v1/completions", json=body)
            answer = await response.json()
            assert response.status == 400 and answer["error"]["param"] == param, answer
    assert upstream.received == []


async def test_a_provider_that_reports_no_usage_has_it_counted_by_the_gateway(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, usage=False))
    await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT)
    [record] = await gateway.recorded()
    assert record.usage_source == "counted" and record.prompt_tokens and record.prompt_tokens > 3
    assert record.completion_tokens and record.completion_tokens > 10


async def test_a_streamed_completion_without_usage_from_the_provider_is_counted_by_the_gateway(
    native: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, fragment=6, usage=False))
    stream = await client(native).completions.create(model=COMPLETER, prompt=PROMPT, stream=True,
                                                      stream_options={"include_usage": True})
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == TEXT
    [record] = await native.recorded()
    assert record.usage_source == "counted" and record.completion_tokens and record.completion_tokens > 10


async def test_a_stream_that_ends_without_a_finished_choice_is_an_error_not_an_answer(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    async def unfinished(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ("return ", "n"):
            chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "fake-instruct",
                     "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")  # a clean end, but no choice ever finished
        return response
    app = aiohttp.web.Application()
    app.router.add_post("/v1/completions", unfinished)
    provider = await aiohttp_server(app)
    route = ModelRoute(model_name=COMPLETER, model="openai/fake-instruct", api_base=str(provider.make_url("/v1")),
                       api_key=PROVIDER_KEY, transport="native")
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,))
    await assert_the_stream_fails_and_is_recorded_so(gateway)


async def test_a_streamed_completion_to_a_translated_route_is_refused_before_the_provider_is_called(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """litellm's text-completion stream hides whether the provider finished it and whose usage
    ends it: rather than pass either off as the provider's, the gateway refuses the stream."""
    gateway = await gateway_to(aiohttp_server, upstream, tmp_path, "translate")
    with pytest.raises(openai.BadRequestError) as caught:
        await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT, stream=True)
    assert caught.value.body["code"] == "stream_not_carried"  # type: ignore[index]
    assert upstream.received == []
