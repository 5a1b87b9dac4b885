"""`POST /v1/messages` through the gateway with the real anthropic SDK, to a fake Anthropic
provider carried natively: answers, streams, tool_use blocks decided by the policy, thinking
kept, errors in Anthropic's shape, the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from policy.rules import parse_policy
from proxy.demo.fake_anthropic import FakeAnthropic
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.config.settings import ModelRoute
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway
from tests.proxy.anthropic_calls import ASK, POLICY, TOOLS

CLAUDE = "claude-test"


@pytest.fixture
async def gateway(aiohttp_server: Any, provider: FakeAnthropic, tmp_path: Path) -> Gateway:
    route = ModelRoute(model_name=CLAUDE, model="anthropic/claude-fake", api_base=provider.base_url,
                       api_key=PROVIDER_KEY)
    return await make_gateway(aiohttp_server, FakeUpstream(base_url="http://127.0.0.1:9/v1"), tmp_path,
                              policy=parse_policy(POLICY), models=(route,))


def client(gateway: Gateway, project: str | None = None) -> anthropic.AsyncAnthropic:
    base = gateway.url + (f"/p/{project}" if project else "")
    return anthropic.AsyncAnthropic(base_url=base, api_key="sk-ant-client", max_retries=0)


async def test_a_plain_answer_reaches_the_sdk_and_is_recorded(gateway: Gateway, provider: FakeAnthropic) -> None:
    provider.push(Reply(text="It maps localhost."))
    message = await client(gateway).messages.create(model=CLAUDE, max_tokens=100, messages=ASK,
                                                    system="You are terse.")
    assert message.content[0].type == "text" and message.content[0].text == "It maps localhost."
    assert message.model == CLAUDE and message.stop_reason == "end_turn"
    [sent] = provider.received
    assert sent.body["model"] == "claude-fake" and sent.body["system"] == "You are terse."
    assert sent.headers["x-api-key"] == PROVIDER_KEY and sent.headers["anthropic-version"]
    [record] = await gateway.recorded()
    assert record.wire == "anthropic_messages" and record.status == "ok" and record.model == CLAUDE
    assert record.prompt == {"system": "You are terse.", "messages": ASK}
    assert record.response["content"] == [{"type": "text", "text": "It maps localhost."}]
    assert record.prompt_tokens and record.completion_tokens and record.usage_source == "provider"


async def test_a_stream_reaches_the_sdk_in_order_and_is_recorded_whole(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    provider.thinking = "Let me think about hosts."
    provider.push(Reply(text="It maps localhost to 127.0.0.1.", fragment=4))
    async with client(gateway).messages.stream(model=CLAUDE, max_tokens=100, messages=ASK) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "It maps localhost to 127.0.0.1." and len(texts) > 3
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature == "sig-" + "A" * 40  # thinking and its signature intact
    assert final.model == CLAUDE
    [record] = await gateway.recorded()
    assert record.status == "ok" and record.response["stop_reason"] == "end_turn"
    assert record.response["content"][0] == {"type": "thinking", "thinking": "Let me think about hosts.",
                                             "signature": "sig-" + "A" * 40}
    assert record.response["content"][1]["text"] == "It maps localhost to 127.0.0.1."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_blocked_tool_is_not_offered_and_its_call_never_reaches_the_client(
    gateway: Gateway, provider: FakeAnthropic, stream: bool
) -> None:
    provider.push(Reply(text="I'll look.", fragment=3, tool_calls=(
        ToolCall("Read", '{"path": "/etc/hosts"}', id="toolu_read"),
        ToolCall("Write", '{"path": "/etc/hosts", "text": "pwned"}', id="toolu_write"))))
    sdk = client(gateway)
    if stream:
        async with sdk.messages.stream(model=CLAUDE, max_tokens=100, messages=ASK, tools=TOOLS) as events:
            message = await events.get_final_message()
    else:
        message = await sdk.messages.create(model=CLAUDE, max_tokens=100, messages=ASK, tools=TOOLS)
    assert [t["name"] for t in provider.received[-1].body["tools"]] == ["Read", "Bash"]  # Write not offered
    calls = [block for block in message.content if block.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("Read", {"path": "/etc/hosts"})]
    refusal = message.content[2]
    assert refusal.type == "text" and "'Write'" in refusal.text and "blocked" in refusal.text
    assert message.stop_reason == "tool_use"  # the allowed call is still for the client to run
    [record] = await gateway.recorded()
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [("Read", "allow"), ("Write", "deny")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_when_every_call_is_refused_the_turn_ends(gateway: Gateway, provider: FakeAnthropic, stream: bool) -> None:
    provider.push(Reply(text=None, fragment=5, tool_calls=(ToolCall("Bash", '{"command": "rm -rf /"}'),)))
    sdk = client(gateway, project="strict")
    if stream:
        async with sdk.messages.stream(model=CLAUDE, max_tokens=100, messages=ASK, tools=TOOLS) as events:
            message = await events.get_final_message()
    else:
        message = await sdk.messages.create(model=CLAUDE, max_tokens=100, messages=ASK, tools=TOOLS)
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]  # same index, now text
    assert "'Bash'" in message.content[0].text
    [record] = await gateway.recorded()
    assert record.response["stop_reason"] == "end_turn" and record.tool_decisions[0]["action"] == "deny"
    assert "rm -rf" in record.tool_decisions[0]["arguments"]


async def test_the_clients_beta_headers_reach_the_provider_as_they_came(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    betas = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/messages?beta=true", json={
            "model": CLAUDE, "max_tokens": 10, "messages": ASK},
            headers={"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01", "anthropic-beta": betas})
        assert response.status == 200, await response.text()
    assert provider.received[-1].headers["anthropic-beta"] == betas  # not sorted, not dropped
    assert provider.received[-1].headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(("status", "kind", "sdk_error"), [
    (529, "overloaded_error", anthropic.InternalServerError),
    (429, "rate_limit_error", anthropic.RateLimitError),
])
async def test_a_providers_error_reaches_the_client_in_anthropics_shape(
    gateway: Gateway, provider: FakeAnthropic, status: int, kind: str, sdk_error: type[Exception]
) -> None:
    provider.push(Reply(status=status, error=f"provider says {kind} for {PROVIDER_KEY}"))
    with pytest.raises(sdk_error) as caught:
        await client(gateway).messages.create(model=CLAUDE, max_tokens=10, messages=ASK)
    assert caught.value.status_code == status  # type: ignore[attr-defined]  # both carry it
    body = caught.value.body  # type: ignore[attr-defined]
    assert body == {"type": "error", "error": {"type": kind, "message": f"provider says {kind} for [redacted]"},
                    "request_id": "req_fake"}  # the provider's own body, its key scrubbed
    [record] = await gateway.recorded()
    assert record.status == "upstream_error" and PROVIDER_KEY not in str(record.error)


async def test_an_error_body_not_in_anthropics_shape_is_written_in_it(aiohttp_server: Any, tmp_path: Path) -> None:
    """An Anthropic-compatible endpoint that answers its errors in a shape of its own."""
    async def refuse(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"detail": f"no such model, {PROVIDER_KEY}"}, status=404)
    app = aiohttp.web.Application()
    app.router.add_post("/v1/messages", refuse)
    compatible = await aiohttp_server(app)
    route = ModelRoute(model_name=CLAUDE, model="anthropic/claude-fake", api_base=str(compatible.make_url("")),
                       api_key=PROVIDER_KEY)
    gateway = await make_gateway(aiohttp_server, FakeUpstream(base_url="http://127.0.0.1:9/v1"), tmp_path,
                                 models=(route,))
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client(gateway).messages.create(model=CLAUDE, max_tokens=10, messages=ASK)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["error"]["message"] == "no such model, [redacted]"


async def test_a_sub_agents_call_is_recorded_with_its_agent_and_the_agent_that_started_it(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    headers = {"X-Claude-Code-Session-Id": "cc-1", "x-claude-code-agent-id": "a-sub-2",
               "x-claude-code-parent-agent-id": "a-sub-1"}
    await client(gateway).messages.create(model=CLAUDE, max_tokens=10, messages=ASK, extra_headers=headers)
    await client(gateway).messages.create(model=CLAUDE, max_tokens=10, messages=ASK,
                                          extra_headers={"X-Claude-Code-Session-Id": "cc-1"})
    sub_agent, main = await gateway.recorded(at_least=2)
    assert (sub_agent.session_id, sub_agent.agent_id, sub_agent.parent_agent_id) == ("cc-1", "a-sub-2", "a-sub-1")
    assert (main.session_id, main.agent_id, main.parent_agent_id) == ("cc-1", None, None)
    async with aiohttp.ClientSession() as session:
        answer = await (await session.get(gateway.url + f"/interactions/{sub_agent.id}")).json()
    assert (answer["agent_id"], answer["parent_agent_id"]) == ("a-sub-2", "a-sub-1")


async def test_bad_input_gets_anthropics_error_shape(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        for body in ({"model": CLAUDE, "max_tokens": 10}, {"model": CLAUDE, "messages": [{"role": "user", "content": 5}]}):
            response = await session.post(gateway.url + "/v1/messages", json=body)
            answer = await response.json()
            assert response.status == 400
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
        response = await session.post(gateway.url + "/v1/messages", data=b"{not json")
        assert response.status == 400 and (await response.json())["type"] == "error"


async def test_a_stream_the_provider_cuts_ends_with_an_error_event_and_is_recorded_so(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    provider.push(Reply(text="a long answer that never ends", fragment=3, reset_after_chunks=6))
    with pytest.raises(anthropic.APIError):
        async with client(gateway).messages.stream(model=CLAUDE, max_tokens=100, messages=ASK) as stream:
            async for _ in stream.text_stream:
                pass
    [record] = await gateway.recorded()
    assert record.status == "upstream_error"


async def test_a_virtual_key_is_accepted_as_x_api_key(
    aiohttp_server: Any, provider: FakeAnthropic, tmp_path: Path
) -> None:
    from proxy.config.keys import VirtualKey, digest

    key = "ctxg-claude-code-key"
    route = ModelRoute(model_name=CLAUDE, model="anthropic/claude-fake", api_base=provider.base_url,
                       api_key=PROVIDER_KEY)
    gateway = await make_gateway(aiohttp_server, FakeUpstream(base_url="http://127.0.0.1:9/v1"), tmp_path,
                                 models=(route,), keys=(VirtualKey(sha256=digest(key), client="claude-code",
                                                                   projects=frozenset({"atmos"})),))
    sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)  # sent as x-api-key
    message = await sdk.messages.create(model=CLAUDE, max_tokens=10, messages=ASK)
    assert message.content[0].type == "text"
    assert provider.received[-1].headers["x-api-key"] == PROVIDER_KEY  # the provider's, never the client's
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await anthropic.AsyncAnthropic(base_url=gateway.url, api_key="ctxg-wrong", max_retries=0).messages.create(
            model=CLAUDE, max_tokens=10, messages=ASK)
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    [record] = await gateway.recorded()
    assert record.project == "atmos"



async def remember(gateway: Gateway, content: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/memories", json={"project": "default", "content": content})
        assert response.status == 201, await response.text()


async def test_the_pack_comes_from_the_persons_words_and_goes_after_the_tool_results_of_the_latest_turn(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    await remember(gateway, "The prod VPC CIDR is 10.0.0.0/16")
    long_words = ("instructions environment configuration documentation repository conventions whenever "
                  "important formatting consistently professional responding particular available directory "
                  "requirements following preferences workspace contextual information")
    reminder = "<system-reminder>\n" + (long_words + " ") * 40 + "\n</system-reminder>"  # crowds out short words
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
              {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": reminder}, {"type": "text", "text": "prod VPC CIDR?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "no file"},
                                     {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]},
    ]
    await client(gateway).messages.create(model=CLAUDE, max_tokens=10, system=system, messages=messages,
                                           tools=TOOLS)
    sent = provider.received[-1].body
    assert sent["system"] == system  # Claude Code's own blocks stay first and unchanged
    assert sent["messages"][:2] == messages[:2]
    latest = sent["messages"][2]["content"]
    assert latest[0] == messages[2]["content"][0]  # the tool result stays first, as the API requires
    assert "10.0.0.0/16" in latest[1]["text"] and latest[2:] == messages[2]["content"][1:]


async def test_over_ten_turns_each_request_starts_with_the_whole_previous_one_but_its_latest_message(
    gateway: Gateway, provider: FakeAnthropic
) -> None:
    for number in range(10):
        await remember(gateway, f"Fact {number}: service-{number} runs on port {8000 + number}")
    messages: list[dict[str, Any]] = []
    for number in range(10):
        messages.append({"role": "user", "content": f"Which port does service-{number} use?"})
        if number % 3 == 1:
            provider.push(Reply(text=None, tool_calls=(ToolCall("Read", '{"path": "/srv"}', id=f"toolu_{number}"),)))
            reply = await client(gateway).messages.create(model=CLAUDE, max_tokens=50, messages=messages, tools=TOOLS)
            messages += [{"role": "assistant", "content": [block.model_dump() for block in reply.content]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{number}",
                                                       "content": "ok"}]}]
        reply = await client(gateway).messages.create(model=CLAUDE, max_tokens=50, messages=messages, tools=TOOLS)
        messages.append({"role": "assistant", "content": reply.content[0].text})  # type: ignore[union-attr]
    sent = provider.received
    assert all("<ctxgate-context" in str(call.body["messages"][-1]) for call in sent)
    for before, after in zip(sent, sent[1:]):
        kept = before.body["messages"][:-1]
        assert after.body["messages"][:len(kept)] == kept
        latest = before.raw.rfind(b'{"role":"user"')
        assert latest > 0 and after.raw[:latest] == before.raw[:latest]


@pytest.mark.parametrize("user_id", [
    '{"device_id":"d1","account_uuid":"","session_id":"6f1c2b9e-0d4a-4c3e-9a55-0c1f1e2d3a4b"}',  # Claude Code 2.1
    "user_abc123_account__session_6f1c2b9e-0d4a-4c3e-9a55-0c1f1e2d3a4b",  # before 2.1
])
async def test_the_session_comes_from_claude_codes_user_id_without_its_header(
    gateway: Gateway, provider: FakeAnthropic, user_id: str
) -> None:
    await client(gateway).messages.create(model=CLAUDE, max_tokens=10, messages=ASK, metadata={"user_id": user_id})
    [record] = await gateway.recorded()
    assert record.session_id == "6f1c2b9e-0d4a-4c3e-9a55-0c1f1e2d3a4b"
