"""The native transport: a provider that speaks the client's dialect is sent the body as
ctxgate holds it, on one pooled aiohttp session, and its answer is read with orjson. No
litellm on the way: its machinery (logging objects, pydantic models, a stream wrapper at about
0.75 ms a chunk) is what made the gateway cost 20 to 100 times a plain relay.

A stream comes out as batches of events, one batch per network read, each event decoded and
kept as the bytes it came in, so the dialect can relay untouched frames without writing them
anew. Failures leave as UpstreamError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from capture.writable import writable
from proxy.pipeline.dialect import StreamEvent, UpstreamCall
from proxy.edge.errors import UpstreamError
from proxy.edge.redaction import Redactor
from proxy.upstream.provider_errors import provider_error

MAX_ERROR_BODY = 64 * 1024  # of a provider's error answer, read to pass its message on
MAX_EVENT = 16 * 1024 * 1024  # one server-sent event; a provider sending more is broken


@dataclass(frozen=True, slots=True)
class NativeRoute:
    """Where and how a declared model is called natively."""

    api_base: str  # the provider's base URL; the dialect's endpoint path goes after it
    model: str  # the provider's own name for the model
    wire: str = "openai_chat"  # the dialect the provider speaks
    speaks_responses: bool = False  # it serves OpenAI's Responses API beside chat
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float | None = None  # the route's own; else the gateway's


class NativeTransport:
    def __init__(self, redactor: Redactor, timeout_s: float) -> None:
        self.redactor = redactor
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One session for every call: its pool keeps provider connections open between calls.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), auto_decompress=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def complete(self, route: NativeRoute, call: UpstreamCall) -> dict[str, Any]:
        async with self._post(route, call) as response:
            return await self._answer(response, call)

    async def fetch(self, route: NativeRoute, call: UpstreamCall, method: str) -> dict[str, Any]:
        """A GET or DELETE of `call.path` at the provider (a stored response, its input items):
        the JSON object it answers; its failures as UpstreamError, as for a call."""
        assert self._session is not None, "the native transport was not started"
        request = self._session.request(method, endpoint(route.api_base, call.path), headers=self._headers(route, call),
                                        timeout=self._timeout(route))
        async with _Post(request, self, call) as response:
            return await self._answer(response, call)

    async def _answer(self, response: aiohttp.ClientResponse, call: UpstreamCall) -> dict[str, Any]:
        """The provider's whole answer: a JSON object, else UpstreamError."""
        await self._refuse_errors(response, call)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, OSError) as error:
            raise self._broken(error, call) from error
        data = _json_object(raw)
        if data is None:
            raise UpstreamError(
                f"upstream failed: the provider's answer is not a JSON object "
                f"({response.content_type or 'no content type'})", status=502, code="upstream_unavailable")
        return writable(data)

    async def stream(self, route: NativeRoute, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        """Server-sent events in batches, one per network read; `[DONE]` ends it. A stream the
        provider cuts short just ends: the dialect's gate says so to the client."""
        async with self._post(route, call) as response:
            await self._refuse_errors(response, call)
            if response.content_type != "text/event-stream":
                raise UpstreamError(
                    f"upstream failed: the provider answered a stream with {response.content_type or 'no content type'}, "
                    "not text/event-stream", status=502, code="upstream_unavailable")
            try:
                async for frames in _frames(response.content):
                    batch: list[StreamEvent] = []
                    for frame in frames:
                        event = _event(frame)
                        if event is None:  # a comment or a keep-alive: nothing to relay
                            continue
                        if event is _DONE:
                            if batch:
                                yield batch
                            return
                        if "error" in event.data and "choices" not in event.data:  # OpenAI's way to fail mid-stream
                            raise self._from_body(502, event.data, call, retry_after=None)
                        batch.append(event)
                    if batch:
                        yield batch
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                raise self._broken(error, call) from error

    def _post(self, route: NativeRoute, call: UpstreamCall) -> Any:
        assert self._session is not None, "the native transport was not started"
        body = {**call.body, "model": route.model or call.model}
        if body.get("stream") is None:
            body.pop("stream", None)
        return _Post(self._session.post(endpoint(route.api_base, call.path), data=orjson.dumps(body),
                                        headers={**self._headers(route, call), "Content-Type": "application/json"},
                                        timeout=self._timeout(route)), self, call)

    def _headers(self, route: NativeRoute, call: UpstreamCall) -> dict[str, str]:
        headers = dict(call.headers)
        key = route.api_key or call.client_api_key
        if key:
            name, prefix = call.key_header
            headers[name] = prefix + key
        return headers

    def _timeout(self, route: NativeRoute) -> aiohttp.ClientTimeout:
        # Per connect and per read, as litellm's (httpx) timeout is: a long stream that keeps
        # coming is not cut at a total.
        limit = route.timeout_s or self.timeout_s
        return aiohttp.ClientTimeout(total=None, sock_connect=limit, sock_read=limit)

    async def _refuse_errors(self, response: aiohttp.ClientResponse, call: UpstreamCall) -> None:
        if response.status < 400:
            return
        raw = await response.content.read(MAX_ERROR_BODY)
        body = _json_object(raw) or {"error": {"message": raw.decode("utf-8", "replace").strip()[:2000]
                                               or response.reason or f"HTTP {response.status}"}}
        retry_after = response.headers.get("Retry-After")
        raise self._from_body(response.status, body, call,
                              retry_after=retry_after if retry_after and retry_after.strip().isdigit() else None)

    def _from_body(self, status: int, body: dict[str, Any], call: UpstreamCall, *, retry_after: str | None) -> UpstreamError:
        inner = body.get("error")
        error: dict[str, Any] = inner if isinstance(inner, dict) else body
        # `detail`: the FastAPI-style body many compatible servers answer with.
        message = self._scrub(str(error.get("message") or body.get("detail") or f"HTTP {status}"), call)
        mapped = provider_error(status, message, param=error.get("param"), code=error.get("code"),
                                retry_after=retry_after)
        if mapped.status == status:  # passed on: the provider's own words
            if isinstance(error.get("type"), str):
                mapped.provider_type = error["type"]
            try:
                mapped.provider_body = self.redactor.scrub_json(body, also=(call.client_api_key,))
            except ValueError:
                pass  # too deep to be an error body: the dialect writes its own
        return mapped

    def _broken(self, error: BaseException, call: UpstreamCall) -> UpstreamError:
        if isinstance(error, asyncio.TimeoutError):
            return UpstreamError("upstream timed out", status=504, kind="timeout", code="upstream_timeout")
        if isinstance(error, aiohttp.ClientPayloadError):  # aiohttp's own words name its parser's internals
            return UpstreamError("upstream failed: the provider's connection closed before its answer was complete",
                                 status=502, code="upstream_stream_cut")
        what = str(error) or type(error).__name__
        return UpstreamError(self._scrub(f"upstream failed: {what}", call), status=502, code="upstream_unavailable")

    def _scrub(self, text: str, call: UpstreamCall) -> str:
        return self.redactor.scrub(text, also=(call.client_api_key,))


def endpoint(api_base: str, path: str) -> str:
    """`path` under `api_base`, whether the base names the API version or not:
    `https://api.anthropic.com` and `.../v1` both give `.../v1/messages`."""
    base = api_base.rstrip("/")
    if base.endswith(path):
        return base
    first = path.split("/")[1]
    if first[:1] == "v" and first[1:].isdigit() and base.endswith("/" + first):
        base = base[: -len(first) - 1]
    return base + path


class _Post:
    """The provider's response as a context manager, with a connection failure or a timeout
    before it (refused, reset, DNS) already an UpstreamError."""

    def __init__(self, request: Any, transport: NativeTransport, call: UpstreamCall) -> None:
        self._request, self._transport, self._call = request, transport, call

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._request.__aenter__()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
            raise self._transport._broken(error, self._call) from error
        return response

    async def __aexit__(self, *exc: object) -> None:
        await self._request.__aexit__(*exc)  # releases (or, cut short, closes) the connection


async def _frames(content: aiohttp.StreamReader) -> AsyncGenerator[list[bytes], None]:
    """The complete server-sent events of each network read, as their frames (without the blank
    line that ends each); one cut across reads is joined with its rest."""
    pending = b""
    async for piece in content.iter_any():
        pending += piece
        if b"\r" in pending:  # CRLF or CR line ends: made LF; a CR at the end may start a CRLF
            held = b"\r" if pending.endswith(b"\r") else b""
            pending = pending[:len(pending) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        *frames, pending = pending.split(b"\n\n")
        if len(pending) > MAX_EVENT:
            raise UpstreamError("upstream failed: the provider sent an event larger than 16 MiB",
                                status=502, code="upstream_unavailable")
        if frames:
            yield frames
    pending = pending.strip(b"\r\n")
    if pending:
        yield [pending]


_DONE = StreamEvent(data={})


def _event(frame: bytes) -> StreamEvent | None:
    """One frame's event: its `data` lines (joined by newlines) decoded, its `event` name, and
    the frame as it came, when orjson decoded it (else it is written anew). None for a frame
    without data; `_DONE` for `[DONE]`."""
    if frame.startswith(b"data: ") and b"\n" not in frame:  # the usual frame: one data line
        data, name = frame[6:], None
    else:
        lines, name = [], None
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                lines.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
        if not lines:
            return None
        data = b"\n".join(lines)
    if data == b"[DONE]":
        return _DONE
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        decoded = _json_object(data)  # a lone surrogate escape: Python's json takes it
        if decoded is None:
            raise UpstreamError("upstream failed: the provider sent an event that is not JSON",
                                status=502, code="upstream_unavailable") from None
        return StreamEvent(data=writable(decoded), name=name)
    if not isinstance(value, dict):
        raise UpstreamError("upstream failed: the provider sent an event that is not a JSON object",
                            status=502, code="upstream_unavailable")
    return StreamEvent(value, frame, name)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # orjson refuses a lone surrogate escape that Python's json (and providers) let by
            value = json.loads(raw)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
