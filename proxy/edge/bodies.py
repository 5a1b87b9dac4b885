"""Reading request bodies: size-limited by the application, time-limited, JSON-decoded with
orjson, nesting-limited."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from proxy.appkeys import SETTINGS
from proxy.edge.errors import BadRequest, GatewayError

# orjson reads JSON nested 1,024 deep but writes only 254: a body in between could be taken
# and then never recorded. Nothing a client sends for real comes near this.
MAX_JSON_DEPTH = 128


class RequestTimeout(GatewayError):
    status = 408
    kind = "invalid_request_error"

    def response(self, body: dict[str, Any] | None = None) -> web.Response:
        response = super().response(body)
        response.force_close()  # the rest of the body may still trickle in: not on this connection
        return response


async def read_json(request: web.Request) -> Any:
    """The decoded body; 413 comes from the application's `client_max_size`, 400 for bad JSON
    or nesting past MAX_JSON_DEPTH, 408 when the body does not arrive within `body_timeout_s`."""
    try:
        if request.content.is_eof():  # all of it came with the headers: no wait, no timer (4 us)
            body = await request.read()
        else:
            async with asyncio.timeout(request.app[SETTINGS].body_timeout_s):
                body = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {request.app[SETTINGS].body_timeout_s:g} s",
                             code="body_timeout") from None
    except web.RequestPayloadError as error:  # e.g. a Content-Encoding that does not decode
        # The rest of the body is no use: ended here, aiohttp does not read on after the answer
        # (which raises the same error again and logs it as an unhandled exception).
        request.content.feed_eof()
        raise BadRequest(f"request body could not be read: {error}", code="invalid_body") from None
    if not body:
        raise BadRequest("request body is empty; expected a JSON object", code="invalid_json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}", code="invalid_json") from None
    if _is_deeper_than(value, MAX_JSON_DEPTH):
        raise BadRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", code="json_too_deep")
    return value


def _is_deeper_than(value: Any, limit: int) -> bool:
    """Walks containers only, without recursion, and stops at the first one too deep."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
