"""The capture writer: the request path enqueues finished interactions, one task stores them.

Nothing here can block or fail a response, and no record can stop the others:

- a batch the store rejects because of a record in it is split until the record is found;
  that one goes to the dead-letter file with its error, the rest are stored;
- while the store is unavailable, batches go to the spool (fsynced), and the writer probes the
  store with backoff; once it answers, the spool is replayed into it;
- if even the spool cannot be written, records wait in memory, at most `max_pending` of them
  (past that, new ones are dropped, counted and logged as errors), until one of the two can.

On stop, whatever the store will not take in time goes to the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

import structlog

from capture.records import Interaction
from capture.spool import Spool, SpoolUnavailable, read_segment
from capture.store import RecordRejected, Store, StoreUnavailable

log = structlog.get_logger("ctxgate.capture")


UsageCounter = Callable[[Interaction], tuple[int, int]]


class CaptureWriter:
    """`usage_counter`, when given, fills in (prompt, completion) tokens for records that
    arrive without a prompt count (the provider reported none), and marks them
    `usage_source="counted"`; it runs in a thread, never on the request path. A record it
    fails to count keeps the counts and source it came with."""

    def __init__(
        self,
        store: Store,
        *,
        spool: Spool | None,
        usage_counter: UsageCounter | None = None,
        batch_size: int = 256,
        batch_window_s: float = 0.02,
        max_pending: int = 50_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.usage_counter = usage_counter
        self.batch_size = batch_size
        self.batch_window_s = batch_window_s
        self._last_batch_at = 0.0  # time.monotonic() when the last batch was taken
        self.max_pending = max_pending
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.written_total = 0
        self.failed_writes_total = 0
        self.spooled_total = 0
        self.replayed_total = 0
        self.dead_letters_total = 0
        self.dropped_total = 0
        self.store_error: str | None = None  # why the store last refused, until it takes records again
        self.spool_error: str | None = None  # why the spool last refused, until it takes records again
        self._queue: asyncio.Queue[Interaction] = asyncio.Queue()
        self._held: deque[Interaction] = deque()  # neither stored nor spooled yet: the spool failed too
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._stopped = False
        self._retry_at = 0.0  # monotonic: before it, the store is not asked again
        self._delay = retry_initial_s
        self._spool_waiting = False  # records sit in the spool, waiting for the store

    @property
    def pending(self) -> int:
        """Records in memory, not yet stored or spooled."""
        return self._queue.qsize() + len(self._held)

    @property
    def is_spool_waiting(self) -> bool:
        return self._spool_waiting

    def submit(self, interaction: Interaction) -> None:
        """Enqueue; never blocks on the store. Once stopped, or past `max_pending` in memory
        (the writer cannot keep up), the record goes straight to the spool."""
        if self._stopped or self.pending >= self.max_pending:
            self._spool_or_lose([interaction])
            return
        self._queue.put_nowait(interaction)

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored, spooled or dead-lettered."""
        await self._queue.join()

    async def wait_written(self, count: int) -> None:
        """Wait until at least `count` interactions have been stored since start."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.written_total >= count)

    async def start(self) -> None:
        await self._replay()
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
        left = list(self._held)
        self._release(len(left))
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        self._spool_or_lose(left)
        if self.spool is not None:
            self.spool.seal()

    async def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty() and not self._held):
            # A batch cut off by the drain deadline is still in `_held`, so it is spooled at
            # stop, not lost (replaying an id the store already holds is a no-op).
            self._held.extend(await self._next_batch())
            if self._held and not await self._persist() and self._stopping.is_set():
                return  # neither store nor spool takes them: stop() makes the last try
            if self._store_is_due() and self._spool_waiting and not self._stopping.is_set():
                await self._replay()

    async def _next_batch(self) -> list[Interaction]:
        """Up to `batch_size` records; waits for one unless something else is due (records
        held, a spool to replay once the store may be asked again) or the writer is stopping,
        and for the rest of the window since the last batch was taken."""
        # At most one batch a window: under load the records of a window share one transaction
        # (one commit, each page they share written once) instead of a few records each. A
        # record after a quiet spell is stored at once. The wait comes before anything is taken
        # off the queue: a writer cancelled in it leaves every record queued, for stop() to spool.
        window_left_s = self._last_batch_at + self.batch_window_s - time.monotonic()
        if window_left_s > 0 and not self._held and self._queue.qsize() < self.batch_size \
                and not self._stopping.is_set():
            await asyncio.sleep(window_left_s)
        if self._queue.empty():
            if self._held or self._stopping.is_set():
                return []
            wait_s = max(0.0, self._retry_at - time.monotonic()) if self._spool_waiting else None
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({getter, stopper}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                return []
            batch = [getter.result()]
        else:
            batch = [self._queue.get_nowait()]
        self._last_batch_at = time.monotonic()
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _persist(self) -> bool:
        """Store the oldest held records, else spool them, else keep them and wait a little.
        True when they are stored or spooled."""
        batch = list(self._held)[: self.batch_size]
        if self.usage_counter is not None and any(_needs_count(i) for i in batch):
            batch = await asyncio.to_thread(self._with_usage, batch)
        if self._store_is_due():
            try:
                await self._store_isolating(batch)
            except StoreUnavailable as error:
                self._store_failed(error, len(batch))
            else:
                self._release(len(batch))
                return True
        try:
            await asyncio.to_thread(self._spool_batch, batch)
        except SpoolUnavailable as error:
            if self.spool_error is None:
                log.error("capture_spool_failed", error=str(error), held=len(self._held))
            self.spool_error = str(error)
            with contextlib.suppress(TimeoutError):  # neither takes records: wait before the next try
                await asyncio.wait_for(self._stopping.wait(), self._delay)
            return False
        self.spool_error = None
        self._release(len(batch))
        return True

    def _release(self, count: int) -> None:
        """The oldest `count` held records are stored, spooled or dealt with."""
        for _ in range(count):
            self._held.popleft()
            self._queue.task_done()

    async def _store_isolating(self, batch: Sequence[Interaction]) -> None:
        """Store `batch`; a record the store rejects is found by halving and dead-lettered,
        and the others are stored. StoreUnavailable leaves the caller to spool the lot."""
        try:
            await self.store.insert_interactions(batch)
        except StoreUnavailable:
            raise
        # Anything else is taken as this batch's fault, not the store's: retrying it forever
        # would stop capture for every record behind it.
        except Exception as error:
            if not isinstance(error, RecordRejected):
                log.exception("capture_write_crashed", batch=len(batch))
            if len(batch) > 1:
                half = len(batch) // 2
                await self._store_isolating(batch[:half])
                await self._store_isolating(batch[half:])
                return
            await asyncio.to_thread(self._dead_letter, batch[0], str(error))
            return
        self._store_recovered()
        await self._count_memory_uses(batch)
        async with self._progress:
            self.written_total += len(batch)
            self._progress.notify_all()

    def _store_is_due(self) -> bool:
        return self.store_error is None or time.monotonic() >= self._retry_at

    def _store_failed(self, error: Exception, count: int) -> None:
        self.failed_writes_total += 1
        if self.store_error is None:
            log.warning("capture_write_failed", error=str(error), batch=count)
        self.store_error = str(error)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max_s)

    def _store_recovered(self) -> None:
        if self.store_error is not None:
            log.info("capture_store_recovered")
        self.store_error = None
        self._delay = self.retry_initial_s

    async def _replay(self) -> None:
        """Store what the spool holds (this process's earlier segments and those of stopped
        processes); a segment goes once each of its records is stored or dead-lettered."""
        if self.spool is None:
            return
        self.spool.seal()
        try:
            with contextlib.closing(self.spool.claim()) as claimed:  # closing releases a claim's lock
                for path in claimed:
                    records, unreadable = await asyncio.to_thread(read_segment, path)
                    for start in range(0, len(records), self.batch_size):
                        await self._store_isolating(records[start : start + self.batch_size])
                    path.unlink()
                    self.replayed_total += len(records)
                    log.info("capture_spool_replayed", count=len(records), unreadable_lines=unreadable,
                             path=str(path))
            self._spool_waiting = False
        except StoreUnavailable as error:  # kept for the next try
            self._store_failed(error, 0)
            self._spool_waiting = True
        except OSError as error:
            log.error("capture_spool_replay_failed", error=str(error))
            self._spool_waiting = True

    async def _count_memory_uses(self, batch: Sequence[Interaction]) -> None:
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
            if _needs_count(interaction):
                try:
                    prompt, completion = self.usage_counter(interaction)
                except Exception:  # boundary: counting is best effort, the record is what matters
                    log.warning("usage_count_failed", interaction_id=interaction.id)
                else:
                    interaction = replace(interaction, prompt_tokens=prompt, completion_tokens=completion,
                                          usage_source="counted")
            counted.append(interaction)
        return counted

    def _spool_batch(self, batch: Sequence[Interaction]) -> None:
        """In a thread. Raises SpoolUnavailable (or when there is no spool)."""
        if self.spool is None:
            raise SpoolUnavailable("no spool directory configured")
        unwritable = self.spool.append(batch)
        for record, error in unwritable:
            self._dead_letter(record, error)
        self._spool_waiting = True
        self.spooled_total += len(batch) - len(unwritable)
        log.warning("capture_spooled", count=len(batch) - len(unwritable), store_error=self.store_error)

    def _dead_letter(self, record: Interaction, error: str) -> None:
        """Never raises: a record neither the store nor the dead-letter file takes is logged lost."""
        try:
            if self.spool is None:
                raise SpoolUnavailable("no spool directory configured")
            self.spool.dead_letter(record, error)
        except SpoolUnavailable as failure:
            self.dropped_total += 1
            log.error("capture_lost", count=1, interaction_id=record.id, reason=f"{error}; {failure}")
            return
        self.dead_letters_total += 1
        log.error("capture_dead_lettered", interaction_id=record.id, error=error,
                  path=str(self.spool.dead_letter_path))

    def _spool_or_lose(self, records: Sequence[Interaction]) -> None:
        """The last resort, at or after stop: the spool, else say loudly what is lost."""
        if not records:
            return
        try:
            self._spool_batch(records)
        except SpoolUnavailable as error:
            self.dropped_total += len(records)
            log.error("capture_lost", count=len(records), reason=str(error), store_error=self.store_error)


def _needs_count(interaction: Interaction) -> bool:
    """No prompt count, and an answer the provider was paid for, if only in part: a call it
    refused (a 429, a 529 Claude Code retries) had no tokens to count, and counting its prompt
    would swell the session's totals with tokens nobody billed."""
    return interaction.prompt_tokens is None and interaction.response is not None
