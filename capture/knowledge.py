"""A project's knowledge: memories and document chunks, and the full-text query over them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from capture.records import InvalidRecord, new_interaction_id, now_timestamp
from capture.tokens import count_tokens


class MemoryStatus(StrEnum):
    ACTIVE = "active"
    CANDIDATE = "candidate"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Memory:
    id: str
    project: str
    type: str
    content: str
    confidence: float
    status: MemoryStatus
    token_count: int
    created_at: str
    updated_at: str
    use_count: int = 0
    last_used_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    project: str
    source_path: str
    ordinal: int
    content: str
    token_count: int


@dataclass(frozen=True, slots=True)
class Source:
    """A document as stored: its chunks are replaced together when its content changes."""

    path: str
    content_hash: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class Scored:
    """A memory or chunk found for a query; `score` is higher for better (BM25, weighted by
    a memory's confidence)."""

    id: str
    content: str
    token_count: int
    score: float
    source: str | None = None


# Words that match nearly everything: leaving them out keeps the query selective and fast.
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my "
    "no not of on or our so that the their them then there these they this to was we what when "
    "where which who why will with would you your".split()
)
MAX_QUERY_TERMS = 16


def query_terms(words: Iterable[str]) -> list[str]:
    """The searchable ones among a query's words (as the index's tokenizer split and folded
    them): no stopwords or single Latin letters, longest first, at most MAX_QUERY_TERMS (a
    bound on the cost of a huge prompt)."""
    kept = {w for w in words if w not in _STOPWORDS and (len(w) > 1 or not w.isascii())}
    return sorted(kept, key=lambda w: (-len(w), w))[:MAX_QUERY_TERMS]


def rarest_within(by_rarity: Sequence[str], counts: Mapping[str, int], budget: int) -> list[str]:
    """The rarest of the words (`by_rarity`: rarest first) whose rows, as `counts` has them,
    add up to at most `budget`: what a search looks for when its words are rare enough."""
    chosen: list[str] = []
    matched = 0
    for word in by_rarity:
        if matched + counts[word] > budget:
            break
        chosen.append(word)
        matched += counts[word]
    return chosen


def fts_expression(terms: list[str], required_together: bool = False) -> str:
    """Each term a quoted FTS5 string, ORed (or ANDed): quotes, `*`, `OR`, `NEAR`, parentheses
    or `-` in the user's text are only ever words."""
    joiner = " AND " if required_together else " OR "
    return joiner.join('"' + term.replace('"', '""') + '"' for term in terms)


def new_memory(project: Any, content: Any, *, type: Any = "note", confidence: Any = 1.0,
               status: Any = "active") -> Memory:
    """Validated: content not blank, confidence within 0..1, a known status."""
    if not isinstance(project, str) or not project.strip():
        raise InvalidRecord("project", "project is required")
    if not isinstance(content, str) or not content.strip():
        raise InvalidRecord("content", "content must not be empty")
    if not isinstance(type, str) or not type.strip():
        raise InvalidRecord("type", "type must be a non-empty string")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        raise InvalidRecord("confidence", "confidence must be a number from 0 to 1")
    try:
        memory_status = MemoryStatus(status)
    except ValueError:
        raise InvalidRecord("status", f"status must be one of {', '.join(s.value for s in MemoryStatus)}") from None
    now = now_timestamp()
    return Memory(id="mem_" + new_interaction_id().replace("-", ""), project=project.strip(), type=type.strip(),
                  content=content.strip(), confidence=float(confidence), status=memory_status,
                  token_count=count_tokens(content.strip()), created_at=now, updated_at=now)
