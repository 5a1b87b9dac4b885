"""Every record says where its token counts came from: the provider's usage, or counted by the
gateway when the provider reported none (streamed or not, on either transport); and it keeps
the cached prompt tokens the provider reports."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletionMessageParam

from proxy.demo.fake_upstream import Reply
from tests.conftest import MODEL, Gateway

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the prod VPC CIDR?"}]
ANSWER = "The prod VPC CIDR is 10.0.0.0/16."
# What the fake upstream reports: words + 3 per message, and the answer's words.
FAKE_PROMPT_TOKENS = 6 + 3
FAKE_COMPLETION_TOKENS = 6


async def ask(gateway: Gateway, *, stream: bool) -> str:
    """The answer's text as the SDK read it; a stream asks for the provider's usage chunk."""
    client = gateway.client()
    if not stream:
        completion = await client.chat.completions.create(model=MODEL, messages=QUESTION)
        return completion.choices[0].message.content or ""
    chunks = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    return "".join([choice.delta.content or "" async for chunk in chunks for choice in chunk.choices])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_reply_without_usage_is_recorded_with_locally_counted_tokens(gateway: Gateway, stream: bool) -> None:
    gateway.upstream.push(Reply(text=ANSWER, usage=False))
    assert await ask(gateway, stream=stream) == ANSWER
    [record] = await gateway.recorded()
    assert record.usage_source == "counted"
    assert record.prompt_tokens is not None and record.prompt_tokens > 0
    assert record.completion_tokens is not None and record.completion_tokens > 0
    assert record.cache_read_tokens is None and record.cache_creation_tokens is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_reply_with_usage_is_recorded_with_the_providers_counts(gateway: Gateway, stream: bool) -> None:
    gateway.upstream.push(Reply(text=ANSWER))
    assert await ask(gateway, stream=stream) == ANSWER
    [record] = await gateway.recorded()
    assert record.usage_source == "provider"
    assert (record.prompt_tokens, record.completion_tokens) == (FAKE_PROMPT_TOKENS, FAKE_COMPLETION_TOKENS)
    assert record.cache_read_tokens is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_cached_prompt_tokens_the_provider_reports_are_recorded(gateway: Gateway, stream: bool) -> None:
    gateway.upstream.push(Reply(text=ANSWER, cached_tokens=4))
    assert await ask(gateway, stream=stream) == ANSWER
    [record] = await gateway.recorded()
    assert record.usage_source == "provider" and record.prompt_tokens == FAKE_PROMPT_TOKENS
    assert record.cache_read_tokens == 4 and record.cache_creation_tokens is None


async def test_a_stream_the_client_asked_no_usage_of_is_counted(gateway: Gateway) -> None:
    # Without `stream_options.include_usage` an OpenAI provider sends no usage chunk at all.
    gateway.upstream.push(Reply(text=ANSWER))
    chunks = await gateway.client().chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
    assert "".join([c.delta.content or "" async for chunk in chunks for c in chunk.choices]) == ANSWER
    [record] = await gateway.recorded()
    assert record.usage_source == "counted" and record.prompt_tokens and record.completion_tokens
