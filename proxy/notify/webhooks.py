"""Delivering notifications to webhooks, off the request's path.

A held call only puts its notification in a bounded queue (a full queue drops it and counts
the drop: the call waits all the same, and the page shows it). Deliveries run concurrently,
each retried with jittered exponential backoff on a network error, a timeout, 408, 429 (after
its Retry-After, within reason) or a 5xx; another 4xx is the receiver refusing the body, and
is not retried. Each attempt is signed afresh:

    X-Ctxgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed by the secret>

so a receiver checks the body is ours and recent (and a replayed one is not); the delivery id
(`X-Ctxgate-Delivery`, and `id` in a JSON body) stays the same across retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import time
import uuid
from dataclasses import dataclass

import aiohttp
import orjson
import structlog

from capture.approvals import Approval
from proxy.config.notifications import NotificationSettings, Webhook
from proxy.edge.redaction import Redactor
from proxy.notify.messages import EVENT_APPROVAL_DECIDED, EVENT_APPROVAL_REQUESTED, approval_event, slack_message

log = structlog.get_logger("ctxgate.notify")

QUEUE_SIZE = 1000
CONCURRENT_DELIVERIES = 8
ATTEMPTS = 6  # the first and five retries: about 1, 2, 4, 8 and 16 s apart
TIMEOUT_S = 10.0
MAX_RETRY_AFTER_S = 60.0
SIGNATURE_HEADER = "X-Ctxgate-Signature"


@dataclass(frozen=True, slots=True)
class Delivery:
    hook: Webhook
    event: str
    id: str
    body: bytes


class WebhookSender:
    def __init__(self, settings: NotificationSettings, redactor: Redactor, *, backoff_s: float = 1.0) -> None:
        self.settings = settings
        self.redactor = redactor
        self.backoff_s = backoff_s
        self.delivered_total = 0
        self.retried_total = 0
        self.failed_total = 0  # given up on: refused, or still failing after every attempt
        self.dropped_total = 0  # never tried: the queue was full
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_SIZE)
        self._slots = asyncio.Semaphore(CONCURRENT_DELIVERIES)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                              headers={"User-Agent": "ctxgate-webhooks"})
        self._pump = asyncio.create_task(self._run(), name="ctxgate-webhooks")

    def approval_asked(self, approval: Approval) -> None:
        """Never blocks and never raises: called as the call is held."""
        self._send(approval, EVENT_APPROVAL_REQUESTED)

    def approval_decided(self, approval: Approval) -> None:
        """Never blocks and never raises: called as a decision is made here."""
        self._send(approval, EVENT_APPROVAL_DECIDED)

    def _send(self, approval: Approval, event: str) -> None:
        link = self.settings.approval_link(approval.id)
        for hook in self.settings.webhooks:
            if event not in hook.events:
                continue
            delivery_id = str(uuid.uuid4())
            message = slack_message(approval, link=link, redactor=self.redactor) if hook.format == "slack" else \
                approval_event(approval, delivery_id=delivery_id, link=link, redactor=self.redactor)
            try:
                self._queue.put_nowait(Delivery(hook, event, delivery_id, orjson.dumps(message)))
            except asyncio.QueueFull:
                self.dropped_total += 1
                log.warning("notification_dropped", approval_id=approval.id, reason="queue_full")

    async def close(self, grace_s: float = 2.0) -> None:
        """What is in flight gets `grace_s` to land; the rest is given up, and logged."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._deliveries:
            _, late = await asyncio.wait(self._deliveries, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("notifications_abandoned", count=len(late) + self._queue.qsize())
        if self._session is not None:
            await self._session.close()

    def gauges(self) -> list[tuple[str, str, int, str]]:
        """For /metrics: (name, kind, value, meaning)."""
        return [
            ("notifications_delivered_total", "counter", self.delivered_total, "Webhook notifications delivered."),
            ("notifications_retried_total", "counter", self.retried_total, "Webhook delivery attempts retried."),
            ("notifications_failed_total", "counter", self.failed_total,
             "Webhook notifications given up on (refused, or failing after every attempt)."),
            ("notifications_dropped_total", "counter", self.dropped_total,
             "Webhook notifications never sent: the queue was full."),
            ("notifications_pending", "gauge", self._queue.qsize() + len(self._deliveries),
             "Webhook notifications queued or being delivered."),
        ]

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(delivery))
            self._deliveries.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._session is not None
        for attempt in range(1, ATTEMPTS + 1):
            wait_s = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            try:
                # No redirects: aiohttp would follow a 301/302 with a GET, without the body.
                async with self._session.post(delivery.hook.url, data=delivery.body, headers=self._headers(delivery),
                                              allow_redirects=False) as response:
                    await response.read()
                    if response.status < 300:
                        self.delivered_total += 1
                        log.info("notification_delivered", delivery_id=delivery.id, attempts=attempt)
                        return
                    outcome = f"status {response.status}"
                    if response.status < 500 and response.status not in (408, 429):
                        self.failed_total += 1
                        log.warning("notification_refused", delivery_id=delivery.id, status=response.status)
                        return
                    wait_s = max(wait_s, _retry_after(response.headers.get("Retry-After")))
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = type(error).__name__
            if attempt < ATTEMPTS:
                self.retried_total += 1
                log.info("notification_retrying", delivery_id=delivery.id, attempt=attempt, outcome=outcome,
                         in_s=round(wait_s, 2))
                await asyncio.sleep(wait_s)
        self.failed_total += 1
        log.warning("notification_failed", delivery_id=delivery.id, attempts=ATTEMPTS, outcome=outcome)

    @staticmethod
    def _headers(delivery: Delivery) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Ctxgate-Event": delivery.event,
                   "X-Ctxgate-Delivery": delivery.id}
        if delivery.hook.secret:
            headers[SIGNATURE_HEADER] = signature(delivery.hook.secret, delivery.body, int(time.time()))
        return headers


def signature(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _retry_after(value: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
