"""The end of a bench run: every target side by side, ratios within the run, and the issue's
targets with a pass or a fail each.

The targets are judged on `ctxgate_policy` (capture on, a 200-rule policy enforcing, context
on), at C=16: CPU against the raw passthrough's, req/s against LiteLLM proxy's, both measured in
the same run against the same fake upstream; on Anthropic Messages too, CPU against the raw
passthrough's relaying the same calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.targets import ANTHROPIC, CHAT, NATIVE_WIRE_TARGETS, NATIVE_WIRES, RESPONSES

if TYPE_CHECKING:
    from bench.run import Result

JUDGED = "ctxgate_policy"
SIDE_BY_SIDE = ("direct", "passthrough", "bare_litellm", "litellm_proxy", "ctxgate", "ctxgate_policy",
                "ctxgate_translate", "ctxgate_workers1", "ctxgate_workers2", "ctxgate_postgres", "ctxgate_traced")
LABELS = (("plain", 1), ("plain", 16), ("stream200", 1), ("stream200", 16), ("stream10", 16))
SHORT, LONG = 10, 200  # content deltas per stream of the two stream scenarios
TRANSLATE_BEFORE = 1.30  # ctxgate_translate's CPU/req against bare litellm's, quiet machine, 2026-11-30
RSS_GROWTH = 0.05
TRACED = 1.15  # CPU/request exporting traces against not: ours, since export is meant to be off the path


@dataclass(frozen=True)
class Check:
    what: str
    measured: str
    target: str
    verdict: str  # pass, FAIL, or why it was not measured


class Run:
    """The results of one run, looked up by target and scenario."""

    def __init__(self, results: list[Result], skipped: dict[str, str]) -> None:
        self.results = results
        self.skipped = skipped
        self._by = {(r.target, r.scenario.wire, r.scenario.label, r.scenario.concurrency): r for r in results}

    def get(self, target: str, label: str, concurrency: int = 16, wire: str = CHAT) -> Result | None:
        return self._by.get((target, wire, label, concurrency))

    def per_extra_chunk_ms(self, target: str, wire: str = CHAT) -> float | None:
        """CPU per streamed content delta beyond the first ten: (cpu/req at 200 - at 10) / 190."""
        short, long = self.get(target, f"stream{SHORT}", wire=wire), self.get(target, f"stream{LONG}", wire=wire)
        if not (short and long):
            return None
        return (long.cpu_ms_per_request - short.cpu_ms_per_request) / (LONG - SHORT)

    def missing(self, *targets: str) -> str:
        """Why a check could not be made: the first of `targets` with no results."""
        for name in targets:
            if not any(r.target == name for r in self.results):
                return f"n/a: {name} {'skipped: ' + self.skipped[name] if name in self.skipped else 'not run'}"
        return "n/a"


def print_report(results: list[Result], skipped: dict[str, str]) -> None:
    run = Run(results, skipped)
    _print_side_by_side(run)
    _print_native_wires(run)
    _print_ratios(run)
    checks = issue_checks(run)
    print(f"\nthe issue's targets, judged on {JUDGED} (capture on, a 200-rule policy enforcing, context on), C=16:")
    width = max(len(c.what) for c in checks)
    for c in checks:
        print(f"  {c.what:<{width}}  {c.measured:>22}  target {c.target:<9} {c.verdict}")
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")


def _print_side_by_side(run: Run) -> None:
    print("\nCPU ms per request (the target's process tree) | req/s, same run, same fake upstream:")
    header = "".join(f"{label + ' c=' + str(c):>22}" for label, c in LABELS)
    print(f"  {'':<17}{header}{'per extra chunk':>17}")
    for name in SIDE_BY_SIDE:
        cells = []
        for label, c in LABELS:
            r = run.get(name, label, c)
            cpu = "-" if name == "direct" else f"{r.cpu_ms_per_request:.3f}" if r else ""  # direct: no server
            cells.append(f"{cpu:>8} | {r.rps:7.1f}" if r else "-")
        if all(cell == "-" for cell in cells):
            continue
        chunk = run.per_extra_chunk_ms(name)
        print(f"  {name:<17}" + "".join(f"{cell:>22}" for cell in cells)
              + (f"{chunk:14.4f} ms" if chunk is not None and name != "direct" else f"{'-':>17}"))


def _print_native_wires(run: Run) -> None:
    """The targets measured on Anthropic Messages and the Responses API, each beside its own
    OpenAI chat rows."""
    rows = [(name, wire) for name in NATIVE_WIRE_TARGETS for wire in (*NATIVE_WIRES, CHAT)
            if run.get(name, "plain", wire=wire) or run.get(name, f"stream{LONG}", wire=wire)]
    if not any(wire in NATIVE_WIRES for _, wire in rows):
        return
    labels = ("plain", f"stream{LONG}", f"stream{SHORT}")
    print("\nAnthropic Messages (POST /v1/messages) and the Responses API (POST /v1/responses) beside OpenAI chat, "
          "C=16, CPU ms per request | req/s:")
    print(f"  {'':<26}" + "".join(f"{label + ' c=16':>22}" for label in labels) + f"{'per extra event':>17}")
    for name, wire in rows:
        cells = []
        for label in labels:
            r = run.get(name, label, wire=wire)
            cells.append(f"{r.cpu_ms_per_request:8.3f} | {r.rps:7.1f}" if r else "-")
        chunk = run.per_extra_chunk_ms(name, wire)
        print(f"  {name + ' ' + wire:<26}" + "".join(f"{cell:>22}" for cell in cells)
              + (f"{chunk:14.4f} ms" if chunk is not None else f"{'-':>17}"))


def _print_ratios(run: Run) -> None:
    print("\nratios within this run (C=16; cpu/req against the raw passthrough, req/s against LiteLLM proxy):")
    for name in ("ctxgate", "ctxgate_policy", "ctxgate_translate", "bare_litellm", "litellm_proxy"):
        parts = []
        for label in ("plain", f"stream{LONG}", f"stream{SHORT}"):
            ours, relay, proxy = run.get(name, label), run.get("passthrough", label), run.get("litellm_proxy", label)
            direct = run.get("direct", label, 1)
            if not ours:
                continue
            part = f"{label}: cpu {_ratio(ours.cpu_ms_per_request, relay.cpu_ms_per_request if relay else None)}"
            if name != "litellm_proxy":
                part += f", req/s {_ratio(ours.rps, proxy.rps if proxy else None)}"
            single = run.get(name, label, 1)
            if single and direct:
                part += f", added p50 at c=1 {single.p50_ms - direct.p50_ms:+.2f}ms"
            parts.append(part)
        if parts:
            print(f"  {name:<17} " + "; ".join(parts))
    for name in NATIVE_WIRE_TARGETS:  # against the relay's calls on the wire, and against its own chat calls
        for wire, title in ((ANTHROPIC, "Anthropic Messages"), (RESPONSES, "the Responses API")):
            parts = []
            for label in ("plain", f"stream{LONG}", f"stream{SHORT}"):
                ours = run.get(name, label, wire=wire)
                if not ours:
                    continue
                against_chat = f"{_cpu_vs(ours, run.get(name, label))} its chat call's"
                relay = run.get("passthrough", label, wire=wire)
                parts.append(f"{label}: cpu " + (against_chat if name == "passthrough" else
                                                 f"{_cpu_vs(ours, relay)}, {against_chat}"))
            if parts:
                print(f"  {name:<17} on {title}: " + "; ".join(parts))
    guarded, plain = run.get("ctxgate_policy", "plain"), run.get("ctxgate", "plain")
    if guarded and plain:
        print(f"  a 200-rule policy enforced: cpu/req {guarded.cpu_ms_per_request / plain.cpu_ms_per_request:.2f}x "
              f"plain, p50 {guarded.p50_ms - plain.p50_ms:+.2f}ms against ctxgate without")


def _ratio(ours: float, base: float | None) -> str:
    return f"{ours / base:.2f}x" if base else "-"


def _cpu_vs(ours: Result, base: Result | None) -> str:
    return _ratio(ours.cpu_ms_per_request, base.cpu_ms_per_request if base else None)


def issue_checks(run: Run) -> list[Check]:
    checks = [
        _check(run, "CPU/request plain vs raw passthrough", "<= 3x", (JUDGED, "passthrough"),
               lambda: _cpu_ratio(run, JUDGED, "passthrough", "plain"), lambda x: x <= 3, "{:.2f}x"),
        _check(run, f"CPU/request stream ({LONG} deltas) vs raw passthrough", "<= 3x", (JUDGED, "passthrough"),
               lambda: _cpu_ratio(run, JUDGED, "passthrough", f"stream{LONG}"), lambda x: x <= 3, "{:.2f}x"),
        _check(run, f"CPU per extra streamed chunk ({SHORT} vs {LONG} deltas)", "<= 0.03ms", (JUDGED,),
               lambda: run.per_extra_chunk_ms(JUDGED), lambda x: x <= 0.03, "{:.4f} ms"),
        _check(run, "req/s plain vs LiteLLM proxy", ">= 10x", (JUDGED, "litellm_proxy"),
               lambda: _rps_ratio(run, JUDGED, "litellm_proxy"), lambda x: x >= 10, "{:.2f}x"),
        # req/s of targets measured a minute apart swings with whatever else the machine runs;
        # the ratio of CPU per request is steadier, so it is shown beside, not judged.
        _check(run, "  the same from CPU per request (info)", "-", (JUDGED, "litellm_proxy"),
               lambda: _cpu_ratio(run, "litellm_proxy", JUDGED, "plain"), lambda x: True, "{:.2f}x"),
        _check(run, "req/s plain --workers 2 vs --workers 1", ">= 1.7x", ("ctxgate_workers1", "ctxgate_workers2"),
               lambda: _rps_ratio(run, "ctxgate_workers2", "ctxgate_workers1"), lambda x: x >= 1.7, "{:.2f}x"),
    ]
    for label in ("plain", f"stream{LONG}"):
        on_postgres = functools.partial(_rps_ratio, run, "ctxgate_postgres", JUDGED, label)
        checks.append(_check(run, f"req/s {label} on PostgreSQL vs on SQLite", ">= 0.85x", ("ctxgate_postgres", JUDGED),
                             on_postgres, lambda x: x >= 0.85, "{:.2f}x"))
    for label in ("plain", f"stream{LONG}"):
        traced = functools.partial(_cpu_ratio, run, "ctxgate_traced", JUDGED, label)
        checks.append(_check(run, f"CPU/request {label} exporting traces vs not", f"<= {TRACED:.2f}x",
                             ("ctxgate_traced", JUDGED), traced, lambda x: x <= TRACED, "{:.2f}x"))
    for label in ("plain", f"stream{LONG}"):
        translated = functools.partial(_cpu_ratio, run, "ctxgate_translate", "bare_litellm", label)
        checks.append(_check(run, f"translate path: CPU/request {label} vs bare litellm", f"<= {TRANSLATE_BEFORE:.2f}x",
                             ("ctxgate_translate", "bare_litellm"), translated, lambda x: x <= TRANSLATE_BEFORE,
                             "{:.2f}x"))
    for wire, title in ((ANTHROPIC, "Anthropic"), (RESPONSES, "Responses")):
        for label in ("plain", f"stream{LONG}"):
            native = functools.partial(_cpu_ratio, run, JUDGED, "passthrough", label, wire)
            shown = "plain" if label == "plain" else f"stream ({LONG} deltas)"
            checks.append(_check(run, f"{title}: CPU/request {shown} vs raw passthrough", "<= 3x",
                                 (JUDGED, "passthrough"), native, lambda x: x <= 3, "{:.2f}x"))
        checks.append(_check(run, f"{title}: CPU per extra streamed event ({SHORT} vs {LONG} deltas)", "<= 0.03ms",
                             (JUDGED,), functools.partial(run.per_extra_chunk_ms, JUDGED, wire), lambda x: x <= 0.03,
                             "{:.4f} ms"))
    checks.append(_rss_check(run))
    return checks


def _check(run: Run, what: str, target: str, needs: tuple[str, ...], value: Callable[[], float | None],
           passes: Callable[[float], bool], shape: str) -> Check:
    measured = value()
    if measured is None:
        return Check(what, "-", target, run.missing(*needs))
    verdict = "" if target == "-" else "pass" if passes(measured) else "FAIL"
    return Check(what, shape.format(measured), target, verdict)


def _cpu_ratio(run: Run, ours: str, base: str, label: str, wire: str = CHAT) -> float | None:
    a, b = run.get(ours, label, wire=wire), run.get(base, label, wire=wire)
    return a.cpu_ms_per_request / b.cpu_ms_per_request if a and b and b.cpu_ms_per_request else None


def _rps_ratio(run: Run, ours: str, base: str, label: str = "plain") -> float | None:
    a, b = run.get(ours, label), run.get(base, label)
    return a.rps / b.rps if a and b else None


def _rss_check(run: Run) -> Check:
    """Resident memory after the first C=16 measurement against after the last one: the run's
    load on one process is the bounded soak (bench/attack.py has a longer one)."""
    ours = [r for r in run.results if r.target == JUDGED]
    first = next((r for r in ours if r.scenario.concurrency == 16), None)
    what = f"RSS of {JUDGED} over its load in this run"
    if first is None:
        return Check(what, "-", "flat", run.missing(JUDGED))
    grown = ours[-1].rss_mb / first.rss_mb - 1
    measured = f"{first.rss_mb:.1f} -> {ours[-1].rss_mb:.1f} MB ({grown:+.1%})"
    return Check(what, measured, f"<= +{RSS_GROWTH:.0%}", "pass" if grown <= RSS_GROWTH else "FAIL")
