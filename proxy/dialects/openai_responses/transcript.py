"""Responses API input and output items as a person reads them."""

from __future__ import annotations

from typing import Any

from proxy.pipeline.dialect import Turn, role_of, text_of_any, text_of_parts


def transcript(prompt: Any, reply: Any = None) -> list[Turn]:
    if not isinstance(prompt, dict):
        return []
    turns = [Turn("system", prompt["instructions"])] if isinstance(prompt.get("instructions"), str) \
        and prompt["instructions"] else []
    given = prompt.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given if isinstance(given, list) else []
    output = reply.get("output") if isinstance(reply, dict) else None
    for item in [*items, *(output if isinstance(output, list) else [])]:
        if isinstance(item, dict):
            turns += _turns(item)
    return turns


def _turns(item: dict[str, Any]) -> list[Turn]:
    kind = item.get("type", "message")
    if kind == "message":
        role = role_of(item)
        text = text_of_parts(item.get("content"))
        return [Turn("system" if role == "developer" else role, text)] if text else []
    if kind in ("function_call", "custom_tool_call"):
        return [Turn("assistant", f"{item.get('name')}({text_of_any(item.get('arguments', item.get('input', '')))})")]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return [Turn("tool", text_of_any(item.get("output", "")))]
    return []
