"""The team store: PostgreSQL through a pool of asyncpg connections, shared by every replica.

Everything a replica must agree on lives here: interactions, sessions, knowledge, approvals,
remembered decisions and the virtual keys' rate buckets. A decision made on any replica is
announced with NOTIFY, so the replica holding the call hears it at once. Migrations and
retention take advisory locks, so replicas starting or cleaning at once do not collide.
"""

from __future__ import annotations

import asyncio
import secrets
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import asyncpg.exceptions
import structlog

from capture.approvals import Approval, ApprovalStatus
from capture.knowledge import Memory, Scored, Source, query_terms, rarest_within
from capture.migrations import MIGRATIONS, MIGRATIONS_TABLE, POSTGRES_BODIES, TEXT_SEARCH_CONFIG
from capture.rates import LocalRates
from capture.records import CleanupResult, Interaction, InteractionQuery, Session, now_timestamp
from capture.rows import (APPROVAL_COLUMNS, COLUMNS, MEMORY_COLUMNS, SUMMARY_COLUMNS, approval_from_row, approval_values,
                          from_row, memory_from_row, row_values, session_totals)
from capture.search_cache import SearchCache
from capture.store import RecordRejected, StoreUnavailable, shown_url

log = structlog.get_logger("ctxgate.store")
T = TypeVar("T")
if TYPE_CHECKING:  # the driver's classes are generic in its stubs only
    Connection = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

POOL_MIN, POOL_MAX = 2, 10
SEARCH_POOL_MAX = 4  # connections of their own for context searches, as SQLite's reader threads
CONNECT_TIMEOUT_S = 5.0
# A request's own queries (its context search, its key's rate) wait no longer than this, and
# after a failure to reach the database, are not tried again for a while: the call goes on
# without them rather than wait for a connection attempt into a silent network each time.
HOT_PATH_TIMEOUT_S = 1.0
HOT_PATH_PAUSE_S = 2.0
COMMAND_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 2.0
LISTEN_RETRY_MAX_S = 5.0
# Advisory lock keys (any 64-bit numbers no other application on the database uses).
MIGRATION_LOCK = 0x63747867_6D696772  # "ctxgmigr"
RETENTION_LOCK = 0x63747867_72657465  # "ctxgrete"
APPROVALS_CHANNEL = "ctxgate_approvals"
MATCH_BUDGET = 300  # rows a search may rank: ts_rank over the matching rows is the cost of a search

# Which errors say the store cannot take a record as it is, rather than that it is unreachable:
# a value PostgreSQL refuses (a NUL in text, a number out of range), or one the driver cannot
# encode (a lone surrogate, an integer past 64 bits, a value of the wrong type).
_REJECTED = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError,
             ValueError, OverflowError, TypeError)
_UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
                OSError, TimeoutError)

_COLUMN_TYPES = {
    "prompt_tokens": "int8", "completion_tokens": "int8", "cache_read_tokens": "int8",
    "cache_creation_tokens": "int8", "latency_ms": "float8", "ttft_ms": "float8",
}
_INSERT_COLUMNS = (*COLUMNS, "response_id")
_INSERT = (
    f"INSERT INTO interactions ({', '.join(_INSERT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{_COLUMN_TYPES.get(column, 'text')}[]" for n, column in enumerate(_INSERT_COLUMNS, 1))
    + ") ON CONFLICT (id) DO NOTHING RETURNING id"
)
# Sorted by key, so two replicas adding to the same sessions lock them in the same order.
_UPSERT_SESSIONS = """
INSERT INTO sessions AS s (project, id, client, first_at, last_at, interaction_count, prompt_tokens, completion_tokens)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[])
ORDER BY 1, 2
ON CONFLICT (project, id) DO UPDATE SET
    first_at = LEAST(s.first_at, excluded.first_at),
    last_at = GREATEST(s.last_at, excluded.last_at),
    interaction_count = s.interaction_count + excluded.interaction_count,
    prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = s.completion_tokens + excluded.completion_tokens
"""
_RECOUNT_STRADDLING = """
UPDATE sessions s SET first_at = t.first_at, interaction_count = t.count, prompt_tokens = t.prompt,
                      completion_tokens = t.completion
FROM (SELECT COALESCE(i.project, '') AS project, i.session_id, MIN(i.created_at) AS first_at, COUNT(*) AS count,
             COALESCE(SUM(i.prompt_tokens), 0) AS prompt, COALESCE(SUM(i.completion_tokens), 0) AS completion
      FROM interactions i JOIN sessions straddling
           ON straddling.id = i.session_id AND straddling.project = COALESCE(i.project, '')
      WHERE straddling.first_at < $1
      GROUP BY 1, 2) t
WHERE s.project = t.project AND s.id = t.session_id
"""
# A token bucket per key, refilled continuously at `per_minute` a minute; a call takes a token
# only when a whole one is there. The clock is the database's, which every replica shares.
_TAKE_TOKEN = """
INSERT INTO rate_buckets AS b (bucket, tokens, updated_at)
VALUES ($1, $2::float8 - 1, extract(epoch FROM clock_timestamp()))
ON CONFLICT (bucket) DO UPDATE SET
    tokens = LEAST($2::float8, b.tokens + (excluded.updated_at - b.updated_at) * $2::float8 / 60) - 1,
    updated_at = excluded.updated_at
WHERE LEAST($2::float8, b.tokens + (excluded.updated_at - b.updated_at) * $2::float8 / 60) >= 1
RETURNING tokens
"""
_TOKENS_NOW = """
SELECT LEAST($2::float8, tokens + (extract(epoch FROM clock_timestamp()) - updated_at) * $2::float8 / 60)
FROM rate_buckets WHERE bucket = $1
"""
# The best rows of one kind: the first $budget rows {match} matches (NULL: all of them), ranked by
# the question's telling words ({rank}), normalised by the row's length (1: divided by 1 + log
# of its words, as BM25 favours the shorter of two rows holding the same words).
_BEST = {
    "memories": "SELECT 0, id, content, token_count, rank, NULL FROM ("
                "SELECT id, content, token_count, ts_rank(words, {rank}, 1) * confidence AS rank FROM ("
                "SELECT id, content, token_count, confidence, words FROM memories "
                "WHERE project = $1 AND status = 'active' AND words @@ {match} LIMIT {budget}) matching "
                "ORDER BY rank DESC, id LIMIT $2) best_memories",
    "chunks": "SELECT 1, id, content, token_count, rank, source_path FROM ("
              "SELECT id, content, token_count, ts_rank(words, {rank}, 1) AS rank, source_path FROM ("
              "SELECT id, content, token_count, source_path, words FROM chunks "
              "WHERE project = $1 AND words @@ {match} LIMIT {budget}) matching "
              "ORDER BY rank DESC, id LIMIT $2) best_chunks",
}
# What a search is planned by, in one round trip: the knowledge version, and for the words of
# the question as the index splits them, the rows of each kind holding each (the word '': all rows).
_PLANNING = f"""
SELECT '' AS word, (SELECT version FROM knowledge_version),
       (SELECT rows FROM word_counts WHERE kind = 'memories' AND word = ''),
       (SELECT rows FROM word_counts WHERE kind = 'chunks' AND word = '')
UNION ALL
SELECT q.word, NULL, m.rows, c.rows
FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector('{TEXT_SEARCH_CONFIG}', $1))) AS q (word)
LEFT JOIN word_counts m ON m.kind = 'memories' AND m.word = q.word
LEFT JOIN word_counts c ON c.kind = 'chunks' AND c.word = q.word
"""
_SESSION_COLUMNS = Session.__slots__


class PostgresStore:
    """`Store` over a PostgreSQL database. `url` is a libpq URL: `postgresql://user:pass@host:port/db`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = shown_url(url)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._search_pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._paused_until: dict[int, float] = {}  # by pool: the request path does not ask before (monotonic)
        self._abandoned: set[asyncio.Future[Any]] = set()  # request-path queries given up on, cleaning up
        self._added: dict[str, int] = {}  # rows added to a knowledge table since this store analyzed it
        self._analyzed_rows: dict[str, int] = {}  # its rows then
        self._searches = SearchCache()
        self._local_rates = LocalRates()  # while the database cannot count
        self._approval_watchers: list[Callable[[str | None], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"postgresql {self.shown_url}: {type(error).__name__}: {error}")

    async def _call(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreUnavailable(f"store {self.shown_url} is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                return await work(db)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error

    async def _on_request_path(self, work: Callable[[Connection], Awaitable[T]], *, searching: bool = False) -> T:
        """`work` for a request waiting on it: within HOT_PATH_TIMEOUT_S, and not at all for
        HOT_PATH_PAUSE_S after its pool could not reach the database. A search runs on the
        search pool, a rate count on the main one: each pauses on its own."""
        pool = self._search_pool if searching else self._pool
        if pool is None:
            raise StoreUnavailable(f"store {self.shown_url} is not open")
        if time.monotonic() < self._paused_until.get(id(pool), 0.0):
            raise StoreUnavailable(f"postgresql {self.shown_url}: unreachable a moment ago; not asked again yet")

        async def bounded() -> T:
            async with pool.acquire() as db:
                return await work(db)

        try:
            return await self._abandoning(bounded(), HOT_PATH_TIMEOUT_S)
        except _UNAVAILABLE as error:
            # Unreachable, or silent (a query unanswered for a second): not an error PostgreSQL gave.
            if not isinstance(error, asyncpg.PostgresError) or isinstance(error, asyncpg.PostgresConnectionError):
                self._paused_until[id(pool)] = time.monotonic() + HOT_PATH_PAUSE_S
            raise self._unavailable(error) from error

    async def _abandoning(self, work: Awaitable[T], timeout_s: float) -> T:
        """`work`'s result, or TimeoutError after `timeout_s`. Not wait_for: it waits for the
        cancelled query to let go of its connection, which on a silent network takes the whole
        command timeout; here the caller goes on at once and the query cleans up behind it."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except asyncio.CancelledError:  # the caller went away: the query goes too, behind it
            done = set()
            raise
        finally:
            if not done:
                self._abandoned.add(task)
                task.add_done_callback(_forget_outcome(self._abandoned))
                task.cancel()
        if not done:
            raise TimeoutError(f"no answer within {timeout_s} s")
        return task.result()

    async def _in_transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        async def transact(db: Connection) -> T:
            async with db.transaction():
                return await work(db)

        return await self._call(transact)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=POOL_MIN, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S)
            self._search_pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=SEARCH_POOL_MAX, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S)
            await self._call(_migrate)
        except StoreUnavailable:
            await self.close()
            raise
        except (*_UNAVAILABLE, ValueError) as error:  # ValueError: a URL asyncpg cannot read
            await self.close()
            raise self._unavailable(error) from error

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        for pool in (self._pool, self._search_pool):
            if pool is not None:
                with contextlib.suppress(*_UNAVAILABLE):
                    await asyncio.wait_for(pool.close(), COMMAND_TIMEOUT_S)
        self._pool = self._search_pool = None

    async def ping(self) -> bool:
        try:
            return bool(await self._abandoning(self._call(lambda db: db.fetchval("SELECT 1")), PING_TIMEOUT_S) == 1)
        except (StoreUnavailable, TimeoutError):
            return False

    def pool_usage(self) -> tuple[int, int]:
        """(connections in use, connections open), of both pools."""
        pools = [pool for pool in (self._pool, self._search_pool) if pool is not None]
        size = sum(pool.get_size() for pool in pools)
        return size - sum(pool.get_idle_size() for pool in pools), size

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        firsts: dict[str, Interaction] = {}
        for interaction in batch:  # an id twice in a batch: its first, as a row per statement stores it
            firsts.setdefault(interaction.id, interaction)
        batch = list(firsts.values())

        def as_columns() -> list[list[Any]]:
            return [list(column) for column in zip(*(_insert_row(interaction) for interaction in batch))]

        try:
            # Serialised off the event loop, as SQLite's writer thread does: a batch of agent
            # turns is megabytes of JSON, and requests are served meanwhile.
            columns = await asyncio.to_thread(as_columns)
        except _REJECTED as error:
            raise RecordRejected(f"{type(error).__name__}: {error}") from error
        if not columns:
            return

        async def insert(db: Connection) -> None:
            try:
                # Only a row actually inserted counts towards its session: a replayed spool
                # line that is already stored must not count twice.
                inserted = {row[0] for row in await db.fetch(_INSERT, *columns)}
                totals = session_totals(i for i in batch if i.id in inserted)
                if totals:
                    await db.execute(_UPSERT_SESSIONS, *(list(column) for column in zip(*totals)))
            except _REJECTED as error:
                raise RecordRejected(f"{type(error).__name__}: {error}") from error

        await self._in_transaction(insert)

    async def list_interactions(self, query: InteractionQuery) -> list[Interaction]:
        if query.limit == 0:
            return []
        where = _Where()
        for column in ("project", "session_id", "client", "status", "model"):
            value = getattr(query, column)
            if value is not None:
                where.add(f"{column} = {{}}", value)
        if query.since is not None:
            where.add("created_at >= {}", query.since)
        if query.before is not None:
            where.add("(created_at, id) < (SELECT created_at, id FROM interactions WHERE id = {})", query.before)
        where.in_projects(query.projects)
        sql = (f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM interactions {where.sql} "
               f"ORDER BY created_at DESC, id DESC LIMIT {where.arg(query.limit)}")
        rows = await self._call(lambda db: db.fetch(sql, *where.args))
        return [from_row(SUMMARY_COLUMNS, row) for row in rows]

    async def get_interaction(self, interaction_id: str) -> Interaction | None:
        sql = f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE id = $1"
        row = await self._call(lambda db: db.fetchrow(sql, interaction_id))
        return None if row is None else from_row(COLUMNS, row)

    async def find_response(self, project: str, response_id: str) -> Interaction | None:
        # As the index m010 made is written: its columns, and its wire.
        sql = (f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE wire = 'openai_responses' "
               "AND project = $1 AND response_id = $2 ORDER BY created_at DESC, id DESC LIMIT 1")
        row = await self._call(lambda db: db.fetchrow(sql, project, response_id))
        return None if row is None else from_row(COLUMNS, row)

    async def list_sessions(
        self, *, projects: frozenset[str] | None = None, client: str | None = None, limit: int = 50
    ) -> list[Session]:
        where = _Where()
        where.in_projects(projects)
        if client is not None:
            where.add("client = {}", client)
        sql = (f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions {where.sql} "
               f"ORDER BY last_at DESC, id LIMIT {where.arg(limit)}")
        return [Session(*row) for row in await self._call(lambda db: db.fetch(sql, *where.args))]

    async def get_sessions(self, session_id: str, projects: frozenset[str] | None = None) -> list[Session]:
        where = _Where()
        where.add("id = {}", session_id)
        where.in_projects(projects)
        sql = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions {where.sql} ORDER BY last_at DESC"
        return [Session(*row) for row in await self._call(lambda db: db.fetch(sql, *where.args))]

    async def session_interactions(self, project: str, session_id: str, limit: int = 500) -> list[Interaction]:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE session_id = $1 AND COALESCE(project, '') = $2 "
               "ORDER BY created_at, id LIMIT $3")
        rows = await self._call(lambda db: db.fetch(sql, session_id, project, limit))
        return [from_row(COLUMNS, row) for row in rows]

    async def delete_older_than(self, cutoff: str, batch_size: int = 500) -> CleanupResult:
        """Under an advisory lock: when another replica is cleaning already, this one does
        nothing and says so with a result of zeros."""

        async def clean(db: Connection) -> CleanupResult:
            if not await db.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
                log.info("retention_skipped", reason="another replica is cleaning")
                return CleanupResult(sessions=0, interactions=0, approvals=0)
            try:
                async def drain(sql: str) -> int:
                    total = 0
                    while True:  # each batch its own transaction: capture and reads go on in between
                        removed = int((await db.execute(sql, cutoff, batch_size)).rpartition(" ")[2])
                        total += removed
                        if removed < batch_size:
                            return total

                interactions = await drain("DELETE FROM interactions WHERE id IN "
                                           "(SELECT id FROM interactions WHERE created_at < $1 LIMIT $2)")
                approvals = await drain("DELETE FROM approvals WHERE id IN (SELECT id FROM approvals "
                                        "WHERE created_at < $1 AND status <> 'pending' LIMIT $2)")
                sessions = await drain("DELETE FROM sessions WHERE (project, id) IN "
                                       "(SELECT project, id FROM sessions WHERE last_at < $1 LIMIT $2)")
                async with db.transaction():
                    # Locked first, in the order capture upserts them: a capture batch adding to
                    # one of them meanwhile waits, then adds to the recount (a recount from a
                    # snapshot taken before its commit would write back the older totals).
                    await db.execute("SELECT 1 FROM sessions WHERE first_at < $1 ORDER BY project, id FOR UPDATE",
                                     cutoff)
                    await db.execute(_RECOUNT_STRADDLING, cutoff)
                return CleanupResult(sessions=sessions, interactions=interactions, approvals=approvals)
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)

        return await self._call(clean)

    async def add_memory(self, memory: Memory) -> None:
        values = memory.as_dict()
        values["content"] = _searchable(memory.content)
        sql = (f"INSERT INTO memories ({', '.join(values)}) "
               f"VALUES ({', '.join(f'${n}' for n in range(1, len(values) + 1))})")
        try:
            await self._call(lambda db: db.execute(sql, *values.values()))
        finally:
            self._searches.forget_version()
        await self._keep_statistics("memories", 1)

    async def _keep_statistics(self, table: str, added: int) -> None:
        """ANALYZE `table` once the rows added through this store since the last time pass a
        tenth of its size then (and 50): PostgreSQL picks an index or a scan for a search by
        these statistics, which autovacuum refreshes only within minutes, and without them it
        scans (a pack at 10k memories: 9.5 ms p50 before, 2.7 ms after)."""
        self._added[table] = self._added.get(table, 0) + added
        if self._added[table] < max(50, self._analyzed_rows.get(table, 0) // 10):
            return

        async def analyze(db: Connection) -> int:
            await db.execute(f"ANALYZE {table}")
            return int(await db.fetchval("SELECT rows FROM word_counts WHERE kind = $1 AND word = ''", table) or 0)

        try:
            self._analyzed_rows[table] = await self._call(analyze)
        except StoreUnavailable as error:  # what was written is stored: only the statistics wait
            log.warning("statistics_not_refreshed", table=table, error=str(error))
            return
        self._added[table] = 0

    async def list_memories(self, project: str | None = None, limit: int = 100) -> list[Memory]:
        where = _Where()
        if project:
            where.add("project = {}", project)
        sql = (f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories {where.sql} "
               f"ORDER BY created_at DESC, id DESC LIMIT {where.arg(limit)}")
        return [memory_from_row(row) for row in await self._call(lambda db: db.fetch(sql, *where.args))]

    async def get_memory(self, memory_id: str) -> Memory | None:
        sql = f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE id = $1"
        row = await self._call(lambda db: db.fetchrow(sql, memory_id))
        return None if row is None else memory_from_row(row)

    async def delete_memory(self, memory_id: str) -> bool:
        try:
            status = await self._call(lambda db: db.execute("DELETE FROM memories WHERE id = $1", memory_id))
        finally:
            self._searches.forget_version()
        return status != "DELETE 0"

    async def search_knowledge(self, project: str, text: str, limit: int) -> tuple[list[Scored], list[Scored]]:
        asked = (project, text, limit, MATCH_BUDGET)
        version = self._searches.fresh_version()
        if version is not None:
            recent = self._searches.get(asked, version)
            if recent is not None:  # an agent's tool loop: no round trip
                return list(recent[0]), list(recent[1])

        writes_before = self._searches.writes

        async def search(db: Connection) -> tuple[list[Scored], list[Scored]]:
            # Read first: knowledge changed during the search files these results under the
            # older version, which no later search asks for.
            planning = await db.fetch(_PLANNING, _searchable(text))
            totals = next(row for row in planning if row[0] == "")  # a word is never empty
            version = int(totals[1])
            self._searches.saw_version(version, writes_before)
            found = self._searches.get(asked, version)
            if found is None:
                terms = query_terms(row[0] for row in planning if row[0])
                plans = {kind: _plan(terms, {row[0]: row[column] or 0 for row in planning if row[0]},
                                     totals[column] or 0)
                         for kind, column in (("memories", 2), ("chunks", 3))}
                memories, chunks = await _search(db, project, plans, limit)
                found = (tuple(memories), tuple(chunks))
                self._searches.put(asked, version, found)
            return list(found[0]), list(found[1])

        return await self._on_request_path(search, searching=True)

    async def mark_memories_used(self, memory_ids: Sequence[str], used_at: str) -> None:
        await self._call(lambda db: db.execute(
            "UPDATE memories SET use_count = use_count + 1, last_used_at = $1 WHERE id = ANY($2::text[])",
            used_at, list(memory_ids)))

    async def source_hashes(self, project: str) -> dict[str, str]:
        rows = await self._call(lambda db: db.fetch("SELECT path, content_hash FROM sources WHERE project = $1", project))
        return {path: content_hash for path, content_hash in rows}

    async def replace_sources(self, project: str, sources: Sequence[Source]) -> list[Source]:
        latest = list({source.path: source for source in sources}.values())  # a path given twice: its last

        async def replace(db: Connection) -> list[Source]:
            # Knowledge writers take the version row first (the triggers' order, see m004): an
            # ingest of the same documents at once then finds these stored, and changes nothing.
            await db.execute("SELECT version FROM knowledge_version FOR UPDATE")
            stored = {path: content_hash for path, content_hash in await db.fetch(
                "SELECT path, content_hash FROM sources WHERE project = $1 AND path = ANY($2::text[])",
                project, [source.path for source in latest])}
            changed = [source for source in latest if stored.get(source.path) != source.content_hash]
            await db.execute("DELETE FROM chunks WHERE project = $1 AND source_path = ANY($2::text[])",
                             project, [source.path for source in changed if source.path in stored])
            chunks = [(c.id, source.path, c.ordinal, _searchable(c.content), c.token_count)
                      for source in changed for c in source.chunks]
            if chunks:
                ids, paths, ordinals, contents, tokens = (list(column) for column in zip(*chunks))
                await db.execute(
                    "INSERT INTO chunks (id, project, source_path, ordinal, content, token_count) "
                    "SELECT id, $1, path, ordinal, content, tokens "
                    "FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[]) "
                    "AS c (id, path, ordinal, content, tokens)", project, ids, paths, ordinals, contents, tokens)
            if changed:
                await db.execute(
                    "INSERT INTO sources (project, path, content_hash, chunk_count, ingested_at) "
                    "SELECT $1, path, content_hash, chunk_count, $5 "
                    "FROM unnest($2::text[], $3::text[], $4::int8[]) AS s (path, content_hash, chunk_count) "
                    "ON CONFLICT (project, path) DO UPDATE SET content_hash = excluded.content_hash, "
                    "chunk_count = excluded.chunk_count, ingested_at = excluded.ingested_at",
                    project, [s.path for s in changed], [s.content_hash for s in changed],
                    [len(s.chunks) for s in changed], now_timestamp())
            return changed

        try:
            changed = await self._in_transaction(replace)
        finally:
            self._searches.forget_version()
        await self._keep_statistics("chunks", sum(len(source.chunks) for source in changed))
        return changed

    async def insert_approval(self, approval: Approval) -> None:
        values = approval_values(approval)
        sql = (f"INSERT INTO approvals ({', '.join(values)}) "
               f"VALUES ({', '.join(f'${n}' for n in range(1, len(values) + 1))})")

        async def insert(db: Connection) -> None:
            await db.execute(sql, *values.values())
            # Delivered at commit: every replica's operator page shows it at once.
            await db.execute("SELECT pg_notify($1, $2)", APPROVALS_CHANNEL, approval.id)

        await self._in_transaction(insert)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._call(lambda db: _get_approval(db, approval_id))

    async def list_approvals(
        self, status: ApprovalStatus | None = None, limit: int = 100, projects: frozenset[str] | None = None
    ) -> list[Approval]:
        where = _Where()
        if status:
            where.add("status = {}", str(status))
        where.in_projects(projects)
        sql = (f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM approvals {where.sql} "
               f"ORDER BY created_at, id LIMIT {where.arg(limit)}")
        return [approval_from_row(row) for row in await self._call(lambda db: db.fetch(sql, *where.args))]

    async def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decided_by: str, *, always: bool = False
    ) -> Approval | None:
        remember = always and status is ApprovalStatus.APPROVED

        async def decide(db: Connection) -> Approval | None:
            now = now_timestamp()
            # Past its expiry a pending approval can only be expired (see the SQLite store).
            deadline = "" if status is ApprovalStatus.EXPIRED else now
            changed = await db.execute(
                "UPDATE approvals SET status = $1, decided_by = $2, decided_at = $3, always = $4 "
                "WHERE id = $5 AND status = 'pending' AND expires_at > $6",
                str(status), decided_by, now, int(remember), approval_id, deadline)
            approval = await _get_approval(db, approval_id)
            if changed != "UPDATE 0" and approval is not None:
                if remember:
                    await db.execute(
                        "INSERT INTO tool_allowances (project, tool, created_at, decided_by) VALUES ($1, $2, $3, $4) "
                        "ON CONFLICT (project, tool) DO NOTHING", approval.project, approval.tool, now, decided_by)
                # Delivered at commit, to every replica listening: the one holding the call wakes.
                await db.execute("SELECT pg_notify($1, $2)", APPROVALS_CHANNEL, approval_id)
            return approval

        return await self._in_transaction(decide)

    async def expire_stale_approvals(self) -> int:
        async def expire(db: Connection) -> int:
            now = now_timestamp()
            status = await db.execute(
                "UPDATE approvals SET status = 'expired', decided_by = 'gateway_restart', decided_at = $1 "
                "WHERE status = 'pending' AND expires_at <= $1", now)
            return int(status.rpartition(" ")[2])

        return await self._call(expire)

    async def allowed_always(self, project: str) -> frozenset[str]:
        rows = await self._call(lambda db: db.fetch("SELECT tool FROM tool_allowances WHERE project = $1", project))
        return frozenset(tool for (tool,) in rows)

    def watch_approvals(self, on_decided: Callable[[str | None], None]) -> bool:
        self._approval_watchers.append(on_decided)
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="ctxgate-approval-listener")
        return True

    async def wait_listening(self) -> None:
        """Until decisions are being heard (tests: a decision made before that is only polled)."""
        await self._listening.wait()

    async def _listen(self) -> None:
        """A connection of its own LISTENs for decisions, reconnecting with backoff when it is
        lost; the approval book asks the store every ANNOUNCED_POLL_S meanwhile, and once the
        connection is back every watcher is told to look (`None`): a decision may have been
        made while nobody listened."""
        delay = 0.2
        reconnected = False

        def heard(_: object, __: int, ___: str, approval_id: object) -> None:
            self._tell_watchers(str(approval_id))

        while True:
            try:
                db = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            except (*_UNAVAILABLE, ValueError) as error:
                log.warning("approval_listener_down", error=str(self._unavailable(error)), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX_S)
                continue
            lost = asyncio.Event()
            db.add_termination_listener(lambda _: lost.set())
            try:
                await db.add_listener(APPROVALS_CHANNEL, heard)
                self._listening.set()
                if reconnected:
                    self._tell_watchers(None)
                reconnected = True
                delay = 0.2
                while not lost.is_set() and not db.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_RETRY_MAX_S)
                    if not lost.is_set():  # a silent network drop is found by asking
                        await db.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
            except _UNAVAILABLE as error:
                log.warning("approval_listener_lost", error=str(self._unavailable(error)), retry_in_s=delay)
                await asyncio.sleep(delay)  # connected but refused LISTEN (a standby): not at once again
                delay = min(delay * 2, LISTEN_RETRY_MAX_S)
            finally:
                self._listening.clear()
                db.terminate()  # closing politely could wait on a silent network

    def _tell_watchers(self, approval_id: str | None) -> None:
        for watcher in self._approval_watchers:
            watcher(approval_id)

    async def take_rate_token(self, bucket: str, per_minute: int) -> int | None:
        try:
            async def take(db: Connection) -> int | None:
                if await db.fetchval(_TAKE_TOKEN, bucket, per_minute) is not None:
                    return None
                tokens = await db.fetchval(_TOKENS_NOW, bucket, per_minute)
                return LocalRates.wait_s(float(tokens or 0.0), per_minute)

            return await self._on_request_path(take)
        except StoreUnavailable:  # calls go on while the database is away, counted here meanwhile
            return self._local_rates.take(bucket, per_minute)

    async def end_login(self, login_id: str, until: int) -> None:
        async def end(db: Connection) -> None:
            await db.execute("DELETE FROM ended_logins WHERE until < $1", int(time.time()))
            await db.execute("INSERT INTO ended_logins (login_id, until) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                             login_id, until)

        await self._in_transaction(end)

    async def is_login_ended(self, login_id: str) -> bool:
        return bool(await self._call(lambda db: db.fetchval("SELECT 1 FROM ended_logins WHERE login_id = $1",
                                                             login_id)))

    async def shared_secret(self, name: str) -> str:
        made = secrets.token_hex(32)

        async def keep(db: Connection) -> str:
            await db.execute("INSERT INTO gateway_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                             name, made)
            return str(await db.fetchval("SELECT value FROM gateway_secrets WHERE name = $1", name))

        return await self._in_transaction(keep)


async def _migrate(db: Connection) -> None:
    """Applies, in order, every migration not yet recorded, under a transaction-scoped advisory
    lock: replicas starting at once wait for the first, then find everything recorded."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await db.execute(MIGRATIONS_TABLE)
        applied = {name for (name,) in await db.fetch("SELECT name FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ in applied:
                continue
            statements: list[str] = []
            POSTGRES_BODIES.get(migration.__name__, migration)(statements.append)
            for statement in statements:
                await db.execute(statement)
            await db.execute("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                             migration.__name__, now_timestamp())


class _Where:
    """A WHERE clause and its arguments, numbered as PostgreSQL wants them ($1, $2, ...)."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str, value: Any) -> None:
        self.clauses.append(clause.format(self.arg(value)))

    def in_projects(self, projects: frozenset[str] | None) -> None:
        """Limited to `projects` (None: no limit; empty: nothing)."""
        if projects is not None:
            self.add("COALESCE(project, '') = ANY({}::text[])", sorted(projects))

    @property
    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


@dataclass(frozen=True, slots=True)
class _Plan:
    words: tuple[str, ...]  # the rows to rank hold these words
    together: bool  # all of them (else any)
    bounded: bool  # only the first MATCH_BUDGET such rows are ranked
    ranked_by: tuple[str, ...]  # the question's telling words: each one a row holds raises its rank


def _plan(terms: list[str], counts: dict[str, int], rows: int) -> _Plan:
    """As SQLite's planner, from the word counts the store keeps: the rarest words, up to
    MATCH_BUDGET matches in all; when even the rarest is in more than MATCH_BUDGET rows, its two
    or three rarest that are in at most half the rows (in more, a word tells almost nothing,
    and checking it costs the most), required together, and the first MATCH_BUDGET matches ranked.

    Unlike SQLite's, the rows found are ranked by every telling word of the question, not only
    those searched for: ts_rank weighs no word by its rarity, as BM25 does, so a row holding
    more of the question's words is what tells the best rows apart."""
    present = sorted((term for term in terms if counts.get(term)), key=lambda t: (counts[t], t))
    telling = tuple(t for t in present if counts[t] <= rows / 2)
    if not present:
        return _Plan((), False, False, ())
    if counts[present[0]] > MATCH_BUDGET:
        searched = telling[:3] or tuple(present[:1])
        return _Plan(searched, len(searched) > 1, True, telling or searched)
    chosen = tuple(rarest_within(present, counts, MATCH_BUDGET))
    return _Plan(chosen, False, False, telling or chosen)


async def _search(db: Connection, project: str, plans: dict[str, _Plan], limit: int) -> tuple[list[Scored], list[Scored]]:
    """The best `limit` memories and chunks, in one round trip; a kind whose words all had
    nothing together is asked again for its rarest word alone."""
    found = await _ranked(db, project, plans, limit)
    retry = {kind: _Plan(plan.words[:1], False, True, plan.ranked_by) for kind, plan in plans.items()
             if plan.together and not found[kind]}
    if retry:
        found.update(await _ranked(db, project, retry, limit))
    return found["memories"], found["chunks"]


async def _ranked(db: Connection, project: str, plans: dict[str, _Plan], limit: int) -> dict[str, list[Scored]]:
    args: list[Any] = [project, limit]
    parts = []
    for kind, plan in plans.items():
        if plan.words:
            args += [_tsquery(plan.words, plan.together), MATCH_BUDGET if plan.bounded else None,
                     _tsquery(plan.ranked_by, False)]
            n = len(args)
            parts.append(_BEST[kind].format(match=f"${n - 2}::tsquery", budget=f"${n - 1}::bigint",
                                            rank=f"${n}::tsquery"))
    found: dict[str, list[Scored]] = {"memories": [], "chunks": []}
    if parts:
        for kind, found_id, content, tokens, rank, source in await db.fetch(" UNION ALL ".join(parts), *args):
            found["chunks" if kind else "memories"].append(Scored(found_id, content, tokens, float(rank), source))
    return found


def _forget_outcome(abandoned: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    """A done callback for a query given up on: its outcome is read (nobody waits for it) and
    the task forgotten."""
    def forget(task: asyncio.Future[Any]) -> None:
        abandoned.discard(task)
        if not task.cancelled():
            task.exception()

    return forget


def _tsquery(words: Sequence[str], together: bool) -> str:
    """Each word a quoted lexeme, so `&`, `|`, `!`, `:` or parentheses in the text are only ever words."""
    quoted = ("'" + word.replace("\\", "\\\\").replace("'", "''") + "'" for word in words)
    return (" & " if together else " | ").join(quoted)


def _searchable(text: str) -> str:
    """PostgreSQL text holds no NUL character: knowledge and queries are searched without it."""
    return text.replace("\x00", " ") if "\x00" in text else text


def _insert_row(interaction: Interaction) -> tuple[Any, ...]:
    response = interaction.response
    response_id = None
    if interaction.wire == "openai_responses" and isinstance(response, dict) and isinstance(response.get("id"), str):
        response_id = response["id"]
    values = list(row_values(interaction))
    for n, column in enumerate(COLUMNS):
        value = values[n]
        if _COLUMN_TYPES.get(column) == "float8" and value is not None:
            values[n] = float(value)
        elif isinstance(value, str) and "\x00" in value:
            # PostgreSQL text holds no NUL (JSON columns have it escaped already): a model name
            # or error holding one is kept with the character marked, not refused.
            values[n] = value.replace("\x00", "\ufffd")
    return (*values, response_id)






async def _get_approval(db: Connection, approval_id: str) -> Approval | None:
    row = await db.fetchrow(f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM approvals WHERE id = $1", approval_id)
    return None if row is None else approval_from_row(row)
