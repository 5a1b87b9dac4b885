"""The interaction record, its validation, and the timestamp shape shared by store and API."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_CAP = 500
MAX_COUNT = 2**63 - 1  # the largest integer a store column holds (tokens, milliseconds)
USAGE_SOURCES = ("provider", "counted")  # where a record's token counts came from

JSON = Any  # a value orjson can encode: the prompt and response are stored as sent


class InvalidRecord(ValueError):
    """A record or query that cannot be accepted; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


def format_timestamp(moment: datetime) -> str:
    """The one string form of a time in the store and the API: 'YYYY-MM-DD HH:MM:SS' UTC.
    Four-digit years always (strftime writes year 1 as `1`, which would not sort)."""
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"


def now_timestamp() -> str:
    return format_timestamp(datetime.now(UTC))


def parse_since(text: str, field_name: str = "since") -> str:
    """Normalise a user-given cutoff (the stored form, ISO 8601, or a bare date) to the stored form.

    Naive times are taken as UTC, so a cutoff copied from a record matches that record.
    """
    candidate = text.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise InvalidRecord(
            field_name, f"{field_name} must be 'YYYY-MM-DD HH:MM:SS' or ISO 8601, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_timestamp(moment)
    except OverflowError:  # year 1 or 9999 with an offset that carries it out of range
        raise InvalidRecord(field_name, f"{field_name} {text!r} is out of the range of times that can be stored") from None


_last_ms = 0
_last_sequence = 0


def new_interaction_id() -> str:
    """A UUIDv7 that is strictly increasing within the process (RFC 9562, method 3: the random
    bits act as a counter within one millisecond), so ids sort like the records they name."""
    global _last_ms, _last_sequence
    unix_ms = time.time_ns() // 1_000_000
    if unix_ms <= _last_ms:
        unix_ms, sequence = _last_ms, _last_sequence + 1
    else:
        sequence = int.from_bytes(os.urandom(10), "big") >> 7  # 73 bits: room to count up
    _last_ms, _last_sequence = unix_ms, sequence
    value = (
        (unix_ms & (2**48 - 1)) << 80
        | 0x7 << 76  # version 7
        | (sequence >> 62) << 64
        | 0x2 << 62  # RFC 4122 variant
        | (sequence & (2**62 - 1))
    )
    return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class Interaction:
    """One round-trip through the gateway (or one recorded by a client through the API)."""

    id: str
    created_at: str
    prompt: JSON
    project: str | None = None
    session_id: str | None = None
    client: str | None = None
    model: str | None = None
    params: JSON = None
    response: JSON = None
    memories_used: tuple[str, ...] = ()
    chunks_used: tuple[str, ...] = ()
    context_pack: str | None = None
    tool_decisions: tuple[JSON, ...] = ()
    status: str = "ok"
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    wire: str | None = None  # the dialect prompt and response are written in, e.g. openai_chat
    usage_source: str | None = None  # one of USAGE_SOURCES; None: not known (older records, no counts)
    cache_read_tokens: int | None = None  # prompt tokens the provider served from its cache
    cache_creation_tokens: int | None = None  # prompt tokens the provider wrote to its cache
    agent_id: str | None = None  # the sub-agent within the session that made the call (Claude Code's)
    parent_agent_id: str | None = None  # the agent that started that sub-agent
    context_scores: JSON = None  # {memory or chunk id: its score} of the pack, when there was one

    def as_dict(self) -> dict[str, Any]:
        """The full record as the API returns it."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "project": self.project,
            "session_id": self.session_id,
            "client": self.client,
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "prompt": self.prompt,
            "params": self.params,
            "response": self.response,
            "memories_used": list(self.memories_used),
            "chunks_used": list(self.chunks_used),
            "context_pack": self.context_pack,
            "tool_decisions": list(self.tool_decisions),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "wire": self.wire,
            "usage_source": self.usage_source,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "agent_id": self.agent_id,
            "parent_agent_id": self.parent_agent_id,
            "context_scores": self.context_scores,
        }

    def summary(self) -> dict[str, Any]:
        """The list form: everything but the full prompt, response and pack text."""
        full = self.as_dict()
        for heavy in ("prompt", "params", "response", "context_pack", "tool_decisions", "context_scores"):
            del full[heavy]
        full["tool_decision_count"] = len(self.tool_decisions)
        return full


def is_blank(prompt: JSON) -> bool:
    if prompt is None:
        return True
    if isinstance(prompt, str):
        return not prompt.strip()
    if isinstance(prompt, (list, dict)):
        return not prompt
    return False


_OPTIONAL_TEXT = ("project", "session_id", "client", "model", "status", "error", "context_pack", "wire",
                  "agent_id", "parent_agent_id")
_LABELS = frozenset({"project", "session_id", "client", "model", "status", "wire", "agent_id",
                     "parent_agent_id"})  # names, not free text
MAX_LABEL = 256
_OPTIONAL_NUMBER = ("prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms")
_OPTIONAL_INTEGER = ("cache_read_tokens", "cache_creation_tokens")
_OPTIONAL_ID_LISTS = ("memories_used", "chunks_used")
_ACCEPTED = {
    "prompt", "response", "params", "tool_decisions", "created_at", "usage_source", "context_scores",
    *_OPTIONAL_TEXT, *_OPTIONAL_NUMBER, *_OPTIONAL_INTEGER, *_OPTIONAL_ID_LISTS,
}


def interaction_from_payload(payload: dict[str, Any]) -> Interaction:
    """Validate a client-submitted record: `prompt` is required and not blank, the rest optional.

    `prompt` and `response` may be text or the OpenAI messages/message they stand for.
    """
    unknown = sorted(set(payload) - _ACCEPTED)
    if unknown:
        raise InvalidRecord(unknown[0], f"unknown field {unknown[0]!r}")
    prompt = payload.get("prompt")
    if not isinstance(prompt, (str, list, dict)):
        raise InvalidRecord("prompt", "prompt is required: text or a list of messages")
    if is_blank(prompt):
        raise InvalidRecord("prompt", "prompt must not be empty or whitespace")
    values: dict[str, Any] = {}
    for name in _OPTIONAL_TEXT:
        value = payload.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRecord(name, f"{name} must be a string")
        if value is not None and name in _LABELS and not (value.isprintable() and len(value) <= MAX_LABEL):
            raise InvalidRecord(name, f"{name} must be printable text of at most {MAX_LABEL} characters")
        values[name] = value
    for name in _OPTIONAL_NUMBER:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidRecord(name, f"{name} must be a number")
        if value is not None and not 0 <= value <= MAX_COUNT:
            raise InvalidRecord(name, f"{name} must be from 0 to {MAX_COUNT}")
        values[name] = value
    for name in _OPTIONAL_INTEGER:
        value = payload.get(name)
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_COUNT):
            raise InvalidRecord(name, f"{name} must be an integer from 0 to {MAX_COUNT}")
        values[name] = value
    usage_source = payload.get("usage_source")
    if usage_source is not None and usage_source not in USAGE_SOURCES:
        raise InvalidRecord("usage_source", f"usage_source must be one of {', '.join(USAGE_SOURCES)}")
    for name in _OPTIONAL_ID_LISTS:
        ids = payload.get(name) or []
        if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
            raise InvalidRecord(name, f"{name} must be a list of ids")
        values[name] = tuple(str(i) for i in ids)
    decisions = payload.get("tool_decisions") or []
    if not isinstance(decisions, list):
        raise InvalidRecord("tool_decisions", "tool_decisions must be a list")
    scores = payload.get("context_scores")
    if scores is not None and not (isinstance(scores, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())):
        raise InvalidRecord("context_scores", "context_scores must be an object of id: score")
    created_at = payload.get("created_at")
    if created_at is not None and not isinstance(created_at, str):
        raise InvalidRecord("created_at", "created_at must be a string")
    return Interaction(
        id=new_interaction_id(),
        created_at=parse_since(created_at, "created_at") if created_at else now_timestamp(),
        prompt=prompt,
        response=payload.get("response"),
        params=payload.get("params"),
        tool_decisions=tuple(decisions),
        project=values["project"],
        session_id=values["session_id"],
        client=values["client"],
        model=values["model"],
        status=values["status"] or "ok",
        error=values["error"],
        context_pack=values["context_pack"],
        prompt_tokens=values["prompt_tokens"],
        completion_tokens=values["completion_tokens"],
        latency_ms=values["latency_ms"],
        ttft_ms=values["ttft_ms"],
        memories_used=values["memories_used"],
        chunks_used=values["chunks_used"],
        wire=values["wire"],
        usage_source=usage_source,
        cache_read_tokens=values["cache_read_tokens"],
        cache_creation_tokens=values["cache_creation_tokens"],
        agent_id=values["agent_id"],
        parent_agent_id=values["parent_agent_id"],
        context_scores=scores,
    )


@dataclass(frozen=True, slots=True)
class InteractionQuery:
    """Filters for listing interactions: newest first, `since` inclusive."""

    project: str | None = None
    session_id: str | None = None
    client: str | None = None
    since: str | None = None
    limit: int = LIST_LIMIT_DEFAULT
    projects: frozenset[str] | None = None  # the projects a reader may see; None: all
    status: str | None = None
    model: str | None = None
    before: str | None = None  # an interaction id: the records listed after it (the next page)

    @classmethod
    def build(
        cls,
        *,
        project: str | None = None,
        session_id: str | None = None,
        client: str | None = None,
        since: str | None = None,
        limit: int | str | None = None,
        projects: frozenset[str] | None = None,
        status: str | None = None,
        model: str | None = None,
        before: str | None = None,
    ) -> InteractionQuery:
        """Validate raw filter values (from a query string or the CLI); caps `limit` at 500."""
        if limit is None or limit == "":
            count = LIST_LIMIT_DEFAULT
        else:
            try:
                count = int(limit)
            except (TypeError, ValueError):
                raise InvalidRecord("limit", f"limit must be an integer, got {limit!r}") from None
            if count < 0:
                raise InvalidRecord("limit", "limit must not be negative")
        return cls(
            project=project or None,
            session_id=session_id or None,
            client=client or None,
            since=parse_since(since) if since else None,
            limit=min(count, LIST_LIMIT_CAP),
            projects=projects,
            status=status or None,
            model=model or None,
            before=before or None,
        )


@dataclass(frozen=True, slots=True)
class Session:
    """The turns of one conversation, as recorded."""

    project: str
    id: str
    client: str | None
    first_at: str
    last_at: str
    interaction_count: int
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class CleanupResult:
    sessions: int = 0
    interactions: int = 0
    approvals: int = 0


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w` -> a duration."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise InvalidRecord("older_than", f"expected an age like 30d, 12h, 90m or 2w, got {text!r}")
    return timedelta(seconds=int(number) * units[unit])
