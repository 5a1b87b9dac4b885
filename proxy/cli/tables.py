"""Records as aligned text tables, for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capture.records import Interaction

_TABLE_COLUMNS = ("id", "created_at", "project", "session_id", "client", "model", "status",
                  "prompt_tokens", "completion_tokens", "latency_ms")


def table(rows: Sequence[Any], columns: tuple[str, ...], empty: str) -> str:
    if not rows:
        return empty
    cells = [[_cell(getattr(r, c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[n]) for r in cells)) for n, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_table(interactions: Sequence[Interaction]) -> str:
    return table(interactions, _TABLE_COLUMNS, "no interactions")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
