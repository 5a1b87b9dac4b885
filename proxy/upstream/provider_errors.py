"""A provider's HTTP error as the client gets it, whichever transport carried the call."""

from __future__ import annotations

from typing import Any

from proxy.edge.errors import UpstreamError

# Statuses that are the client's to act on, passed on as they came; other failures are 502.
# 529 is Anthropic's "overloaded": its clients back off on it, and retry a 502 at once.
PASSED_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 422, 429, 529})


def provider_error(status: int | None, message: str, *, param: Any = None, code: Any = None,
                   retry_after: str | None = None) -> UpstreamError:
    """408/504 -> 504; a passed status with the provider's `param`, `code` and (429)
    `Retry-After`; anything else -> 502. `message` is already scrubbed."""
    if status in (408, 504):
        return UpstreamError(f"upstream timed out: {message}", status=504, kind="timeout", code="upstream_timeout")
    if status is not None and status in PASSED_STATUSES:
        kind = "invalid_request_error" if status in (400, 404, 409, 413, 422) else (
            "rate_limit_error" if status == 429 else "overloaded_error" if status == 529 else None)
        return UpstreamError(message, status=status, kind=kind, param=param if isinstance(param, str) else None,
                             code=code if isinstance(code, str) else f"upstream_{status}",
                             retry_after=retry_after if status == 429 else None)
    return UpstreamError(f"upstream failed: {message}", status=502, code="upstream_unavailable")
