"""Retention deletes exactly what is older than the cutoff, in bounded batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from capture.approvals import Approval, ApprovalStatus
from capture.records import Interaction, InteractionQuery, new_interaction_id
from capture.sqlite import SQLiteStore
from capture.store import Store


def interaction(created_at: str, session_id: str | None, tokens: int = 1) -> Interaction:
    return Interaction(id=new_interaction_id(), created_at=created_at, prompt="p", session_id=session_id,
                       project="atmos", prompt_tokens=tokens, completion_tokens=tokens)


async def seeded(store: Store) -> Store:
    old_days = [f"2026-01-0{d} 10:00:00" for d in range(1, 6)]
    batch = [interaction(day, f"old-{n}") for n, day in enumerate(old_days)]
    batch += [interaction("2026-01-01 09:00:00", "old-0"), interaction("2026-03-01 10:00:00", "new-0")]
    # a session that began before the cutoff but was active after it is kept whole
    batch += [interaction("2026-01-02 10:00:00", "straddles"), interaction("2026-03-02 10:00:00", "straddles")]
    batch += [interaction("2026-01-03 10:00:00", None), interaction("2026-03-03 10:00:00", None)]
    batch += [interaction(CUTOFF, "edge")]  # exactly at the cutoff: not older, kept
    await store.insert_interactions(batch)
    for name, created_at, status in (("a-old", "2026-01-01 00:00:00", ApprovalStatus.APPROVED),
                                     ("a-new", "2026-03-01 00:00:00", ApprovalStatus.DENIED),
                                     ("a-waiting", "2026-01-01 00:00:00", ApprovalStatus.PENDING)):
        await store.insert_approval(Approval(id=name, created_at=created_at, expires_at="2999-01-01 00:00:00",
                                             project="atmos", tool="t", status=status))
    return store


CUTOFF = "2026-02-01 00:00:00"


async def test_deletes_exactly_what_is_older_than_the_cutoff(any_store: Store) -> None:
    store = await seeded(any_store)
    before = {s.id: s for s in await store.list_sessions(limit=100)}
    assert before["old-0"].interaction_count == 2 and before["straddles"].interaction_count == 2

    result = await store.delete_older_than(CUTOFF, batch_size=2)
    assert (result.sessions, result.interactions, result.approvals) == (5, 8, 1)
    after = {s.id: s for s in await store.list_sessions(limit=100)}
    assert set(after) == {"new-0", "straddles", "edge"}
    # what is left of a session that straddled the cutoff is counted again
    assert (after["straddles"].interaction_count, after["straddles"].first_at) == (1, "2026-03-02 10:00:00")
    assert after["straddles"].prompt_tokens == 1
    assert len(await store.session_interactions("atmos", "straddles")) == 1
    assert len(await store.list_interactions(InteractionQuery(limit=500))) == 4
    assert sorted(a.id for a in await store.list_approvals()) == ["a-new", "a-waiting"]


async def test_nothing_older_means_nothing_deleted(any_store: Store) -> None:
    store = await seeded(any_store)
    before = await store.list_interactions(InteractionQuery(limit=500))
    sessions = await store.list_sessions(limit=100)
    result = await store.delete_older_than("2025-01-01 00:00:00")
    assert (result.sessions, result.interactions, result.approvals) == (0, 0, 0)
    assert await store.list_interactions(InteractionQuery(limit=500)) == before  # and so it is
    assert await store.list_sessions(limit=100) == sessions


def test_sessions_clean_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli.commands import main

    async def seed() -> None:
        store = SQLiteStore(str(tmp_path / "db"))
        await store.open()
        await (await seeded(store)).close()

    asyncio.run(seed())
    assert main(["sessions", "clean", "--older-than", "30d", "--db", str(tmp_path / "db")]) == 0
    assert capsys.readouterr().out.startswith("deleted 8 sessions, 12 interactions and 2 approvals older than")
    assert main(["sessions", "clean", "--older-than", "soon", "--db", str(tmp_path / "db")]) == 2


def test_sessions_list_and_show_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli.commands import main

    async def seed() -> None:
        store = SQLiteStore(str(tmp_path / "db"))
        await store.open()
        await (await seeded(store)).close()

    asyncio.run(seed())
    assert main(["sessions", "list", "--db", str(tmp_path / "db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "project", "client"] and lines[1].split()[0] == "straddles"  # most recently active first
    assert main(["sessions", "show", "old-0", "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    assert "2 turns" in out and out.count("\n[") == 2
    assert main(["sessions", "show", "nope", "--db", str(tmp_path / "db")]) == 1
