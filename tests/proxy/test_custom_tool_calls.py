"""Custom tools' calls (`{"type": "custom", "custom": {"name", "input"}}`) in replies: decided
by the policy as function calls are, and sent on in their own shape, streamed and not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capture.sqlite import SQLiteStore
from policy.rules import parse_policy
from proxy.pipeline.approvals import ApprovalBook
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.dialects.openai_chat.gate import StreamToolGate, enforce_completion
from proxy.pipeline.tool_guard import ToolGuard
from tests.conftest import MODEL, Gateway, make_gateway

POLICY = {
    "default": {
        "mode": "deny",
        "allowed_tools": ["shell", "apply_patch", "file_read"],
        "blocked_tools": ["wipe_*"],
        "argument_rules": [{"tool": "apply_patch", "argument": "path", "matches": "/etc/*", "action": "deny"}],
    },
}


def recorded(guard: ToolGuard) -> list[dict[str, Any]]:
    """The guard's decisions as the record keeps them."""
    return [decision.as_record() for decision in guard.decisions]


def custom(name: str) -> dict[str, Any]:
    return {"type": "custom", "custom": {"name": name, "description": f"{name}, in free text"}}


def function(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOLS = [custom("shell"), custom("apply_patch"), custom("wipe_disk"), function("file_read")]
SHELL = ToolCall("shell", "ls -la /srv/app && cat README.md", id="call_shell", type="custom")
WIPE = ToolCall("wipe_disk", "/dev/sda --force", id="call_wipe", type="custom")
READ = ToolCall("file_read", '{"path": "README.md"}', id="call_read")
PATCH = "*** Begin Patch\n*** Update File: /etc/hosts\n+10.0.0.1 db\n*** End Patch"


@pytest.fixture
async def guarded(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY))


async def ask(gateway: Gateway, *, stream: bool) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(tool calls, text, finish_reason) of one call through the openai SDK. Streamed, the
    calls are gathered from the SDK-parsed deltas: the SDK's own stream accumulator
    (`ChatCompletionStreamState`) knows only function calls."""
    options: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "do it"}], "tools": TOOLS}
    client = gateway.client()
    if not stream:
        completion = await client.chat.completions.create(**options)
        choice = completion.choices[0]
        return [c.to_dict() for c in choice.message.tool_calls or []], choice.message.content, choice.finish_reason
    calls: list[dict[str, Any]] = []
    text, finish = "", None
    async for chunk in await client.chat.completions.create(**options, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += [c.to_dict() for c in choice.delta.tool_calls or []]
            finish = choice.finish_reason or finish
    return calls, text or None, finish


def sent(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    """The call as the client should get it: whole, in its shape (streamed: with its index)."""
    key = "input" if call.type == "custom" else "arguments"
    wire = {"id": call.id, "type": call.type, call.type: {"name": call.name, key: call.arguments}}
    return wire if index is None else {"index": index, **wire}


@pytest.mark.parametrize("stream", [False, True])
async def test_an_allowed_custom_call_reaches_the_client_intact(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(SHELL,), fragment=4))
    calls, _, finish = await ask(guarded, stream=stream)
    assert calls == [sent(SHELL, 0 if stream else None)]
    assert finish == "tool_calls"
    [stored] = await guarded.recorded()
    [decision] = stored.tool_decisions
    assert (decision["tool"], decision["action"], decision["rule"], decision["arguments"]) == (
        "shell", "allow", "allowed_tools[0]", SHELL.arguments)
    assert stored.response["tool_calls"] == [sent(SHELL)]  # recorded in its shape, as the client got it


@pytest.mark.parametrize("stream", [False, True])
async def test_a_blocked_custom_call_is_refused_with_the_reason(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(WIPE,), fragment=2))
    calls, text, finish = await ask(guarded, stream=stream)
    assert calls == [] and finish == "stop"
    assert text == "ctxgate refused the call to 'wipe_disk': tool 'wipe_disk' is blocked by 'wipe_*' (blocked_tools[0])."
    [stored] = await guarded.recorded()
    [decision] = stored.tool_decisions
    assert (decision["tool"], decision["action"], decision["rule"], decision["decided_by"], decision["arguments"]) == (
        "wipe_disk", "deny", "blocked_tools[0]", "policy", WIPE.arguments)
    assert stored.response["content"] == text and "tool_calls" not in stored.response


@pytest.mark.parametrize("stream", [False, True])
async def test_custom_and_function_calls_are_decided_together_and_keep_their_shapes(
    guarded: Gateway, stream: bool
) -> None:
    guarded.upstream.push(Reply(text="On it.", tool_calls=(WIPE, SHELL, READ), fragment=3))
    calls, text, finish = await ask(guarded, stream=stream)
    if stream:  # sent whole, renumbered past the refused one
        assert calls == [sent(SHELL, 0), sent(READ, 1)]
    else:
        assert calls == [sent(SHELL), sent(READ)]
    assert (text, finish) == ("On it.", "tool_calls")
    [stored] = await guarded.recorded()
    assert [(d["tool"], d["action"]) for d in stored.tool_decisions] == [
        ("wipe_disk", "deny"), ("shell", "allow"), ("file_read", "allow")]
    assert stored.response["tool_calls"] == [sent(SHELL), sent(READ)]


async def test_no_fragment_of_a_refused_custom_call_is_streamed(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(SHELL, WIPE), fragment=1))
    raw = await _raw_stream(guarded)
    assert "--force" not in raw and "/dev/sda" not in raw
    assert raw.count('"input"') == 1  # the allowed call, once, whole


@pytest.mark.parametrize(("text", "action"), [
    (PATCH, "deny"),                               # free text: the rule cannot be checked, so it denies
    ("cat /etc/passwd", "deny"),
    ('{"path": "/etc/hosts"}', "deny"),            # an input that is a JSON object is read as one
    ('{"path": "/tmp/a", "path": "/etc/hosts"}', "deny"),
    ('{"path": "src/app.py"}', "allow"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_argument_rules_on_a_custom_tool_fail_closed_on_free_text(
    guarded: Gateway, text: str, action: str, stream: bool
) -> None:
    call = ToolCall("apply_patch", text, id="call_patch", type="custom")
    guarded.upstream.push(Reply(tool_calls=(call,), fragment=7))
    calls, content, _ = await ask(guarded, stream=stream)
    [stored] = await guarded.recorded()
    [decision] = stored.tool_decisions
    assert (decision["action"], decision["arguments"]) == (action, text)
    if action == "allow":
        assert calls == [sent(call, 0 if stream else None)]
    else:
        assert calls == [] and decision["rule"] == "argument_rules[0]" and "argument_rules[0]" in (content or "")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_custom_call_to_an_undeclared_tool_is_refused(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(ToolCall("Shell", "ls", id="c1", type="custom"),)))
    calls, _, finish = await ask(guarded, stream=stream)
    assert calls == [] and finish == "stop"
    [stored] = await guarded.recorded()
    assert stored.tool_decisions[0]["rule"] == "undeclared"


async def _raw_stream(gateway: Gateway) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "stream": True})
        return (await response.read()).decode()


# What cannot be read is refused: a call with no name in either shape, or in both, or whose
# parts have the wrong type. Decided here on the gate itself, since no provider sends these
# on purpose; the request declared tools named "None" and "", and the policy allows any tool.
ALLOW_ALL = {"default": {"mode": "allow"}}

UNREADABLE = {
    "no name": {"id": "c", "type": "custom", "custom": {"input": "rm -rf /"}},
    "name null": {"id": "c", "type": "custom", "custom": {"name": None, "input": "rm -rf /"}},
    "empty name": {"id": "c", "type": "custom", "custom": {"name": "", "input": "rm -rf /"}},
    "no holder": {"id": "c", "type": "custom", "name": "shell", "input": "rm -rf /"},
    "two shapes": {"id": "c", "type": "function", "function": {"name": "file_read", "arguments": "{}"},
                   "custom": {"name": "shell", "input": "rm -rf /"}},
    "type of the other shape": {"id": "c", "type": "function", "custom": {"name": "shell", "input": "rm -rf /"}},
    "unknown type": {"id": "c", "type": "mcp", "custom": {"name": "shell", "input": "rm -rf /"}},
    "holder not an object": {"id": "c", "type": "custom", "custom": "shell"},
    "name not a string": {"id": "c", "type": "custom", "custom": {"name": ["shell"], "input": "rm -rf /"}},
    "input not a string": {"id": "c", "type": "custom", "custom": {"name": "shell", "input": {"cmd": "rm -rf /"}}},
    "not an object": "shell",
}



def guard_for(store: SQLiteStore, *, enforcing: bool = True) -> ToolGuard:
    policies = parse_policy(ALLOW_ALL if enforcing else None)
    return ToolGuard(policies=policies, book=ApprovalBook(store), store=store, project="p", session_id=None,
                     interaction_id="i", declared=frozenset({"shell", "file_read", "None", ""}))


def reply_with(*calls: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}


def chunk(*deltas: Any, finish: str | None = None) -> dict[str, Any]:
    delta = {"tool_calls": list(deltas)} if deltas else {}
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def run_gate(gate: StreamToolGate, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in chunks:
        out += await gate.feed(c)
    return out + await gate.finish()


def gate_for(guard: ToolGuard) -> StreamToolGate:
    async def keepalive() -> None:
        return None

    return StreamToolGate(guard, keepalive=keepalive, is_client_gone=lambda: False)


@pytest.mark.parametrize("call", UNREADABLE.values(), ids=UNREADABLE)
async def test_an_unreadable_call_is_refused_whatever_was_declared(store: SQLiteStore, call: Any) -> None:
    guard = guard_for(store)
    completion = await enforce_completion(reply_with(call), guard)
    [choice] = completion["choices"]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert "unreadable_call" in choice["message"]["content"]
    [decision] = recorded(guard)
    assert (decision["action"], decision["rule"], decision["decided_by"]) == ("deny", "unreadable_call", "policy")


@pytest.mark.parametrize("call", UNREADABLE.values(), ids=UNREADABLE)
async def test_an_unreadable_streamed_call_is_refused_and_never_sent(store: SQLiteStore, call: Any) -> None:
    guard = guard_for(store)
    delta = {"index": 0, **call} if isinstance(call, dict) else call
    out = await run_gate(gate_for(guard), [chunk(delta), chunk(finish="tool_calls")])
    assert "rm -rf" not in json.dumps(out)
    assert all("tool_calls" not in ch["delta"] for c in out for ch in c["choices"])
    assert [ch["finish_reason"] for c in out for ch in c["choices"] if ch["finish_reason"]] == ["stop"]
    assert [(d["action"], d["rule"]) for d in recorded(guard)] == [("deny", "unreadable_call")]


async def test_a_custom_call_split_as_litellm_streams_it_is_sent_whole(store: SQLiteStore) -> None:
    # litellm 1.106 passes custom deltas through as they came: the first with id, type and
    # name, the rest with only `custom.input`; function deltas each get `"type": "function"`.
    guard = guard_for(store)
    out = await run_gate(gate_for(guard), [
        chunk({"index": 0, "id": "c1", "type": "custom", "custom": {"name": "shell", "input": ""}}),
        chunk({"index": 1, "id": "c2", "type": "function", "function": {"name": "file_read", "arguments": ""}}),
        chunk({"index": 0, "custom": {"input": "ls -la"}}),
        chunk({"index": 1, "type": "function", "function": {"arguments": "{}"}}),
        chunk({"index": 0, "custom": {"input": " /srv"}}),
        chunk(finish="tool_calls"),
    ])
    assert [d for c in out for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])] == [
        {"index": 0, "id": "c1", "type": "custom", "custom": {"name": "shell", "input": "ls -la /srv"}},
        {"index": 1, "id": "c2", "type": "function", "function": {"name": "file_read", "arguments": "{}"}},
    ]
    assert [(d["tool"], d["arguments"], d["action"]) for d in recorded(guard)] == [
        ("shell", "ls -la /srv", "allow"), ("file_read", "{}", "allow")]


async def test_an_empty_holder_beside_a_custom_call_does_not_make_it_two_shapes(store: SQLiteStore) -> None:
    # Some adapters fill in `"function": {"arguments": ""}` on every call; it gives nothing to act on.
    guard = guard_for(store)
    call = {"id": "c", "type": "custom", "custom": {"name": "shell", "input": "ls"}, "function": {"arguments": ""}}
    completion = await enforce_completion(reply_with(call), guard)
    assert completion["choices"][0]["message"]["tool_calls"] == [call]
    assert recorded(guard)[0]["action"] == "allow"


async def test_observe_only_records_an_unreadable_call_and_passes_it(store: SQLiteStore) -> None:
    guard = guard_for(store, enforcing=False)
    call = UNREADABLE["two shapes"]
    completion = await enforce_completion(reply_with(call), guard)
    assert completion["choices"][0]["message"]["tool_calls"] == [call]
    out = await run_gate(gate_for(guard), [chunk({"index": 0, **call}), chunk(finish="tool_calls")])
    [streamed] = [d for c in out for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert streamed == {"index": 0, **call}  # in every shape it gave, as it gave them
    assert [(d["decided_by"], d["policy_action"], d["rule"]) for d in recorded(guard)] == [
        ("observe_only", "deny", "unreadable_call")] * 2
