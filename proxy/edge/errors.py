"""The gateway's error family and the one boundary that maps every failure, by family, to an
error body: our own errors as they say, the store's as 503 or 400, aiohttp's HTTP errors with
their status, and anything else (a bug of ours) as a logged 500. A proxied route's body is in
its dialect's shape (the route sets `ERROR_BODY`); everything else answers with OpenAI's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from capture.records import InvalidRecord
from capture.store import RecordRejected, StoreUnavailable
from proxy.edge.wire import error_envelope, json_response

log = structlog.get_logger("ctxgate.proxy")


class GatewayError(Exception):
    status = 500
    kind = "internal_error"
    retry_after: str | None = None  # seconds, sent as `Retry-After` when set

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def response(self, body: dict[str, Any] | None = None) -> web.Response:
        """`body` (the route's dialect's shape), else the OpenAI envelope, with the status."""
        if body is None:
            body = error_envelope(self.message, self.kind, param=self.param, code=self.code)
        response = json_response(body, status=self.status)
        if self.retry_after is not None:
            response.headers["Retry-After"] = self.retry_after
        return response


class BadRequest(GatewayError):
    status = 400
    kind = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    kind = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    kind = "permission_error"


class Conflict(GatewayError):
    status = 409
    kind = "invalid_request_error"


class TooManyRequests(GatewayError):
    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = str(retry_after_s)


class NotFound(GatewayError):
    status = 404
    kind = "not_found_error"


class UpstreamError(GatewayError):
    """The provider refused or failed. `status` is what the client gets (see upstream.py)."""

    kind = "upstream_error"
    provider_type: str | None = None  # the provider's own error type, where its status is passed on
    provider_body: dict[str, Any] | None = None  # and its whole error body, scrubbed, from a native call

    def __init__(self, message: str, *, status: int, kind: str | None = None, param: str | None = None,
                 code: str | None = None, retry_after: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.retry_after = retry_after  # the provider's own, passed on with its 429
        if kind:
            self.kind = kind


class ServiceUnavailable(GatewayError):
    status = 503
    kind = "service_unavailable"
    retry_after = "5"


def as_gateway_error(error: Exception) -> GatewayError | None:
    """The family an exception belongs to, as the client should see it; None for a bug."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, StoreUnavailable):
        return ServiceUnavailable(f"the store is unavailable: {error}", code="store_unavailable")
    if isinstance(error, InvalidRecord):
        return BadRequest(str(error), param=error.field_name)
    if isinstance(error, RecordRejected):
        return BadRequest(f"the record cannot be stored as given: {error}", code="record_rejected")
    return None


_HTTP_KINDS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Set by a proxied route before it reads the body: how its dialect writes an error.
ERROR_BODY: web.RequestKey[Callable[[GatewayError], dict[str, Any]]] = web.RequestKey("error_body")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as an error body with the right status; never a stack trace."""
    try:
        return await handler(request)
    except (GatewayError, StoreUnavailable, InvalidRecord, RecordRejected) as error:
        mapped = as_gateway_error(error)
        assert mapped is not None
    except web.HTTPException as error:
        if error.status < 400:
            raise
        mapped = GatewayError(error.reason)
        mapped.status, mapped.kind = error.status, _HTTP_KINDS.get(error.status, "invalid_request_error")
        if error.status == 413:
            mapped.message, mapped.code = f"request body too large: {error.text}", "request_too_large"
        elif error.status == 404:
            mapped.message = f"no route for {request.method} {request.path}"
    except Exception:  # boundary: a bug of ours becomes a clean 500 and a logged traceback
        log.exception("request_crashed", path=request.path)
        return json_response(
            error_envelope("internal gateway error; see the gateway log", "internal_error"), status=500
        )
    render = request.get(ERROR_BODY)  # a proxied route's dialect, once its handler started
    return mapped.response(render(mapped) if render else None)
