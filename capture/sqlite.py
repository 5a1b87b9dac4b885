"""The embedded store: one SQLite connection in WAL mode, used from one thread off the event loop."""

from __future__ import annotations

import asyncio
import secrets
import queue
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from capture.approvals import Approval, ApprovalStatus
from capture.knowledge import Memory, Scored, Source, fts_expression, query_terms, rarest_within
from capture.migrations import MIGRATIONS, MIGRATIONS_TABLE, TOKENIZER
from capture.rates import LocalRates
from capture.records import CleanupResult, Interaction, InteractionQuery, Session, now_timestamp
from capture.rows import (APPROVAL_COLUMNS, COLUMNS, MEMORY_COLUMNS, SUMMARY_COLUMNS, approval_from_row, approval_values,
                          from_row, memory_from_row, row_values, session_totals)
from capture.search_cache import SearchCache
from capture.store import RecordRejected, StoreUnavailable

T = TypeVar("T")
READERS = 2  # connections (and threads) for context searches

_INSERT = (
    f"INSERT INTO interactions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)


_UPSERT_SESSION = """
INSERT INTO sessions (project, id, client, first_at, last_at, interaction_count, prompt_tokens, completion_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (project, id) DO UPDATE SET
    first_at = CASE WHEN excluded.first_at < sessions.first_at THEN excluded.first_at ELSE sessions.first_at END,
    last_at = CASE WHEN excluded.last_at > sessions.last_at THEN excluded.last_at ELSE sessions.last_at END,
    interaction_count = sessions.interaction_count + excluded.interaction_count,
    prompt_tokens = sessions.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = sessions.completion_tokens + excluded.completion_tokens
"""
_SESSION_COLUMNS = Session.__slots__
# Sessions that began before a retention cutoff and went on after it: counted again from what is left.
_RECOUNT_STRADDLING = """
UPDATE sessions SET
    first_at = (SELECT MIN(i.created_at) FROM interactions i
                WHERE i.session_id = sessions.id AND COALESCE(i.project, '') = sessions.project),
    interaction_count = (SELECT COUNT(*) FROM interactions i
                         WHERE i.session_id = sessions.id AND COALESCE(i.project, '') = sessions.project),
    prompt_tokens = (SELECT COALESCE(SUM(i.prompt_tokens), 0) FROM interactions i
                     WHERE i.session_id = sessions.id AND COALESCE(i.project, '') = sessions.project),
    completion_tokens = (SELECT COALESCE(SUM(i.completion_tokens), 0) FROM interactions i
                         WHERE i.session_id = sessions.id AND COALESCE(i.project, '') = sessions.project)
WHERE first_at < ?
"""


def _in_projects(projects: frozenset[str] | None) -> tuple[str, list[str]]:
    """A WHERE clause limiting to `projects` (None: no limit; empty: nothing)."""
    if projects is None:
        return "", []
    if not projects:
        return "1 = 0", []
    return f"COALESCE(project, '') IN ({', '.join('?' for _ in projects)})", sorted(projects)


class SQLiteStore:
    """`Store` over one SQLite file. Writes and most reads go through a single worker thread,
    which serialises writes (one writer is what SQLite wants) and keeps the event loop free.
    Context searches, which are on every request's path, run on reader connections of their
    own: WAL lets them go on beside the writer, so they never wait behind a capture batch or
    an ingest, and two requests' searches can run at once. (One request's memory and chunk
    searches run one after the other: side by side on two threads they saved 0.4 ms at 100k
    chunks but cost 0.4 ms more CPU on every request, in GIL hand-offs.)"""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxgate-sqlite")
        self._db: sqlite3.Connection | None = None
        self._read_executor = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="ctxgate-sqlite-read")
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._version_reader: sqlite3.Connection | None = None  # used on the event loop only
        self._searches = SearchCache()
        self._rates = LocalRates()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreUnavailable(f"store {self.path} is not open")
            try:
                return work(self._db)
            except sqlite3.Error as error:
                raise StoreUnavailable(f"sqlite {self.path}: {error}") from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.path == ":memory:":  # another connection would open another, empty, database
            return await self._run(work)

        def call() -> T:
            if self._db is None:
                raise StoreUnavailable(f"store {self.path} is not open")
            db = self._readers.get()  # as many connections as threads: one is always free
            try:
                return work(db)
            except sqlite3.Error as error:
                raise StoreUnavailable(f"sqlite {self.path}: {error}") from error
            finally:
                self._readers.put(db)

        return await asyncio.get_running_loop().run_in_executor(self._read_executor, call)

    async def open(self) -> None:
        def connect() -> None:
            try:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                db = _connect(self.path)
                _use_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                _migrate(db)
                if self.path != ":memory:":
                    for _ in range(READERS):
                        self._readers.put(_connect(self.path))
                    self._version_reader = _connect(self.path)
                    self._version_reader.execute("PRAGMA busy_timeout=0")  # never waits: see _knowledge_version
            except (sqlite3.Error, OSError) as error:
                raise StoreUnavailable(f"cannot open sqlite store {self.path}: {error}") from error
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._read_executor.shutdown(wait=True)
        while not self._readers.empty():
            self._readers.get().close()
        if self._version_reader is not None:
            self._version_reader.close()
            self._version_reader = None
        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    def pool_usage(self) -> None:
        return None

    async def ping(self) -> bool:
        try:
            return await self._run(lambda db: db.execute("SELECT 1").fetchone() == (1,))
        except StoreUnavailable:
            return False

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        def insert(db: sqlite3.Connection) -> None:
            try:
                rows = [row_values(interaction) for interaction in batch]  # serialised off the loop too
                with _transaction(db):
                    # Only a row actually inserted counts towards its session: a replayed spool
                    # line that is already stored must not count twice.
                    stored = [interaction for interaction, row in zip(batch, rows) if db.execute(_INSERT, row).rowcount]
                    db.executemany(_UPSERT_SESSION, session_totals(stored))
            # JSON that orjson cannot write (TypeError), text that is not UTF-8 (ValueError), an
            # integer past SQLite's 64 bits (OverflowError), a value of a type it cannot bind.
            except (TypeError, ValueError, OverflowError, sqlite3.InterfaceError, sqlite3.IntegrityError) as error:
                raise RecordRejected(f"{type(error).__name__}: {error}") from error

        await self._run(insert)

    async def list_interactions(self, query: InteractionQuery) -> list[Interaction]:
        if query.limit == 0:
            return []
        clauses, args = [], []
        for column in ("project", "session_id", "client", "status", "model"):
            value = getattr(query, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            clauses.append("created_at >= ?")
            args.append(query.since)
        if query.before is not None:
            clauses.append("(created_at, id) < (SELECT created_at, id FROM interactions WHERE id = ?)")
            args.append(query.before)
        clause, project_args = _in_projects(query.projects)
        if clause:
            clauses.append(clause)
            args.extend(project_args)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM interactions {where} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        args.append(query.limit)

        def select(db: sqlite3.Connection) -> list[Interaction]:
            return [from_row(SUMMARY_COLUMNS, row) for row in db.execute(sql, args)]

        return await self._run(select)

    async def get_interaction(self, interaction_id: str) -> Interaction | None:
        sql = f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE id = ?"

        def select(db: sqlite3.Connection) -> Interaction | None:
            row = db.execute(sql, (interaction_id,)).fetchone()
            return None if row is None else from_row(COLUMNS, row)

        return await self._run(select)

    async def find_response(self, project: str, response_id: str) -> Interaction | None:
        # As the index m010 made is written: its expression, and its wire.
        sql = (f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE wire = 'openai_responses' "
               "AND json_extract(response, '$.id') = ? AND project = ? ORDER BY created_at DESC, id DESC LIMIT 1")

        def select(db: sqlite3.Connection) -> Interaction | None:
            row = db.execute(sql, (response_id, project)).fetchone()
            return None if row is None else from_row(COLUMNS, row)

        return await self._run(select)


    async def list_sessions(
        self, *, projects: frozenset[str] | None = None, client: str | None = None, limit: int = 50
    ) -> list[Session]:
        clauses, args = [], []
        clause, project_args = _in_projects(projects)
        if clause:
            clauses.append(clause)
            args.extend(project_args)
        if client is not None:
            clauses.append("client = ?")
            args.append(client)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions {where} ORDER BY last_at DESC, id LIMIT ?"

        def select(db: sqlite3.Connection) -> list[Session]:
            return [Session(*row) for row in db.execute(sql, (*args, limit))]

        return await self._run(select)

    async def get_sessions(self, session_id: str, projects: frozenset[str] | None = None) -> list[Session]:
        clause, args = _in_projects(projects)
        sql = (f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions WHERE id = ? {'AND ' + clause if clause else ''} "
               "ORDER BY last_at DESC")

        def select(db: sqlite3.Connection) -> list[Session]:
            return [Session(*row) for row in db.execute(sql, (session_id, *args))]

        return await self._run(select)

    async def session_interactions(self, project: str, session_id: str, limit: int = 500) -> list[Interaction]:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE session_id = ? AND COALESCE(project, '') = ? "
               "ORDER BY created_at, id LIMIT ?")

        def select(db: sqlite3.Connection) -> list[Interaction]:
            return [from_row(COLUMNS, row) for row in db.execute(sql, (session_id, project, limit))]

        return await self._run(select)

    async def delete_older_than(self, cutoff: str, batch_size: int = 500) -> CleanupResult:
        def delete_batch(sql: str) -> Callable[[sqlite3.Connection], int]:
            def delete(db: sqlite3.Connection) -> int:
                with _transaction(db):
                    return db.execute(sql, (cutoff, batch_size)).rowcount

            return delete

        async def drain(sql: str) -> int:
            total = 0
            while True:  # each batch is its own call on the worker: writes queue in between
                removed = await self._run(delete_batch(sql))
                total += removed
                if removed < batch_size:
                    return total

        interactions = await drain(
            "DELETE FROM interactions WHERE id IN (SELECT id FROM interactions WHERE created_at < ? LIMIT ?)")
        approvals = await drain(
            "DELETE FROM approvals WHERE id IN "
            "(SELECT id FROM approvals WHERE created_at < ? AND status <> 'pending' LIMIT ?)")
        sessions = await drain(
            "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE last_at < ? LIMIT ?)")

        def recount(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(_RECOUNT_STRADDLING, (cutoff,))

        await self._run(recount)
        return CleanupResult(sessions=sessions, interactions=interactions, approvals=approvals)

    async def add_memory(self, memory: Memory) -> None:
        values = memory.as_dict()
        sql = f"INSERT INTO memories ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})"

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(sql, tuple(values.values()))

        try:
            await self._run(insert)
        finally:  # even when the caller is cancelled once the thread has committed
            self._searches.forget_version()

    async def list_memories(self, project: str | None = None, limit: int = 100) -> list[Memory]:
        where, args = ("WHERE project = ?", [project]) if project else ("", [])
        sql = f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories {where} ORDER BY created_at DESC, id DESC LIMIT ?"

        def select(db: sqlite3.Connection) -> list[Memory]:
            return [memory_from_row(row) for row in db.execute(sql, (*args, limit))]

        return await self._run(select)

    async def get_memory(self, memory_id: str) -> Memory | None:
        sql = f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE id = ?"

        def select(db: sqlite3.Connection) -> Memory | None:
            row = db.execute(sql, (memory_id,)).fetchone()
            return None if row is None else memory_from_row(row)

        return await self._run(select)

    async def delete_memory(self, memory_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return bool(db.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount)

        try:
            return await self._run(delete)
        finally:
            self._searches.forget_version()

    async def search_knowledge(self, project: str, text: str, limit: int) -> tuple[list[Scored], list[Scored]]:
        asked_now = (project, text, limit, MATCH_BUDGET)
        version_now = self._knowledge_version()
        if version_now is not None:
            recent = self._searches.get(asked_now, version_now)
            if recent is not None:  # an agent's tool loop, or a project with no knowledge: no thread hop
                return list(recent[0]), list(recent[1])

        def search(db: sqlite3.Connection) -> tuple[list[Scored], list[Scored]]:
            # Read first: knowledge changed during the search files these results under the
            # older version, which no later search asks for.
            version = db.execute("SELECT version FROM knowledge_version").fetchone()[0]
            asked = (project, text, limit, MATCH_BUDGET)
            found = self._searches.get(asked, version)
            if found is None:
                terms = query_terms(_words(db, text))
                found = (tuple(_search(db, _MEMORIES, project, terms, limit)),
                         tuple(_search(db, _CHUNKS, project, terms, limit)))
                self._searches.put(asked, version, found)
            return list(found[0]), list(found[1])

        return await self._read(search)

    def _knowledge_version(self) -> int | None:
        """The knowledge version, read on the event loop, so that a search found before needs no
        thread: one row of a page every search reads, in WAL mode beside any writer, where the
        hop to a reader thread cost about 0.18 ms of CPU on every request. It never waits (no
        busy timeout): None when the database is busy, and the search's thread reads it. A read
        stands for the cache's TTL: each takes file locks (system calls), on every request."""
        version = self._searches.fresh_version()
        if version is not None or self._version_reader is None:
            return version
        try:
            row = self._version_reader.execute("SELECT version FROM knowledge_version").fetchone()
        except sqlite3.Error:
            return None
        if not row:
            return None
        self._searches.saw_version(int(row[0]))
        return int(row[0])

    async def mark_memories_used(self, memory_ids: Sequence[str], used_at: str) -> None:
        def update(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany("UPDATE memories SET use_count = use_count + 1, last_used_at = ? WHERE id = ?",
                               [(used_at, memory_id) for memory_id in memory_ids])

        await self._run(update)

    async def source_hashes(self, project: str) -> dict[str, str]:
        def select(db: sqlite3.Connection) -> dict[str, str]:
            return dict(db.execute("SELECT path, content_hash FROM sources WHERE project = ?", (project,)).fetchall())

        return await self._run(select)

    async def replace_sources(self, project: str, sources: Sequence[Source]) -> list[Source]:
        latest = list({source.path: source for source in sources}.values())  # a path given twice: its last

        def replace(db: sqlite3.Connection) -> list[Source]:
            with _transaction(db):
                stored = dict(db.execute(
                    "SELECT path, content_hash FROM sources WHERE project = ? AND path IN (SELECT value FROM json_each(?))",
                    (project, orjson.dumps([source.path for source in latest]))).fetchall())
                changed = [source for source in latest if stored.get(source.path) != source.content_hash]
                db.executemany("DELETE FROM chunks WHERE project = ? AND source_path = ?",
                               [(project, source.path) for source in changed if source.path in stored])
                # One statement for all the rows: row by row, each insert (and the index update
                # its trigger makes) costs more than twice as much.
                db.execute(
                    "INSERT INTO chunks (id, project, source_path, ordinal, content, token_count) "
                    "SELECT value ->> 0, ?, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?)",
                    (project, orjson.dumps([[c.id, source.path, c.ordinal, c.content, c.token_count]
                                            for source in changed for c in source.chunks])),
                )
                db.executemany(
                    "INSERT INTO sources (project, path, content_hash, chunk_count, ingested_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project, path) DO UPDATE SET "
                    "content_hash = excluded.content_hash, chunk_count = excluded.chunk_count, "
                    "ingested_at = excluded.ingested_at",
                    [(project, source.path, source.content_hash, len(source.chunks), now_timestamp())
                     for source in changed],
                )
            return changed

        try:
            return await self._run(replace)
        finally:
            self._searches.forget_version()

    async def insert_approval(self, approval: Approval) -> None:
        values = approval_values(approval)
        columns = ", ".join(values)
        sql = f"INSERT INTO approvals ({columns}) VALUES ({', '.join('?' for _ in values)})"

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(sql, tuple(values.values()))

        await self._run(insert)

    async def get_approval(self, approval_id: str) -> Approval | None:
        def select(db: sqlite3.Connection) -> Approval | None:
            return _get_approval(db, approval_id)

        return await self._run(select)

    async def list_approvals(
        self, status: ApprovalStatus | None = None, limit: int = 100, projects: frozenset[str] | None = None
    ) -> list[Approval]:
        clauses, args = (["status = ?"], [str(status)]) if status else ([], [])
        clause, project_args = _in_projects(projects)
        if clause:
            clauses.append(clause)
            args.extend(project_args)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM approvals {where} ORDER BY created_at, id LIMIT ?"

        def select(db: sqlite3.Connection) -> list[Approval]:
            return [approval_from_row(row) for row in db.execute(sql, (*args, limit))]

        return await self._run(select)

    async def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decided_by: str, *, always: bool = False
    ) -> Approval | None:
        remember = always and status is ApprovalStatus.APPROVED

        def decide(db: sqlite3.Connection) -> Approval | None:
            now = now_timestamp()
            # Past its expiry a pending approval can only be expired: a gateway that died while
            # waiting leaves it pending, and approving it then would grant what nobody waits for.
            deadline = "" if status is ApprovalStatus.EXPIRED else now  # every timestamp sorts after ""
            with _transaction(db):
                changed = db.execute(
                    "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, always = ? "
                    "WHERE id = ? AND status = 'pending' AND expires_at > ?",
                    (str(status), decided_by, now, int(remember), approval_id, deadline),
                ).rowcount
                approval = _get_approval(db, approval_id)
                if changed and remember and approval is not None:
                    db.execute(
                        "INSERT INTO tool_allowances (project, tool, created_at, decided_by) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (project, tool) DO NOTHING",
                        (approval.project, approval.tool, now, decided_by),
                    )
            return approval

        return await self._run(decide)

    async def expire_stale_approvals(self) -> int:
        def expire(db: sqlite3.Connection) -> int:
            now = now_timestamp()
            with _transaction(db):
                return db.execute(
                    "UPDATE approvals SET status = 'expired', decided_by = 'gateway_restart', decided_at = ? "
                    "WHERE status = 'pending' AND expires_at <= ?",
                    (now, now),
                ).rowcount

        return await self._run(expire)

    async def allowed_always(self, project: str) -> frozenset[str]:
        def select(db: sqlite3.Connection) -> frozenset[str]:
            rows = db.execute("SELECT tool FROM tool_allowances WHERE project = ?", (project,))
            return frozenset(tool for (tool,) in rows)

        return await self._run(select)

    def watch_approvals(self, on_decided: Callable[[str | None], None]) -> bool:
        return False  # another process (`ctxgate approvals`, a worker) writes the file: only a poll sees it

    async def take_rate_token(self, bucket: str, per_minute: int) -> int | None:
        return self._rates.take(bucket, per_minute)  # workers sharing a file count apart

    async def end_login(self, login_id: str, until: int) -> None:
        def end(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("DELETE FROM ended_logins WHERE until < ?", (int(time.time()),))
                db.execute("INSERT INTO ended_logins (login_id, until) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           (login_id, until))

        await self._run(end)

    async def is_login_ended(self, login_id: str) -> bool:
        def find(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM ended_logins WHERE login_id = ?", (login_id,)).fetchone() is not None

        return await self._run(find)

    async def shared_secret(self, name: str) -> str:
        made = secrets.token_hex(32)

        def keep(db: sqlite3.Connection) -> str:
            with _transaction(db):
                db.execute("INSERT INTO gateway_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                           (name, made))
                return str(db.execute("SELECT value FROM gateway_secrets WHERE name = ?", (name,)).fetchone()[0])

        return await self._run(keep)



MATCH_BUDGET = 300  # rows a search may score: bm25() over the matching rows is the cost of a search
_NO_ROWID_BEYOND = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Index:
    """A full-text index, and the statements that search the rows of one project in it."""

    search: str  # (:query, :project, :last, :limit) -> (id, content, token_count, rank, source)
    window: str  # (:query, :project, :limit) -> the rowid of the :limit-th match in storage order
    probe: str  # (:query, :limit) -> (matches counted up to :limit, lowest and highest rowid among them)

    @classmethod
    def over(cls, table: str, rank: str, source: str, in_project: str) -> _Index:
        fts = f"{table}_fts"
        matching = f"FROM {fts} JOIN {table} t ON t.rowid = {fts}.rowid WHERE {fts} MATCH :query AND {in_project}"
        return cls(
            f"SELECT t.id, t.content, t.token_count, {rank} AS rank, {source} {matching} "
            f"AND {fts}.rowid <= :last ORDER BY rank, t.id LIMIT :limit",
            f"SELECT max(r) FROM (SELECT {fts}.rowid AS r {matching} ORDER BY {fts}.rowid LIMIT :limit)",
            f"SELECT count(*), min(r), max(r) FROM (SELECT rowid AS r FROM {fts} WHERE {fts} MATCH :query "
            "ORDER BY rowid LIMIT :limit)",
        )


# bm25() is lower for better matches: results are ordered by it, and reported negated (higher is
# better). A memory's relevance is weighted by its confidence.
_MEMORIES = _Index.over("memories", "bm25(memories_fts) * t.confidence", "NULL",
                        "t.project = :project AND t.status = 'active'")
_CHUNKS = _Index.over("chunks", "bm25(chunks_fts)", "t.source_path", "t.project = :project")


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    # Queries are split into words by the indexes' own tokenizer, so they match what it stored
    # (Hangul, accents, `_`): an index of one row, emptied for each query, in the connection's
    # own temp schema.
    db.execute(f"CREATE VIRTUAL TABLE temp.query_fts USING fts5(text, content='', tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE temp.query_words USING fts5vocab(temp, query_fts, 'row')")
    return db


def _words(db: sqlite3.Connection, text: str) -> list[str]:
    db.execute("INSERT INTO temp.query_fts (query_fts) VALUES ('delete-all')")
    db.execute("INSERT INTO temp.query_fts (text) VALUES (?)", (text,))
    return [word for (word,) in db.execute("SELECT term FROM temp.query_words")]


def _search(db: sqlite3.Connection, index: _Index, project: str, terms: list[str], limit: int) -> list[Scored]:
    """The best `limit` rows for the query, scoring at most about MATCH_BUDGET rows.

    bm25() costs time for every row it scores, so the words searched for are the query's
    rarest: common words match much of the index while telling the least (bm25 weighs a word
    by its rarity anyway). When even the rarest word is common, its two or three rarest words
    are required together, and if they still match more than MATCH_BUDGET rows, the first
    MATCH_BUDGET of those in storage order are the ones ranked (FTS5 walks its row lists
    forwards several times faster than backwards, so not the newest)."""
    words, together, bounded = _plan(db, index, terms)
    if not words:
        return []
    hits = _ranked(db, index, project, fts_expression(words, together), bounded, limit)
    if not hits and together:  # nothing has them all: the rarest alone
        hits = _ranked(db, index, project, fts_expression(words[:1]), True, limit)
    return hits


def _plan(db: sqlite3.Connection, index: _Index, terms: list[str]) -> tuple[list[str], bool, bool]:
    """(words to search for, required together, more than MATCH_BUDGET rows may match).

    Each word's matches are counted only up to MATCH_BUDGET + 1, oldest first, so asking costs
    the same for a common word as for a rare one (the index keeps no document counts, and
    counting a word in every row would cost what the search is meant to save). For a common
    word, how densely those first matches lie among the rowids tells how common it is."""
    counts: dict[str, int] = {}
    density: dict[str, float] = {}
    for term in terms:
        count, oldest, newest = db.execute(
            index.probe, {"query": fts_expression([term]), "limit": MATCH_BUDGET + 1}).fetchone()
        if count:
            counts[term] = count
            density[term] = count / (newest - oldest + 1) if count > MATCH_BUDGET else 0.0
    present = sorted(counts, key=lambda t: (counts[t], density[t], t))
    if not present:
        return [], False, False
    if counts[present[0]] > MATCH_BUDGET:
        # In more than half the rows a word weighs nothing in bm25, and checking it costs the most.
        telling = [t for t in present if density[t] <= 0.5] or present[:1]
        return telling[:3], len(telling) > 1, True
    return rarest_within(present, counts, MATCH_BUDGET), False, False


def _ranked(db: sqlite3.Connection, index: _Index, project: str, query: str, bounded: bool, limit: int) -> list[Scored]:
    last = _NO_ROWID_BEYOND
    if bounded:
        last = db.execute(index.window, {"query": query, "project": project, "limit": MATCH_BUDGET}).fetchone()[0]
        if last is None:
            return []
    rows = db.execute(index.search, {"query": query, "project": project, "last": last, "limit": limit})
    return [Scored(i, content, tokens, -rank, source) for i, content, tokens, rank, source in rows]






def _get_approval(db: sqlite3.Connection, approval_id: str) -> Approval | None:
    row = db.execute(
        f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM approvals WHERE id = ?", (approval_id,)
    ).fetchone()
    return None if row is None else approval_from_row(row)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            self.db.execute("ROLLBACK")
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:
            # A failed COMMIT (BUSY, FULL) can leave the transaction open, and every later
            # BEGIN would fail with it: close it here.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise


def _migrate(db: sqlite3.Connection) -> None:
    """Applies, in order, every migration not yet recorded in schema_migrations, and records it.

    Safe with several processes opening one file at once (`serve --workers N`, replicas): the
    applied set is read again, and the migrations applied, inside one write transaction, so
    the first process to take the write lock migrates and the others, waiting on that lock
    (busy_timeout), then find every migration recorded. A file that is already up to date is
    only read: no write lock is taken."""
    if {m.__name__ for m in MIGRATIONS} <= _applied_migrations(db):
        return
    with _transaction(db):
        db.execute(MIGRATIONS_TABLE)
        # Read again under the lock: read before it, another process may have applied them
        # since, and applying them twice fails (`table sessions already exists`).
        applied = _applied_migrations(db)
        for migration in MIGRATIONS:
            if migration.__name__ in applied:
                continue
            migration(db.execute)
            db.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (migration.__name__, now_timestamp()),
            )


def _applied_migrations(db: sqlite3.Connection) -> set[str]:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone() is None:
        return set()
    return {name for (name,) in db.execute("SELECT name FROM schema_migrations")}


def _use_wal(db: sqlite3.Connection, patience: float = 5.0) -> None:
    """Puts the file in WAL mode (kept in the file: once done, every later open finds it so).

    Several connections switching a fresh file at once can get SQLITE_BUSY back at once: the
    switch takes an exclusive lock without calling the busy handler, so busy_timeout does not
    cover it. It is tried again after a short, growing pause, for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    pause = 0.002
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
