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
    """One page of `names`, in order: `limit` of them after `after_id`, or the `limit` just
    before `before_id`; `has_more` says whether more lie beyond the page in that direction."""
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if before is not None:
        earlier = names[:_position(names, before, "before_id")]
        page, has_more = list(earlier[-limit:]), len(earlier) > limit
    else:
        later = names[_position(names, after, "after_id") + 1:] if after is not None else names
        page, has_more = list(later[:limit]), len(later) > limit
    return {"data": [model_object(name) for name in page], "has_more": has_more,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}


def _position(names: Sequence[str], name: str, param: str) -> int:
    if name not in names:
        raise BadRequest(f"{param} {name!r} is not a model of this gateway", param=param)
    return names.index(name)


def _limit(given: str | None) -> int:
    if given is None:
        return DEFAULT_LIMIT
    # isdecimal, not isdigit: int() refuses digits such as '²' that isdigit accepts.
    if not (given.isascii() and given.isdecimal()) or not 1 <= int(given) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(given)
