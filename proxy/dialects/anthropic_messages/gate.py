"""The tool gate on Anthropic Messages replies: every `tool_use` block decided by the guard, in a
whole message and in a stream. A refused block becomes a text block, at the same index, that
says why; when no call is left, `stop_reason: tool_use` becomes `end_turn`, so the client ends
its turn cleanly instead of waiting for a result it was never asked for. Thinking blocks and
their signatures pass as they came."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.edge.errors import UpstreamError
from proxy.pipeline.tool_guard import Keepalive, ToolGuard

# Calls the client runs. Server tools (`server_tool_use`: web search, code execution) run at
# the provider; the request's screening keeps blocked ones from being offered at all.
_CLIENT_CALL = "tool_use"


async def enforce_message(reply: dict[str, Any], guard: ToolGuard,
                          is_client_gone: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """A whole message with each `tool_use` block decided; refused ones replaced in place."""
    content = reply.get("content")
    if not isinstance(content, list):
        return reply
    kept = refused = 0
    for index, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != _CLIENT_CALL:
            continue
        arguments = json.dumps(block.get("input"), ensure_ascii=False, separators=(",", ":"))
        if await _decide(guard, block.get("id"), block.get("name"), arguments, is_client_gone=is_client_gone):
            kept += 1
        else:
            content[index] = {"type": "text", "text": guard.decisions[-1].refusal()}
            refused += 1
    if refused and not kept and reply.get("stop_reason") == "tool_use":
        reply["stop_reason"] = "end_turn"
    return reply


async def _decide(guard: ToolGuard, call_id: Any, name: Any, arguments: str, *,
                  keepalive: Keepalive | None = None, is_client_gone: Callable[[], bool]) -> bool:
    call_id = call_id if isinstance(call_id, str) else None
    if not isinstance(name, str) or not name:
        return guard.refuse_unreadable(call_id, str(name or ""), arguments, "gives no name")
    return await guard.decide(call_id, name, arguments, keepalive=keepalive, is_client_gone=is_client_gone)


@dataclass(slots=True)
class _HeldCall:
    index: Any
    start: dict[str, Any]  # the content_block_start event
    fragments: list[str] = field(default_factory=list)  # its input_json_delta parts


class MessagesStreamGate:
    """Stream events in, events for the client out. Everything passes at once but a `tool_use`
    block, which is held from its start to its stop, decided, and then sent whole or replaced.
    Anthropic streams one block after another, so holding one delays, never reorders."""

    def __init__(self, guard: ToolGuard, keepalive: Keepalive, is_client_gone: Callable[[], bool]) -> None:
        self.guard = guard
        self.keepalive = keepalive
        self.is_client_gone = is_client_gone
        self._held: _HeldCall | None = None
        self.sent_calls = 0
        self.refused_calls = 0
        self.is_stopped = False  # the provider sent message_stop

    def passes_intact(self, event: dict[str, Any]) -> bool:
        """True for an event `feed` would send on as it came (all but those of a tool_use block
        and a stop_reason that must change), so its bytes can be relayed untouched."""
        if self._held is not None:
            return False
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block")
            return not (isinstance(block, dict) and block.get("type") == _CLIENT_CALL)
        if kind == "message_delta":
            return not (self.refused_calls and not self.sent_calls)
        if kind == "message_stop":
            self.is_stopped = True
        return True

    async def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        held = self._held
        if kind == "content_block_start" and isinstance(block := event.get("content_block"), dict) \
                and block.get("type") == _CLIENT_CALL:
            self._held = _HeldCall(event.get("index"), event)
            return []
        if held is not None and event.get("index") == held.index:
            if kind == "content_block_delta":
                delta = event.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("partial_json"), str):
                    held.fragments.append(delta["partial_json"])
                return []
            if kind == "content_block_stop":
                self._held = None
                return await self._settle(held, event)
        if kind == "message_delta" and self.refused_calls and not self.sent_calls:
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") == "tool_use":
                delta["stop_reason"] = "end_turn"
        if kind == "message_stop":
            self.is_stopped = True
        return [event]

    def finish(self) -> None:
        """At the end of the upstream stream: one without message_stop was cut short, and a
        call still held may be incomplete, so it is never released."""
        if not self.is_stopped:
            raise UpstreamError("the provider's stream ended before its answer was finished",
                                status=502, code="upstream_stream_cut")

    async def _settle(self, held: _HeldCall, stop: dict[str, Any]) -> list[dict[str, Any]]:
        block = held.start.get("content_block") or {}
        arguments = "".join(held.fragments) or json.dumps(block.get("input") or {}, separators=(",", ":"))
        if await _decide(self.guard, block.get("id"), block.get("name"), arguments, keepalive=self.keepalive,
                         is_client_gone=self.is_client_gone):
            self.sent_calls += 1
            delta = {"type": "content_block_delta", "index": held.index,
                     "delta": {"type": "input_json_delta", "partial_json": "".join(held.fragments)}}
            return [held.start, *([delta] if held.fragments else []), stop]
        self.refused_calls += 1
        refusal = self.guard.decisions[-1].refusal()
        return [
            {"type": "content_block_start", "index": held.index, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": held.index, "delta": {"type": "text_delta", "text": refusal}},
            stop,
        ]
