"""The capture writer: the request path enqueues finished interactions, one task stores them.

Nothing here can block or fail a response. While the store is unavailable the writer keeps
the batch and retries with backoff, holding at most `max_pending` records in memory; past
that, and whatever is left when the gateway stops, goes to a spool file (JSON lines) that the
next start stores first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import structlog

from capture.records import Interaction
from capture.store import Store

log = structlog.get_logger("ctxgate.capture")


UsageCounter = Callable[[Interaction], tuple[int, int]]


class CaptureWriter:
    """`usage_counter`, when given, fills in (prompt, completion) tokens for records that
    arrive without them (the provider reported none); it runs in a thread, never on the
    request path."""

    def __init__(
        self,
        store: Store,
        *,
        spool_path: Path | None,
        usage_counter: UsageCounter | None = None,
        batch_size: int = 256,
        max_pending: int = 50_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.spool_path = spool_path
        self.usage_counter = usage_counter
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.spooled_total = 0
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.written_total = 0
        self.failed_writes_total = 0
        self._queue: asyncio.Queue[Interaction] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[Interaction] = []
        self._progress = asyncio.Condition()
        self._stopped = False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, interaction: Interaction) -> None:
        """Enqueue; never blocks on the store. Past `max_pending` (a store down for long), or
        once stopped, the record goes straight to the spool file instead of memory."""
        if self._stopped or self._queue.qsize() >= self.max_pending:
            self._spool([interaction])
            return
        self._queue.put_nowait(interaction)

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored."""
        await self._queue.join()

    async def wait_written(self, count: int) -> None:
        """Wait until at least `count` interactions have been stored since start."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.written_total >= count)

    async def start(self) -> None:
        await self._replay_spool()
        self._task = asyncio.create_task(self._run(), name="ctxgate-capture-writer")

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Write everything enqueued so far; spool what the store would not take in time."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._stopped = True
        left, self._in_flight = self._in_flight, []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        self._spool(left)

    async def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            # Kept until stored, so a write cut off by the drain deadline is spooled, not lost
            # (replaying an already stored id is a no-op).
            self._in_flight = await self._next_batch()
            if self._in_flight and not await self._write(self._in_flight):
                return
            for _ in self._in_flight:
                self._queue.task_done()
            self._in_flight = []

    async def _next_batch(self) -> list[Interaction]:
        if self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                return []
            batch = [getter.result()]
        else:
            batch = [self._queue.get_nowait()]
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[Interaction]) -> bool:
        """True once stored; False when the gateway is stopping and the store still refuses."""
        if self.usage_counter is not None and any(i.prompt_tokens is None for i in batch):
            batch[:] = await asyncio.to_thread(self._with_usage, batch)
        delay = self.retry_initial_s
        while True:
            try:
                await self.store.insert_interactions(batch)
            except Exception as error:  # boundary: a store failure must never end the writer
                self.failed_writes_total += 1
                log.warning("capture_write_failed", error=str(error), batch=len(batch))
                if self._stopping.is_set():
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            await self._count_memory_uses(batch)
            async with self._progress:
                self.written_total += len(batch)
                self._progress.notify_all()
            return True

    async def _count_memory_uses(self, batch: list[Interaction]) -> None:
        """use_count / last_used_at of the memories these interactions were given: bookkeeping
        that follows the record, so it stays off the request path too."""
        used = [memory_id for i in batch for memory_id in i.memories_used]
        if not used:
            return
        try:
            await self.store.mark_memories_used(used, max(i.created_at for i in batch if i.memories_used))
        except Exception as error:  # boundary: a count is not worth losing the writer over
            log.warning("memory_use_count_failed", error=str(error))

    def _with_usage(self, batch: list[Interaction]) -> list[Interaction]:
        assert self.usage_counter is not None
        counted = []
        for interaction in batch:
            if interaction.prompt_tokens is None:
                try:
                    prompt, completion = self.usage_counter(interaction)
                except Exception:  # boundary: counting is best effort, the record is what matters
                    log.warning("usage_count_failed", interaction_id=interaction.id)
                else:
                    interaction = replace(interaction, prompt_tokens=prompt, completion_tokens=completion)
            counted.append(interaction)
        return counted

    def _spool(self, interactions: Sequence[Interaction]) -> None:
        if not interactions:
            return
        if self.spool_path is None:
            log.error("capture_lost", count=len(interactions), reason="store unavailable and no spool file")
            return
        with self.spool_path.open("ab") as spool:
            spool.write(b"".join(orjson.dumps(i.as_dict()) + b"\n" for i in interactions))
        self.spooled_total += len(interactions)
        log.warning("capture_spooled", count=len(interactions), path=str(self.spool_path))

    async def _replay_spool(self) -> None:
        """Store what an earlier run spooled; the file goes only once its records are stored."""
        if self.spool_path is None or not self.spool_path.exists():
            return
        records, unreadable = [], 0
        for line in self.spool_path.read_bytes().splitlines():
            try:
                fields = orjson.loads(line)
                for name in ("memories_used", "chunks_used", "tool_decisions"):
                    fields[name] = tuple(fields[name])
                records.append(Interaction(**fields))
            except (orjson.JSONDecodeError, TypeError, KeyError):  # a line cut by a crash mid-write
                unreadable += int(bool(line.strip()))
        try:
            for start in range(0, len(records), self.batch_size):
                await self.store.insert_interactions(records[start : start + self.batch_size])
        except Exception as error:  # boundary: keep the spool for the next start
            log.warning("capture_spool_replay_failed", error=str(error), count=len(records))
            return
        self.spool_path.unlink()
        log.info("capture_spool_replayed", count=len(records), unreadable_lines=unreadable)
