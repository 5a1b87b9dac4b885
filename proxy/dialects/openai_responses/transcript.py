"""Responses API input and output items as a person reads them."""

from __future__ import annotations

from typing import Any

from proxy.pipeline.dialect import Turn, text_of_any


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
        role = _role(item)
        text = _text(item.get("content"))
        return [Turn("system" if role == "developer" else role, text)] if text else []
    if kind in ("function_call", "custom_tool_call"):
        return [Turn("assistant", f"{item.get('name')}({text_of_any(item.get('arguments', item.get('input', '')))})")]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return [Turn("tool", text_of_any(item.get("output", "")))]
    return []


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _role(message: dict[str, Any]) -> str:
    role = message.get("role")
    return role if isinstance(role, str) else "assistant"
