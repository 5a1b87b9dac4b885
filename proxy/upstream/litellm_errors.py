"""A failure litellm raises, as the client gets it: the provider's status, message, `param`,
`code` and `Retry-After` dug out of litellm's chain of exceptions, without its prefixes and
tracebacks."""

from __future__ import annotations

import re
from typing import Any

import litellm
import structlog

from proxy.edge.errors import UpstreamError
from proxy.upstream.provider_errors import PASSED_STATUSES, provider_error

log = structlog.get_logger("ctxgate.upstream")


def upstream_error(error: Exception) -> UpstreamError:
    status = getattr(error, "status_code", None)
    body = _provider_error_body(error)
    message = str(body.get("message") or _without_litellm_prefixes(str(getattr(error, "message", None) or error)))
    if isinstance(error, litellm.exceptions.Timeout):
        status = 504
    if status in (408, 504) or status in PASSED_STATUSES:
        return provider_error(status, message, param=body.get("param"), code=body.get("code"),
                              retry_after=_retry_after(error) if status == 429 else None)
    if _is_refused_before_sending(error):
        # litellm turns the request into the provider's shape first, and wraps what fails there
        # (a value of the wrong type) as a connection error: it is the client's to mend.
        return UpstreamError(f"the request could not be sent upstream: {message}", status=400,
                             kind="invalid_request_error", code="invalid_request")
    if status is None:  # not an HTTP answer from the provider: say what it was
        log.warning("upstream_call_failed", error_type=type(error).__name__, error=message)
    return provider_error(502, message)


_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: )*(?:\w+Error: )?(?:\w+Exception - )?")


_LITELLM_INTERNALS = re.compile(r"\s*(?:Traceback \(most recent call last\)|received_args=)")
MAX_ERROR_CHARS = 2000


def _without_litellm_prefixes(message: str) -> str:
    """`litellm.BadRequestError: BadRequestError: OpenAIException - what the provider said` ->
    `what the provider said`, without the traceback and arguments litellm appends to some (a
    stream that fails mid-way comes as one litellm error inside another's name)."""
    message = _LITELLM_INTERNALS.split(_LITELLM_PREFIX.sub("", message, count=1), maxsplit=1)[0]
    return message[:MAX_ERROR_CHARS]


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _provider_error_body(error: Exception) -> dict[str, Any]:
    """The provider's own error object (`message`, `param`, `code`), which the openai SDK keeps
    as `body` somewhere down litellm's chain of exceptions; {} when none is there."""
    for cause in _causes(error):
        body = getattr(cause, "body", None)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body
    return {}


def _is_refused_before_sending(error: Exception) -> bool:
    """litellm failed on the request's data before sending it: what it raises then is an
    APIConnectionError over nothing but Python's own exceptions (TypeError, ValueError, or a
    bare Exception of its own checks), where a network failure or a provider's answer it could
    not read brings httpx, aiohttp, openai or pydantic exceptions along."""
    cause, *causes = _causes(error)
    return (isinstance(cause, litellm.exceptions.APIConnectionError) and bool(causes)
            and all(type(c).__module__ == "builtins" and not isinstance(c, OSError) for c in causes))


def _retry_after(error: Exception) -> str | None:
    """The provider's `Retry-After`, from the HTTP response somewhere in litellm's chain."""
    for cause in _causes(error):
        for headers in (getattr(cause, "litellm_response_headers", None),
                        getattr(getattr(cause, "response", None), "headers", None)):
            value = headers.get("retry-after") if headers is not None and hasattr(headers, "get") else None
            if isinstance(value, str) and value.strip().isdigit():
                return value.strip()
    return None
