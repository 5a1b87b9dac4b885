"""Rebuilds a response from its stream events for the record, and reads a response's usage and
generated text."""

from __future__ import annotations

from typing import Any

from proxy.dialects.openai_responses.gate import TERMINAL
from proxy.pipeline.dialect import Usage


class ResponseAssembler:
    """Feed every event sent to the client to `add`; `response()` is the reply so far: the
    final response when the stream ended, else the items finished and those begun (a begun
    message with the text streamed so far)."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._items: dict[Any, dict[str, Any]] = {}
        self._texts: dict[Any, list[str]] = {}
        self._final: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._texts.setdefault(event.get("output_index"), []).append(event["delta"])
        elif kind in ("response.output_item.added", "response.output_item.done") and isinstance(event.get("item"), dict):
            self._items[event.get("output_index")] = event["item"]
            if kind == "response.output_item.done":
                self._texts.pop(event.get("output_index"), None)
        elif kind in TERMINAL and isinstance(event.get("response"), dict):
            self._final = event["response"]
        elif kind in ("response.created", "response.in_progress") and isinstance(event.get("response"), dict):
            self._head = event["response"]

    def response(self) -> dict[str, Any] | None:
        if self._final is not None:
            return recorded_reply(self._final)
        if not self._head and not self._items:
            return None
        output = [self._begun(index, item) for index, item in self._items.items()]
        return {"id": self._head.get("id"), "status": "incomplete", "output": output}

    @property
    def usage(self) -> Any:
        return self._final.get("usage") if self._final is not None else None

    def _begun(self, index: Any, item: dict[str, Any]) -> dict[str, Any]:
        text = "".join(self._texts.get(index, ()))
        if text and item.get("type") == "message":
            return {**item, "content": [{"type": "output_text", "text": text}]}
        return item


def recorded_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """A response as records keep it: its id and status, the output items, and why it stopped
    short or failed when it did."""
    kept = {"id": reply.get("id"), "status": reply.get("status"), "output": reply.get("output")}
    for key in ("incomplete_details", "error"):
        if reply.get(key):
            kept[key] = reply[key]
    return kept


def usage_of(usage: Any) -> Usage:
    """The Responses API's usage: input and output tokens, and the input read from the cache."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("input_tokens_details")
    return Usage.of(usage.get("input_tokens"), usage.get("output_tokens"),
                    cache_read=details.get("cached_tokens") if isinstance(details, dict) else None)


def completion_text(reply: Any) -> str:
    """The generated text, reasoning summaries, and call names and arguments of a recorded reply."""
    if not isinstance(reply, dict) or not isinstance(reply.get("output"), list):
        return ""
    pieces: list[str] = []
    for item in reply["output"]:
        if not isinstance(item, dict):
            continue
        for key in ("name", "arguments", "input"):
            if isinstance(item.get(key), str):
                pieces.append(item[key])
        for part in [*_list(item.get("content")), *_list(item.get("summary"))]:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
    return "".join(pieces)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
