"""Exporting traces over OTLP/HTTP (protobuf), off the request's path.

A finished exchange is only put in a bounded queue (full: the exchange's spans are dropped
and counted). A background task takes what has gathered about once a second (or at once a
full batch), turns it into spans and posts them, retrying a failure the collector says is
passing (429, 502, 503, 504, or no answer) with backoff; what still fails is counted, never
retried forever. On shutdown what is queued gets one last export within a short deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import socket
import time
from collections.abc import Mapping

import aiohttp
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from proxy.config.telemetry import TelemetrySettings
from proxy.edge.redaction import Redactor
from proxy.edge.spans import Finished, SpanBuilder, any_value, parse_traceparent
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


class TraceExporter:
    def __init__(self, settings: TelemetrySettings, dialects: Mapping[str, Dialect], redactor: Redactor,
                 *, backoff_s: float = BACKOFF_S, gather_s: float = GATHER_S) -> None:
        assert settings.traces_url is not None
        self.settings = settings
        self.url = settings.traces_url
        self.builder = SpanBuilder(dialects, redactor, capture_content=settings.capture_content)
        self.backoff_s = backoff_s
        self.gather_s = gather_s
        self.exported_total = 0  # spans the collector took
        self.dropped_total = 0  # spans never exported: the queue was full, or the export failed for good
        self._queue: asyncio.Queue[Finished] = asyncio.Queue(settings.queue_size)
        self._pump: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._resource = Resource(attributes=[KeyValue(key=key, value=any_value(value)) for key, value in {
            "service.name": settings.service_name,
            "service.version": _version(),
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "telemetry.sdk.name": "ctxgate",
            "telemetry.sdk.language": "python",
        }.items()])
        self._scope = InstrumentationScope(name="ctxgate", version=_version())

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            headers={**self.settings.headers, "Content-Type": "application/x-protobuf"})
        self._pump = asyncio.create_task(self._run(), name="ctxgate-traces")

    def finished(self, exchange: Exchange, *, traceparent: str | None, http_status: int, provider: str | None) -> None:
        """Called as the request ends; never blocks. A client that said its trace is not
        sampled gets no spans (its sampling decision is followed)."""
        parent = parse_traceparent(traceparent)
        if parent is not None and not parent.is_sampled:
            return
        end_ns, elapsed_ns = time.time_ns(), time.perf_counter_ns() - exchange.started_ns
        try:
            self._queue.put_nowait(Finished(exchange, parent, end_ns - elapsed_ns, end_ns, http_status, provider))
        except asyncio.QueueFull:
            self.dropped_total += 1 + (exchange.pack is not None) + len(exchange.tool_decisions)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        left = self._take(self._queue.qsize())
        if left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._export(left, attempts=1), SHUTDOWN_S)
        if self._session is not None:
            await self._session.close()

    def gauges(self) -> list[tuple[str, str, int, str]]:
        return [
            ("trace_spans_exported_total", "counter", self.exported_total, "Spans the OTLP collector took."),
            ("trace_spans_dropped_total", "counter", self.dropped_total,
             "Spans never exported: the queue was full, or the collector kept failing."),
            ("trace_queue", "gauge", self._queue.qsize(), "Finished calls waiting for their spans to be exported."),
        ]

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._queue.qsize() < BATCH - 1:
                await asyncio.sleep(self.gather_s)  # gather a batch: one post a second, not one a call
            await self._export([first, *self._take(BATCH - 1)])

    def _take(self, count: int) -> list[Finished]:
        taken: list[Finished] = []
        while len(taken) < count and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _export(self, batch: list[Finished], *, attempts: int = ATTEMPTS) -> None:
        spans: list[Span] = []
        for finished in batch:
            try:
                spans += self.builder.spans(finished)
            except Exception:  # boundary: one exchange that cannot be told leaves the others
                log.exception("trace_span_failed", interaction_id=finished.exchange.id)
                self.dropped_total += 1
        body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=self._resource, scope_spans=[ScopeSpans(scope=self._scope, spans=spans)])]).SerializeToString()
        assert self._session is not None
        outcome = "nothing sent"
        for attempt in range(1, attempts + 1):
            try:
                async with self._session.post(self.url, data=body) as response:
                    await response.read()
                    if response.status < 300:
                        self.exported_total += len(spans)
                        return
                    outcome = f"status {response.status}"
                    if response.status not in RETRYABLE:
                        break
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = type(error).__name__
            if attempt < attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.dropped_total += len(spans)
        log.warning("trace_export_failed", spans=len(spans), outcome=outcome)


def _version() -> str:
    try:
        return importlib.metadata.version("ctxgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
