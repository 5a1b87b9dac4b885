"""The capture writer loses nothing: it retries a failing store and spools on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orjson

from capture.records import Interaction, InteractionQuery, new_interaction_id
from capture.sqlite import SQLiteStore
from capture.store import StoreUnavailable
from capture.writer import CaptureWriter


def interaction(prompt: str) -> Interaction:
    return Interaction(id=new_interaction_id(), created_at="2026-05-01 09:00:00", prompt=prompt)


class FlakyStore(SQLiteStore):
    """Refuses writes until `heal` is set; counts the refusals."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.healed = asyncio.Event()
        self.refused = 0
        self.refused_once = asyncio.Event()

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        if not self.healed.is_set():
            self.refused += 1
            self.refused_once.set()
            raise StoreUnavailable("disk on fire")
        await super().insert_interactions(batch)


async def stored_prompts(path: Path) -> list[str]:
    store = SQLiteStore(str(path))
    await store.open()
    try:
        summaries = await store.list_interactions(InteractionQuery(limit=500))
        full = [await store.get_interaction(s.id) for s in summaries]
        return sorted(str(i.prompt) for i in full if i is not None)
    finally:
        await store.close()


class CountingStore(SQLiteStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        self.batches.append(len(batch))
        await super().insert_interactions(batch)


async def test_batches_everything_submitted(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=None, batch_size=10)
    await writer.start()
    for n in range(35):  # all queued before the writer runs: it takes them ten at a time
        writer.submit(interaction(f"p{n:02}"))
    await writer.flush()
    await writer.stop()
    await store.close()
    assert store.batches == [10, 10, 10, 5]
    assert await stored_prompts(tmp_path / "db") == [f"p{n:02}" for n in range(35)]


async def test_failing_store_is_retried_until_it_recovers(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=None, retry_initial_s=0.01, retry_max_s=0.02)
    await writer.start()
    writer.submit(interaction("kept"))
    await store.refused_once.wait()
    store.healed.set()
    await writer.flush()
    await writer.stop()
    await store.close()
    assert store.refused >= 1 and writer.failed_writes_total >= 1
    assert await stored_prompts(tmp_path / "db") == ["kept"]


async def test_store_down_at_shutdown_spools_and_next_start_replays(tmp_path: Path) -> None:
    spool = tmp_path / "db.spool.jsonl"
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=spool, retry_initial_s=10)
    await writer.start()
    for prompt in ("a", "b", "c"):
        writer.submit(interaction(prompt))
    await store.refused_once.wait()
    await writer.stop(drain_timeout_s=5)
    await store.close()
    assert spool.exists() and len(spool.read_bytes().splitlines()) == 3
    assert await stored_prompts(tmp_path / "db") == []

    healthy = SQLiteStore(str(tmp_path / "db"))
    await healthy.open()
    restarted = CaptureWriter(healthy, spool_path=spool)
    await restarted.start()
    await restarted.flush()
    await restarted.stop()
    await healthy.close()
    assert not spool.exists()
    assert await stored_prompts(tmp_path / "db") == ["a", "b", "c"]


async def test_a_cut_spool_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = tmp_path / "db.spool.jsonl"
    good = interaction("survivor")
    spool.write_bytes(orjson.dumps(good.as_dict()) + b"\n" + b'{"id": "half-writ')
    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=spool)
    await writer.start()
    await writer.stop()
    await store.close()
    assert not spool.exists()
    assert await stored_prompts(tmp_path / "db") == ["survivor"]


async def test_spool_is_kept_when_the_store_refuses_the_replay(tmp_path: Path) -> None:
    spool = tmp_path / "db.spool.jsonl"
    spool.write_bytes(orjson.dumps(interaction("waiting").as_dict()) + b"\n")
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=spool)
    await writer.start()  # starts all the same: the gateway must come up with its store down
    await writer.stop()
    await store.close()
    assert b"waiting" in spool.read_bytes()


async def test_records_beyond_the_memory_bound_or_after_stop_go_to_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "db.spool.jsonl"
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool_path=spool, max_pending=2, retry_initial_s=10)
    await writer.start()
    writer.submit(interaction("taken by the writer"))
    await store.refused_once.wait()  # the writer holds that one, retrying
    for prompt in ("queued 1", "queued 2", "overflow"):
        writer.submit(interaction(prompt))
    assert writer.spooled_total == 1 and b"overflow" in spool.read_bytes()
    await writer.stop(drain_timeout_s=5)
    writer.submit(interaction("after stop"))
    await store.close()
    lines = spool.read_bytes().splitlines()
    assert sorted(orjson.loads(line)["prompt"] for line in lines) == [
        "after stop", "overflow", "queued 1", "queued 2", "taken by the writer",
    ]
