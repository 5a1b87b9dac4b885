"""The approval book: tool calls waiting for a person, and the wait itself.

A decision arrives through the HTTP API of this process (which wakes the waiter at once) or
through another process, writing to the store: another replica on PostgreSQL, whose decision
the store announces (LISTEN/NOTIFY) and which wakes the waiter at once too, or `ctxgate
approvals` and other workers on a SQLite file, which the waiter polls.
A timeout, the gateway stopping or the client leaving resolve to deny: nothing waits forever.

A client that leaves does not withdraw the question: agents re-send a call they lost (Claude
Code re-sends a dropped or idle stream at once, without streaming), and the same call (same
project, session, tool and arguments) joins the approval still pending instead of asking the
person twice. One nobody joins expires at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from capture.approvals import Approval, ApprovalStatus
from capture.records import format_timestamp, new_interaction_id
from capture.store import Store, StoreUnavailable

log = structlog.get_logger("ctxgate.policy")

STORE_POLL_S = 0.5
# On a store that announces decisions, the store is still read this often: a backstop for an
# announcement lost. Whether the client is gone is still seen every STORE_POLL_S.
ANNOUNCED_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a wait ended: `approved`, and who decided (`human`, `timeout`, `shutdown`, `client_gone`)."""

    approved: bool
    decided_by: str
    wait_ms: float
    approval: Approval


class ApprovalBook:
    def __init__(self, store: Store, *, keepalive_every_s: float = 5.0,
                 on_asked: Callable[[Approval], None] | None = None,
                 on_decided: Callable[[Approval], None] | None = None) -> None:
        self.store = store
        # Told (notifications) of each new question, and of each one decided here: by a person
        # through this process, or expired by its waiter. Neither may block.
        self.on_asked = on_asked
        self.on_decided = on_decided
        self.keepalive_every_s = keepalive_every_s
        self.requested_total = 0
        self.joined_total = 0  # asks of a call that joined one already pending
        self._requested = asyncio.Condition()
        self._wakers: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}  # local waiters per approval
        self._deadlines: dict[str, float] = {}  # monotonic, of the approvals asked here
        self._orphans: set[asyncio.Task[None]] = set()  # expiring approvals whose waiters left
        # The approval of a call whose waiters all left, by (project, session, tool, arguments):
        # a person who answers it before the client comes back answers the call it re-sends.
        self._unclaimed: dict[tuple[str, str | None, str, str | None], str] = {}
        self._closing = False
        self._changed = asyncio.Event()  # set, and replaced, whenever an approval is asked or decided
        self.is_announced = store.watch_approvals(self._heard)
        self._poll_s = ANNOUNCED_POLL_S if self.is_announced else STORE_POLL_S

    @property
    def is_closing(self) -> bool:
        return self._closing

    async def changed(self, timeout_s: float) -> bool:
        """Until an approval is asked or decided here, or (on a store that announces them) by
        any process; False after `timeout_s` with no such news."""
        change = self._changed
        try:
            await asyncio.wait_for(change.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _announce(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_requested(self, count: int, *, joined: int = 0) -> None:
        """Until at least `count` approvals have been requested since start, and `joined` asks
        have joined one."""
        async with self._requested:
            await self._requested.wait_for(lambda: self.requested_total >= count and self.joined_total >= joined)

    async def request(
        self, *, project: str, session_id: str | None, interaction_id: str, tool: str, call_id: str | None,
        arguments: str | None, rule: str, reason: str, timeout_s: float, context: Any = None,
    ) -> Approval:
        call = (project, session_id, tool, arguments)
        joined = await self._pending_like(*call) or await self._unclaimed_answer(call)
        if joined is not None:
            if self._unclaimed.get(call) == joined.id:  # a waiter has it again
                del self._unclaimed[call]
            log.info("tool_approval_joined", approval_id=joined.id, tool=tool, project=project,
                     interaction_id=interaction_id)
            async with self._requested:
                self.joined_total += 1
                self._requested.notify_all()
            return joined
        now = datetime.now(UTC)
        approval = Approval(
            id=new_interaction_id(), created_at=format_timestamp(now),
            expires_at=format_timestamp(now + timedelta(seconds=timeout_s)), project=project, tool=tool,
            session_id=session_id, interaction_id=interaction_id, call_id=call_id, arguments=arguments,
            rule=rule, reason=reason, context=context,
        )
        await self.store.insert_approval(approval)
        self._announce()
        _tell(self.on_asked, approval)
        self._wakers[approval.id] = asyncio.Event()
        self._deadlines[approval.id] = time.monotonic() + timeout_s
        async with self._requested:
            self.requested_total += 1
            self._requested.notify_all()
        log.info("tool_approval_requested", approval_id=approval.id, tool=tool, project=project,
                 interaction_id=interaction_id, timeout_s=timeout_s)
        return approval

    async def wait(
        self,
        approval: Approval,
        timeout_s: float,
        *,
        keepalive: Callable[[], Awaitable[None]] | None = None,
        is_client_gone: Callable[[], bool] = lambda: False,
    ) -> Resolution:
        """Until decided, timed out, the client gone or the gateway stopping. `keepalive` is
        awaited every `keepalive_every_s` (a streamed response sends an SSE comment). A joined
        approval's wait ends at the deadline it was asked with."""
        keepalive_every_s = self.keepalive_every_s
        started = time.monotonic()
        deadline = self._deadlines.setdefault(approval.id, _deadline_of(approval, started + timeout_s))
        timeout_s = deadline - started
        waker = self._wakers.setdefault(approval.id, asyncio.Event())
        self._waiting[approval.id] = self._waiting.get(approval.id, 0) + 1
        next_keepalive = started + keepalive_every_s
        next_read = started  # the store is read when woken, else every self._poll_s
        current: Approval | None = approval
        try:
            while True:
                if waker.is_set() or time.monotonic() >= next_read:
                    waker.clear()
                    current = await self.store.get_approval(approval.id)
                    next_read = time.monotonic() + self._poll_s
                if current is not None and current.status is not ApprovalStatus.PENDING:
                    return self._resolved(current, started)
                now = time.monotonic()
                ended_by = (
                    "shutdown" if self._closing
                    else "timeout" if now - started >= timeout_s
                    else "client_gone" if is_client_gone()
                    else None
                )
                if ended_by == "client_gone":
                    self._leave(approval)
                    return Resolution(False, ended_by, _ms_since(started), current or approval)
                if ended_by is not None:
                    return await self._expire(approval, ended_by, started)
                if keepalive is not None and now >= next_keepalive:
                    await keepalive()
                    next_keepalive = now + keepalive_every_s
                # Woken by a decision; else each STORE_POLL_S to see whether the client is gone.
                pause = min(STORE_POLL_S, max(0.0, next_read - now), max(0.0, started + timeout_s - now),
                            max(0.0, next_keepalive - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waker.wait(), pause)
        except (ConnectionResetError, asyncio.CancelledError):
            self._leave(approval)
            raise
        finally:
            self._waiting[approval.id] -= 1
            if not self._waiting[approval.id]:
                del self._waiting[approval.id]
                self._wakers.pop(approval.id, None)
                self._deadlines.pop(approval.id, None)

    async def decide(self, approval_id: str, *, approve: bool, decided_by: str, always: bool = False) -> Approval | None:
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        decided = await self.store.decide_approval(approval_id, status, decided_by, always=always)
        waker = self._wakers.get(approval_id)
        if waker is not None:
            waker.set()
        self._announce()
        if decided is not None and decided.is_decided_as(status, decided_by):
            _tell(self.on_decided, decided)
        return decided

    def _heard(self, approval_id: str | None) -> None:
        """Another process decided `approval_id` (None: any may have been): its waiters here
        look at once."""
        wakers = self._wakers.values() if approval_id is None else [self._wakers.get(approval_id)]
        for waker in wakers:
            if waker is not None:
                waker.set()
        self._announce()

    def close(self) -> None:
        """The gateway is stopping: every waiter resolves to deny now; approvals whose waiters
        left stay pending, and the next start expires them."""
        self._closing = True
        self._announce()
        for waker in self._wakers.values():
            waker.set()
        for orphan in self._orphans:
            orphan.cancel()

    async def _pending_like(self, project: str, session_id: str | None, tool: str,
                            arguments: str | None) -> Approval | None:
        """A pending approval of the same call, not past its deadline, to join."""
        now = format_timestamp(datetime.now(UTC))
        pending = await self.store.list_approvals(ApprovalStatus.PENDING, limit=500, projects=frozenset({project}))
        return next((a for a in pending if (a.session_id, a.tool, a.arguments) == (session_id, tool, arguments)
                     and a.expires_at > now), None)

    async def _unclaimed_answer(self, call: tuple[str, str | None, str, str | None]) -> Approval | None:
        """The answer a person gave, while nobody waited, to the question asked for this call:
        taken once, and only before the question's deadline."""
        approval_id = self._unclaimed.pop(call, None)
        if approval_id is None:
            return None
        approval = await self.store.get_approval(approval_id)
        if approval is None or approval.status not in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED) \
                or approval.expires_at <= format_timestamp(datetime.now(UTC)):
            return None
        return approval

    def _leave(self, approval: Approval) -> None:
        """The client of one waiter left: the approval stays askable for a retry to join, and
        expires at its deadline if no one here still waits on it then."""
        if self._waiting.get(approval.id, 0) > 1 or self._closing:
            return
        self._unclaimed[(approval.project, approval.session_id, approval.tool, approval.arguments)] = approval.id
        deadline = self._deadlines.get(approval.id, time.monotonic())
        orphan = asyncio.get_running_loop().create_task(self._expire_at_deadline(approval, deadline))
        self._orphans.add(orphan)
        orphan.add_done_callback(self._orphans.discard)

    async def _expire_at_deadline(self, approval: Approval, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        call = (approval.project, approval.session_id, approval.tool, approval.arguments)
        if self._unclaimed.get(call) == approval.id:
            del self._unclaimed[call]
        if self._waiting.get(approval.id):
            return  # joined here: that waiter expires it, or is answered
        with contextlib.suppress(StoreUnavailable):  # left pending: the next start expires it
            current = await self.store.decide_approval(approval.id, ApprovalStatus.EXPIRED, "client_gone")
            if current is not None and current.is_decided_as(ApprovalStatus.EXPIRED, "client_gone"):
                self._announce()
                _tell(self.on_decided, current)
                log.info("tool_approval_timed_out", approval_id=approval.id, tool=approval.tool,
                         ended_by="client_gone")

    async def _expire(self, approval: Approval, ended_by: str, started: float) -> Resolution:
        current = await self.store.decide_approval(approval.id, ApprovalStatus.EXPIRED, ended_by)
        if current is not None and current.status is not ApprovalStatus.EXPIRED:
            return self._resolved(current, started)  # a person decided in the same instant
        self._announce()
        if current is not None and current.is_decided_as(ApprovalStatus.EXPIRED, ended_by):
            _tell(self.on_decided, current)
        log.info("tool_approval_timed_out", approval_id=approval.id, tool=approval.tool, ended_by=ended_by)
        return Resolution(False, ended_by, _ms_since(started), current or approval)

    def _resolved(self, approval: Approval, started: float) -> Resolution:
        approved = approval.status is ApprovalStatus.APPROVED
        if approved:
            log.info("tool_approved", approval_id=approval.id, tool=approval.tool, decided_by=approval.decided_by,
                     always=approval.always)
        elif approval.status is ApprovalStatus.DENIED:
            log.info("tool_approval_denied", approval_id=approval.id, tool=approval.tool, decided_by=approval.decided_by)
        decided_by = "human" if approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED) else (
            approval.decided_by or "timeout")
        return Resolution(approved, decided_by, _ms_since(started), approval)


def _tell(hook: Callable[[Approval], None] | None, approval: Approval) -> None:
    if hook is None:
        return
    try:
        hook(approval)
    except Exception:  # boundary: telling people must never cost a call its question or its answer
        log.exception("tool_approval_announce_failed", approval_id=approval.id)


def _deadline_of(approval: Approval, otherwise: float) -> float:
    """The monotonic deadline of an approval asked elsewhere (another worker, a process that
    restarted), from its `expires_at`; `otherwise` when that cannot be read."""
    try:
        expires = datetime.strptime(approval.expires_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return otherwise
    return time.monotonic() + (expires - datetime.now(UTC)).total_seconds()


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
