"""Added latency, throughput and CPU per request of ctxgate against its baselines, in one run.

    python -m bench.run [--quick] [--only TARGET ...] [--seconds S] [--rounds N]

One fake upstream (zero delay) serves every target in turn (bench/targets.py): the client
itself, a raw aiohttp relay, a bare litellm handler, LiteLLM proxy, and ctxgate in several
configurations. Each target runs alone, as its own process tree; CPU per request is read from
/proc for that tree only (every thread, every worker process), so the load generator's own cost
does not count. Each measurement runs for a set time after a warm-up, closed loop at its
concurrency. Streams are asked for with a set number of content deltas (10 or 200), so CPU per
extra chunk is (cpu/req at 200 - cpu/req at 10) / 190. The raw relay and ctxgate_policy are
measured on Anthropic Messages as well (POST /v1/messages, at C=16). Results are ratios within
this run, never absolute promises; bench/report.py prints them against the issue's targets.
The whole list of targets is measured `--rounds` times over (3 by default), each target started
afresh each round, and each figure reported is the median of its rounds: a baseline and ctxgate
measured minutes apart on a shared machine drift apart by 10-20% between two single readings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench import report
from bench.servers import stream_marker
from bench.targets import (ALL, ANTHROPIC, ANTHROPIC_MODEL, CHAT, MODEL, NATIVE_WIRE_TARGETS, NATIVE_WIRES, RESPONSES,
                           ROOT, WORKERS, Target, drop_database, prepare, stored_interactions)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLIENT_KEY = "sk-bench-client"


class TargetFailed(Exception):
    """A target that did not start or answered something else than 200: its rows are missing."""


@dataclass(frozen=True)
class Scenario:
    stream: bool
    concurrency: int
    deltas: int | None = None  # streams: content deltas per stream; plain calls get the ~60-token answer
    wire: str = CHAT  # CHAT: POST /v1/chat/completions; ANTHROPIC: POST /v1/messages; RESPONSES: POST /v1/responses

    @property
    def label(self) -> str:
        return f"stream{self.deltas}" if self.stream else "plain"

    @property
    def title(self) -> str:
        """The label, marked `anth.` for Anthropic Messages, `resp.` for the Responses API."""
        return self.label if self.wire == CHAT else f"{self.wire[:4]}.{self.label}"

    @property
    def path(self) -> str:
        """Under /v1, at a target and at the upstream alike."""
        return {CHAT: "/chat/completions", ANTHROPIC: "/messages", RESPONSES: "/responses"}[self.wire]


PLAIN_1, PLAIN_16 = Scenario(False, 1), Scenario(False, 16)
STREAM200_1, STREAM200_16, STREAM10_16 = Scenario(True, 1, 200), Scenario(True, 16, 200), Scenario(True, 16, 10)
SCENARIOS = (PLAIN_1, PLAIN_16, STREAM200_1, STREAM200_16, STREAM10_16)
# Anthropic Messages and the Responses API at C=16 only (for NATIVE_WIRE_TARGETS): what the
# native-wire targets are judged on.
NATIVE_WIRE_SCENARIOS = tuple(scenario for wire in NATIVE_WIRES for scenario in (
    Scenario(False, 16, wire=wire), Scenario(True, 16, 200, wire=wire), Scenario(True, 16, 10, wire=wire)))


def scenarios_for(name: str) -> tuple[Scenario, ...]:
    if name in WORKERS:
        return (PLAIN_16,)
    return SCENARIOS + (NATIVE_WIRE_SCENARIOS if name in NATIVE_WIRE_TARGETS else ())


@dataclass(frozen=True)
class Result:
    target: str
    scenario: Scenario
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_ms_per_request: float
    upstream_cpu_ms_per_request: float
    frames: int  # SSE data frames of the last warm-up answer (0 plain): N deltas give N + 3 in chat, N + 6 Anthropic, N + 8 Responses
    rss_mb: float  # resident memory of the target's tree after the measurement


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None  # gone since the listing


def process_tree(root: int) -> list[int]:
    """`root` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every thread of every process in the tree, plus what its reaped
    children spent (cutime + cstime), so a worker that exits still counts."""
    total = 0
    for pid in process_tree(root):
        if fields := _stat(pid):
            total += sum(int(f) for f in fields[11:15])
    return total / CLOCK_TICKS


def tree_rss_mb(root: int) -> float:
    return sum(int(f[21]) for pid in process_tree(root) if (f := _stat(pid))) * PAGE_SIZE / 2**20


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetFailed(f"exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TargetFailed(f"nothing listening on {port} after {timeout_s}s")


def start(command: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """In a session of its own, so that stopping it stops its workers and nothing else."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_listening(port, process)
    except TargetFailed:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def payload(scenario: Scenario) -> bytes:
    """The same question on every wire: OpenAI chat, Anthropic Messages as the anthropic SDK
    sends it (the system prompt beside the messages, `max_tokens` required), or the Responses API
    (the system prompt as `instructions`)."""
    question = "What is the prod VPC CIDR?"
    if scenario.deltas is not None:
        question += " " + stream_marker(scenario.deltas)
    system = "You are an infra assistant."
    if scenario.wire == ANTHROPIC:
        return orjson.dumps({"model": ANTHROPIC_MODEL, "max_tokens": 1024, "stream": scenario.stream,
                             "system": system, "messages": [{"role": "user", "content": question}]})
    if scenario.wire == RESPONSES:
        return orjson.dumps({"model": MODEL, "stream": scenario.stream, "instructions": system, "input": question})
    return orjson.dumps({"model": MODEL, "stream": scenario.stream, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]})


def headers(scenario: Scenario) -> dict[str, str]:
    """The client's key as each SDK sends it: a bearer token, or Anthropic's x-api-key and version."""
    if scenario.wire == ANTHROPIC:
        return {"Content-Type": "application/json", "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    return {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}


async def load(url: str, scenario: Scenario, seconds: float, min_requests: int) -> tuple[list[float], float, bytes]:
    """Closed loop at the scenario's concurrency until `seconds` have passed and at least
    `min_requests` were sent: each request's latency, the elapsed time, and the last answer."""
    body, sent_headers = payload(scenario), headers(scenario)
    latencies: list[float] = []
    sent = 0
    last = b""
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent, last
        while sent < min_requests or time.perf_counter() < deadline:
            sent += 1
            began = time.perf_counter()
            async with session.post(url, data=body, headers=sent_headers) as response:
                last = await response.read()
                if response.status != 200:
                    raise TargetFailed(f"answered {response.status}: {last[:300]!r}")
            latencies.append((time.perf_counter() - began) * 1000)

    connector = aiohttp.TCPConnector(limit=scenario.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        try:
            await asyncio.gather(*(worker(session) for _ in range(scenario.concurrency)))
        except aiohttp.ClientError as error:
            raise TargetFailed(f"{type(error).__name__}: {error}") from error
        return latencies, time.perf_counter() - began, last


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Timing:
    seconds: float
    warmup_s: float


def measure(name: str, url: str, pid: int | None, upstream_pid: int, scenario: Scenario,
            timing: Timing) -> tuple[Result, int]:
    """One measurement after a warm-up; also how many requests were sent in all."""
    warm, _, last = asyncio.run(load(url, scenario, timing.warmup_s, scenario.concurrency))
    frames = last.count(b"data: ") if scenario.stream else 0
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    upstream_before = tree_cpu_seconds(upstream_pid)
    latencies, elapsed, _ = asyncio.run(load(url, scenario, timing.seconds, 2 * scenario.concurrency))
    cpu = (tree_cpu_seconds(pid) - cpu_before) if pid else 0.0
    upstream_cpu = tree_cpu_seconds(upstream_pid) - upstream_before
    n = len(latencies)
    result = Result(name, scenario, n, percentile(latencies, 0.5), percentile(latencies, 0.99), n / elapsed,
                    cpu * 1000 / n, upstream_cpu * 1000 / n, frames, tree_rss_mb(pid) if pid else 0.0)
    return result, len(warm) + n


def run_target(target: Target, port: int, upstream_base: str, upstream_pid: int, workdir: Path,
               timing: Timing) -> Iterator[Result]:
    process = None
    if target.command is None:
        base = upstream_base
    else:
        process = start(target.command, port, target.env, workdir / f"{target.name}.log")
        base = f"http://127.0.0.1:{port}/v1"
    sent = 0
    try:
        for scenario in scenarios_for(target.name):
            result, requests = measure(target.name, base + scenario.path, process.pid if process else None,
                                       upstream_pid, scenario, timing)
            sent += requests
            print(_row(result), flush=True)
            if scenario.deltas is not None and result.frames < scenario.deltas:
                print(f"  {target.name} {scenario.title}: {result.frames} SSE frames for {scenario.deltas} deltas: "
                      "chunks were merged on the way, so its CPU per chunk is not comparable", flush=True)
            yield result
    finally:
        if process is not None:
            stop(process)
    if target.db is not None:
        stored = stored_interactions(target.db)
        print(f"{target.name} recorded {stored} of {sent} interactions", flush=True)
        if stored != sent:
            raise TargetFailed(f"capture lost interactions: {stored} stored of {sent} answered")
    if process is not None:
        _odd_lines(target.name, workdir / f"{target.name}.log")


def median_results(results: list[Result]) -> list[Result]:
    """One result per (target, scenario): each figure the median of its rounds, the calls summed,
    the SSE frames the fewest seen; in the order first measured."""
    rounds: dict[tuple[str, Scenario], list[Result]] = {}
    for result in results:
        rounds.setdefault((result.target, result.scenario), []).append(result)

    def median(taken: list[Result], figure: str) -> float:
        return float(statistics.median(getattr(r, figure) for r in taken))

    return [Result(target, scenario, sum(r.requests for r in taken), median(taken, "p50_ms"), median(taken, "p99_ms"),
                   median(taken, "rps"), median(taken, "cpu_ms_per_request"),
                   median(taken, "upstream_cpu_ms_per_request"), min(r.frames for r in taken),
                   median(taken, "rss_mb"))
            for (target, scenario), taken in rounds.items()]


def _odd_lines(name: str, log: Path) -> None:
    """Tracebacks and error-level lines in a target's output: a baseline that fails offline
    must show here, not pass as a fast one."""
    odd = [line for line in log.read_text(errors="replace").splitlines()
           if "Traceback" in line or " ERROR" in line or "ERROR:" in line or '"level":"error"' in line
           or '"level": "error"' in line]
    if odd:
        print(f"  {name}: {len(odd)} error lines in {log}, first: {odd[0][:200]}", flush=True)


def _row(r: Result) -> str:
    stream = f"frames={r.frames:<4}" if r.scenario.stream else " " * 11
    return (f"{r.target:<17} {r.scenario.title:<14} c={r.scenario.concurrency:<3} n={r.requests:<5} "
            f"p50={r.p50_ms:8.2f}ms p99={r.p99_ms:8.2f}ms {r.rps:7.1f} req/s  cpu={r.cpu_ms_per_request:7.3f} ms/req "
            f"{stream} rss={r.rss_mb:6.1f}MB (upstream {r.upstream_cpu_ms_per_request:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short measurements, for a smoke run")
    parser.add_argument("--only", nargs="*", choices=ALL, help="targets to run (default: all)")
    parser.add_argument("--seconds", type=float, help="per measurement (default 3, quick 1.5)")
    parser.add_argument("--rounds", type=int, help="times the targets are measured over; medians reported "
                                                   "(default 3, quick 1)")
    args = parser.parse_args()
    timing = Timing(seconds=args.seconds or (1.5 if args.quick else 3.0), warmup_s=0.5 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 3)
    names = args.only or list(ALL)

    upstream_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="ctxgate-bench-"))
    print(f"work directory (configs, logs, stores): {workdir}", flush=True)
    upstream = start([sys.executable, "-m", "bench.servers", "upstream", str(upstream_port)],
                     upstream_port, dict(os.environ), workdir / "upstream.log")
    upstream_base = f"http://127.0.0.1:{upstream_port}/v1"
    results: list[Result] = []
    skipped: dict[str, str] = {}  # could not run here, and why
    failed: dict[str, str] = {}  # ran and failed: a missing row that is the bench's or ctxgate's fault
    began = time.monotonic()
    try:
        for round_number in range(1, rounds + 1):
            print(f"round {round_number} of {rounds}", flush=True)
            round_dir = workdir / f"round{round_number}"  # a fresh store, config and log for each target
            round_dir.mkdir()
            for name in names:
                if name in skipped or name in failed:
                    continue
                port = free_port()
                target = prepare(name, round_dir, upstream_base, port)
                if isinstance(target, str):
                    skipped[name] = target
                    print(f"{name}: skipped: {target}", flush=True)
                    continue
                try:
                    for result in run_target(target, port, upstream_base, upstream.pid, round_dir, timing):
                        results.append(result)  # kept as they come: a later failure leaves them in the report
                except TargetFailed as error:
                    failed[name] = f"{error} (log: {round_dir / (name + '.log')})"
                    print(f"{name}: FAILED: {failed[name]}", flush=True)
                finally:
                    drop_database(target.db)
    finally:
        stop(upstream)
    print(f"\nmeasured in {time.monotonic() - began:.0f} s; each figure below is the median of {rounds} round(s)")
    report.print_report(median_results(results),
                        {**skipped, **{name: "FAILED: " + why for name, why in failed.items()}})
    if failed:
        raise SystemExit(f"{len(failed)} target(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
