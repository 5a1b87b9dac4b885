"""Prometheus text exposition of request counts and latency, and of the capture queue."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from capture.writer import CaptureWriter

_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


@dataclass(slots=True)
class Metrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency_buckets: Counter[float] = field(default_factory=Counter)
    latency_sum_ms: float = 0.0
    latency_count: int = 0

    def observe(self, route: str, status: int, latency_ms: float) -> None:
        self.requests[(route, status)] += 1
        self.latency_sum_ms += latency_ms
        self.latency_count += 1
        for bound in _BUCKETS_MS:
            if latency_ms <= bound:
                self.latency_buckets[bound] += 1
                break

    def render(self, writer: CaptureWriter) -> str:
        lines = [
            "# HELP ctxgate_requests_total Requests answered, by route and status.",
            "# TYPE ctxgate_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'ctxgate_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP ctxgate_request_latency_ms Time to answer a request, in milliseconds.",
            "# TYPE ctxgate_request_latency_ms histogram",
        ]
        cumulative = 0
        for bound in _BUCKETS_MS:
            cumulative += self.latency_buckets[bound]
            lines.append(f'ctxgate_request_latency_ms_bucket{{le="{bound}"}} {cumulative}')
        lines += [
            f'ctxgate_request_latency_ms_bucket{{le="+Inf"}} {self.latency_count}',
            f"ctxgate_request_latency_ms_sum {self.latency_sum_ms:.3f}",
            f"ctxgate_request_latency_ms_count {self.latency_count}",
        ]
        for name, kind, value, meaning in (
            ("capture_pending", "gauge", writer.pending, "Records in memory, neither stored nor spooled."),
            ("capture_written_total", "counter", writer.written_total, "Records stored."),
            ("capture_failed_writes_total", "counter", writer.failed_writes_total,
             "Writes the store refused as unavailable."),
            ("capture_spooled_total", "counter", writer.spooled_total, "Records written to the spool."),
            ("capture_replayed_total", "counter", writer.replayed_total, "Spooled records stored later."),
            ("capture_dead_letters_total", "counter", writer.dead_letters_total,
             "Records the store rejected, kept in the dead-letter file."),
            ("capture_dropped_total", "counter", writer.dropped_total,
             "Records lost: neither the store nor the spool took them."),
            ("capture_store_failing", "gauge", int(writer.store_error is not None), "1 while the store refuses writes."),
            ("capture_spool_failing", "gauge", int(writer.spool_error is not None), "1 while the spool refuses writes."),
        ):
            lines += [f"# HELP ctxgate_{name} {meaning}", f"# TYPE ctxgate_{name} {kind}", f"ctxgate_{name} {value}"]
        return "\n".join(lines) + "\n"
