"""What the fake providers are scripted with, and what they keep of each call they get."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A scripted call: `type="custom"` sends it as a custom tool's call, and `arguments`
    is then its free-text `input`."""

    name: str
    arguments: str
    id: str = ""
    type: str = "function"  # or "custom"; for the Responses API also "local_shell" (arguments: the command)
    namespace: str = ""  # Responses API: the namespace tool it belongs to

    @property
    def text_key(self) -> str:
        return "input" if self.type == "custom" else "arguments"


@dataclass(slots=True)
class Reply:
    """One scripted answer. `fragment` is the size (in characters) of each streamed piece."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    status: int = 200
    error: str = "scripted failure"
    fragment: int = 3
    reset_after_chunks: int | None = None
    hold: asyncio.Event | None = None  # stream: wait for it after `hold_after_chunks` chunks
    hold_after_chunks: int = 1
    chunk_interval_s: float = 0.0  # stream: pause between chunks, as a provider generating
    delay_s: float = 0.0
    usage: bool = True
    cached_tokens: int | None = None  # usage: this many prompt tokens read from the provider's cache
    reasoning: str | None = None  # Responses API: a reasoning item (summary and encrypted content) first


@dataclass(frozen=True, slots=True)
class ReceivedCall:
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes = b""  # the body's bytes as they arrived


def pieces(text: str, size: int) -> list[str]:
    """`text` in pieces of `size` characters, as a provider streams it; one empty piece for none."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
