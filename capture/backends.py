"""Which store a URL names, and opening it: the one place that knows every backend."""

from __future__ import annotations

from capture.postgres import PostgresStore
from capture.sqlite import SQLiteStore
from capture.store import Store, StoreUnavailable


def sqlite_path(url: str) -> str | None:
    """The SQLite file a store URL names (a path, or `sqlite:///path`); None for other backends."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    return None if "://" in url else url


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """A store for `url`: a file path, `sqlite:///path`, or `postgresql://...`."""
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresStore(url)
    path = sqlite_path(url)
    if path is None:
        raise StoreUnavailable(
            f"no store for {url.partition('://')[0]}:// URLs; use a SQLite file path, sqlite:///path or "
            "postgresql://user:password@host:port/database"
        )
    return SQLiteStore(path)
