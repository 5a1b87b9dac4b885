"""Anthropic's `GET /v1/models` and `GET /v1/models/{id}` shapes: the anthropic SDK's
`models.list()` pages through them, and Claude Code discovers a gateway's models with
`GET /v1/models?limit=1000` (keeping the ids that start with `claude` or `anthropic`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.edge.errors import BadRequest

DEFAULT_LIMIT, MAX_LIMIT = 20, 1000  # as Anthropic's API pages
_CREATED_AT = "1970-01-01T00:00:00Z"  # a route has no release date; the field is required


def model_object(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": _CREATED_AT}


def model_page(names: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of `names`, in order: `limit` of them after `after_id` or before `before_id`."""
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and after in names:
        names = names[names.index(after) + 1:]
    elif before is not None and before in names:
        names = names[:names.index(before)][-limit:]
    page = list(names[:limit])
    return {"data": [model_object(name) for name in page], "has_more": len(names) > len(page),
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}


def _limit(given: str | None) -> int:
    if given is None:
        return DEFAULT_LIMIT
    if not given.isdigit() or not 1 <= int(given) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(given)
