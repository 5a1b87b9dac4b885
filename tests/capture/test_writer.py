"""The capture writer loses nothing and no record stops it: a poison record is dead-lettered,
a store that refuses is stood in for by the spool, and the spool is replayed once it answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from capture.records import Interaction, InteractionQuery, new_interaction_id
from capture.spool import Spool
from capture.sqlite import SQLiteStore
from capture.store import StoreUnavailable
from capture.writer import CaptureWriter


def interaction(prompt: object) -> Interaction:
    return Interaction(id=new_interaction_id(), created_at="2026-05-01 09:00:00", prompt=prompt)


def nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


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


def spooled_prompts(directory: Path) -> list[str]:
    return sorted(str(orjson.loads(line)["prompt"]) for segment in directory.glob("spool-*.jsonl")
                  for line in segment.read_bytes().splitlines())


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
    writer = CaptureWriter(store, spool=None, batch_size=10)
    await writer.start()
    for n in range(35):  # all queued before the writer runs: it takes them ten at a time
        writer.submit(interaction(f"p{n:02}"))
    await writer.flush()
    await writer.stop()
    await store.close()
    assert store.batches == [10, 10, 10, 5]
    assert await stored_prompts(tmp_path / "db") == [f"p{n:02}" for n in range(35)]


async def test_records_that_arrive_within_a_window_share_a_batch_and_one_after_a_quiet_spell_goes_at_once(
    tmp_path: Path,
) -> None:
    store = CountingStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=None, batch_window_s=0.5)
    await writer.start()
    writer.submit(interaction("first"))  # after a quiet spell: taken at once, alone
    await asyncio.wait_for(writer.wait_written(1), 0.4)  # well within the window
    for n in range(5):  # within the window that batch opened: they wait for it, and go together
        writer.submit(interaction(f"burst-{n}"))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(writer.wait_written(6), 5)
    await writer.stop()
    await store.close()
    assert store.batches == [1, 5]


@pytest.mark.parametrize("poison", [
    pytest.param(lambda i: replace(i, prompt_tokens=2**63), id="integer past 64 bits"),
    pytest.param(lambda i: replace(i, session_id="s\udcff"), id="text that is not UTF-8"),
    pytest.param(lambda i: replace(i, params={"p": nested(300)}), id="nested past what orjson writes"),
])
async def test_a_record_the_store_rejects_is_dead_lettered_and_the_rest_are_stored(tmp_path: Path, poison) -> None:  # type: ignore[no-untyped-def]
    store = CountingStore(str(tmp_path / "db"))
    await store.open()
    spool = Spool(tmp_path / "spool")
    writer = CaptureWriter(store, spool=spool, batch_size=8)
    await writer.start()
    bad = poison(interaction("poison"))
    for n in range(5):
        writer.submit(interaction(f"before {n}"))
    writer.submit(bad)
    for n in range(5):
        writer.submit(interaction(f"after {n}"))
    await writer.flush()
    writer.submit(interaction("later"))  # the writer is still alive
    await writer.flush()
    await writer.stop()
    await store.close()
    assert await stored_prompts(tmp_path / "db") == sorted(
        [f"before {n}" for n in range(5)] + [f"after {n}" for n in range(5)] + ["later"])
    letters = spool.dead_letters()
    assert [letter.id for letter in letters] == [bad.id]
    assert letters[0].record["prompt"] == "poison" and letters[0].error
    assert writer.dead_letters_total == 1 and writer.dropped_total == 0
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))


async def test_a_store_down_sends_records_to_the_spool_and_they_are_stored_when_it_answers(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(tmp_path / "spool"), retry_initial_s=0.01, retry_max_s=0.02)
    await writer.start()
    writer.submit(interaction("kept"))
    await writer.flush()  # durable: in the spool, as the store refuses
    assert store.refused >= 1 and writer.store_error == "disk on fire"
    assert spooled_prompts(tmp_path / "spool") == ["kept"]
    store.healed.set()
    await asyncio.wait_for(writer.wait_written(1), 5)
    await writer.stop()
    await store.close()
    assert await stored_prompts(tmp_path / "db") == ["kept"]
    assert writer.store_error is None and spooled_prompts(tmp_path / "spool") == []


async def test_store_down_at_shutdown_spools_and_next_start_replays(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(tmp_path / "spool"), retry_initial_s=10)
    await writer.start()
    for prompt in ("a", "b", "c"):
        writer.submit(interaction(prompt))
    await store.refused_once.wait()
    await writer.stop(drain_timeout_s=5)
    await store.close()
    assert spooled_prompts(tmp_path / "spool") == ["a", "b", "c"]
    assert await stored_prompts(tmp_path / "db") == []

    healthy = SQLiteStore(str(tmp_path / "db"))
    await healthy.open()
    restarted = CaptureWriter(healthy, spool=Spool(tmp_path / "spool"))
    await restarted.start()
    await restarted.stop()
    await healthy.close()
    assert spooled_prompts(tmp_path / "spool") == []
    assert await stored_prompts(tmp_path / "db") == ["a", "b", "c"]


async def test_replaying_a_segment_twice_stores_each_record_once(tmp_path: Path) -> None:
    """A crash between storing a replayed segment and deleting it replays it again."""
    spool_dir = tmp_path / "spool"
    records = [replace(interaction(f"r{n}"), session_id="s1") for n in range(3)]
    Spool(spool_dir).append(records)
    segment = next(spool_dir.glob("spool-*.jsonl"))
    copy = segment.read_bytes()
    for _ in range(2):
        segment.write_bytes(copy)
        store = SQLiteStore(str(tmp_path / "db"))
        await store.open()
        writer = CaptureWriter(store, spool=Spool(spool_dir))
        await writer.start()
        await writer.stop()
        sessions = await store.list_sessions()
        await store.close()
    assert await stored_prompts(tmp_path / "db") == ["r0", "r1", "r2"]
    assert [s.interaction_count for s in sessions] == [3]


async def test_the_spool_file_of_earlier_versions_is_replayed(tmp_path: Path) -> None:
    legacy = tmp_path / "db.spool.jsonl"
    legacy.write_bytes(orjson.dumps(interaction("from 0.1").as_dict()) + b"\n" + b'{"id": "half-writ')
    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(tmp_path / "spool", legacy_files=[legacy]))
    await writer.start()
    await writer.stop()
    await store.close()
    assert not legacy.exists()
    assert await stored_prompts(tmp_path / "db") == ["from 0.1"]


async def test_spool_is_kept_when_the_store_refuses_the_replay(tmp_path: Path) -> None:
    Spool(tmp_path / "spool").append([interaction("waiting")])
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(tmp_path / "spool"))
    await writer.start()  # starts all the same: the gateway must come up with its store down
    assert writer.store_error == "disk on fire"
    await writer.stop()
    await store.close()
    assert spooled_prompts(tmp_path / "spool") == ["waiting"]


async def test_with_store_and_spool_both_refusing_records_wait_in_memory_until_one_takes_them(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(blocker), retry_initial_s=0.01, retry_max_s=0.02)
    await writer.start()
    for prompt in ("one", "two"):
        writer.submit(interaction(prompt))
    while writer.spool_error is None:
        await asyncio.sleep(0.01)
    assert writer.pending == 2 and writer.dropped_total == 0
    store.healed.set()
    await asyncio.wait_for(writer.wait_written(2), 5)
    await writer.stop()
    await store.close()
    assert await stored_prompts(tmp_path / "db") == ["one", "two"]


async def test_records_past_the_memory_bound_or_after_stop_go_to_the_spool(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "db"))
    await store.open()
    writer = CaptureWriter(store, spool=Spool(tmp_path / "spool"), max_pending=2, retry_initial_s=10)
    for prompt in ("queued 1", "queued 2", "overflow"):  # before start: nothing takes them from memory
        writer.submit(interaction(prompt))
    assert writer.spooled_total == 1 and spooled_prompts(tmp_path / "spool") == ["overflow"]
    await writer.start()
    await writer.stop(drain_timeout_s=5)
    writer.submit(interaction("after stop"))
    await store.close()
    assert spooled_prompts(tmp_path / "spool") == ["after stop", "overflow", "queued 1", "queued 2"]


async def test_records_the_provider_gave_no_counts_are_counted_and_say_so(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()

    def count(record: Interaction) -> tuple[int, int]:
        if record.prompt == "uncountable":
            raise ValueError("no tokenizer for this")
        return 7, 3

    writer = CaptureWriter(store, spool=None, usage_counter=count)
    await writer.start()
    reported = replace(interaction("reported"), prompt_tokens=11, completion_tokens=2, usage_source="provider",
                       cache_read_tokens=4)
    refused = replace(interaction("refused"), status="upstream_error", error="429: slow down")  # no answer
    for record in (replace(interaction("unreported"), response="an answer"), reported,
                   replace(interaction("uncountable"), response="an answer"), refused):
        writer.submit(record)
    await writer.flush()
    await writer.stop()
    ids = [s.id for s in await store.list_interactions(InteractionQuery())]
    found = {str(i.prompt): i for i in [await store.get_interaction(i) for i in ids] if i is not None}
    await store.close()
    assert [(found[p].usage_source, found[p].prompt_tokens, found[p].completion_tokens, found[p].cache_read_tokens)
            for p in ("unreported", "reported", "uncountable", "refused")] == [
        ("counted", 7, 3, None), ("provider", 11, 2, 4), (None, None, None, None), (None, None, None, None)]
