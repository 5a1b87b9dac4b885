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
            "# TYPE ctxgate_capture_pending gauge",
            f"ctxgate_capture_pending {writer.pending}",
            "# TYPE ctxgate_capture_written_total counter",
            f"ctxgate_capture_written_total {writer.written_total}",
            "# TYPE ctxgate_capture_failed_writes_total counter",
            f"ctxgate_capture_failed_writes_total {writer.failed_writes_total}",
        ]
        return "\n".join(lines) + "\n"
