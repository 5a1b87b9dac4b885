"""What Claude Code calls besides `/v1/messages`: `POST /v1/messages/count_tokens` (the provider
counts on a native route, litellm on a translated one; the caller checked as for a call; nothing
recorded) and `HEAD /`, its connectivity check at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from capture.records import InteractionQuery
from policy.rules import PatternList, parse_policy
from proxy.appkeys import STORE
from proxy.config.keys import VirtualKey, digest
from proxy.config.settings import ModelRoute
from proxy.demo.fake_anthropic import FakeAnthropic, count_of
from proxy.demo.fake_upstream import FakeUpstream
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway

CLAUDE = "claude-test"  # carried natively to the fake Anthropic
LOCAL = "claude-on-vllm"  # translated to the fake OpenAI upstream
POLICY = {"default": {"mode": "allow", "blocked_tools": ["Write"]}}
TOOLS = [{"name": name, "description": f"{name} a file", "input_schema": {"type": "object"}}
         for name in ("Read", "Bash", "Write")]
ASK = [{"role": "user", "content": "What is in /etc/hosts?"}]
KEY = "ctxg-count-tokens-key"  # for LOCAL only
ANY_MODEL_KEY = "ctxg-any-model-key"


def routes(provider: FakeAnthropic, upstream: FakeUpstream) -> tuple[ModelRoute, ...]:
    return (ModelRoute(model_name=CLAUDE, model="anthropic/claude-fake", api_base=provider.base_url, api_key=PROVIDER_KEY),
            ModelRoute(model_name=LOCAL, model="openai/fake-model", api_base=upstream.base_url, api_key=PROVIDER_KEY))


@pytest.fixture
async def gateway(aiohttp_server: Any, provider: FakeAnthropic, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY),
                              models=routes(provider, upstream))


def client(gateway: Gateway, api_key: str = "sk-ant-client", project: str | None = None) -> anthropic.AsyncAnthropic:
    base = gateway.url + (f"/p/{project}" if project else "")
    return anthropic.AsyncAnthropic(base_url=base, api_key=api_key, max_retries=0)


async def assert_nothing_recorded(gateway: Gateway) -> None:
    assert await gateway.app[STORE].list_interactions(InteractionQuery(limit=10)) == []


async def test_a_native_route_forwards_the_count_to_the_provider(
    gateway: Gateway, provider: FakeAnthropic, upstream: FakeUpstream
) -> None:
    betas = "token-counting-2024-11-01,interleaved-thinking-2025-05-14"
    counted = await client(gateway).messages.count_tokens(
        model=CLAUDE, messages=ASK, system="You are terse.", tools=TOOLS,  # type: ignore[arg-type]
        extra_headers={"anthropic-beta": betas})
    [sent] = provider.counted
    assert counted.input_tokens == count_of(sent.body)
    assert sent.body["model"] == "claude-fake" and sent.body["system"] == "You are terse."
    assert sent.body["messages"] == ASK
    assert [tool["name"] for tool in sent.body["tools"]] == ["Read", "Bash"]  # as a call would offer them
    assert sent.headers["x-api-key"] == PROVIDER_KEY and sent.headers["anthropic-version"]
    assert sent.headers["anthropic-beta"] == betas  # as sent, not sorted
    assert provider.received == [] and upstream.received == []  # counted, no model called
    await assert_nothing_recorded(gateway)


async def test_a_translated_route_counts_locally_what_the_provider_would_be_sent(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    sdk = client(gateway)
    bare = await sdk.messages.count_tokens(model=LOCAL, messages=ASK)
    with_system = await sdk.messages.count_tokens(model=LOCAL, messages=ASK, system="You are a careful assistant.")
    with_tools = await sdk.messages.count_tokens(model=LOCAL, messages=ASK, system="You are a careful assistant.",
                                                 tools=TOOLS)  # type: ignore[arg-type]
    assert 0 < bare.input_tokens < with_system.input_tokens < with_tools.input_tokens
    assert upstream.received == []
    await assert_nothing_recorded(gateway)


async def test_the_project_prefix_is_served_too(gateway: Gateway) -> None:
    counted = await client(gateway, project="atmos").messages.count_tokens(model=LOCAL, messages=ASK)
    assert counted.input_tokens > 0


async def test_a_providers_error_reaches_the_client_in_anthropics_shape(gateway: Gateway, provider: FakeAnthropic) -> None:
    provider.count_status = 529
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client(gateway).messages.count_tokens(model=CLAUDE, messages=ASK)
    assert caught.value.status_code == 529
    assert caught.value.body["type"] == "error"  # type: ignore[index]


async def test_bad_input_gets_anthropics_error_shape(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        for body in ({"model": LOCAL}, {"messages": ASK}, {"model": LOCAL, "messages": [{"role": "user", "content": 5}]}):
            response = await session.post(gateway.url + "/v1/messages/count_tokens", json=body)
            answer = await response.json()
            assert response.status == 400
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"


async def test_the_caller_is_checked_as_for_a_call(
    aiohttp_server: Any, provider: FakeAnthropic, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=routes(provider, upstream),
                                 keys=(VirtualKey(sha256=digest(KEY), client="claude-code",
                                                  models=PatternList.of((LOCAL,))),
                                       VirtualKey(sha256=digest(ANY_MODEL_KEY), client="claude-code")))
    counted = await client(gateway, api_key=KEY).messages.count_tokens(model=LOCAL, messages=ASK)
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as unknown_key:
        await client(gateway, api_key="ctxg-wrong").messages.count_tokens(model=LOCAL, messages=ASK)
    with pytest.raises(anthropic.PermissionDeniedError) as other_model:
        await client(gateway, api_key=KEY).messages.count_tokens(model=CLAUDE, messages=ASK)
    with pytest.raises(anthropic.NotFoundError) as undeclared:
        await client(gateway, api_key=ANY_MODEL_KEY).messages.count_tokens(model="claude-nowhere", messages=ASK)
    for caught in (unknown_key, other_model, undeclared):
        assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert provider.counted == []


@pytest.mark.parametrize("path", ["/", "/p/atmos"])
async def test_head_answers_200_with_no_body(gateway: Gateway, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.head(gateway.url + path)
        assert response.status == 200
        assert await response.read() == b""
