"""A response the gateway made (translating to a chat provider), as the Responses API gives a
stored one back: read from its record. One the client asked not to keep (`store: false`) is
not given back, as at OpenAI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from capture.records import TIMESTAMP_FORMAT, Interaction
from proxy.dialects.openai_responses.responses_request import earlier_items


def is_kept(record: Interaction) -> bool:
    return not (isinstance(record.params, dict) and record.params.get("store") is False)


def stored_response(record: Interaction) -> dict[str, Any]:
    """The response object: its id, status and output as the client got them, the model by the
    client's name, the instructions and the usage as recorded."""
    reply = record.response if isinstance(record.response, dict) else {}
    prompt = record.prompt if isinstance(record.prompt, dict) else {}
    created = datetime.strptime(record.created_at, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    response: dict[str, Any] = {
        "id": reply.get("id"), "object": "response", "created_at": int(created.timestamp()),
        "status": reply.get("status"), "model": record.model, "instructions": prompt.get("instructions"),
        "output": reply.get("output") or [], "store": True,
        "previous_response_id": (record.params or {}).get("previous_response_id"),
    }
    for key in ("incomplete_details", "error"):
        response[key] = reply.get(key)
    if record.prompt_tokens is not None and record.completion_tokens is not None:
        response["usage"] = {
            "input_tokens": record.prompt_tokens, "output_tokens": record.completion_tokens,
            "total_tokens": record.prompt_tokens + record.completion_tokens,
            "input_tokens_details": {"cached_tokens": record.cache_read_tokens or 0},
            "output_tokens_details": {"reasoning_tokens": 0}}
    return response


def input_items(record: Interaction, order: str, limit: int) -> dict[str, Any]:
    """The input items the response answered (the pack left out), as a page in `order`
    (`desc`: newest first, the API's default), at most `limit`."""
    items = earlier_items(record)
    if order != "asc":
        items.reverse()
    page = items[:limit]
    ids = [item.get("id") for item in page if isinstance(item, dict)]
    return {"object": "list", "data": page, "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None, "has_more": len(items) > limit}
