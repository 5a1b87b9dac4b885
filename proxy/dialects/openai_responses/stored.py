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
    params = record.params if isinstance(record.params, dict) else {}
    created = datetime.strptime(record.created_at, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    response: dict[str, Any] = {
        "id": reply.get("id"), "object": "response", "created_at": int(created.timestamp()),
        "status": reply.get("status"), "model": record.model, "instructions": prompt.get("instructions"),
        "output": reply.get("output") if isinstance(reply.get("output"), list) else [], "store": True,
        "previous_response_id": params.get("previous_response_id"),
        "incomplete_details": reply.get("incomplete_details"), "error": reply.get("error"),
    }
    if record.prompt_tokens is not None and record.completion_tokens is not None:
        response["usage"] = {
            "input_tokens": record.prompt_tokens, "output_tokens": record.completion_tokens,
            "total_tokens": record.prompt_tokens + record.completion_tokens,
            "input_tokens_details": {"cached_tokens": record.cache_read_tokens or 0},
            "output_tokens_details": {"reasoning_tokens": 0}}
    return response


def input_items(record: Interaction, order: str, limit: int, after: str | None) -> dict[str, Any]:
    """The input items the response answered (the pack left out), as a page in `order`
    (`desc`: newest first, the API's default) of at most `limit`, from the item after the one
    whose id is `after` (none left when no item has it)."""
    items = [item for item in earlier_items(record) if isinstance(item, dict)]
    if order != "asc":
        items.reverse()
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), len(items) - 1)
        items = items[at + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit}
