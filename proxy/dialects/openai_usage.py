"""OpenAI's `usage` object, as its chat completions, legacy completions and embeddings report it."""

from __future__ import annotations

from typing import Any

from proxy.pipeline.dialect import Usage


def usage_of(usage: Any) -> Usage:
    """OpenAI's `usage`, with the cached prompt tokens it reports."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    return Usage.of(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                    cache_read=details.get("cached_tokens") if isinstance(details, dict) else None)
