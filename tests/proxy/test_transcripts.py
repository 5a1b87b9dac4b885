"""Every dialect reads any recorded prompt and reply turn by turn without raising: records
posted through the capture API may hold any JSON, and the operator page shows them all."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.app import DIALECTS

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "system", "text", "tool_use", "tool_result", "function_call",
                       "function_call_output", "message", "content", "tool_calls", "function", "arguments"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "tool_calls", "function", "name", "arguments",
                         "input", "output", "messages", "system", "instructions", "id", "custom"]),
        inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(prompt=JSON, reply=JSON)
def test_any_recorded_prompt_and_reply_read_as_turns(prompt: Any, reply: Any) -> None:
    for dialect in DIALECTS.values():
        turns = dialect.transcript(prompt, reply)
        assert all(isinstance(turn.role, str) and isinstance(turn.text, str) for turn in turns)


def test_a_chat_turn_reads_as_a_person_would() -> None:
    chat = DIALECTS["openai_chat"]
    turns = chat.transcript(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{\"d\": 1}"}}]})
    assert [(t.role, t.text) for t in turns] == [("system", "be brief"), ("user", "hi"), ("assistant", 'ls({"d": 1})')]
