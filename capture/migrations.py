"""Ordered, named, additive schema migrations. Never edit one that has shipped: add the next.

Each migration takes an `execute(sql)` callable so the same statements serve every backend;
the SQL sticks to what SQLite and PostgreSQL share.
"""

from __future__ import annotations

from collections.abc import Callable

Execute = Callable[[str], object]


def m001_interactions(execute: Execute) -> None:
    execute(
        """
        CREATE TABLE interactions (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            project TEXT,
            session_id TEXT,
            client TEXT,
            model TEXT,
            status TEXT NOT NULL,
            error TEXT,
            prompt TEXT NOT NULL,
            params TEXT,
            response TEXT,
            memories_used TEXT NOT NULL DEFAULT '[]',
            chunks_used TEXT NOT NULL DEFAULT '[]',
            context_pack TEXT,
            tool_decisions TEXT NOT NULL DEFAULT '[]',
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            ttft_ms REAL
        )
        """
    )
    for column in ("session_id", "project", "client", "created_at"):
        execute(f"CREATE INDEX ix_interactions_{column} ON interactions ({column})")


MIGRATIONS: tuple[Callable[[Execute], None], ...] = (m001_interactions,)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""
