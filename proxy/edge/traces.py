"""Exporting traces over OTLP/HTTP (protobuf), off the request's path.

A finished exchange leaves only a small snapshot in a bounded queue (full: its spans are
dropped and counted). A background task takes what has gathered about once a second (or at once a
full batch), turns it into spans and posts them, retrying a failure the collector says is
passing (429, 502, 503, 504, or no answer) with backoff; what still fails is counted, never
retried forever. On shutdown what is queued gets one last export within a short deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import random
import socket
from collections.abc import Mapping

import aiohttp
import structlog
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from proxy.config.telemetry import TelemetrySettings
from proxy.edge.redaction import Redactor
from proxy.edge.spans import Finished, SpanBuilder, finished_call, parse_traceparent, put_attributes
from proxy.pipeline.dialect import Dialect
from proxy.pipeline.exchange import Exchange

log = structlog.get_logger("ctxgate.traces")

BATCH = 512  # exchanges per export
GATHER_S = 1.0
ATTEMPTS = 3
BACKOFF_S = 1.0
TIMEOUT_S = 10.0
SHUTDOWN_S = 3.0
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
MAX_BODY_BYTES = 4 * 1024 * 1024  # collectors commonly refuse bodies past a few megabytes


class TraceExporter:
    def __init__(self, settings: TelemetrySettings, dialects: Mapping[str, Dialect], redactor: Redactor,
                 *, backoff_s: float = BACKOFF_S, gather_s: float = GATHER_S) -> None:
        assert settings.traces_url is not None
        self.settings = settings
        self.url = settings.traces_url
        self.builder = SpanBuilder(dialects, redactor)
        self.backoff_s = backoff_s
        self.gather_s = gather_s
        self.exported_total = 0  # spans the collector took
        self.dropped_total = 0  # spans never exported: the queue was full, or the export failed for good
        self._queue: asyncio.Queue[Finished] = asyncio.Queue(settings.queue_size)
        self._in_flight: list[Finished] = []  # taken from the queue, not yet exported
        self._pump: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._resource = Resource()
        put_attributes(self._resource.attributes, {
            "service.name": settings.service_name,
            "service.version": _version(),
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "telemetry.sdk.name": "ctxgate",
            "telemetry.sdk.language": "python",
        })
        self._scope = InstrumentationScope(name="ctxgate", version=_version())

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            headers={**self.settings.headers, "Content-Type": "application/x-protobuf"})
        self._pump = asyncio.create_task(self._run(), name="ctxgate-traces")

    def finished(self, exchange: Exchange, *, traceparent: str | None, http_status: int, provider: str | None) -> None:
        """Called as a request ends; never blocks. Only a call that was forwarded has spans (one
        refused before it left has no outcome), and a client that said its trace is not sampled
        gets none: its sampling decision is followed."""
        if exchange.outcome is None:
            return
        parent = parse_traceparent(traceparent)
        if parent is not None and not parent.is_sampled:
            return
        finished = finished_call(exchange, parent=parent, http_status=http_status, provider=provider,
                                 with_content=self.settings.capture_content)
        try:
            self._queue.put_nowait(finished)
        except asyncio.QueueFull:
            self.dropped_total += finished.span_count

    async def close(self) -> None:
        """What is queued, and what was being exported, gets one last try within SHUTDOWN_S."""
        try:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            left = self._in_flight + self._take(self._queue.qsize())
            self._in_flight = []
            if left:
                try:
                    await asyncio.wait_for(self._export(left, attempts=1), SHUTDOWN_S)
                except (TimeoutError, Exception):  # boundary: stopping; what did not go is counted
                    self.dropped_total += sum(f.span_count for f in left)
        finally:
            if self._session is not None:
                await self._session.close()

    def gauges(self) -> list[tuple[str, str, int, str]]:
        return [
            ("trace_spans_exported_total", "counter", self.exported_total, "Spans the OTLP collector took."),
            ("trace_spans_dropped_total", "counter", self.dropped_total,
             "Spans never exported: the queue was full, or the collector refused them or kept failing."),
            ("trace_queue", "gauge", self._queue.qsize(), "Finished calls waiting for their spans to be exported."),
        ]

    async def _run(self) -> None:
        while True:
            self._in_flight = [await self._queue.get()]
            if self._queue.qsize() < BATCH - 1:
                await asyncio.sleep(self.gather_s)  # gather a batch: one post a second, not one a call
            self._in_flight += self._take(BATCH - 1)
            try:
                await self._export(self._in_flight)
            except Exception:  # boundary: a batch that cannot be exported is counted, the next is tried
                log.exception("trace_export_crashed", calls=len(self._in_flight))
                self.dropped_total += sum(f.span_count for f in self._in_flight)
            self._in_flight = []

    def _take(self, count: int) -> list[Finished]:
        taken: list[Finished] = []
        while len(taken) < count and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _export(self, batch: list[Finished], *, attempts: int = ATTEMPTS) -> None:
        """Spans built a call at a time, yielding to the loop between calls, and posted in bodies
        of at most MAX_BODY_BYTES."""
        spans: list[Span] = []
        size = 0
        for index, finished in enumerate(batch):
            try:
                built = self.builder.spans(finished)
            except Exception:  # boundary: a call whose spans cannot be built leaves the others
                log.exception("trace_span_failed", interaction_id=finished.interaction_id)
                self.dropped_total += finished.span_count
                continue
            grown = sum(span.ByteSize() for span in built)
            if spans and size + grown > MAX_BODY_BYTES:
                await self._post(spans, attempts)
                spans, size = [], 0
            spans += built
            size += grown
            if index % 32 == 31:
                await asyncio.sleep(0)
        if spans:
            await self._post(spans, attempts)

    async def _post(self, spans: list[Span], attempts: int) -> None:
        body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=self._resource, scope_spans=[ScopeSpans(scope=self._scope, spans=spans)])]).SerializeToString()
        assert self._session is not None
        outcome = "nothing sent"
        for attempt in range(1, attempts + 1):
            wait_s = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            try:
                # No redirects: aiohttp would follow a 301/302 with a GET, and count its 200.
                async with self._session.post(self.url, data=body, allow_redirects=False) as response:
                    answer = await response.read()
                    if response.status < 300:
                        rejected = _rejected(answer, response.content_type)
                        self.exported_total += len(spans) - rejected
                        self.dropped_total += rejected
                        return
                    outcome = f"status {response.status}"
                    if response.status not in RETRYABLE:
                        break
                    wait_s = max(wait_s, _retry_after(response.headers.get("Retry-After")))
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = type(error).__name__
            if attempt < attempts:
                await asyncio.sleep(wait_s)
        self.dropped_total += len(spans)
        log.warning("trace_export_failed", spans=len(spans), outcome=outcome)


def _rejected(answer: bytes, content_type: str) -> int:
    """The spans a collector's answer says it rejected (OTLP partial success), logged."""
    if not answer or content_type != "application/x-protobuf":
        return 0
    try:
        partial = ExportTraceServiceResponse.FromString(answer).partial_success
    except DecodeError:
        return 0
    if partial.rejected_spans or partial.error_message:
        log.warning("trace_spans_rejected", spans=partial.rejected_spans, message=partial.error_message)
    return int(partial.rejected_spans)


def _retry_after(value: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0


def _version() -> str:
    try:
        return importlib.metadata.version("ctxgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
