"""A fake Anthropic Messages provider for tests and the bench: scripted replies (text, thinking,
`tool_use` blocks, errors), whole or streamed as Anthropic streams them, and a record of what
it was sent (body, bytes and headers). `/v1/messages/count_tokens` answers a count made from the
body's size (`count_of`), or `count_status`'s error."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy.demo.fake_upstream import ReceivedCall, Reply


@dataclass(slots=True)
class FakeAnthropic:
    """`Reply.text` is the answer (else the last user text is echoed), `Reply.tool_calls` its
    tool_use blocks (arguments as JSON text), `thinking` a thinking block before them all.
    Replies come from `script` in order; when it is empty, `respond` (if set) picks one by what
    the request contains (an agent's turns, or its side calls, in whatever order they come)."""

    script: deque[Reply] = field(default_factory=deque)
    received: list[ReceivedCall] = field(default_factory=list)
    counted: list[ReceivedCall] = field(default_factory=list)  # what count_tokens was sent
    count_status: int = 200
    thinking: str | None = None
    cache_read_tokens: int = 0
    streams_cut: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""
    respond: Callable[[dict[str, Any]], Reply] | None = None
    keep_received: bool = True  # False: `received` stays empty (the bench's long runs)

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    async def _count_tokens(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = orjson.loads(raw)
        self.counted.append(ReceivedCall(body=body, headers=dict(request.headers), raw=raw))
        if self.count_status != 200:
            return web.json_response({"type": "error", "error": {"type": "api_error", "message": "scripted failure"}},
                                     status=self.count_status)
        return web.json_response({"input_tokens": count_of(body)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        if self.keep_received:
            self.received.append(ReceivedCall(body=body, headers=dict(request.headers), raw=raw))
        if self.script:
            reply = self.script.popleft()
        else:
            reply = self.respond(body) if self.respond is not None else Reply(text=_echo(body))
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}.get(
                reply.status, "invalid_request_error" if reply.status < 500 else "api_error")
            return web.json_response({"type": "error", "error": {"type": kind, "message": reply.error},
                                      "request_id": "req_fake"}, status=reply.status, headers={"request-id": "req_fake"})
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(self._message(body, reply)), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for number, event in enumerate(self.events_of(body, reply)):
                if reply.reset_after_chunks is not None and number >= reply.reset_after_chunks:
                    assert request.transport is not None
                    request.transport.close()  # the provider drops the connection mid-stream
                    return response
                if reply.hold is not None and number == reply.hold_after_chunks:
                    await reply.hold.wait()
                await response.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.streams_cut.set()
            raise
        return response

    def events_of(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        """The events of `reply` streamed as the answer to `body`, in the order they are sent:
        what `Reply.reset_after_chunks` and `hold_after_chunks` count (a test finds where to
        cut or hold by their types)."""
        return stream_events(self._message(body, reply), reply.fragment)

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if self.thinking is not None:
            content.append({"type": "thinking", "thinking": self.thinking, "signature": "sig-" + "A" * 40})
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        for number, call in enumerate(reply.tool_calls):
            content.append({"type": "tool_use", "id": call.id or f"toolu_{number:02d}", "name": call.name,
                            "input": orjson.loads(call.arguments or "{}")})
        prompt = len(orjson.dumps(body.get("messages"))) // 4
        return {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake", "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": len(orjson.dumps(content)) // 4,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": self.cache_read_tokens},
        }


def stream_events(message: dict[str, Any], fragment: int) -> list[dict[str, Any]]:
    """The message as Anthropic streams it: message_start, each block's start, deltas of
    `fragment` characters and stop, message_delta with the stop reason, message_stop."""
    head = {**message, "content": [], "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": head}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        start: dict[str, Any]
        if kind == "text":
            start, key, delta_type, text = {"type": "text", "text": ""}, "text", "text_delta", block["text"]
        elif kind == "thinking":
            start, key, delta_type, text = {"type": "thinking", "thinking": ""}, "thinking", "thinking_delta", \
                block["thinking"]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            key, delta_type, text = "partial_json", "input_json_delta", orjson.dumps(block["input"]).decode()
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        for at in range(0, len(text), max(fragment, 1)):
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": delta_type, key: text[at:at + fragment]}})
        if kind == "thinking":
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": block["signature"]}})
        events.append({"type": "content_block_stop", "index": index})
    events += [{"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]}},
               {"type": "message_stop"}]
    return events


def count_of(body: dict[str, Any]) -> int:
    """The fake's input token count of a request: a quarter of its system, messages and tools
    as JSON."""
    return len(orjson.dumps([body.get("system"), body.get("messages"), body.get("tools")])) // 4


def _echo(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return "Hello from the fake Anthropic."
