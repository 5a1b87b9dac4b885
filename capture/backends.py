"""Which store a URL names, and opening it: the one place that knows every backend."""

from __future__ import annotations

from capture.sqlite import SQLiteStore
from capture.store import Store, StoreUnavailable


def sqlite_path(url: str) -> str | None:
    """The SQLite file a store URL names (a path, or `sqlite:///path`); None for other backends."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    return None if "://" in url else url


def open_store(url: str) -> Store:
    """A store for `url`: a file path, `sqlite:///path`, or `postgresql://...`."""
    path = sqlite_path(url)
    if path is None:
        raise StoreUnavailable(
            f"no store for {url.partition('://')[0]}:// URLs in this version; use a SQLite file path or "
            "sqlite:///path (PostgreSQL is not available yet)"
        )
    return SQLiteStore(path)
