"""The streamed tool gate against odd but real chunk shapes, chunk by chunk."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capture.sqlite import SQLiteStore
from policy.rules import parse_policy
from proxy.pipeline.approvals import ApprovalBook
from proxy.dialects.openai_chat.gate import StreamToolGate
from proxy.pipeline.tool_guard import ToolGuard
from proxy.edge.errors import UpstreamError

SECRET_ARGS = '{"stack": "prod", "really": true}'


def recorded(guard: ToolGuard) -> list[dict[str, Any]]:
    """The guard's decisions as the record keeps them."""
    return [decision.as_record() for decision in guard.decisions]



def gate_for(store: SQLiteStore, enforcing: bool = True) -> StreamToolGate:
    policies = parse_policy({"default": {"mode": "allow", "blocked_tools": ["destroy"]}})
    if not enforcing:
        policies = parse_policy(None)
    guard = ToolGuard(policies=policies, book=ApprovalBook(store), store=store, project="p", session_id=None,
                      interaction_id="i", declared=frozenset({"read", "write", "destroy"}))

    async def keepalive() -> None:
        return None

    return StreamToolGate(guard, keepalive=keepalive, is_client_gone=lambda: False)


def chunk(*deltas: dict[str, Any], finish: str | None = None, choice: int = 0) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": choice, "delta": delta, "finish_reason": finish} for delta in deltas] or
                       [{"index": choice, "delta": {}, "finish_reason": finish}]}


def call(index: int | None, *, id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    delta: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        delta["index"] = index
    if id:
        delta.update(id=id, type="function")
    if name:
        delta["function"]["name"] = name
    return {"tool_calls": [delta]}


async def run(gate: StreamToolGate, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in chunks:
        out += await gate.feed(c)
    return out + await gate.finish()


def sent_calls(out: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(d["index"], d["function"]["name"], d["function"]["arguments"])
            for c in out for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]


def finishes(out: list[dict[str, Any]]) -> list[str]:
    return [ch["finish_reason"] for c in out for ch in c["choices"] if ch["finish_reason"]]


async def test_interleaved_parallel_calls_are_sent_whole(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk(call(0, id="a", name="read", args='{"pa')),
        chunk(call(1, id="b", name="write", args='{"x":')),
        chunk(call(0, args='th": "/x"}')),
        chunk(call(1, args=' 1}')),
        chunk(finish="tool_calls"),
    ])
    assert sent_calls(out) == [(0, "read", '{"path": "/x"}'), (1, "write", '{"x": 1}')]
    assert finishes(out) == ["tool_calls"]


async def test_deltas_without_index_split_on_a_new_id(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk(call(None, id="a", name="read", args="{}")),
        chunk(call(None, id="b", name="read", args='{"n": 2}')),
        chunk(finish="tool_calls"),
    ])
    assert sent_calls(out) == [(0, "read", "{}"), (1, "read", '{"n": 2}')]


async def test_a_name_repeated_in_every_delta_is_not_doubled(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk(call(0, id="a", name="read", args='{"a"')),
        chunk(call(0, name="read", args=": 1}")),
        chunk(finish="tool_calls"),
    ])
    assert sent_calls(out) == [(0, "read", '{"a": 1}')]


async def test_blocked_call_beside_an_allowed_one_leaves_no_fragment(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk({"role": "assistant", "content": ""}),
        chunk(call(0, id="bad", name="destroy", args=SECRET_ARGS[:9])),
        chunk(call(0, args=SECRET_ARGS[9:])),
        chunk(call(1, id="ok", name="read", args="{}")),
        chunk(finish="tool_calls"),
    ])
    assert sent_calls(out) == [(0, "read", "{}")]
    assert "prod" not in json.dumps(out) and "destroy" not in json.dumps(out)


async def test_a_stream_in_which_no_choice_finished_was_cut_and_releases_nothing(store: SQLiteStore) -> None:
    gate = gate_for(store)
    out = await gate.feed(chunk(call(0, id="ok", name="read", args='{"pa')))
    with pytest.raises(UpstreamError, match="ended before its answer was finished"):
        await gate.finish()
    assert sent_calls(out) == [] and gate.guard.decisions == []  # a cut call's arguments may be incomplete


async def test_a_choice_left_unfinished_beside_a_finished_one_is_decided_and_finished(store: SQLiteStore) -> None:
    """litellm drops the finish_reason of every streamed choice past the first."""
    out = await run(gate_for(store), [
        chunk(call(0, id="a", name="read", args="{}"), choice=0),
        chunk(call(0, id="b", name="destroy", args="{}"), choice=1),
        chunk(finish="tool_calls", choice=0),
    ])
    by_choice = {ch["index"]: ch["finish_reason"] for c in out for ch in c["choices"] if ch["finish_reason"]}
    assert by_choice == {0: "tool_calls", 1: "stop"}
    assert "destroy" in "".join(ch["delta"].get("content") or "" for c in out for ch in c["choices"] if ch["index"] == 1)


async def test_each_choice_is_decided_on_its_own(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk(call(0, id="a", name="destroy", args="{}"), choice=0),
        chunk(call(0, id="b", name="read", args="{}"), choice=1),
        chunk(finish="tool_calls", choice=0),
        chunk(finish="tool_calls", choice=1),
    ])
    by_choice = {ch["index"]: ch for c in out for ch in c["choices"] if ch["finish_reason"]}
    assert (by_choice[0]["finish_reason"], by_choice[1]["finish_reason"]) == ("stop", "tool_calls")
    assert [c["choices"][0]["index"] for c in out if sent_calls([c])] == [1]


async def test_a_legacy_function_call_is_refused(store: SQLiteStore) -> None:
    out = await run(gate_for(store), [
        chunk({"function_call": {"name": "read", "arguments": "{}"}}),
        chunk(finish="function_call"),
    ])
    assert "function_call" not in json.dumps(out)
    assert finishes(out) == ["stop"]


async def test_text_is_not_held(store: SQLiteStore) -> None:
    gate = gate_for(store)
    assert (await gate.feed(chunk({"content": "Hel"})))[0]["choices"][0]["delta"] == {"content": "Hel"}
    assert await gate.feed(chunk(call(0, id="a", name="read", args="{"))) == []  # held, nothing to say yet


async def test_observe_only_passes_everything(store: SQLiteStore) -> None:
    gate = gate_for(store, enforcing=False)
    out = await run(gate, [chunk(call(0, id="a", name="destroy", args="{}")), chunk(finish="tool_calls")])
    assert sent_calls(out) == [(0, "destroy", "{}")]
    assert recorded(gate.guard)[0]["decided_by"] == "observe_only"
