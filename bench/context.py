"""Context packs at scale: pack-building latency with 10k memories and a growing number of
chunks in one project, on SQLite and on PostgreSQL, and ingestion throughput from Markdown files
on disk.

    python -m bench.context [--chunks 1000 10000 100000 1000000] [--queries 300]
                            [--agreement 100] [--needles 100] [--ingest-mb 20]
                            [--backend sqlite postgresql] [--postgres postgresql://...]

Text is synthetic but made of real words with their real frequencies: the 20,000 most common
words of this Python's standard library (its code, comments and docstrings), drawn by how often
they occur there. So a few words are everywhere (`self`, `return`, `value`) and most are rare,
as in a team's docs and source. One store grows from the smallest size to the largest, and the
pack is measured at each size.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import random
import re
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import uuid
from types import ModuleType

import asyncpg

import capture.postgres
import capture.sqlite
from capture.ingest import ingest, read_document, walk
from capture.knowledge import Chunk, Source, new_memory
from capture.postgres import PostgresStore
from capture.sqlite import SQLiteStore
from capture.store import Store
from proxy.pipeline.context import build_pack

PROJECT = "bench"
CHUNK_WORDS = 220  # about 300 tokens, the size ingestion aims for
TOKENS_PER_WORD = 1.35


def vocabulary(size: int = 20_000) -> tuple[list[str], list[int]]:
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if not {"test", "tests", "site-packages"} & set(path.parts):
            counts.update(re.findall(r"[a-z]{2,}", path.read_text(errors="ignore").lower()))
    words = [word for word, _ in counts.most_common(size)]
    return words, list(itertools.accumulate(counts[word] for word in words))


class Text:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words, self.cumulative = vocabulary()

    def sentence(self, words: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cumulative, k=words))

    def markdown(self, approx_bytes: int) -> str:
        sections = []
        size = 0
        while size < approx_bytes:
            section = f"## {self.sentence(4)}\n\n" + "\n\n".join(
                self.sentence(self.rng.randint(30, 90)) + "." for _ in range(self.rng.randint(2, 6)))
            sections.append(section)
            size += len(section)
        return f"# {self.sentence(5)}\n\n" + "\n\n".join(sections)


async def add_memories(store: Store, text: Text, count: int) -> None:
    for _ in range(count):
        await store.add_memory(new_memory(PROJECT, text.sentence(text.rng.randint(8, 30)),
                                          confidence=round(text.rng.uniform(0.5, 1.0), 2)))


async def add_chunks(store: Store, text: Text, first: int, count: int) -> None:
    """Chunks written straight to the store, 50 per source, 20 sources per transaction (the
    ingestion pipeline is measured on its own below)."""
    per_source, per_batch = 50, 20
    batch = []
    for number in range(first // per_source, (first + count) // per_source):
        path = f"docs/{number}.md"
        chunks = tuple(Chunk(f"ch_{number}_{n}", PROJECT, path, n, text.sentence(CHUNK_WORDS),
                             int(CHUNK_WORDS * TOKENS_PER_WORD)) for n in range(per_source))
        batch.append(Source(path, str(number), chunks))
        if len(batch) == per_batch:
            await store.replace_sources(PROJECT, batch)
            batch = []
    if batch:
        await store.replace_sources(PROJECT, batch)


async def pack_latency(store: Store, text: Text, queries: int) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, max ms, share of questions that got a pack) over `queries` questions."""
    times = []
    packed = 0
    for _ in range(queries):
        question = text.sentence(text.rng.randint(4, 14)) + "?"
        started = time.perf_counter()
        pack = await build_pack(store, PROJECT, question, 1500)
        times.append((time.perf_counter() - started) * 1000)
        packed += pack is not None
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times))], times[-1], packed / queries


async def agreement_with_full_bm25(store: Store, text: Text, questions: int, top: int = 3) -> tuple[float, float]:
    """How much of the bounded search's best `top` memories and chunks full bm25 (every word of
    the question, nothing bounded) also puts in its best `top`: what the bound costs in ranking."""
    shared = [0.0, 0.0]
    for _ in range(questions):
        question = text.sentence(text.rng.randint(4, 14)) + "?"
        bounded = await store.search_knowledge(PROJECT, question, top)
        planner = planner_of(store)
        budget, planner.MATCH_BUDGET = planner.MATCH_BUDGET, 10**12
        try:
            full = await store.search_knowledge(PROJECT, question, top)
        finally:
            planner.MATCH_BUDGET = budget
        for kind in (0, 1):
            best = {hit.id for hit in full[kind]}
            shared[kind] += len(best & {hit.id for hit in bounded[kind]}) / max(1, len(best))
    return shared[0] / questions, shared[1] / questions


async def needle_recall(store: Store, text: Text, questions: int, top: int = 3) -> tuple[float, float]:
    """Plant, for each of `questions` questions, one chunk that holds every word of it among
    other words; how often that chunk is among the best `top`, with the bound and with full
    bm25. The planted chunks are the newest rows, the worst place for a bounded search that
    ranks the first matches in storage order."""
    asked = []
    sources = []
    for number in range(questions):
        question = text.sentence(text.rng.randint(5, 10))
        words = text.sentence(CHUNK_WORDS - 20).split()
        for word in question.split():
            words.insert(text.rng.randrange(len(words)), word)
        chunk = Chunk(f"needle_{number}", PROJECT, f"needles/{number}.md", 0, " ".join(words),
                      int(len(words) * TOKENS_PER_WORD))
        sources.append(Source(chunk.source_path, chunk.id, (chunk,)))
        asked.append((question + "?", chunk.id))
    await store.replace_sources(PROJECT, sources)
    found = [0, 0]
    for question, needle in asked:
        planner = planner_of(store)
        for way, budget in enumerate((planner.MATCH_BUDGET, 10**12)):
            saved, planner.MATCH_BUDGET = planner.MATCH_BUDGET, budget
            try:
                _, chunks = await store.search_knowledge(PROJECT, question, top)
            finally:
                planner.MATCH_BUDGET = saved
            found[way] += needle in [chunk.id for chunk in chunks]
    return found[0] / questions, found[1] / questions


def planner_of(store: Store) -> ModuleType:
    """The module whose MATCH_BUDGET bounds the store's searches."""
    return capture.postgres if isinstance(store, PostgresStore) else capture.sqlite


async def ingestion_rate(workdir: Path, text: Text, megabytes: float) -> tuple[float, int, int]:
    """(MB/s, files, chunks): `ingest` over Markdown files on disk, read to stored, as the CLI."""
    docs = workdir / "docs"
    docs.mkdir()
    written = 0
    for number in itertools.count():
        if written >= megabytes * 1_000_000:
            break
        page = text.markdown(text.rng.choice([2_000, 8_000, 30_000, 120_000]))
        (docs / f"page{number}.md").write_text(page)
        written += len(page.encode())
    store = SQLiteStore(str(workdir / "ingest.db"))
    await store.open()
    files = list(walk([docs]))
    started = time.perf_counter()
    report = await ingest(store, PROJECT, (read_document(path, root) for path, root in files))
    elapsed = time.perf_counter() - started
    await store.close()
    return written / 1_000_000 / elapsed, len(files), report.chunks


async def measure(store: Store, text: Text, args: argparse.Namespace, backend: str) -> None:
    await store.open()
    try:
        await add_memories(store, text, args.memories)
        have = 0
        for size in sorted(args.chunks):
            started = time.perf_counter()
            await add_chunks(store, text, have, size - have)
            have = size
            filled = time.perf_counter() - started
            p50, p99, worst, packed = await pack_latency(store, text, args.queries)
            print(f"{backend:<10} {args.memories} memories + {size:>9,} chunks (+{filled:4.0f}s to fill): pack p50 "
                  f"{p50:5.2f} ms  p99 {p99:6.2f} ms  max {worst:6.2f} ms  ({packed:.0%} of questions got a pack)",
                  flush=True)
            if args.agreement:
                memories, chunks = await agreement_with_full_bm25(store, text, args.agreement)
                print(f"    best 3 also the unbounded search's best 3: memories {memories:.0%}, chunks {chunks:.0%}",
                      flush=True)
        if args.needles:
            bounded, full = await needle_recall(store, text, args.needles)
            print(f"{backend:<10} a planted chunk holding every word of its question is in the best 3: {bounded:.0%} "
                  f"of {args.needles} questions (unbounded: {full:.0%}), at {have:,} chunks", flush=True)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ingest-mb", type=float, default=20.0)
    parser.add_argument("--agreement", type=int, default=100, metavar="QUESTIONS",
                        help="questions to compare with full bm25 at each size (slow on large stores; 0: skip)")
    parser.add_argument("--needles", type=int, default=100, metavar="QUESTIONS",
                        help="planted chunks to look for at the largest size (0: skip)")
    parser.add_argument("--backend", nargs="*", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server where a database may be made and dropped")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctxgate-bench-context-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        if args.ingest_mb:
            rate, files, chunks = await ingestion_rate(workdir, Text(seed=42), args.ingest_mb)
            print(f"ingestion: {rate:.1f} MB/s of Markdown, {args.ingest_mb:.0f} MB in {files} files -> {chunks} "
                  "chunks (read, chunk, count tokens, store, index; SQLite)", flush=True)
        for backend in args.backend:  # the same text, questions and needles on each: one seed
            if backend == "sqlite":
                await measure(SQLiteStore(str(workdir / "packs.db")), Text(seed=42), args, backend)
                continue
            admin = await asyncpg.connect(args.postgres)
            name = f"ctxgate_bench_{uuid.uuid4().hex[:12]}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                store = PostgresStore(args.postgres.rpartition("/")[0] + "/" + name)
                await measure(store, Text(seed=42), args, backend)
            finally:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
