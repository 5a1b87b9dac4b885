"""Chat messages as a person reads them."""

from __future__ import annotations

from typing import Any

from proxy.dialects.openai_chat.assembly import TOOL_CALL_SHAPES
from proxy.pipeline.dialect import Turn, role_of, text_of_any, text_of_parts


def transcript(prompt: Any, reply: Any = None) -> list[Turn]:
    messages = prompt if isinstance(prompt, list) else []
    replies = reply if isinstance(reply, list) else [reply] if isinstance(reply, dict) else []
    return [turn for message in [*messages, *replies] if isinstance(message, dict) for turn in _turns(message)]


def _turns(message: dict[str, Any]) -> list[Turn]:
    role = role_of(message)
    turns = []
    text = text_of_parts(message.get("content"))
    if text:
        turns.append(Turn("system" if role == "developer" else role, text))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        for shape, text_key in TOOL_CALL_SHAPES.items():
            holder = call.get(shape) if isinstance(call, dict) else None
            if isinstance(holder, dict):
                turns.append(Turn("assistant", f"{holder.get('name')}({text_of_any(holder.get(text_key, ''))})"))
    return turns
