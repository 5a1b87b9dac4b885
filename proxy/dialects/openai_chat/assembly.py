"""Rebuilds the assistant message(s) from streamed chunks, as the OpenAI SDK accumulates them."""

from __future__ import annotations

from typing import Any

# Where a tool call in a reply holds its name, and the key of its text there:
# {"type": "function", "function": {"name", "arguments"}} (arguments as JSON text) and
# {"type": "custom", "custom": {"name", "input"}} (free text, for a custom tool).
TOOL_CALL_SHAPES = {"function": "arguments", "custom": "input"}


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
            message["tool_calls"] = [_tool_call(call) for _, call in sorted(self.tool_calls.items())]
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
    """The generated text and tool-call names and arguments (or custom input) of an assistant
    message (or list of them), which is what a provider counts as completion tokens."""
    messages = response if isinstance(response, list) else [response]
    pieces: list[str] = []
    for message in messages:
        if isinstance(message, dict):
            pieces.append(message.get("content") or "")
            for call in message.get("tool_calls") or ():
                for shape, text_key in TOOL_CALL_SHAPES.items():
                    holder = call.get(shape) if isinstance(call, dict) else None
                    if isinstance(holder, dict):
                        pieces += [text for text in (holder.get("name"), holder.get(text_key)) if isinstance(text, str)]
    return "".join(pieces)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """Each call kept in the shape(s) its deltas came in: a custom call stays custom."""
    index = delta.get("index", 0)
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"id": None, "type": None, "shapes": {}}
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    for shape, text_key in TOOL_CALL_SHAPES.items():
        holder = delta.get(shape)
        if not isinstance(holder, dict):
            continue
        parts = call["shapes"].setdefault(shape, {"name": "", "text": []})
        if isinstance(holder.get("name"), str):
            parts["name"] += holder["name"]
        if isinstance(holder.get(text_key), str):
            parts["text"].append(holder[text_key])


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    shapes = call["shapes"] or {"function": {"name": "", "text": []}}
    message: dict[str, Any] = {"id": call["id"], "type": call["type"] or next(iter(shapes))}
    for shape, parts in shapes.items():
        message[shape] = {"name": parts["name"], TOOL_CALL_SHAPES[shape]: "".join(parts["text"])}
    return message
