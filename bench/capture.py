"""Capture throughput: interactions a second the capture writer stores, on SQLite and on
PostgreSQL, in the same run.

    python -m bench.capture [--records 20000] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Records are shaped like an agent's turns (a prompt of a few messages, about 3 kB, a response of
about 1 kB, 20 sessions, token counts), submitted all at once to one `CaptureWriter`, as the
request path does, and timed until the last is stored. The PostgreSQL store gets a database of
its own, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from capture.postgres import PostgresStore
from capture.records import Interaction, new_interaction_id, now_timestamp
from capture.sqlite import SQLiteStore
from capture.store import Store
from capture.writer import CaptureWriter

TARGET_PER_S = 2000  # on PostgreSQL


def records(count: int, seed: int = 7) -> list[Interaction]:
    rng = random.Random(seed)
    words = "the deploy plan for vpc subnet terraform apply review module state output error retry".split()

    def text(n: int) -> str:
        return " ".join(rng.choices(words, k=n))

    made = []
    for n in range(count):
        prompt = [{"role": "system", "content": text(60)}] + [
            {"role": "user" if turn % 2 == 0 else "assistant", "content": text(80)} for turn in range(4)]
        made.append(Interaction(
            id=new_interaction_id(), created_at=now_timestamp(), project="bench", session_id=f"s{n % 20}",
            client="claude-cli/2.1", model="claude-bench", status="ok", prompt=prompt, params={"max_tokens": 1024},
            response={"id": f"msg_{n}", "content": [{"type": "text", "text": text(150)}]},
            memories_used=("mem_a", "mem_b"), chunks_used=("ch_1",), context_pack=text(40),
            tool_decisions=({"tool": "Bash", "action": "allow", "rule": "allowed_tools[0]"},),
            prompt_tokens=900 + n % 50, completion_tokens=150, latency_ms=812.5, ttft_ms=95.25,
            wire="anthropic_messages", usage_source="provider"))
    return made


async def rate(store: Store, batch: list[Interaction]) -> float:
    """Interactions a second, from the first submit to the last stored."""
    await store.open()
    writer = CaptureWriter(store, spool=None, max_pending=len(batch) + 1)  # all of them queued, none dropped
    await writer.start()
    try:
        started = time.perf_counter()
        for record in batch:
            writer.submit(record)
        await writer.wait_written(len(batch))
        elapsed = time.perf_counter() - started
    finally:
        await writer.stop()
        await store.close()
    return len(batch) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server where a database may be made and dropped")
    args = parser.parse_args()
    batch = records(args.records)
    with tempfile.TemporaryDirectory(prefix="ctxgate-bench-capture-") as tmp:
        sqlite_rate = await rate(SQLiteStore(str(Path(tmp) / "capture.db")), batch)
    print(f"SQLite:     {sqlite_rate:8.0f} interactions/s ({args.records} records)", flush=True)
    admin = await asyncpg.connect(args.postgres)
    name = f"ctxgate_bench_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        postgres_rate = await rate(PostgresStore(args.postgres.rpartition("/")[0] + "/" + name), batch)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    verdict = "pass" if postgres_rate >= TARGET_PER_S else "FAIL"
    print(f"PostgreSQL: {postgres_rate:8.0f} interactions/s ({postgres_rate / sqlite_rate:.2f}x SQLite)  "
          f"target >= {TARGET_PER_S}/s  {verdict}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
