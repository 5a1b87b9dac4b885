"""`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` and `DELETE
/v1/responses/{id}`: a response the gateway made (translating, `resp_ctxgate_...`) is read from
its record, for the project that made it; any other id is the provider's, asked of the providers
that serve the Responses API natively for the models the caller may use. Errors in the dialect's
shape; nothing is recorded (no model is called)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from capture.records import Interaction
from proxy.appkeys import KEYRING, SETTINGS, STORE, UPSTREAM
from proxy.config.keys import VirtualKey
from proxy.edge.errors import ERROR_BODY, BadRequest, GatewayError, NotFound
from proxy.edge.wire import json_response
from proxy.pipeline.dialect import interaction_of_made_response
from proxy.pipeline.identity import caller_key, caller_token, project_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
MAX_ITEMS = 100


class StoredResponses(Protocol):
    """A dialect's way of giving back the responses the gateway made."""

    wire: str

    def is_kept(self, record: Interaction) -> bool: ...

    def stored_response(self, record: Interaction) -> dict[str, Any]: ...

    def input_items(self, record: Interaction, order: str, limit: int) -> dict[str, Any]: ...

    def error_body(self, error: GatewayError) -> dict[str, Any]: ...


def stored_response_handlers(dialect: StoredResponses) -> tuple[Handler, Handler, Handler]:
    """(get, input items, delete)."""

    async def get_response(request: web.Request) -> web.StreamResponse:
        record, key = await _made_here(request, dialect)
        if record is not None:
            return json_response(dialect.stored_response(record))
        return await _ask_provider(request, key, "GET", "")

    async def list_input_items(request: web.Request) -> web.StreamResponse:
        record, key = await _made_here(request, dialect)
        order, limit = _page(request)
        if record is not None:
            return json_response(dialect.input_items(record, order, limit))
        return await _ask_provider(request, key, "GET", f"/input_items?order={order}&limit={limit}")

    async def delete_response(request: web.Request) -> web.StreamResponse:
        record, key = await _made_here(request, dialect)
        if record is not None:
            raise BadRequest("this response was made by the gateway and is its audit record, which is kept for "
                             "the store's retention; it cannot be deleted through the API", param="response_id",
                             code="response_not_deletable")
        return await _ask_provider(request, key, "DELETE", "")

    return get_response, list_input_items, delete_response


async def _made_here(request: web.Request, dialect: StoredResponses) -> tuple[Interaction | None, VirtualKey | None]:
    """The record of the response the gateway made that the path names (None for another id),
    and the caller's key; 401/403 for a caller without a valid key or outside the project, 404
    when that record is not the caller's project's or is not kept."""
    request[ERROR_BODY] = dialect.error_body
    response_id = _response_id(request)
    key = caller_key(request, request.app[KEYRING])
    project = project_of(request, key, request.app[SETTINGS])
    interaction_id = interaction_of_made_response(response_id)
    if interaction_id is None:
        return None, key
    record = await request.app[STORE].get_interaction(interaction_id)
    if record is None or record.project != project or record.wire != dialect.wire or not dialect.is_kept(record):
        raise _not_found(response_id)
    return record, key


async def _ask_provider(request: web.Request, key: VirtualKey | None, method: str, suffix: str) -> web.StreamResponse:
    response_id = _response_id(request)
    found = await request.app[UPSTREAM].ask_stored(
        method, f"/responses/{response_id}{suffix}", None if key else caller_token(request),
        may_use=lambda name: key is None or key.allows_model(name))
    if found is None:
        raise _not_found(response_id)
    name, answer = found
    if answer.get("object") == "response":
        answer["model"] = name  # the client's name for it, as on every answer
    return json_response(answer)


def _response_id(request: web.Request) -> str:
    response_id = request.match_info["response_id"]
    if not _RESPONSE_ID.fullmatch(response_id):
        raise BadRequest("a response id is letters, digits, '_', '-' and '.', at most 256", param="response_id",
                         code="invalid_response_id")
    return response_id


def _page(request: web.Request) -> tuple[str, int]:
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc", param="order")
    given = request.query.get("limit", "20")
    if not (given.isascii() and given.isdecimal() and 1 <= int(given) <= MAX_ITEMS):
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_ITEMS}", param="limit")
    return order, int(given)


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"no response {response_id!r} that this caller may read", param="response_id",
                    code="response_not_found")
