"""The approval book: tool calls waiting for a person, and the wait itself.

A decision arrives through the HTTP API of this process (which wakes the waiter at once) or
through `ctxgate approvals` in another process, writing to the store (which the waiter polls).
A timeout, the gateway stopping or the client leaving resolve to deny: nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from capture.approvals import Approval, ApprovalStatus
from capture.records import format_timestamp, new_interaction_id
from capture.store import Store, StoreUnavailable

log = structlog.get_logger("ctxgate.policy")

STORE_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a wait ended: `approved`, and who decided (`human`, `timeout`, `shutdown`, `client_gone`)."""

    approved: bool
    decided_by: str
    wait_ms: float
    approval: Approval


class ApprovalBook:
    def __init__(self, store: Store, *, keepalive_every_s: float = 5.0) -> None:
        self.store = store
        self.keepalive_every_s = keepalive_every_s
        self.requested_total = 0
        self._requested = asyncio.Condition()
        self._wakers: dict[str, asyncio.Event] = {}
        self._closing = False

    async def wait_requested(self, count: int) -> None:
        """Until at least `count` approvals have been requested since start."""
        async with self._requested:
            await self._requested.wait_for(lambda: self.requested_total >= count)

    async def request(
        self, *, project: str, session_id: str | None, interaction_id: str, tool: str, call_id: str | None,
        arguments: str | None, rule: str, reason: str, timeout_s: float,
    ) -> Approval:
        now = datetime.now(UTC)
        approval = Approval(
            id=new_interaction_id(), created_at=format_timestamp(now),
            expires_at=format_timestamp(now + timedelta(seconds=timeout_s)), project=project, tool=tool,
            session_id=session_id, interaction_id=interaction_id, call_id=call_id, arguments=arguments,
            rule=rule, reason=reason,
        )
        await self.store.insert_approval(approval)
        self._wakers[approval.id] = asyncio.Event()
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
        awaited every `keepalive_every_s` (a streamed response sends an SSE comment)."""
        keepalive_every_s = self.keepalive_every_s
        started = time.monotonic()
        waker = self._wakers.setdefault(approval.id, asyncio.Event())
        next_keepalive = started + keepalive_every_s
        try:
            while True:
                current = await self.store.get_approval(approval.id)
                if current is not None and current.status is not ApprovalStatus.PENDING:
                    return self._resolved(current, started)
                now = time.monotonic()
                ended_by = (
                    "shutdown" if self._closing
                    else "timeout" if now - started >= timeout_s
                    else "client_gone" if is_client_gone()
                    else None
                )
                if ended_by is not None:
                    return await self._expire(approval, ended_by, started)
                if keepalive is not None and now >= next_keepalive:
                    await keepalive()
                    next_keepalive = now + keepalive_every_s
                pause = min(STORE_POLL_S, max(0.0, started + timeout_s - now), max(0.0, next_keepalive - now))
                try:
                    await asyncio.wait_for(waker.wait(), pause)
                except TimeoutError:
                    pass
                waker.clear()
        except (ConnectionResetError, asyncio.CancelledError):
            with contextlib.suppress(StoreUnavailable):  # left pending; expired at the next start
                await asyncio.shield(self._expire(approval, "client_gone", started))
            raise
        finally:
            self._wakers.pop(approval.id, None)

    async def decide(self, approval_id: str, *, approve: bool, decided_by: str, always: bool = False) -> Approval | None:
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        decided = await self.store.decide_approval(approval_id, status, decided_by, always=always)
        waker = self._wakers.get(approval_id)
        if waker is not None:
            waker.set()
        return decided

    def close(self) -> None:
        """The gateway is stopping: every waiter resolves to deny now."""
        self._closing = True
        for waker in self._wakers.values():
            waker.set()

    async def _expire(self, approval: Approval, ended_by: str, started: float) -> Resolution:
        current = await self.store.decide_approval(approval.id, ApprovalStatus.EXPIRED, ended_by)
        if current is not None and current.status is not ApprovalStatus.EXPIRED:
            return self._resolved(current, started)  # a person decided in the same instant
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


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
