"""An OpenAI-compatible fake provider: scripted replies, and a record of what it was sent.

It backs `ctxgate demo`, the tests and the benchmarks. With nothing scripted it echoes the
last user message. Streams can be split at awkward places, cut mid-way, or held open.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

# Re-exported: the tests and the bench script this fake with them.
from proxy.demo.replies import ReceivedCall as ReceivedCall, Reply as Reply, ToolCall as ToolCall, pieces
from proxy.demo.fake_responses import response_events, response_object
from proxy.edge.wire import SSE_DONE, event_frame, sse_frame


@dataclass(slots=True)
class FakeUpstream:
    script: deque[Reply] = field(default_factory=deque)
    received: list[ReceivedCall] = field(default_factory=list)
    calls: int = 0
    default_reply: Reply | None = None  # when nothing is scripted; else echo the last user message
    respond: Callable[[dict[str, Any]], Reply] | None = None  # Responses API, nothing scripted: picks by the body
    # Responses API: id -> (response, input), kept as `received` is (not with store: false)
    stored: dict[str, tuple[dict[str, Any], Any]] = field(default_factory=dict)
    streams_cut: asyncio.Event = field(default_factory=asyncio.Event)  # set when a reader hung up
    keep_received: bool = True
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    base_url: str = ""

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def wait_for_calls(self, count: int) -> None:
        """Until at least `count` calls have arrived in all."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.calls >= count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{response_id}", self._stored_response)
        app.router.add_get("/v1/responses/{response_id}/input_items", self._stored_input)
        app.router.add_delete("/v1/responses/{response_id}", self._stored_response)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # handler_cancellation: a held stream learns at once that its reader hung up.
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        """EMBEDDING_DIMENSIONS floats per input, made from its text (the same input, the same
        vector), as floats or base64 as `encoding_format` asks; a scripted error status as for chat."""
        body = await self._received(request)
        reply = self.script.popleft() if self.script else Reply()
        if reply.status != 200:
            return _scripted_error(reply)
        given = body["input"]
        inputs = [given] if isinstance(given, str) or (given and type(given[0]) is int) else given
        data = []
        for index, item in enumerate(inputs):
            vector = fake_embedding(item)
            encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() \
                if body.get("encoding_format") == "base64" else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in inputs)
        answer: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if reply.usage:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(answer)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        """Legacy completions: `Reply.text` (else the prompt echoed), whole or streamed in
        `fragment`-sized chunks, then `[DONE]`; `reset_after_chunks` cuts the stream."""
        body = await self._received(request)
        reply = self.script.popleft() if self.script else Reply()
        if reply.status != 200:
            return _scripted_error(reply)
        text = reply.text if reply.text is not None else f"echo: {body['prompt']}"
        head = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        usage = {"prompt_tokens": len(str(body["prompt"]).split()), "completion_tokens": len(text.split()),
                 "total_tokens": len(str(body["prompt"]).split()) + len(text.split())}
        if not body.get("stream"):
            answer = {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]}
            if reply.usage:
                answer["usage"] = usage
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunks = [{**head, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
                  for piece in pieces(text, reply.fragment)]
        chunks.append({**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
        if reply.usage and (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": usage})
        for number, chunk in enumerate(chunks):
            if reply.reset_after_chunks is not None and number >= reply.reset_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(sse_frame(chunk))
        await response.write(SSE_DONE)
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API: `Reply` as a response (else `respond`'s pick, else the input
        echoed), whole or streamed; `reset_after_chunks` cuts the stream after that many events."""
        body = await self._received(request)
        reply = await self._reply_to(lambda: self.respond(body) if self.respond is not None
                                     else self.default_reply or Reply())
        if reply.status != 200:
            return _scripted_error(reply)
        response = response_object(body, reply)
        if body.get("store") is not False and self.keep_received:
            self.stored[response["id"]] = (response, body["input"])
        if not body.get("stream"):
            return web.json_response(response)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for number, event in enumerate(response_events(response, reply.fragment)):
            if reply.reset_after_chunks is not None and number >= reply.reset_after_chunks:
                assert request.transport is not None
                request.transport.abort()
                return stream
            await stream.write(event_frame(event))
            if number + 1 == reply.hold_after_chunks and reply.hold is not None:
                await reply.hold.wait()
        return stream

    async def _stored_response(self, request: web.Request) -> web.Response:
        """A stored response, as OpenAI gives it back (GET) or forgets it (DELETE); 404 for another id."""
        response_id = request.match_info["response_id"]
        await self._received_query(request)
        if response_id not in self.stored:
            return web.json_response({"error": {"message": f"Response with id '{response_id}' not found.",
                                                "type": "invalid_request_error", "param": None, "code": None}},
                                     status=404)
        if request.method == "DELETE":
            del self.stored[response_id]
            return web.json_response({"id": response_id, "object": "response", "deleted": True})
        return web.json_response(self.stored[response_id][0])

    async def _stored_input(self, request: web.Request) -> web.Response:
        stored = self.stored.get(request.match_info["response_id"])
        if stored is None:
            return await self._stored_response(request)
        await self._received_query(request)
        given = stored[1]
        items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
        return web.json_response({"object": "list", "data": items, "has_more": False})

    async def _received_query(self, request: web.Request) -> None:
        """A GET or DELETE kept as a call is, its query as its body."""
        if self.keep_received:
            self.received.append(ReceivedCall(body=dict(request.query), headers=dict(request.headers)))

    async def _reply_to(self, unscripted: Callable[[], Reply]) -> Reply:
        """The call counted (for `wait_for_calls`), and its reply: the next scripted one, else `unscripted()`."""
        async with self._arrived:
            self.calls += 1
            self._arrived.notify_all()
        return self.script.popleft() if self.script else unscripted()

    async def _received(self, request: web.Request) -> dict[str, Any]:
        """The call's body, kept (with its headers and bytes) unless `keep_received` is off."""
        raw = await request.read()
        body: dict[str, Any] = orjson.loads(raw)
        if self.keep_received:
            self.received.append(ReceivedCall(body=body, headers=dict(request.headers), raw=raw))
        return body

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._received(request)
        reply = await self._reply_to(lambda: self.default_reply or Reply(text=_echo(body)))
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            return _scripted_error(reply)
        if body.get("stream"):
            try:
                return await _stream(request, body, reply)
            except asyncio.CancelledError:
                self.streams_cut.set()
                raise
            except ConnectionResetError:
                self.streams_cut.set()
                return web.Response()  # nobody left to read it
        return web.Response(body=orjson.dumps(_completion(body, reply)), content_type="application/json")


def _scripted_error(reply: Reply) -> web.Response:
    return web.json_response({"error": {"message": reply.error, "type": "fake_error", "param": None, "code": None}},
                             status=reply.status)


EMBEDDING_DIMENSIONS = 8


def fake_embedding(item: str | list[int]) -> list[float]:
    digest = hashlib.sha256(repr(item).encode()).digest()
    return [byte / 255 for byte in digest[:EMBEDDING_DIMENSIONS]]


def _echo(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return f"Echo: {content if isinstance(content, str) else orjson.dumps(content).decode()}"
    return "Hello from the fake upstream."


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content") or "").split()) + 3 for m in body.get("messages") or [])
    completion = len((reply.text or "").split()) + sum(len(c.arguments) // 4 + 1 for c in reply.tool_calls)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def _tool_call_id(call: ToolCall, index: int) -> str:
    return call.id or f"call_fake_{index}"


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": _tool_call_id(c, i), "type": c.type, c.type: {"name": c.name, c.text_key: c.arguments}}
            for i, c in enumerate(reply.tool_calls)
        ]
    completion: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
        ],
    }
    if reply.usage:
        completion["usage"] = _usage(body, reply)
    return completion


def stream_chunks(body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
    """The chunks OpenAI would send for `reply`, fragments of `reply.fragment` characters."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
            "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    if reply.text:
        chunks += [chunk({"content": piece}) for piece in pieces(reply.text, reply.fragment)]
    for index, call in enumerate(reply.tool_calls):
        for n, piece in enumerate(pieces(call.arguments, reply.fragment)):
            fragment: dict[str, Any] = {"index": index, call.type: {call.text_key: piece}}
            if n == 0:
                fragment.update(id=_tool_call_id(call, index), type=call.type)
                fragment[call.type]["name"] = call.name
            chunks.append(chunk({"tool_calls": [fragment]}))
    chunks.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if reply.usage and (body.get("stream_options") or {}).get("include_usage"):
        usage_chunk = chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(body, reply)
        chunks.append(usage_chunk)
    return chunks


async def _stream(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for n, chunk in enumerate(stream_chunks(body, reply)):
        if reply.reset_after_chunks is not None and n == reply.reset_after_chunks:
            assert request.transport is not None
            request.transport.abort()  # a connection reset mid-stream, as a crashed provider does
            return response
        await response.write(sse_frame(chunk))
        if n + 1 == reply.hold_after_chunks and reply.hold is not None:
            await reply.hold.wait()
        elif reply.chunk_interval_s:
            await asyncio.sleep(reply.chunk_interval_s)
    await response.write(SSE_DONE)
    return response
