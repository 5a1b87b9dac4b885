"""Context packs at scale: pack-building latency with 10k memories and 100k chunks in one
project on SQLite, how it grows with the number of chunks, and ingestion throughput.

    python -m bench.context [--chunks 1000 10000 100000] [--queries 300]

Text is synthetic: words drawn from a 20,000-word vocabulary with a Zipf distribution, so some
words are everywhere and most are rare, as in real documents.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from capture.ingest import Document, chunk_document
from capture.knowledge import Chunk, new_memory
from capture.sqlite import SQLiteStore
from proxy.context import build_pack

VOCABULARY = [f"w{n}x" for n in range(20_000)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(VOCABULARY, WEIGHTS, k=words))


async def fill(store: SQLiteStore, memories: int, chunks: int, rng: random.Random) -> None:
    for start in range(0, memories, 1000):
        for _ in range(min(1000, memories - start)):
            await store.add_memory(new_memory("bench", sentence(rng, 18)))
    per_source = 50
    for source in range(chunks // per_source):
        pieces = [Chunk(f"c{source}_{n}", "bench", f"doc{source}.md", n, text, len(text.split()) * 2)
                  for n, text in enumerate(sentence(rng, 120) for _ in range(per_source))]
        await store.replace_source("bench", f"doc{source}.md", f"h{source}", pieces)


async def pack_latency(store: SQLiteStore, queries: int, rng: random.Random) -> tuple[float, float, float]:
    times = []
    found = 0
    for _ in range(queries):
        question = [{"role": "user", "content": sentence(rng, rng.randint(4, 12)) + "?"}]
        started = time.perf_counter()
        pack = await build_pack(store, "bench", question, 1500)
        times.append((time.perf_counter() - started) * 1000)
        found += bool(pack and (pack.memories or pack.chunks))
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(0.99 * len(ordered))], found / queries


async def ingest_rate(workdir: Path, rng: random.Random, megabytes: float = 5.0) -> float:
    sections = []
    size = 0
    while size < megabytes * 1024 * 1024:
        section = f"## {sentence(rng, 4)}\n\n" + "\n\n".join(sentence(rng, rng.randint(30, 90)) for _ in range(4))
        sections.append(section)
        size += len(section)
    docs = ["\n\n".join(sections[i:i + 40]) for i in range(0, len(sections), 40)]
    store = SQLiteStore(str(workdir / "ingest.db"))
    await store.open()
    started = time.perf_counter()
    for n, text in enumerate(docs):
        document = Document(f"docs/{n}.md", text, str(n))
        await store.replace_source("bench", document.path, document.content_hash, chunk_document("bench", document))
    elapsed = time.perf_counter() - started
    await store.close()
    return size / 1024 / 1024 / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="ctxgate-bench-context-") as tmp:
        workdir = Path(tmp)
        for chunks in args.chunks:
            store = SQLiteStore(str(workdir / f"{chunks}.db"))
            await store.open()
            started = time.perf_counter()
            await fill(store, args.memories, chunks, rng)
            filled = time.perf_counter() - started
            p50, p99, hit_rate = await pack_latency(store, args.queries, rng)
            await store.close()
            print(f"{args.memories} memories + {chunks:>7} chunks (filled in {filled:5.1f}s): "
                  f"pack p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({hit_rate:.0%} of queries found something)",
                  flush=True)
        print(f"ingestion: {await ingest_rate(workdir, rng):.1f} MB/s of Markdown (chunking, token counting, "
              "storing, indexing)")


if __name__ == "__main__":
    asyncio.run(main())
