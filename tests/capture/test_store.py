"""The store: schema by recorded migrations, round trips (on both backends where marked by
`any_store`), and the `since` string shape."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

import capture.search_cache
import capture.sqlite
from capture.knowledge import new_memory
from capture.migrations import MIGRATIONS
from capture.records import Interaction, InteractionQuery, new_interaction_id
from capture.sqlite import SQLiteStore
from capture.store import Store

SHORT_TTL_S = 0.05  # the knowledge-version TTL these tests run with, so that outliving it is quick


def interaction(**fields: object) -> Interaction:
    defaults: dict[str, object] = {"id": new_interaction_id(), "created_at": "2026-05-01 09:00:00", "prompt": "p"}
    defaults.update(fields)
    return Interaction(**defaults)  # type: ignore[arg-type]


async def test_blank_database_gets_every_migration_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "ctxgate.db"
    for _ in range(2):  # a second open applies nothing again
        store = SQLiteStore(str(path))
        await store.open()
        await store.close()
    db = sqlite3.connect(path)
    names = [name for (name,) in db.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [m.__name__ for m in MIGRATIONS]
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_interactions_session_id", "ix_interactions_project", "ix_interactions_client",
            "ix_interactions_created_at"} <= indexes
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_created_at_is_stored_as_the_same_string_the_api_returns(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.open()
    record = interaction(created_at="2026-05-01 09:00:00")
    await store.insert_interactions([record])
    await store.close()
    raw = sqlite3.connect(tmp_path / "x.db").execute("SELECT created_at FROM interactions").fetchone()
    assert raw == ("2026-05-01 09:00:00",)


async def test_reinserting_a_stored_id_changes_nothing(any_store: Store) -> None:
    store = any_store
    record = interaction(prompt="original")
    await store.insert_interactions([record])
    await store.insert_interactions([record, interaction(prompt="other")])
    found = await store.list_interactions(InteractionQuery())
    assert len(found) == 2
    stored = await store.get_interaction(record.id)
    assert stored is not None and stored.prompt == "original"


async def test_a_batch_counts_each_stored_record_once_towards_its_session(any_store: Store) -> None:
    store = any_store
    replayed = interaction(session_id="s-1", project="atmos", client="claude-cli/2", created_at="2026-05-01 09:05:00",
                           prompt_tokens=100, completion_tokens=10)
    await store.insert_interactions([replayed])
    await store.insert_interactions([
        interaction(session_id="s-1", project="atmos", client="claude-cli/2", created_at="2026-05-01 09:07:00",
                    prompt_tokens=7, completion_tokens=1),
        replayed,  # already stored: counts nothing again
        interaction(session_id="s-1", project="other", client="codex", created_at="2026-05-01 09:01:00",
                    prompt_tokens=5, completion_tokens=2),
        interaction(session_id="s-1", project="atmos", client="later-client", created_at="2026-05-01 09:00:00",
                    prompt_tokens=3),
        interaction(session_id=None, project="atmos", prompt_tokens=50),
    ])
    sessions = {s.project: s for s in await store.get_sessions("s-1")}
    atmos = sessions["atmos"]
    assert (atmos.interaction_count, atmos.prompt_tokens, atmos.completion_tokens) == (3, 110, 11)
    assert (atmos.first_at, atmos.last_at, atmos.client) == ("2026-05-01 09:00:00", "2026-05-01 09:07:00", "claude-cli/2")
    other = sessions["other"]
    assert (other.interaction_count, other.prompt_tokens, other.client) == (1, 5, "codex")


async def test_unopenable_path_raises_store_unavailable(tmp_path: Path) -> None:
    from capture.store import StoreUnavailable

    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteStore(str(blocker / "db.sqlite"))  # parent is a file
    try:
        await store.open()
    except StoreUnavailable as error:
        assert "db.sqlite" in str(error)
    else:
        raise AssertionError("expected StoreUnavailable")


async def test_a_context_search_does_not_wait_behind_a_long_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A request's context search must not queue behind a capture batch or an ingest transaction.
    monkeypatch.setattr(capture.search_cache, "KNOWLEDGE_VERSION_TTL_S", SHORT_TTL_S)
    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.open()
    await store.add_memory(new_memory("atmos", "The prod VPC CIDR is 10.0.0.0/16"))
    release = threading.Event()

    def long_write(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE memories SET content = 'The prod VPC CIDR is 10.9.0.0/16'")
        release.wait(timeout=30)
        db.execute("COMMIT")

    writing = asyncio.create_task(store._run(long_write))
    await asyncio.sleep(0.05)  # the write transaction is open on the writer's thread
    memories, _ = await asyncio.wait_for(store.search_knowledge("atmos", "prod VPC CIDR", 5), timeout=10)
    assert not writing.done() and [m.content for m in memories] == ["The prod VPC CIDR is 10.0.0.0/16"]
    release.set()
    await writing
    await asyncio.sleep(2 * SHORT_TTL_S)  # written past the store's methods, as by another process
    memories, _ = await store.search_knowledge("atmos", "prod VPC CIDR", 5)
    assert [m.content for m in memories] == ["The prod VPC CIDR is 10.9.0.0/16"]
    await store.close()


async def test_knowledge_written_elsewhere_is_found_within_the_version_ttl_and_here_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture.search_cache, "KNOWLEDGE_VERSION_TTL_S", SHORT_TTL_S)
    here, elsewhere = SQLiteStore(str(tmp_path / "x.db")), SQLiteStore(str(tmp_path / "x.db"))  # two processes
    await here.open()
    await elsewhere.open()
    assert await here.search_knowledge("atmos", "ledger port", 5) == ([], [])
    await elsewhere.add_memory(new_memory("atmos", "The ledger port is 7311"))
    assert await here.search_knowledge("atmos", "ledger port", 5) == ([], [])  # its version read still stands
    await asyncio.sleep(2 * SHORT_TTL_S)
    assert [m.content for m in (await here.search_knowledge("atmos", "ledger port", 5))[0]] == ["The ledger port is 7311"]
    await here.add_memory(new_memory("atmos", "The ledger port moved to 7312"))
    found = [m.content for m in (await here.search_knowledge("atmos", "ledger port", 5))[0]]
    assert sorted(found) == ["The ledger port is 7311", "The ledger port moved to 7312"]
    await here.close()
    await elsewhere.close()


def store_as_of(path: Path, migrations: int, **old_row: object) -> None:
    """A store migrated only as far as its first `migrations`, holding one old record, id `old-1`."""
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in MIGRATIONS[:migrations]:
        migration(old.execute)
        old.execute("INSERT INTO schema_migrations VALUES (?, '2026-11-01 00:00:00')", (migration.__name__,))
    row = {"id": "old-1", "created_at": "2026-11-01 00:00:00", "status": "ok", "prompt": '"p"', **old_row}
    old.execute(f"INSERT INTO interactions ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()))
    old.close()


async def test_a_store_from_before_records_named_their_wire_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store_as_of(path, 6)  # the schema as 0.1 left it
    store = SQLiteStore(str(path))
    await store.open()
    await store.insert_interactions([interaction(id="new-1", wire="openai_chat")])
    before, after = await store.get_interaction("old-1"), await store.get_interaction("new-1")
    await store.close()
    assert before is not None and before.wire is None and before.prompt == "p"
    assert after is not None and after.wire == "openai_chat"


async def test_a_store_from_before_records_said_where_their_counts_came_from_keeps_its_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    store_as_of(path, 7, wire="openai_chat", prompt_tokens=12, completion_tokens=5)  # up to m007_interaction_wire
    store = SQLiteStore(str(path))
    await store.open()
    await store.insert_interactions([interaction(id="new-1", prompt_tokens=12, completion_tokens=5,
                                                 usage_source="provider", cache_read_tokens=8,
                                                 cache_creation_tokens=2)])
    before, after = await store.get_interaction("old-1"), await store.get_interaction("new-1")
    summaries = {s.id: s for s in await store.list_interactions(InteractionQuery())}
    await store.close()
    assert before is not None and (before.wire, before.prompt_tokens, before.completion_tokens) == ("openai_chat", 12, 5)
    assert (before.usage_source, before.cache_read_tokens, before.cache_creation_tokens) == (None, None, None)
    assert after is not None
    assert (after.usage_source, after.cache_read_tokens, after.cache_creation_tokens) == ("provider", 8, 2)
    assert summaries["old-1"].usage_source is None and summaries["new-1"].cache_read_tokens == 8


async def test_a_store_from_before_sub_agents_were_named_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store_as_of(path, 8, wire="anthropic_messages", usage_source="provider")  # up to m008_interaction_usage_source
    store = SQLiteStore(str(path))
    await store.open()
    await store.insert_interactions([interaction(id="new-1", agent_id="agent-7", parent_agent_id="main-1")])
    before, after = await store.get_interaction("old-1"), await store.get_interaction("new-1")
    summaries = {s.id: s for s in await store.list_interactions(InteractionQuery())}
    await store.close()
    assert before is not None and (before.wire, before.usage_source) == ("anthropic_messages", "provider")
    assert (before.agent_id, before.parent_agent_id) == (None, None)
    assert after is not None and (after.agent_id, after.parent_agent_id) == ("agent-7", "main-1")
    assert summaries["new-1"].agent_id == "agent-7"
