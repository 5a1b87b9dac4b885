"""Records as table rows: the columns, and the mapping both ways, for every backend."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from capture.approvals import Approval, ApprovalStatus
from capture.knowledge import Memory, MemoryStatus
from capture.records import Interaction

COLUMNS = (
    "id", "created_at", "project", "session_id", "client", "model", "status", "error",
    "prompt", "params", "response", "memories_used", "chunks_used", "context_pack",
    "tool_decisions", "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "wire",
    "usage_source", "cache_read_tokens", "cache_creation_tokens", "agent_id", "parent_agent_id",
    "context_scores",
)
LIST_COLUMNS = frozenset({"memories_used", "chunks_used", "tool_decisions"})
NULLABLE_JSON_COLUMNS = frozenset({"params", "response", "context_scores"})
JSON_COLUMNS = LIST_COLUMNS | NULLABLE_JSON_COLUMNS | {"prompt"}
SUMMARY_COLUMNS = tuple(c for c in COLUMNS if c not in {"prompt", "params", "response", "context_pack",
                                                         "context_scores"})


def session_totals(stored: Iterable[Interaction]) -> list[tuple[Any, ...]]:
    """One session upsert row per session of `stored`: an agent's batch is mostly one session,
    and one upsert of its sums costs a fraction of one per record."""
    totals: dict[tuple[str, str], list[Any]] = {}
    for interaction in stored:
        if interaction.session_id is None:
            continue
        key = (interaction.project or "", interaction.session_id)
        at, prompt, completion = interaction.created_at, interaction.prompt_tokens or 0, interaction.completion_tokens or 0
        total = totals.get(key)
        if total is None:
            totals[key] = [*key, interaction.client, at, at, 1, prompt, completion]
        else:
            total[3], total[4] = min(total[3], at), max(total[4], at)
            total[5] += 1
            total[6] += prompt
            total[7] += completion
    return [tuple(total) for total in totals.values()]


def row_values(interaction: Interaction) -> tuple[Any, ...]:
    values = []
    for column in COLUMNS:
        value = getattr(interaction, column)
        if column in JSON_COLUMNS and not (value is None and column in NULLABLE_JSON_COLUMNS):
            value = orjson.dumps(value).decode()
        values.append(value)
    return tuple(values)


def from_row(columns: Sequence[str], row: Iterable[Any]) -> Interaction:
    fields: dict[str, Any] = {}
    for column, value in zip(columns, row):
        if column in JSON_COLUMNS and value is not None:
            value = orjson.loads(value)
        fields[column] = tuple(value) if column in LIST_COLUMNS else value
    fields.setdefault("prompt", None)
    return Interaction(**fields)


MEMORY_COLUMNS = Memory.__slots__
APPROVAL_COLUMNS = Approval.__slots__


def memory_from_row(row: Iterable[Any]) -> Memory:
    fields = dict(zip(MEMORY_COLUMNS, row))
    fields["status"] = MemoryStatus(fields["status"])
    return Memory(**fields)


def approval_values(approval: Approval) -> dict[str, Any]:
    """The approval's columns and values as stored."""
    values = approval.as_dict()
    values["status"] = str(approval.status)
    values["always"] = int(approval.always)
    values["context"] = None if approval.context is None else orjson.dumps(approval.context).decode()
    return values


def approval_from_row(row: Iterable[Any]) -> Approval:
    fields = dict(zip(APPROVAL_COLUMNS, row))
    fields["status"] = ApprovalStatus(fields["status"])
    fields["always"] = bool(fields["always"])
    if fields["context"] is not None:
        fields["context"] = orjson.loads(fields["context"])
    return Approval(**fields)
