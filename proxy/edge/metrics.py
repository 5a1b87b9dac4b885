"""Prometheus text exposition: requests, the calls forwarded to models (latency, time to first
token, tokens, tool decisions, approval waits), the capture queue and spool, and the store's pool.

Counted per process: with `serve --workers N` or replicas, a scraper sums them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from capture.store import Store
from capture.writer import CaptureWriter
from proxy.pipeline.exchange import Exchange

_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
UNDECLARED = "undeclared"  # the label of every model not in model_list: callers name those
# A person takes seconds to minutes to decide.
_APPROVAL_BUCKETS_MS = (1000, 5000, 15000, 30000, 60000, 120000, 300000, 600000)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: Counter[float] = field(default_factory=Counter)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for bound in self.bounds:
            if value <= bound:
                self.counts[bound] += 1
                break

    def render(self, name: str, labels: str = "") -> list[str]:
        """`labels`: `key="value",` pairs (with the trailing comma) put before `le`."""
        lines = []
        cumulative = 0
        for bound in self.bounds:
            cumulative += self.counts[bound]
            lines.append(f'{name}_bucket{{{labels}le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{labels}le="+Inf"}} {self.count}')
        braces = f"{{{labels.rstrip(',')}}}" if labels else ""
        lines += [f"{name}_sum{braces} {self.total:.3f}", f"{name}_count{braces} {self.count}"]
        return lines


@dataclass(slots=True)
class Metrics:
    declared_models: frozenset[str] = frozenset()  # model_list's names: the only model labels
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=lambda: Histogram(_BUCKETS_MS))
    calls: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (model, route, status)
    call_latency: dict[str, Histogram] = field(default_factory=dict)  # by model
    ttft: dict[str, Histogram] = field(default_factory=dict)  # by model, for streamed calls
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, kind)
    tool_decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, decided_by)
    approval_wait: Histogram = field(default_factory=lambda: Histogram(_APPROVAL_BUCKETS_MS))

    def observe(self, route: str, status: int, latency_ms: float, exchange: Exchange | None = None) -> None:
        self.requests[(route, status)] += 1
        self.latency.observe(latency_ms)
        if exchange is None or exchange.call is None:  # not forwarded to a model
            return
        model = self._model_label(exchange.request.model if exchange.request is not None else exchange.call.model)
        self.calls[(model, route, status)] += 1
        self.call_latency.setdefault(model, Histogram(_BUCKETS_MS)).observe(latency_ms)
        if exchange.call.stream and exchange.ttft_ms is not None:
            self.ttft.setdefault(model, Histogram(_BUCKETS_MS)).observe(exchange.ttft_ms)
        usage = exchange.usage
        for kind, count in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens),
                            ("cache_read", usage.cache_read_tokens), ("cache_creation", usage.cache_creation_tokens)):
            if count:
                self.tokens[(model, kind)] += count
        for decision in exchange.tool_decisions:
            self.tool_decisions[("allow" if decision.is_allowed else "deny", decision.decided_by)] += 1
            if decision.approval_id is not None:
                self.approval_wait.observe(decision.wait_ms)

    def _model_label(self, model: str) -> str:
        """A declared model's name; any other (an open gateway forwards whatever a caller names,
        of any length) counts under one label, so callers cannot grow the metrics."""
        return _label(model) if model in self.declared_models else UNDECLARED

    def render(self, writer: CaptureWriter, store: Store,
               outlets: Iterable[tuple[str, str, int, str]] = ()) -> str:
        """`outlets`: (name, kind, value, meaning) of the parts that send elsewhere (webhooks, traces)."""
        lines = [
            "# HELP ctxgate_requests_total Requests answered, by route and status.",
            "# TYPE ctxgate_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'ctxgate_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += ["# HELP ctxgate_request_latency_ms Time to answer a request, in milliseconds.",
                  "# TYPE ctxgate_request_latency_ms histogram", *self.latency.render("ctxgate_request_latency_ms")]
        lines += ["# HELP ctxgate_model_calls_total Calls forwarded to a model, by model, route and status.",
                  "# TYPE ctxgate_model_calls_total counter"]
        for (model, route, status), count in sorted(self.calls.items()):
            lines.append(f'ctxgate_model_calls_total{{model="{model}",route="{route}",status="{status}"}} {count}')
        for name, meaning, histograms in (
            ("ctxgate_model_call_latency_ms", "Time to answer a call forwarded to a model, in milliseconds "
             "(with any wait for a person's approval of its tool calls).",
             self.call_latency),
            ("ctxgate_time_to_first_token_ms", "Time to the first streamed event of a model's answer, in milliseconds.",
             self.ttft),
        ):
            lines += [f"# HELP {name} {meaning}", f"# TYPE {name} histogram"]
            for model, histogram in sorted(histograms.items()):
                lines += histogram.render(name, f'model="{model}",')
        lines += ["# HELP ctxgate_tokens_total Tokens the providers reported, by model and kind.",
                  "# TYPE ctxgate_tokens_total counter"]
        for (model, kind), count in sorted(self.tokens.items()):
            lines.append(f'ctxgate_tokens_total{{model="{model}",kind="{kind}"}} {count}')
        lines += ["# HELP ctxgate_tool_decisions_total Tool calls decided, by outcome and by who decided.",
                  "# TYPE ctxgate_tool_decisions_total counter"]
        for (action, decided_by), count in sorted(self.tool_decisions.items()):
            lines.append(f'ctxgate_tool_decisions_total{{action="{action}",decided_by="{decided_by}"}} {count}')
        lines += ["# HELP ctxgate_approval_wait_ms How long tool calls held for a person waited, in milliseconds.",
                  "# TYPE ctxgate_approval_wait_ms histogram", *self.approval_wait.render("ctxgate_approval_wait_ms")]
        segments, spooled_bytes = writer.spool.backlog() if writer.spool is not None else (0, 0)
        pool = store.pool_usage()
        for name, kind, value, meaning in (
            ("capture_pending", "gauge", writer.pending, "Records in memory, neither stored nor spooled."),
            ("capture_written_total", "counter", writer.written_total, "Records stored."),
            ("capture_failed_writes_total", "counter", writer.failed_writes_total,
             "Writes the store refused as unavailable."),
            ("capture_spooled_total", "counter", writer.spooled_total, "Records written to the spool."),
            ("capture_replayed_total", "counter", writer.replayed_total, "Spooled records stored later."),
            ("capture_spool_segments", "gauge", segments, "Spool files waiting to be replayed into the store."),
            ("capture_spool_bytes", "gauge", spooled_bytes, "Bytes waiting in the spool."),
            ("capture_dead_letters_total", "counter", writer.dead_letters_total,
             "Records the store rejected, kept in the dead-letter file."),
            ("capture_dropped_total", "counter", writer.dropped_total,
             "Records lost: neither the store nor the spool took them."),
            ("capture_store_failing", "gauge", int(writer.store_error is not None), "1 while the store refuses writes."),
            ("capture_spool_failing", "gauge", int(writer.spool_error is not None), "1 while the spool refuses writes."),
            *((("store_pool_in_use", "gauge", pool[0], "Store connections in use."),
               ("store_pool_open", "gauge", pool[1], "Store connections open.")) if pool is not None else ()),
            *outlets,
        ):
            lines += [f"# HELP ctxgate_{name} {meaning}", f"# TYPE ctxgate_{name} {kind}", f"ctxgate_{name} {value}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A label value as Prometheus text wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
