"""Anthropic messages as a person reads them."""

from __future__ import annotations

from typing import Any

from proxy.pipeline.dialect import Turn, text_of_any, text_of_parts


def transcript(prompt: Any, reply: Any = None) -> list[Turn]:
    if not isinstance(prompt, dict):
        return []
    system = text_of_parts(prompt.get("system"))
    turns = [Turn("system", system)] if system else []
    messages = prompt.get("messages")
    for message in [*(messages if isinstance(messages, list) else []), reply]:
        if isinstance(message, dict):
            role = message.get("role")
            turns += _turns(role if isinstance(role, str) else "assistant", message.get("content"))
    return turns


def _turns(role: str, content: Any) -> list[Turn]:
    if isinstance(content, str):
        return [Turn(role, content)] if content else []
    turns = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            turns.append(Turn(role, block["text"]))
        elif kind in ("tool_use", "server_tool_use"):
            turns.append(Turn(role, f"{block.get('name')}({text_of_any(block.get('input', {}))})"))
        elif kind == "tool_result":
            result = block.get("content")
            turns.append(Turn("tool", text_of_parts(result) if isinstance(result, list) else text_of_any(result or "")))
    return turns
