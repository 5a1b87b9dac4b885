"""The one serialization module: orjson for every body, SSE frames as bytes, the error envelope."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

loads = orjson.loads
SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def sse_frame(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def event_frame(event: dict[str, Any]) -> bytes:
    """An event framed as Anthropic and the Responses API frame theirs: its type as the SSE event name."""
    return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def error_envelope(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape, the only one this gateway answers with."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
