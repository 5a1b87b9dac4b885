"""Several processes opening one fresh SQLite file at once: one migrates, the rest find it done."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from capture.migrations import MIGRATIONS
from capture.sqlite import SQLiteStore

PROCESSES = 5
ROUNDS = 10
DEADLINE = 60  # seconds for any one step; the whole test takes a few

# Each child says `ready` once imported, then for every path it is sent opens a store on it
# (all children are sent the same path at once: the start line) and says `ok` or `error ...`.
_CHILD = """
import asyncio, sys
from capture.sqlite import SQLiteStore

async def open_once(path):
    store = SQLiteStore(path)
    try:
        await store.open()
    finally:
        await store.close()

print("ready", flush=True)
for line in sys.stdin:
    try:
        asyncio.run(open_once(line.strip()))
    except Exception as error:
        print("error", repr(error).replace("\\n", " "), flush=True)
    else:
        print("ok", flush=True)
"""


async def _answer(child: asyncio.subprocess.Process) -> str:
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), DEADLINE)
    if not line:
        raise AssertionError(f"a child exited early with {await child.wait()}")
    return line.decode().strip()


async def test_processes_opening_one_fresh_file_at_once_all_open_and_migrate_once(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, cwd=root, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for _ in range(PROCESSES)
    ]
    failures: list[str] = []
    try:
        assert await asyncio.gather(*map(_answer, children)) == ["ready"] * PROCESSES
        for round_ in range(ROUNDS):
            path = tmp_path / f"round{round_}.db"
            for child in children:  # the start line: every child waits on its pipe for this
                assert child.stdin is not None
                child.stdin.write(f"{path}\n".encode())
            for child in children:
                assert child.stdin is not None
                await child.stdin.drain()
            answers = await asyncio.gather(*map(_answer, children))
            failures += [f"round {round_}: {answer}" for answer in answers if answer != "ok"]
            db = sqlite3.connect(path)
            names = [name for (name,) in db.execute("SELECT name FROM schema_migrations ORDER BY name")]
            mode = db.execute("PRAGMA journal_mode").fetchone()
            db.close()
            if names != [m.__name__ for m in MIGRATIONS]:
                failures.append(f"round {round_}: schema_migrations holds {names}")
            if mode != ("wal",):
                failures.append(f"round {round_}: journal mode {mode}")
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), DEADLINE)
            except TimeoutError:
                child.kill()
                await child.wait()
    assert not failures, "\n".join(failures)


async def test_opening_an_up_to_date_file_takes_no_write_lock(tmp_path: Path) -> None:
    # Another replica's long write must not hold up (or, past busy_timeout, fail) a start.
    path = str(tmp_path / "x.db")
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE knowledge_version SET version = version + 1")
    try:
        store = SQLiteStore(path)
        await store.open()  # with the lock needed, this would wait out busy_timeout and fail
        assert await store.ping()
        await store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
