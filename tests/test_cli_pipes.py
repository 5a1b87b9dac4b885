"""`ctxgate ... | head -1`: the reader leaving early is no error worth a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from capture.ingest import Document, ingest
from capture.knowledge import new_memory
from capture.sqlite import SQLiteStore


async def seed(db: str) -> None:
    """More output than a pipe holds, so the writer does meet the closed end."""
    store = SQLiteStore(db)
    await store.open()
    for n in range(300):
        await store.add_memory(new_memory("p", f"fact number {n} " + "x" * 200))
    await ingest(store, "p", [Document.of("doc.md", "\n\n".join(f"fact number {n} " + "y" * 300 for n in range(100)))])
    await store.close()


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    asyncio.run(seed(db))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    for argv in (["memories", "list", "--db", db], ["memories", "list", "--json", "--db", db],
                 ["context", "fact number", "--project", "p", "--budget", "100000", "--db", db]):
        process = subprocess.Popen([sys.executable, "-m", "proxy.cli.commands", *argv], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()  # like `head -1`: one line, then gone
        process.stdout.close()
        errors = process.stderr.read().decode()
        assert process.wait(30) in (0, 141), errors
        assert errors == "", argv
