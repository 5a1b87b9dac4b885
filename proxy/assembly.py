"""Rebuilds the assistant message(s) from streamed chunks, as the OpenAI SDK accumulates them."""

from __future__ import annotations

from typing import Any


class _ChoiceParts:
    __slots__ = ("role", "content", "refusal", "tool_calls", "finish_reason")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.content) if self.content else None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": call["type"],
                    "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
                }
                for _, call in sorted(self.tool_calls.items())
            ]
        return message


class StreamAssembler:
    """Feed every chunk to `add`; `message()` is the full response so far (partial on a cut)."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceParts] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        for choice in chunk.get("choices", ()):
            parts = self._choices.get(choice.get("index", 0))
            if parts is None:
                parts = self._choices[choice.get("index", 0)] = _ChoiceParts()
            delta = choice.get("delta") or {}
            if delta.get("role"):
                parts.role = delta["role"]
            if delta.get("content"):
                parts.content.append(delta["content"])
            if delta.get("refusal"):
                parts.refusal.append(delta["refusal"])
            for call_delta in delta.get("tool_calls") or ():
                _merge_tool_call(parts.tool_calls, call_delta)
            if choice.get("finish_reason"):
                parts.finish_reason = choice["finish_reason"]

    def message(self) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The assistant message; a list of them when the client asked for several choices."""
        if not self._choices:
            return None
        messages = [parts.message() for _, parts in sorted(self._choices.items())]
        return messages[0] if len(messages) == 1 else messages


def completion_text(response: Any) -> str:
    """The generated text and tool-call arguments of an assistant message (or list of them),
    which is what a provider counts as completion tokens."""
    messages = response if isinstance(response, list) else [response]
    pieces: list[str] = []
    for message in messages:
        if isinstance(message, dict):
            pieces.append(message.get("content") or "")
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                pieces.append(function.get("name") or "")
                pieces.append(function.get("arguments") or "")
    return "".join(pieces)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", 0)
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"id": None, "type": "function", "name": "", "arguments": []}
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["name"] += function["name"]
    if function.get("arguments"):
        call["arguments"].append(function["arguments"])
