"""Added latency, throughput and CPU per request of ctxgate against its baselines, in one run.

    python -m bench.run [--quick]

One fake upstream (zero delay) serves every target in turn: `direct` (the client talks to the
upstream), `passthrough` (a raw aiohttp byte relay), `bare_litellm` (a handler that only awaits
`litellm.acompletion`) and `ctxgate` (capture on, JSON logs on). Each target runs alone, as its
own process; CPU per request is read from /proc for that process only, so the load generator's
own cost does not count. Results are ratios within this run, never absolute promises.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.policy import big_policy

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
BODY = {"model": MODEL, "messages": [{"role": "system", "content": "You are an infra assistant."},
                                     {"role": "user", "content": "What is the prod VPC CIDR?"}]}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    target: str
    stream: bool
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_ms_per_request: float
    upstream_cpu_ms_per_request: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime, all threads


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout_s}s")


def start(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process


async def load(url: str, stream: bool, concurrency: int, total: int) -> tuple[list[float], float]:
    payload = orjson.dumps({**BODY, "stream": stream})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-client"}
    latencies: list[float] = []
    remaining = total

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise SystemExit(f"{url}: {response.status} {body[:200]!r}")
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return latencies, time.perf_counter() - began


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(target: str, url: str, pid: int | None, upstream_pid: int, stream: bool, concurrency: int,
            total: int, warmup: int) -> Result:
    asyncio.run(load(url, stream, concurrency, warmup))
    cpu_before = cpu_seconds(pid) if pid else 0.0
    upstream_before = cpu_seconds(upstream_pid)
    latencies, elapsed = asyncio.run(load(url, stream, concurrency, total))
    cpu = (cpu_seconds(pid) - cpu_before) if pid else 0.0
    upstream_cpu = cpu_seconds(upstream_pid) - upstream_before
    return Result(target, stream, concurrency, total, percentile(latencies, 0.5), percentile(latencies, 0.99),
                  total / elapsed, cpu * 1000 / total, upstream_cpu * 1000 / total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--only", nargs="*", help="targets to run (default: all)")
    args = parser.parse_args()
    totals = {1: 100, 16: 300} if args.quick else {1: 400, 16: 1600}
    warmup = 20 if args.quick else 100
    targets = args.only or ["direct", "passthrough", "bare_litellm", "ctxgate", "ctxgate_translate", "ctxgate_policy"]

    python = sys.executable
    upstream_port = free_port()
    upstream = start([python, "-m", "bench.servers", "upstream", str(upstream_port)], upstream_port)
    upstream_base = f"http://127.0.0.1:{upstream_port}/v1"
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="ctxgate-bench-"))
    try:
        for target in targets:
            port = free_port()
            process = None
            db = workdir / f"{target}.db"
            if target == "direct":
                url = upstream_base + "/chat/completions"
            else:
                if target.startswith("ctxgate"):
                    config = workdir / f"{target}.yaml"
                    # ctxgate_translate: the same route carried through litellm, as before the native transport
                    transport = "translate" if target == "ctxgate_translate" else "native"
                    text = (
                        f"model_list:\n  - model_name: {MODEL}\n    transport: {transport}\n    litellm_params:\n"
                        f"      model: openai/fake-model\n      api_base: {upstream_base}\n      api_key: sk-bench\n"
                    )
                    if target == "ctxgate_policy":  # enforcing a 200-rule policy (bench/policy.py)
                        text += "policy: " + orjson.dumps(big_policy()).decode() + "\n"
                    config.write_text(text)
                    command = [python, "-m", "proxy.cli.commands", "serve", "--config", str(config), "--port", str(port),
                               "--db", str(db)]
                else:
                    command = [python, "-m", "bench.servers", target, str(port), upstream_base]
                process = start(command, port)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
            try:
                for stream in (False, True):
                    for concurrency in (1, 16):
                        result = measure(target, url, process.pid if process else None, upstream.pid, stream,
                                         concurrency, totals[concurrency], warmup)
                        results.append(result)
                        print(_row(result), flush=True)
            finally:
                if process is not None:
                    process.terminate()
                    process.wait(30)
            if target.startswith("ctxgate"):
                expected = 4 * warmup + 2 * (totals[1] + totals[16])
                (stored,) = sqlite3.connect(db).execute("SELECT count(*) FROM interactions").fetchone()
                print(f"{target} recorded {stored} of {expected} interactions")
                if stored != expected:
                    raise SystemExit("capture lost interactions")
    finally:
        upstream.terminate()
        upstream.wait(30)
    _summary(results)


def _row(r: Result) -> str:
    mode = "stream" if r.stream else "plain "
    return (f"{r.target:<13} {mode} c={r.concurrency:<3} n={r.requests:<5} p50={r.p50_ms:7.2f}ms "
            f"p99={r.p99_ms:7.2f}ms  {r.rps:7.1f} req/s  cpu={r.cpu_ms_per_request:6.3f} ms/req  "
            f"(upstream {r.upstream_cpu_ms_per_request:.3f})")


def _summary(results: list[Result]) -> None:
    by_key = {(r.target, r.stream, r.concurrency): r for r in results}
    print("\nctxgate against its floors (same run):")
    for stream in (False, True):
        for concurrency in (1, 16):
            guarded = by_key.get(("ctxgate_policy", stream, concurrency))
            plain = by_key.get(("ctxgate", stream, concurrency))
            translated = by_key.get(("ctxgate_translate", stream, concurrency))
            bare = by_key.get(("bare_litellm", stream, concurrency))
            if guarded and plain:
                print(f"  {'stream' if stream else 'plain '} c={concurrency:<3}, a 200-rule policy enforced: "
                      f"cpu/req {guarded.cpu_ms_per_request / plain.cpu_ms_per_request:.2f}x, "
                      f"p50 {guarded.p50_ms - plain.p50_ms:+.2f}ms against ctxgate without")
            if translated and bare:
                print(f"  {'stream' if stream else 'plain '} c={concurrency:<3}, translate transport: "
                      f"cpu/req vs bare litellm {translated.cpu_ms_per_request / bare.cpu_ms_per_request:.2f}x")
    for stream in (False, True):
        for concurrency in (1, 16):
            ours = by_key.get(("ctxgate", stream, concurrency))
            bare = by_key.get(("bare_litellm", stream, concurrency))
            relay = by_key.get(("passthrough", stream, concurrency))
            direct = by_key.get(("direct", stream, concurrency))
            if not ours:
                continue
            parts = [f"{'stream' if stream else 'plain '} c={concurrency:<3}"]
            if bare:
                parts.append(f"cpu/req vs bare litellm {ours.cpu_ms_per_request / bare.cpu_ms_per_request:.2f}x")
            if relay:
                parts.append(f"vs raw relay {ours.cpu_ms_per_request / relay.cpu_ms_per_request:.1f}x")
            if direct:
                parts.append(f"added p50 {ours.p50_ms - direct.p50_ms:+.2f}ms")
            if bare:
                parts.append(f"req/s vs bare litellm {ours.rps / bare.rps:.2f}x")
            if len(parts) > 1:
                print("  " + ", ".join(parts))


if __name__ == "__main__":
    main()
