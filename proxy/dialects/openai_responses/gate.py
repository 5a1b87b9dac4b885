"""The tool gate on Responses API replies: every output item the client would run (function,
custom, shell, patch and computer calls) decided by the guard, in a whole response and in a
stream. A refused item becomes, at the same place, a message item that says why: never a
failure, which would end an agent's run (Codex exits on `response.failed`). Reasoning items,
their encrypted content included, pass as they came."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.dialects.openai_responses.tools import call_of, is_client_call
from proxy.edge.errors import UpstreamError
from proxy.pipeline.tool_guard import Keepalive, ToolGuard

# The events that end a response, each carrying it whole.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# The events of a call item between its added and done events.
_CALL_EVENTS = ("response.function_call_arguments.", "response.custom_tool_call_input.")


async def enforce_response(reply: dict[str, Any], guard: ToolGuard,
                           is_client_gone: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """A whole response with each call item decided; refused ones replaced in place."""
    output = reply.get("output")
    if not isinstance(output, list):
        return reply
    for index, item in enumerate(output):
        if is_client_call(item) and not await _decide(guard, item, is_client_gone=is_client_gone):
            output[index] = refusal_item(guard.decisions[-1].refusal())
    return reply


async def _decide(guard: ToolGuard, item: dict[str, Any], *, keepalive: Keepalive | None = None,
                  is_client_gone: Callable[[], bool]) -> bool:
    call_id, name, arguments = call_of(item, guard.declared)
    call_id = call_id if isinstance(call_id, str) else None
    if not isinstance(name, str) or not name:
        return guard.refuse_unreadable(call_id, str(name or ""), arguments, "gives no name")
    return await guard.decide(call_id, name, arguments, keepalive=keepalive, is_client_gone=is_client_gone)


def refusal_item(text: str) -> dict[str, Any]:
    return {"id": f"msg_ctxgate_{uuid.uuid4().hex}", "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}


@dataclass(slots=True)
class _HeldItem:
    output_index: Any
    events: list[dict[str, Any]] = field(default_factory=list)  # from output_item.added on


class ResponsesStreamGate:
    """Stream events in, events for the client out. Everything passes at once but a call item,
    which is held from its first event to its `output_item.done`, decided on the whole item,
    and then sent as it came or replaced by a message item. Calls may overlap (litellm's
    translation streams several at once), so each is held by its output index (else its id).
    The final response lists every item again: each call in it becomes what the stream gave
    (the item decided, or its replacement), and one the stream never gave is refused."""

    def __init__(self, guard: ToolGuard, keepalive: Keepalive, is_client_gone: Callable[[], bool]) -> None:
        self.guard = guard
        self.keepalive = keepalive
        self.is_client_gone = is_client_gone
        self._held: dict[Any, _HeldItem] = {}  # by output index, else item id
        self._settled: dict[Any, dict[str, Any]] = {}  # a decided call's id and ("index", n) -> the item sent
        self.is_ended = False  # the provider sent the response whole

    def passes_intact(self, event: dict[str, Any]) -> bool:
        """True for an event `feed` would send on as it came, so its bytes can be relayed untouched."""
        kind = event.get("type")
        if kind in TERMINAL:
            return False  # its output is checked against what was decided
        return not self._holds(event)

    async def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if self._holds(event):
            key = _key(event)
            if key is None:  # a call's event that says not which call: never released
                return []
            held = self._held.setdefault(key, _HeldItem(event.get("output_index")))
            held.events.append(event)
            if kind != "response.output_item.done":
                return []
            del self._held[key]
            return await self._settle(held, event)
        if kind in TERMINAL:
            self.is_ended = True
            for held in self._held.values():  # the provider ended without finishing them: not released
                self._refuse_unfinished(held, "was never finished by the provider")
            self._held.clear()
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("output"), list):
                response["output"] = [self._as_sent(index, item) for index, item in enumerate(response["output"])]
        return [event]

    def finish(self) -> None:
        """At the end of the upstream stream: one that never gave the response whole was cut
        short, and an item still held may be incomplete, so it is never released."""
        if not self.is_ended:
            raise UpstreamError("the provider's stream ended before its answer was finished",
                                status=502, code="upstream_stream_cut")

    def _holds(self, event: dict[str, Any]) -> bool:
        """The event belongs to a call item: one held already, or one it begins or finishes."""
        if self._held and _key(event) in self._held:
            return True
        kind = event.get("type")
        if kind in ("response.output_item.added", "response.output_item.done"):
            return is_client_call(event.get("item"))
        return isinstance(kind, str) and kind.startswith(_CALL_EVENTS)

    def _as_sent(self, index: int, item: Any) -> Any:
        """An item of the final response as the stream gave it: a call as decided (or its
        replacement); a call the stream never gave is refused."""
        if not is_client_call(item):
            return item
        sent = self._settled.get(item.get("id")) or self._settled.get(("index", index))
        if sent is not None:
            return sent
        held = _HeldItem(index, [{"item": item}])
        return self._refuse_unfinished(held, "came only in the final response, never streamed")

    def _refuse_unfinished(self, held: _HeldItem, why: str) -> dict[str, Any]:
        item: dict[str, Any] = next((e["item"] for e in held.events if isinstance(e.get("item"), dict)), {})
        call_id, name, arguments = call_of(item, self.guard.declared)
        self.guard.refuse_unreadable(call_id if isinstance(call_id, str) else None, str(name or ""), arguments, why)
        return self._settle_as(held, item, refusal_item(self.guard.decisions[-1].refusal()))

    async def _settle(self, held: _HeldItem, done: dict[str, Any]) -> list[dict[str, Any]]:
        item = done.get("item")
        assert isinstance(item, dict)  # _holds took it for a call item
        if await _decide(self.guard, item, keepalive=self.keepalive, is_client_gone=self.is_client_gone):
            self._settle_as(held, item, item)
            return held.events
        message = self._settle_as(held, item, refusal_item(self.guard.decisions[-1].refusal()))
        return message_events(message, held.output_index)

    def _settle_as(self, held: _HeldItem, item: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
        if held.output_index is not None:
            self._settled[("index", held.output_index)] = sent
        if isinstance(item.get("id"), str):
            self._settled[item["id"]] = sent
        return sent


def _key(event: dict[str, Any]) -> Any:
    """Which item an event is of: its output index, else its item's id."""
    index = event.get("output_index")
    if type(index) is int:
        return index
    item = event.get("item")
    item_id = event.get("item_id") or (item.get("id") if isinstance(item, dict) else None)
    return ("id", item_id) if isinstance(item_id, str) else None


def message_events(message: dict[str, Any], output_index: Any) -> list[dict[str, Any]]:
    """A one-part text message item as the Responses API streams one."""
    part = message["content"][0]
    where = {"item_id": message["id"], "output_index": output_index, "content_index": 0}
    return [
        {"type": "response.output_item.added", "output_index": output_index,
         "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": output_index, "item": message},
    ]
