"""OpenAI's `GET /v1/models` and `GET /v1/models/{id}` shapes (the openai SDK, `llm`, UIs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ctxgate"}


def model_list(names: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
    """All of them: OpenAI's list has no pages."""
    return {"object": "list", "data": [model_object(name) for name in names]}
