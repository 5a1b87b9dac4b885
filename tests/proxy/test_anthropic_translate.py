"""`POST /v1/messages` with the real anthropic SDK, to a route whose provider speaks OpenAI chat
(the fake OpenAI upstream): litellm translates the request there and the answer, whole or
streamed, back; tool calls arrive as tool_use blocks and are gated as on the native transport;
errors come in Anthropic's shape; the record is written in the client's dialect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from policy.rules import parse_policy
from proxy.config.settings import ModelRoute
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway
from tests.proxy.anthropic_calls import ASK, POLICY, TOOLS

LOCAL = "claude-on-vllm"  # the name Claude Code is given for the team's own model


@pytest.fixture
async def gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    route = ModelRoute(model_name=LOCAL, model="openai/fake-model", api_base=upstream.base_url, api_key=PROVIDER_KEY)
    return await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY), models=(route,))


def client(gateway: Gateway, project: str | None = None) -> anthropic.AsyncAnthropic:
    base = gateway.url + (f"/p/{project}" if project else "")
    return anthropic.AsyncAnthropic(base_url=base, api_key="sk-ant-client", max_retries=0)


async def ask(gateway: Gateway, stream: bool, project: str | None = None, **params: Any) -> anthropic.types.Message:
    """One call, whole or streamed; the message as the SDK assembles it."""
    sdk = client(gateway, project)
    params = {"model": LOCAL, "max_tokens": 100, "messages": ASK, **params}
    if stream:
        async with sdk.messages.stream(**params) as events:
            return await events.get_final_message()
    return await sdk.messages.create(**params)


async def test_a_plain_answer_comes_back_as_an_anthropic_message_and_is_recorded(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text="It maps localhost."))
    message = await client(gateway).messages.create(model=LOCAL, max_tokens=100, messages=ASK, system="You are terse.")
    assert message.type == "message" and message.role == "assistant" and message.model == LOCAL
    assert [(block.type, block.text) for block in message.content] == [("text", "It maps localhost.")]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.input_tokens and message.usage.output_tokens
    [sent] = upstream.received
    assert sent.body["model"] == "fake-model" and sent.body["max_tokens"] == 100
    assert sent.body["messages"] == [{"role": "system", "content": "You are terse."}, *ASK]
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"  # the route's key, never the client's
    [record] = await gateway.recorded()
    assert record.wire == "anthropic_messages" and record.status == "ok" and record.model == LOCAL
    assert record.prompt == {"system": "You are terse.", "messages": ASK}  # as the client's dialect wrote it
    assert record.response == {"role": "assistant", "content": [{"type": "text", "text": "It maps localhost."}],
                               "stop_reason": "end_turn"}
    assert record.prompt_tokens == message.usage.input_tokens and record.usage_source == "provider"


async def test_system_blocks_reach_the_provider_as_one_system_message(gateway: Gateway, upstream: FakeUpstream) -> None:
    system = [{"type": "text", "text": "You are Claude Code."},
              {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    await client(gateway).messages.create(model=LOCAL, max_tokens=10, messages=ASK, system=system)  # type: ignore[arg-type]
    first, *rest = upstream.received[-1].body["messages"]
    assert first["role"] == "system"
    assert [part["text"] for part in first["content"]] == ["You are Claude Code.", "Be brief."]
    assert rest == ASK


async def test_tools_reach_the_provider_as_function_tools_without_the_blocked_ones(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    await client(gateway).messages.create(model=LOCAL, max_tokens=10, messages=ASK, tools=TOOLS,
                                          tool_choice={"type": "auto"})
    sent = upstream.received[-1].body
    assert sent["tools"] == [
        {"type": "function", "function": {"name": name, "description": f"{name} a file", "parameters": {"type": "object"}}}
        for name in ("Read", "Bash")]  # Write blocked by the policy: not offered
    assert sent["tool_choice"] == "auto"
    [record] = await gateway.recorded()
    assert [tool["name"] for tool in record.params["tools"]] == ["Read", "Bash"]
    assert record.params["tools"][0] == TOOLS[0]  # recorded in Anthropic's shape, untouched by the translation


async def test_a_stream_arrives_in_order_and_is_recorded_whole(gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.push(Reply(text="It maps localhost to 127.0.0.1.", fragment=4))
    async with client(gateway).messages.stream(model=LOCAL, max_tokens=100, messages=ASK) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "It maps localhost to 127.0.0.1." and len(texts) > 3
    assert final.model == LOCAL and final.stop_reason == "end_turn"
    assert [block.type for block in final.content] == ["text"]
    assert final.usage.input_tokens and final.usage.output_tokens  # the provider's, asked for in the stream
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    [record] = await gateway.recorded()
    assert record.status == "ok" and record.wire == "anthropic_messages"
    assert record.response["content"] == [{"type": "text", "text": "It maps localhost to 127.0.0.1."}]
    assert record.prompt_tokens == final.usage.input_tokens and record.usage_source == "provider"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_provider_that_reports_no_usage_gets_counts_the_record_says_were_counted(
    gateway: Gateway, upstream: FakeUpstream, stream: bool
) -> None:
    """Claude Code sizes its context by the usage it gets, so a translated answer carries counts
    even when the provider sent none; the record must not pass them off as the provider's."""
    upstream.push(Reply(text="It maps localhost.", usage=False))
    message = await ask(gateway, stream=stream)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    [record] = await gateway.recorded()
    assert record.usage_source == "counted"
    assert (record.prompt_tokens, record.completion_tokens) == (message.usage.input_tokens, message.usage.output_tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_providers_tool_call_arrives_as_a_tool_use_block_and_a_blocked_one_never_does(
    gateway: Gateway, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.push(Reply(text="I'll look.", fragment=3, tool_calls=(
        ToolCall("Read", '{"path": "/etc/hosts"}', id="call_read"),
        ToolCall("Write", '{"path": "/etc/hosts", "text": "pwned"}', id="call_write"))))
    message = await ask(gateway, stream, tools=TOOLS)
    assert [block.type for block in message.content] == ["text", "tool_use", "text"]
    call = message.content[1]
    assert (call.id, call.name, call.input) == ("call_read", "Read", {"path": "/etc/hosts"})  # type: ignore[union-attr]
    refusal = message.content[2]
    assert "'Write'" in refusal.text and "blocked" in refusal.text  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"  # the allowed call is still for the client to run
    [record] = await gateway.recorded()
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [("Read", "allow"), ("Write", "deny")]
    assert "pwned" not in str(record.response)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_when_every_call_is_refused_the_turn_ends(gateway: Gateway, upstream: FakeUpstream, stream: bool) -> None:
    upstream.push(Reply(text=None, fragment=5, tool_calls=(ToolCall("Bash", '{"command": "rm -rf /"}'),)))
    message = await ask(gateway, stream, project="strict", tools=TOOLS)
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"] and "'Bash'" in message.content[0].text  # type: ignore[union-attr]
    [record] = await gateway.recorded()
    assert record.response["stop_reason"] == "end_turn" and record.tool_decisions[0]["action"] == "deny"


async def test_a_tool_result_goes_back_to_the_provider_as_a_tool_message(gateway: Gateway, upstream: FakeUpstream) -> None:
    messages: list[dict[str, Any]] = [
        *ASK,
        {"role": "assistant", "content": [{"type": "text", "text": "I'll look."},
                                          {"type": "tool_use", "id": "call_read", "name": "Read",
                                           "input": {"path": "/etc/hosts"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_read", "content": "127.0.0.1 localhost"}]},
    ]
    upstream.push(Reply(text="It maps localhost."))
    message = await client(gateway).messages.create(model=LOCAL, max_tokens=10, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert message.content[0].text == "It maps localhost."  # type: ignore[union-attr]
    _, assistant, result = upstream.received[-1].body["messages"]
    assert assistant["role"] == "assistant" and assistant["content"] == "I'll look."
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [("call_read", "Read")]
    assert result == {"role": "tool", "tool_call_id": "call_read", "content": "127.0.0.1 localhost"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_tool_name_too_long_for_openai_comes_back_as_the_client_named_it(
    gateway: Gateway, upstream: FakeUpstream, stream: bool
) -> None:
    name = "mcp__infrastructure_inventory__" + "describe_component_" * 3  # 88 characters; OpenAI takes 64
    tools = [{"name": name, "description": "describe", "input_schema": {"type": "object"}}]
    await ask(gateway, False, tools=tools)
    [offered] = upstream.received[-1].body["tools"]
    short = offered["function"]["name"]
    assert len(short) <= 64 and short != name
    upstream.push(Reply(text=None, tool_calls=(ToolCall(short, '{"component": "vpc"}', id="call_1"),)))
    message = await ask(gateway, stream, tools=tools)
    [call] = message.content
    assert (call.type, call.name, call.input) == ("tool_use", name, {"component": "vpc"})  # type: ignore[union-attr]
    record = (await gateway.recorded(2))[-1]
    assert record.tool_decisions[0]["tool"] == name


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_providers_429_reaches_the_client_in_anthropics_shape(
    gateway: Gateway, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.push(Reply(status=429, error=f"slow down, {PROVIDER_KEY}"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ask(gateway, stream)
    assert caught.value.status_code == 429
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "slow down" in body["error"]["message"] and PROVIDER_KEY not in str(body)
    [record] = await gateway.recorded()
    assert record.status == "upstream_error" and record.wire == "anthropic_messages"
    assert PROVIDER_KEY not in str(record.error)


async def test_a_stream_the_provider_cuts_ends_with_an_error_event_and_is_recorded_so(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(text="a long answer that never ends", fragment=3, reset_after_chunks=5))
    with pytest.raises(anthropic.APIError):
        async with client(gateway).messages.stream(model=LOCAL, max_tokens=100, messages=ASK) as stream:
            async for _ in stream.text_stream:
                pass
    [record] = await gateway.recorded()
    assert record.status == "upstream_error" and "litellm" not in (record.error or "")  # its prefixes dropped
    assert record.response["content"] == [{"type": "text", "text": "a long answe"}]  # what reached the client


async def test_an_anthropic_route_that_is_not_carried_natively_is_refused_before_sending(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # A route parameter only litellm applies keeps it off the native transport, and an Anthropic
    # provider is not reached by translating through OpenAI chat.
    route = ModelRoute(model_name="claude-odd", model="anthropic/claude-x", api_base="http://127.0.0.1:9",
                       extra={"max_retries": 3})
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client(gateway).messages.create(model="claude-odd", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "no route whose provider speaks this API" in caught.value.body["error"]["message"]  # type: ignore[index]
