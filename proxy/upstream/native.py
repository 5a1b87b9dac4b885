"""The native transport: a provider that speaks OpenAI chat is sent the body as ctxgate holds
it, on one pooled aiohttp session, and its answer is read with orjson. No litellm on the way:
its machinery (logging objects, pydantic models, a stream wrapper at about 0.75 ms a chunk)
is what made the gateway cost 20 to 100 times a plain relay.

It hands the pipeline the same values as the translate transport: a `chat.completion` dict,
or `chat.completion.chunk` dicts, with `model` the client's name; failures as UpstreamError.
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
from proxy.dialects.openai_chat.chat_request import UpstreamCall
from proxy.edge.errors import UpstreamError
from proxy.edge.redaction import Redactor
from proxy.upstream.provider_errors import provider_error

MAX_ERROR_BODY = 64 * 1024  # of a provider's error answer, read to pass its message on


@dataclass(frozen=True, slots=True)
class NativeRoute:
    """Where and how a declared model is called natively."""

    url: str  # the provider's .../chat/completions
    model: str  # the provider's own name for the model
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
            await self._refuse_errors(response, call)
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError) as error:
                raise self._broken(error, call) from error
            data = _json_object(raw)
            if data is None or not isinstance(data.get("choices"), list):
                raise UpstreamError(
                    f"upstream failed: the provider's answer is not a chat completion "
                    f"({response.content_type or 'no content type'})", status=502, code="upstream_unavailable")
            data["model"] = call.model
            return writable(data)

    async def stream(self, route: NativeRoute, call: UpstreamCall) -> AsyncGenerator[dict[str, Any], None]:
        """Server-sent events, each `data:` decoded; `[DONE]` ends it. A stream the provider
        cuts short ends without a finish: the tool gate says so to the client."""
        async with self._post(route, call) as response:
            await self._refuse_errors(response, call)
            if response.content_type != "text/event-stream":
                raise UpstreamError(
                    f"upstream failed: the provider answered a stream with {response.content_type or 'no content type'}, "
                    "not text/event-stream", status=502, code="upstream_unavailable")
            try:
                async for data in _events(response.content):
                    if data == b"[DONE]":
                        return
                    chunk = _json_object(data)
                    if chunk is None:
                        raise UpstreamError("upstream failed: the provider sent an event that is not JSON",
                                            status=502, code="upstream_unavailable")
                    if "error" in chunk and "choices" not in chunk:  # OpenAI's way to fail mid-stream
                        raise self._from_body(502, chunk, call, retry_after=None)
                    chunk["model"] = call.model
                    yield writable(chunk)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                raise self._broken(error, call) from error

    def _post(self, route: NativeRoute, call: UpstreamCall) -> Any:
        assert self._session is not None, "the native transport was not started"
        body = {**call.params, "model": route.model, "messages": call.messages}
        if call.stream:
            body["stream"] = True
        headers = {"Content-Type": "application/json"}
        key = route.api_key or call.client_api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # Per connect and per read, as litellm's (httpx) timeout is: a long stream that keeps
        # coming is not cut at a total.
        limit = route.timeout_s or self.timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=limit, sock_read=limit)
        return _Post(self._session.post(route.url, data=orjson.dumps(body), headers=headers, timeout=timeout),
                     self, call)

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
        message = self._scrub(str(error.get("message") or f"HTTP {status}"), call)
        return provider_error(status, message, param=error.get("param"), code=error.get("code"),
                              retry_after=retry_after)

    def _broken(self, error: BaseException, call: UpstreamCall) -> UpstreamError:
        if isinstance(error, asyncio.TimeoutError):
            return UpstreamError("upstream timed out", status=504, kind="timeout", code="upstream_timeout")
        what = str(error) or type(error).__name__
        return UpstreamError(self._scrub(f"upstream failed: {what}", call), status=502, code="upstream_unavailable")

    def _scrub(self, text: str, call: UpstreamCall) -> str:
        return self.redactor.scrub(text, also=(call.client_api_key,))


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


async def _events(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The `data` of each server-sent event (several `data:` lines joined by newlines)."""
    data: list[bytes] = []
    async for line in content:
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
    if data:
        yield b"\n".join(data)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # orjson refuses a lone surrogate escape that Python's json (and providers) let by
            value = json.loads(raw)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
