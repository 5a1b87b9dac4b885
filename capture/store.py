"""The store seam: what the gateway, the API and the CLI need from a backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from capture.records import Interaction, InteractionQuery


class StoreUnavailable(RuntimeError):
    """The backend cannot be reached or refused the operation."""


class Store(Protocol):
    """An interaction store. Every method may raise `StoreUnavailable`."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers a trivial query."""

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        """Insert all of `batch` in one transaction; ids already stored are skipped."""

    async def list_interactions(self, query: InteractionQuery) -> list[Interaction]:
        """Newest first; the records carry no prompt, params, response or pack text."""

    async def get_interaction(self, interaction_id: str) -> Interaction | None: ...


def open_store(url: str) -> Store:
    """A store for `url`: a file path, `sqlite:///path`, or `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreUnavailable(
            "the PostgreSQL store is not available in this version; use a SQLite path"
        )
    from capture.sqlite import SQLiteStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SQLiteStore(path)
