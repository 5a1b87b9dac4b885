"""`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` and `DELETE
/v1/responses/{id}`: only for a response the gateway has a record of in the caller's project
(made without `store: false`, for a model the caller's key may use). One the gateway made
itself (translating, `resp_ctxgate_...`) is read from that record and never deleted: it is the
audit record. Any other is the provider's: asked of the route of the model that made it, with
the key a call to that model carries. Errors in the dialect's shape; nothing is recorded (no
model is called)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from capture.records import Interaction
from proxy.appkeys import KEYRING, SETTINGS, STORE, UPSTREAM
from proxy.config.keys import VirtualKey
from proxy.edge.errors import ERROR_BODY, BadRequest, GatewayError, NotFound
from proxy.edge.wire import json_response
from proxy.pipeline.dialect import interaction_of_made_response
from proxy.pipeline.identity import caller_key, caller_token, hold_to_rate, project_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}")  # a response's or an item's
MAX_ITEMS = 100


class StoredResponses(Protocol):
    """A dialect's way of giving back the responses the gateway made."""

    wire: str

    def is_kept(self, record: Interaction) -> bool: ...

    def stored_response(self, record: Interaction) -> dict[str, Any]: ...

    def input_items(self, record: Interaction, order: str, limit: int, after: str | None) -> dict[str, Any]: ...

    def error_body(self, error: GatewayError) -> dict[str, Any]: ...


def stored_response_handlers(dialect: StoredResponses) -> tuple[Handler, Handler, Handler]:
    """(get, input items, delete)."""

    async def get_response(request: web.Request) -> web.StreamResponse:
        found = await _recorded(request, dialect)
        if found.is_made_here:
            return json_response(dialect.stored_response(found.record))
        return await _ask_provider(request, found, "GET", "")

    async def list_input_items(request: web.Request) -> web.StreamResponse:
        found = await _recorded(request, dialect)
        order, limit, after, before = _page(request)
        if found.is_made_here:
            return json_response(dialect.input_items(found.record, order, limit, after))
        query = [("order", order), ("limit", str(limit)), *(("after", after),) * bool(after),
                 *(("before", before),) * bool(before), *(("include", value) for value in request.query.getall("include", ()))]
        return await _ask_provider(request, found, "GET", "/input_items?" + urlencode(query))

    async def delete_response(request: web.Request) -> web.StreamResponse:
        found = await _recorded(request, dialect)
        if found.is_made_here:
            raise BadRequest("this response was made by the gateway and is its audit record, which is kept for "
                             "the store's retention; it cannot be deleted through the API", param="response_id",
                             code="response_not_deletable")
        return await _ask_provider(request, found, "DELETE", "")

    return get_response, list_input_items, delete_response


@dataclass(frozen=True, slots=True)
class _Found:
    """The caller's record of a response, the model that made it, and the caller's key."""

    record: Interaction
    model: str
    key: VirtualKey | None
    is_made_here: bool  # the gateway made the response (translating): its record is all there is of it


async def _recorded(request: web.Request, dialect: StoredResponses) -> _Found:
    """The caller's record of the response the path names: 401/403 for a
    caller without a valid key or outside the project, 429 over the key's rate, 404 when the
    caller's project has no such record, or one made with `store: false`, or for a model the key
    may not use."""
    request[ERROR_BODY] = dialect.error_body
    response_id = _checked_id(request.match_info["response_id"], "response_id")
    keyring = request.app[KEYRING]
    key = caller_key(request, keyring)
    project = project_of(request, key, request.app[SETTINGS])
    await hold_to_rate(request.app[STORE], key)
    record = await request.app[STORE].find_response(project, response_id)
    model = record.model if record is not None else None
    if record is None or model is None or not dialect.is_kept(record) \
            or (key is not None and not key.allows_model(model)):
        raise NotFound(f"no response {response_id!r} that this caller may read", param="response_id",
                       code="response_not_found")
    return _Found(record, model, key, is_made_here=interaction_of_made_response(response_id) == record.id)


async def _ask_provider(request: web.Request, found: _Found, method: str, suffix: str) -> web.StreamResponse:
    response_id = request.match_info["response_id"]
    answer = await request.app[UPSTREAM].fetch_stored(found.model, method, f"/responses/{response_id}{suffix}",
                                                      None if found.key else caller_token(request))
    if answer is None:
        raise NotFound(f"model {found.model!r}, which made response {response_id!r}, is no longer carried to a "
                       "provider that stores responses", param="response_id", code="response_not_found")
    if answer.get("object") == "response":
        answer["model"] = found.model  # the client's name for it, as on every answer
    return json_response(answer)


def _checked_id(value: str, where: str) -> str:
    if not _ID.fullmatch(value):
        raise BadRequest(f"'{where}' must be letters, digits, '_', '-' and '.', at most 256, not starting with '.'",
                         param=where, code="invalid_id")
    return value


def _page(request: web.Request) -> tuple[str, int, str | None, str | None]:
    """(order, limit, after, before) of an input items page."""
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc", param="order")
    given = request.query.get("limit", "20")
    if not (given.isascii() and given.isdecimal() and 1 <= int(given) <= MAX_ITEMS):
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_ITEMS}", param="limit")
    after, before = (request.query.get(name) for name in ("after", "before"))
    return order, int(given), after and _checked_id(after, "after"), before and _checked_id(before, "before")
