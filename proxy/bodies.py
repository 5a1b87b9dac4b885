"""Reading request bodies: size-limited by the application, JSON-decoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import BadRequest


async def read_json(request: web.Request) -> Any:
    """The decoded body; 413 comes from the application's `client_max_size`, 400 for bad JSON."""
    try:
        body = await request.read()
    except web.RequestPayloadError as error:  # e.g. a Content-Encoding that does not decode
        raise BadRequest(f"request body could not be read: {error}", code="invalid_body") from None
    if not body:
        raise BadRequest("request body is empty; expected a JSON object", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}", code="invalid_json") from None
