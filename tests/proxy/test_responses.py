"""`POST /v1/responses` through the gateway with the real openai SDK, on both transports:
natively to a provider that serves the Responses API, and through litellm to one that speaks
only chat. Answers, streams, function and custom tool calls decided by the policy (a refused one
becomes a message item, the stream stays numbered one by one), reasoning items kept, the pack
in the latest user message, usage and the record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from capture.knowledge import new_memory
from policy.rules import parse_policy
from proxy.appkeys import STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.edge.wire import event_frame
from tests.conftest import MODEL, PROVIDER_KEY, Gateway, make_gateway
from tests.proxy.test_context import CIDR
from tests.proxy.test_tool_policy import ADMIN_KEY, approve_when_asked

POLICY = {"default": {"mode": "allow", "blocked_tools": ["delete_*"], "restricted_tools": ["deploy"]}}
TOOLS: list[Any] = [
    {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
    {"type": "function", "name": "deploy", "parameters": {"type": "object"}},
    {"type": "function", "name": "delete_stack", "parameters": {"type": "object"}},
]
READ = ToolCall("read_file", '{"path": "/etc/hosts"}', id="call_read")
DELETE = ToolCall("delete_stack", '{"stack": "prod"}', id="call_delete")
DEPLOY = ToolCall("deploy", '{"env": "prod"}', id="call_deploy")


@pytest.fixture
async def gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, transport=transport,
                              policy=parse_policy(POLICY), admin_key=ADMIN_KEY)


def sent_to_provider(gateway: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = gateway.upstream.received[-1].body
    return body


async def collect(stream: Any) -> tuple[list[Any], Any]:
    events = [event async for event in stream]
    return events, events[-1].response


async def test_a_plain_answer_reaches_the_sdk_and_is_recorded(gateway: Gateway, transport: str) -> None:
    gateway.upstream.push(Reply(text="It maps localhost."))
    response = await gateway.client().responses.create(model=MODEL, input="What is in /etc/hosts?",
                                                       instructions="Be terse.")
    assert response.output_text == "It maps localhost." and response.model == MODEL
    assert response.status == "completed" and response.usage is not None and response.usage.input_tokens > 0
    sent = gateway.upstream.received[-1]
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    if transport == "native":
        assert sent.body["instructions"] == "Be terse." and sent.body["model"] == "fake-model"
    else:  # the provider speaks only chat: litellm made a chat call of it
        assert sent.body["messages"][0] == {"role": "system", "content": "Be terse."}
    [record] = await gateway.recorded()
    assert record.wire == "openai_responses" and record.status == "ok" and record.model == MODEL
    assert record.prompt == {"instructions": "Be terse.", "input": "What is in /etc/hosts?"}
    assert record.response["id"] == response.id and record.response["status"] == "completed"
    assert record.response["output"][-1]["content"][0]["text"] == "It maps localhost."
    assert record.prompt_tokens == response.usage.input_tokens and record.usage_source == "provider"


async def test_a_stream_reaches_the_sdk_numbered_in_order_and_is_recorded_whole(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="It maps localhost to 127.0.0.1.", fragment=4))
    stream = await gateway.client().responses.create(model=MODEL, input="What is in /etc/hosts?", stream=True)
    events, final = await collect(stream)
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "It maps localhost to 127.0.0.1." and len(deltas) > 3
    assert [event.sequence_number for event in events] == list(range(events[0].sequence_number, len(events)))
    assert events[-1].type == "response.completed" and final.model == MODEL
    [record] = await gateway.recorded()
    assert record.status == "ok" and record.response["id"] == final.id
    assert record.response["output"][-1]["content"][0]["text"] == "It maps localhost to 127.0.0.1."
    assert record.prompt_tokens and record.completion_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_blocked_tool_is_not_offered_and_its_call_becomes_a_message(
    gateway: Gateway, stream: bool
) -> None:
    gateway.upstream.push(Reply(text="Looking.", tool_calls=(READ, DELETE), fragment=3))
    asked = gateway.client().responses.create(model=MODEL, input="Tidy up prod", tools=TOOLS, stream=stream)
    if stream:
        events, response = await collect(await asked)
        assert [event.sequence_number for event in events] == list(range(len(events)))
        streamed_calls = {event.item.name for event in events
                          if event.type.startswith("response.output_item") and event.item.type == "function_call"}
        arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert streamed_calls == {"read_file"} and arguments == READ.arguments  # nothing of the refused call
    else:
        response = await asked
    kinds = [item.type for item in response.output]
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(call.name, call.arguments, call.call_id) for call in calls] == [(READ.name, READ.arguments, READ.id)]
    refusal = [item for item in response.output if item.type == "message"][-1]
    assert "delete_stack" in refusal.content[0].text and "ctxgate refused" in refusal.content[0].text
    assert kinds.count("function_call") == 1
    offered = sent_to_provider(gateway).get("tools")
    names = [tool.get("name") or tool.get("function", {}).get("name") for tool in offered]
    assert "delete_stack" not in names and "read_file" in names
    [record] = await gateway.recorded()
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [("read_file", "allow"), ("delete_stack", "deny")]
    assert "delete_stack" not in str([item for item in record.response["output"] if item["type"] == "function_call"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_asked_call_waits_for_a_person_and_then_reaches_the_client(gateway: Gateway, stream: bool) -> None:
    gateway.upstream.push(Reply(tool_calls=(DEPLOY,), fragment=4))

    async def ask() -> Any:
        asked = await gateway.client().responses.create(model=MODEL, input="Ship it", tools=TOOLS, stream=stream)
        return (await collect(asked))[1] if stream else asked

    response, approval = await asyncio.gather(ask(), approve_when_asked(gateway))
    assert [(item.name, item.arguments) for item in response.output if item.type == "function_call"] == \
        [(DEPLOY.name, DEPLOY.arguments)]
    [record] = await gateway.recorded()
    assert [(d["tool"], d["decided_by"], d["approval_id"]) for d in record.tool_decisions] == \
        [("deploy", "human", approval["id"])]


async def test_the_pack_rides_at_the_head_of_the_latest_user_message(gateway: Gateway, transport: str) -> None:
    await gateway.app[STORE].add_memory(new_memory("default", CIDR))
    items: list[Any] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What CIDR does the prod VPC use?"}]},
    ]
    gateway.upstream.push(Reply(text="10.0.0.0/16"))
    await gateway.client().responses.create(model=MODEL, input=items)
    [record] = await gateway.recorded()
    assert record.context_pack and CIDR in record.context_pack
    sent = record.prompt["input"]
    assert sent[:2] == items[:2]  # the leading items as the client sent them
    assert sent[2]["content"] == [{"type": "input_text", "text": record.context_pack}, *items[2]["content"]]
    received = sent_to_provider(gateway)
    if transport == "native":
        assert received["input"] == sent
    else:
        assert CIDR in str(received["messages"][-1]) and CIDR not in str(received["messages"][:-1])


async def test_reasoning_items_pass_with_their_encrypted_content(gateway: Gateway, transport: str) -> None:
    if transport == "translate":
        pytest.skip("a chat provider has no encrypted reasoning to carry")
    gateway.upstream.push(Reply(text="Done.", reasoning="The user wants a summary."))
    response = await gateway.client().responses.create(model=MODEL, input="Summarise", include=["reasoning.encrypted_content"])
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content.startswith("gAAAA-fake")
    # The next turn sends it back: it reaches the provider as it came.
    gateway.upstream.push(Reply(text="Again."))
    follow_up = [reasoning.model_dump(exclude_none=True), {"role": "user", "content": "And again?"}]
    await gateway.client().responses.create(model=MODEL, input=follow_up)
    assert sent_to_provider(gateway)["input"][0] == follow_up[0]


async def test_a_provider_error_comes_back_in_openai_shape(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(status=429, error="slow down"))
    with pytest.raises(openai.RateLimitError) as raised:
        await gateway.client().responses.create(model=MODEL, input="hi")
    assert "slow down" in str(raised.value)
    [record] = await gateway.recorded()
    assert record.status == "upstream_error"


async def test_a_stream_cut_short_ends_with_an_error_event_and_is_recorded(gateway: Gateway, transport: str) -> None:
    if transport == "translate":
        pytest.skip("litellm's chat stream is cut by the chat tests")
    gateway.upstream.push(Reply(text="It maps localhost to 127.0.0.1.", fragment=2, reset_after_chunks=6))
    async with aiohttp.ClientSession() as session:
        answer = await session.post(gateway.url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True})
        body = (await answer.read()).decode()
    frames = [frame for frame in body.split("\n\n") if frame]
    assert frames[-1].startswith("event: error\n") and "upstream_stream_cut" in frames[-1]
    [record] = await gateway.recorded()
    assert record.status == "upstream_error"


async def test_previous_response_id_goes_on_from_the_earlier_turn(gateway: Gateway, transport: str) -> None:
    sdk = gateway.client()
    gateway.upstream.push(Reply(text="Hello Ada."), Reply(text="You are Ada."))
    first = await sdk.responses.create(model=MODEL, input="My name is Ada.", instructions="Be brief.")
    second = await sdk.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id,
                                        instructions="Be brief.")
    assert second.output_text == "You are Ada."
    received = sent_to_provider(gateway)
    if transport == "native":  # the provider keeps the earlier turns: the id goes to it as sent
        assert received["previous_response_id"] == first.id and received["input"] == "What is my name?"
    else:  # the chat provider keeps none: the gateway put them back from its record
        assert first.id.startswith("resp_ctxgate_")
        assert [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
                for m in received["messages"]] == [
            ("system", "Be brief."), ("user", "My name is Ada."), ("assistant", "Hello Ada."),
            ("user", "What is my name?")]
        assert "previous_response_id" not in str(received)
    records = await gateway.recorded(2)
    if transport == "native":
        assert records[1].params["previous_response_id"] == first.id
    else:  # recorded as sent: the whole conversation
        assert [item.get("role") for item in records[1].prompt["input"]] == ["user", "assistant", "user"]


async def test_previous_response_id_the_gateway_cannot_go_on_from_is_a_400(gateway: Gateway, transport: str) -> None:
    if transport == "native":
        pytest.skip("the provider resolves the ids it made")
    sdk = gateway.client()
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.responses.create(model=MODEL, input="Go on.", previous_response_id="resp_abc123")
    assert unknown.value.code == "previous_response_not_found" and gateway.upstream.received == []
    gateway.upstream.push(Reply(text="Noted."))
    unkept = await sdk.responses.create(model=MODEL, input="Remember nothing.", store=False)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.responses.create(model=MODEL, input="Go on.", previous_response_id=unkept.id)
    assert "store: false" in refused.value.message
    other = await sdk.with_options(default_headers={"X-Ctxgate-Project": "elsewhere"}).responses.create(
        model=MODEL, input="Hello.")
    with pytest.raises(openai.BadRequestError):  # another project's record is not this caller's to read
        await sdk.responses.create(model=MODEL, input="Go on.", previous_response_id=other.id)


async def raw_upstream(aiohttp_server: Any, events: list[dict[str, Any]]) -> str:
    """A provider that streams exactly `events`, numbered from 0; its base URL."""
    async def respond(request: web.Request) -> web.StreamResponse:
        await request.read()
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for number, event in enumerate(events):
            await stream.write(event_frame({**event, "sequence_number": number}))
        return stream
    app = web.Application()
    app.router.add_post("/v1/responses", respond)
    return str((await aiohttp_server(app)).make_url("/v1"))


HEAD = {"id": "resp_raw", "object": "response", "status": "in_progress", "model": "fake-model", "output": []}
BLOCKED = {"id": "fc_del", "type": "function_call", "status": "completed", "call_id": "c_del", "name": "delete_stack",
           "arguments": '{"stack": "prod"}'}
ALLOWED = {"id": "fc_read", "type": "function_call", "status": "completed", "call_id": "c_read", "name": "read_file",
           "arguments": '{"path": "/etc/hosts"}'}


@pytest.mark.parametrize("shape", ["only_in_the_final_response", "without_output_index"])
async def test_a_blocked_call_in_an_unusual_stream_never_reaches_the_client(
    aiohttp_server: Any, tmp_path: Path, shape: str
) -> None:
    if shape == "only_in_the_final_response":  # streamed as the allowed call, then swapped at the end
        events = [{"type": "response.created", "response": HEAD},
                  {"type": "response.output_item.added", "output_index": 0, "item": {**ALLOWED, "arguments": ""}},
                  {"type": "response.output_item.done", "output_index": 0, "item": ALLOWED},
                  {"type": "response.completed", "response": {**HEAD, "status": "completed",
                                                              "output": [{**ALLOWED, "name": "delete_stack"}, BLOCKED]}}]
    else:  # two calls with no output index, the blocked one's arguments streamed between
        events = [{"type": "response.created", "response": HEAD},
                  {"type": "response.output_item.added", "item": {**ALLOWED, "arguments": ""}},
                  {"type": "response.output_item.added", "item": {**BLOCKED, "arguments": ""}},
                  {"type": "response.function_call_arguments.delta", "item_id": "fc_del", "delta": BLOCKED["arguments"]},
                  {"type": "response.output_item.done", "item": ALLOWED},
                  {"type": "response.output_item.done", "item": BLOCKED},
                  {"type": "response.completed", "response": {**HEAD, "status": "completed", "output": [ALLOWED, BLOCKED]}}]
    fake = FakeUpstream(base_url=await raw_upstream(aiohttp_server, events))
    gateway = await make_gateway(aiohttp_server, fake, tmp_path, transport="native", policy=parse_policy(POLICY))
    async with aiohttp.ClientSession() as session:
        answer = await session.post(gateway.url + "/v1/responses",
                                    json={"model": MODEL, "input": "Tidy up", "tools": TOOLS, "stream": True})
        body = (await answer.read()).decode()
    assert answer.status == 200 and '"stack"' not in body and '"name":"delete_stack"' not in body
    sent = [orjson.loads(frame.split("data: ", 1)[1]) for frame in body.split("\n\n") if "data: " in frame]
    assert [event["sequence_number"] for event in sent] == list(range(len(sent)))
    final = sent[-1]["response"]["output"]
    assert [item["type"] for item in final] == ["function_call", "message"] and final[0]["name"] == "read_file"
    [record] = await gateway.recorded()
    assert ("delete_stack", "deny") in [(d["tool"], d["action"]) for d in record.tool_decisions]


async def test_a_response_is_given_back_by_its_id_and_its_input_items_listed(gateway: Gateway, transport: str) -> None:
    sdk = gateway.client()
    gateway.upstream.push(Reply(text="It maps localhost."))
    made = await sdk.responses.create(model=MODEL, input="What is in /etc/hosts?", instructions="Be terse.")
    again = await sdk.responses.retrieve(made.id)
    assert again.id == made.id and again.output_text == "It maps localhost." and again.model == MODEL
    items = [item async for item in sdk.responses.input_items.list(made.id, limit=1)]
    [item] = items
    assert item.role == "user" and "What is in /etc/hosts?" in str(item.content)
    if transport == "native":  # the provider's to give back and to delete, asked with the route's key
        asked = gateway.upstream.received[-1]
        assert asked.headers["Authorization"] == f"Bearer {PROVIDER_KEY}" and asked.body["limit"] == "1"
        await sdk.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(made.id)
    else:  # the gateway's record: given back, never deleted
        assert len(gateway.upstream.received) == 1
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.responses.delete(made.id)
        assert refused.value.code == "response_not_deletable"
        assert (await sdk.responses.retrieve(made.id)).id == made.id


async def test_a_response_id_the_caller_may_not_read_is_a_404(gateway: Gateway) -> None:
    sdk = gateway.client()
    gateway.upstream.push(Reply(text="Noted."), Reply(text="Hello."))
    unkept = await sdk.responses.create(model=MODEL, input="Remember nothing.", store=False)
    other = await sdk.with_options(default_headers={"X-Ctxgate-Project": "elsewhere"}).responses.create(
        model=MODEL, input="Hello.")
    asked = len(gateway.upstream.received)
    for response_id in (unkept.id, "resp_unknown", other.id):  # another project's, on either transport
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.delete(response_id)
    assert len(gateway.upstream.received) == asked  # nothing asked of the provider
    async with aiohttp.ClientSession() as session:
        for path in ("..%2Fchat%2Fcompletions", "resp_1/input_items?limit=0", "resp_1/input_items?after=..%2Fx"):
            answer = await session.get(gateway.url + "/v1/responses/" + path)
            assert answer.status in (400, 404) and (await answer.json())["error"]["message"], path


NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
    {"type": "function", "name": "list_agents", "parameters": {"type": "object", "properties": {}}},
    {"type": "function", "name": "delete_agent", "parameters": {"type": "object", "properties": {}}},
]}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Applies a patch."}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_nested_and_custom_tools_are_screened_and_decided_by_their_own_names(
    gateway: Gateway, transport: str, stream: bool
) -> None:
    patch = "*** Begin Patch\n*** End Patch"
    if transport == "native":
        calls = (ToolCall("list_agents", "{}", id="call_list", namespace="multi_agent_v1"),
                 ToolCall("delete_agent", "{}", id="call_delete", namespace="multi_agent_v1"),
                 ToolCall("apply_patch", patch, id="call_patch", type="custom"))
    else:  # a chat provider sees litellm's functions: nested names qualified, the custom tool's input an argument
        calls = (ToolCall("multi_agent_v1__list_agents", "{}", id="call_list"),
                 ToolCall("multi_agent_v1__delete_agent", "{}", id="call_delete"),
                 ToolCall("apply_patch", orjson.dumps({"input": patch}).decode(), id="call_patch"))
    gateway.upstream.push(Reply(fragment=4, tool_calls=calls))
    asked = gateway.client().responses.create(model=MODEL, input="Tidy up", tools=[NAMESPACE, PATCH], stream=stream)
    response = (await collect(await asked))[1] if stream else await asked
    offered = sent_to_provider(gateway)["tools"]
    if transport == "native":
        assert offered == [{**NAMESPACE, "tools": NAMESPACE["tools"][:1]}, PATCH]  # the blocked one taken out of it
    else:
        assert [tool["function"]["name"] for tool in offered] == ["multi_agent_v1__list_agents", "apply_patch"]
    calls = [(item.type, item.name) for item in response.output if item.type != "message"]
    assert calls == [("function_call", "list_agents"), ("custom_tool_call", "apply_patch")]
    assert response.output[1].type == "message" and "delete_agent" in response.output[1].content[0].text
    [record] = await gateway.recorded()
    # On translate, litellm names a call back only for a tool it was given: the blocked one keeps its chat name.
    refused = "delete_agent" if transport == "native" else "multi_agent_v1__delete_agent"
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [
        ("list_agents", "allow"), (refused, "deny"), ("apply_patch", "allow")]
