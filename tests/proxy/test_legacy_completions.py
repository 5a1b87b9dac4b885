"""`POST /v1/completions` (OpenAI's legacy completions) through the gateway with the real openai
SDK: carried natively to an OpenAI-compatible route and through litellm when the route is pinned
to translate, whole and streamed; the prompt reaches the provider untouched (no pack), and each
call is one record with the prompt, the text and the usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from proxy.config.settings import ModelRoute
from proxy.demo.fake_upstream import FakeUpstream, Reply
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway

COMPLETER = "instruct-test"
PROMPT = "def fibonacci(n):\n    "
TEXT = "return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)"


@pytest.fixture(params=["native", "translate"])
async def gateway(request: pytest.FixtureRequest, aiohttp_server: Any, upstream: FakeUpstream,
                  tmp_path: Path) -> Gateway:
    route = ModelRoute(model_name=COMPLETER, model="openai/fake-instruct", api_base=upstream.base_url,
                       api_key=PROVIDER_KEY, transport=request.param)
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,))
    async with aiohttp.ClientSession() as session:  # knowledge that a pack would carry, were there one
        await session.post(gateway.url + "/memories", json={"project": "default", "content": "fibonacci is slow"})
    return gateway


def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)


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
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, fragment=6))
    stream = await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT, stream=True,
                                                      stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == TEXT and len(pieces) > 5
    assert all(c.model == COMPLETER for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(TEXT.split())
    [record] = await gateway.recorded()
    assert record.status == "ok" and record.response["choices"][0]["text"] == TEXT
    assert record.completion_tokens == len(TEXT.split())


async def test_a_stream_the_provider_cuts_ends_in_an_error_and_is_recorded_so(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text=TEXT, fragment=6, reset_after_chunks=3))
    with pytest.raises(openai.APIError):
        stream = await client(gateway).completions.create(model=COMPLETER, prompt=PROMPT, stream=True)
        async for _ in stream:
            pass
    [record] = await gateway.recorded()
    assert record.status == "upstream_error"


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
