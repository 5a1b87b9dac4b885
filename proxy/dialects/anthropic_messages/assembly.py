"""Rebuilds an Anthropic message from its stream events, as the SDK accumulates them, and reads
a message's usage and generated text."""

from __future__ import annotations

import json
from typing import Any

from proxy.pipeline.dialect import Usage

# Where each kind of delta puts its text in its block.
_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class MessageAssembler:
    """Feed every event to `add`; `message()` is the reply so far (partial on a cut)."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._blocks: dict[Any, dict[str, Any]] = {}
        self._texts: dict[Any, list[str]] = {}
        self._usage: dict[str, Any] = {}
        self._stop: dict[str, Any] = {}

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                key = _DELTA_TEXT.get(str(delta.get("type")))
                if key is not None and isinstance(delta.get(key), str):
                    self._texts.setdefault(event.get("index"), []).append(delta[key])
                elif delta.get("type") == "signature_delta" and event.get("index") in self._blocks:
                    self._blocks[event.get("index")]["signature"] = delta.get("signature")
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self._blocks[event.get("index")] = dict(event["content_block"])
        elif kind == "message_start" and isinstance(event.get("message"), dict):
            self._head = event["message"]
            if isinstance(self._head.get("usage"), dict):
                self._usage.update(self._head["usage"])
        elif kind == "message_delta":
            if isinstance(event.get("delta"), dict):
                self._stop.update(event["delta"])
            if isinstance(event.get("usage"), dict):
                self._usage.update({k: v for k, v in event["usage"].items() if v is not None})

    def message(self) -> dict[str, Any] | None:
        if not self._head and not self._blocks:
            return None
        content = [self._block(index, block) for index, block in self._blocks.items()]
        return {"role": "assistant", "content": content, "stop_reason": self._stop.get("stop_reason")}

    @property
    def usage(self) -> dict[str, Any]:
        return self._usage

    def _block(self, index: Any, block: dict[str, Any]) -> dict[str, Any]:
        text = "".join(self._texts.get(index, ()))
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):
            if text:
                try:
                    block["input"] = json.loads(text)
                except ValueError:  # cut short: kept as it came
                    block["input"] = text
        elif kind == "thinking":
            block["thinking"] = block.get("thinking", "") + text
        elif kind == "text":
            block["text"] = block.get("text", "") + text
        return block


def recorded_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """A whole message as records keep it: the assistant's blocks and why it stopped."""
    return {"role": reply.get("role", "assistant"), "content": reply.get("content"),
            "stop_reason": reply.get("stop_reason")}


def usage_of(usage: Any) -> Usage:
    """Anthropic counts the prompt in three parts (uncached, written to the cache, read from
    it); the record's prompt tokens are their sum, as OpenAI's include cached tokens."""
    if not isinstance(usage, dict):
        return Usage()
    parts = [usage.get(key) for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    counted = [part for part in parts if type(part) is int]
    prompt = sum(counted) if type(parts[0]) is int else None
    return Usage.of(prompt, usage.get("output_tokens"), cache_read=usage.get("cache_read_input_tokens"),
                    cache_creation=usage.get("cache_creation_input_tokens"))


def completion_text(reply: Any) -> str:
    """The generated text, thinking, and tool names and inputs of a recorded reply."""
    if not isinstance(reply, dict) or not isinstance(reply.get("content"), list):
        return ""
    pieces: list[str] = []
    for block in reply["content"]:
        if not isinstance(block, dict):
            continue
        for key in ("text", "thinking", "name"):
            if isinstance(block.get(key), str):
                pieces.append(block[key])
        if "input" in block:
            pieces.append(block["input"] if isinstance(block["input"], str) else json.dumps(block["input"]))
    return "".join(pieces)
