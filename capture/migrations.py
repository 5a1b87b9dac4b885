"""Ordered, named, additive schema migrations. Never edit one that has shipped: add the next.

Each migration takes an `execute(sql)` callable. Where SQLite and PostgreSQL share the SQL, one
body serves both; where they differ (column widths, full text, triggers), `POSTGRES_BODIES`
holds PostgreSQL's body under the same name, so both backends record the same migrations.
"""

from __future__ import annotations

from collections.abc import Callable

Execute = Callable[[str], object]


def m001_interactions(execute: Execute) -> None:
    execute(
        """
        CREATE TABLE interactions (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            project TEXT,
            session_id TEXT,
            client TEXT,
            model TEXT,
            status TEXT NOT NULL,
            error TEXT,
            prompt TEXT NOT NULL,
            params TEXT,
            response TEXT,
            memories_used TEXT NOT NULL DEFAULT '[]',
            chunks_used TEXT NOT NULL DEFAULT '[]',
            context_pack TEXT,
            tool_decisions TEXT NOT NULL DEFAULT '[]',
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            ttft_ms REAL
        )
        """
    )
    for column in ("session_id", "project", "client", "created_at"):
        execute(f"CREATE INDEX ix_interactions_{column} ON interactions ({column})")



MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""


def m002_approvals(execute: Execute) -> None:
    execute(
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            project TEXT NOT NULL,
            session_id TEXT,
            interaction_id TEXT,
            tool TEXT NOT NULL,
            call_id TEXT,
            arguments TEXT,
            rule TEXT,
            reason TEXT,
            status TEXT NOT NULL,
            decided_by TEXT,
            decided_at TEXT,
            always INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    execute("CREATE INDEX ix_approvals_status ON approvals (status)")
    execute(
        """
        CREATE TABLE tool_allowances (
            project TEXT NOT NULL,
            tool TEXT NOT NULL,
            created_at TEXT NOT NULL,
            decided_by TEXT,
            PRIMARY KEY (project, tool)
        )
        """
    )


def m003_sessions(execute: Execute) -> None:
    # A session is (project, id): ids come from clients, and two projects may send the same one.
    execute(
        """
        CREATE TABLE sessions (
            project TEXT NOT NULL DEFAULT '',
            id TEXT NOT NULL,
            client TEXT,
            first_at TEXT NOT NULL,
            last_at TEXT NOT NULL,
            interaction_count INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (project, id)
        )
        """
    )
    execute("CREATE INDEX ix_sessions_last_at ON sessions (last_at)")
    execute("CREATE INDEX ix_sessions_id ON sessions (id)")
    execute("CREATE INDEX ix_approvals_created_at ON approvals (created_at)")
    execute(
        """
        INSERT INTO sessions (project, id, client, first_at, last_at, interaction_count, prompt_tokens,
                              completion_tokens)
        SELECT COALESCE(project, ''), session_id, MIN(client), MIN(created_at), MAX(created_at), COUNT(*),
               COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)
        FROM interactions WHERE session_id IS NOT NULL GROUP BY COALESCE(project, ''), session_id
        """
    )


# How the full-text indexes split and fold words. A query is split by the same tokenizer (see
# `SQLiteStore.open`); changing it needs a migration that rebuilds both indexes.
TOKENIZER = "unicode61 remove_diacritics 2"


def m004_context(execute: Execute) -> None:
    """Memories and document chunks, each with a full-text index (SQLite FTS5, BM25), kept in
    step by triggers. (A PostgreSQL store would use tsvector columns with GIN indexes.)"""
    execute(
        """
        CREATE TABLE memories (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            type TEXT NOT NULL,
            content TEXT NOT NULL,
            confidence REAL NOT NULL,
            status TEXT NOT NULL,
            token_count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            use_count INTEGER NOT NULL DEFAULT 0,
            last_used_at TEXT
        )
        """
    )
    execute("CREATE INDEX ix_memories_project ON memories (project, status)")
    execute(
        """
        CREATE TABLE sources (
            project TEXT NOT NULL,
            path TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            chunk_count INTEGER NOT NULL,
            ingested_at TEXT NOT NULL,
            PRIMARY KEY (project, path)
        )
        """
    )
    execute(
        """
        CREATE TABLE chunks (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            source_path TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            content TEXT NOT NULL,
            token_count INTEGER NOT NULL
        )
        """
    )
    execute("CREATE INDEX ix_chunks_source ON chunks (project, source_path)")
    for table in ("memories", "chunks"):
        execute(f"CREATE VIRTUAL TABLE {table}_fts USING fts5(content, content='{table}', content_rowid='rowid', "
                f"tokenize='{TOKENIZER}')")
        execute(f"CREATE VIRTUAL TABLE {table}_vocab USING fts5vocab({table}_fts, 'row')")
        execute(f"CREATE TRIGGER {table}_fts_insert AFTER INSERT ON {table} BEGIN "
                f"INSERT INTO {table}_fts (rowid, content) VALUES (new.rowid, new.content); END")
        execute(f"CREATE TRIGGER {table}_fts_delete AFTER DELETE ON {table} BEGIN "
                f"INSERT INTO {table}_fts ({table}_fts, rowid, content) VALUES ('delete', old.rowid, old.content); END")
        execute(f"CREATE TRIGGER {table}_fts_update AFTER UPDATE OF content ON {table} BEGIN "
                f"INSERT INTO {table}_fts ({table}_fts, rowid, content) VALUES ('delete', old.rowid, old.content); "
                f"INSERT INTO {table}_fts (rowid, content) VALUES (new.rowid, new.content); END")


def m005_no_vocabulary_tables(execute: Execute) -> None:
    """A search no longer asks fts5vocab how many rows hold a word: it walks the word's whole
    list of rows, which for a common word costs more than the search itself."""
    for table in ("memories", "chunks"):
        execute(f"DROP TABLE {table}_vocab")


def m006_knowledge_version(execute: Execute) -> None:
    """A number that changes whenever what a search could find changes, whichever process
    changed it: recent search results are reused while it stays the same."""
    execute("CREATE TABLE knowledge_version (version INTEGER NOT NULL)")
    execute("INSERT INTO knowledge_version (version) VALUES (0)")
    bump = "BEGIN UPDATE knowledge_version SET version = version + 1; END"
    for table in ("memories", "chunks"):
        execute(f"CREATE TRIGGER {table}_version_insert AFTER INSERT ON {table} {bump}")
        execute(f"CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table} {bump}")
    # Not on use_count or last_used_at: counting a use changes nothing a search returns.
    execute(f"CREATE TRIGGER memories_version_update AFTER UPDATE OF project, content, confidence, status, "
            f"token_count ON memories {bump}")
    execute(f"CREATE TRIGGER chunks_version_update AFTER UPDATE ON chunks {bump}")


def m007_interaction_wire(execute: Execute) -> None:
    """Each record names the dialect its prompt and response are written in. Records from
    before are left NULL: those of the chat route and those clients recorded cannot be told apart."""
    execute("ALTER TABLE interactions ADD COLUMN wire TEXT")


def m008_interaction_usage_source(execute: Execute) -> None:
    """Each record says where its token counts came from (`provider`, or `counted` locally when
    the provider reported none), and keeps the prompt tokens read from and written to the
    provider's cache. Records from before are left NULL: nobody knows any more."""
    execute("ALTER TABLE interactions ADD COLUMN usage_source TEXT")
    execute("ALTER TABLE interactions ADD COLUMN cache_read_tokens INTEGER")
    execute("ALTER TABLE interactions ADD COLUMN cache_creation_tokens INTEGER")


def m009_interaction_agent(execute: Execute) -> None:
    """Each record names the sub-agent that made the call within its session, and the agent
    that started it (Claude Code's Agent tool runs sub-agents under the main one's session)."""
    execute("ALTER TABLE interactions ADD COLUMN agent_id TEXT")
    execute("ALTER TABLE interactions ADD COLUMN parent_agent_id TEXT")


def m010_response_ids(execute: Execute) -> None:
    """Responses API records are found by the id of the response they hold (a client asks for a
    stored response, or goes on from one, by that id)."""
    execute("CREATE INDEX interactions_response_id ON interactions (json_extract(response, '$.id')) "
            "WHERE wire = 'openai_responses'")


def m011_rate_buckets(execute: Execute) -> None:
    """Each virtual key's calls per minute, counted where every replica counts them (a token
    bucket: `tokens` left at `updated_at`, in seconds since the epoch). SQLite's single process
    counts in memory and leaves the table empty."""
    execute(
        """
        CREATE TABLE rate_buckets (
            bucket TEXT PRIMARY KEY,
            tokens DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )
        """
    )


def m012_operator_page(execute: Execute) -> None:
    """What the operator's page shows and needs: the conversation and pack an approval was asked
    in (JSON), each record's pack scores by item id (JSON), and secrets the gateway makes for
    itself once and every replica shares (the page's login signatures)."""
    execute("ALTER TABLE approvals ADD COLUMN context TEXT")
    execute("ALTER TABLE interactions ADD COLUMN context_scores TEXT")
    execute("CREATE TABLE gateway_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)")


def m013_ended_logins(execute: Execute) -> None:
    """Operator-page logins ended before their time (logged out), by id, until that time:
    after it the signature refuses them anyway, and the row can go."""
    execute("CREATE TABLE ended_logins (login_id TEXT PRIMARY KEY, until BIGINT NOT NULL)")


MIGRATIONS: tuple[Callable[[Execute], None], ...] = (
    m001_interactions, m002_approvals, m003_sessions, m004_context, m005_no_vocabulary_tables,
    m006_knowledge_version, m007_interaction_wire, m008_interaction_usage_source, m009_interaction_agent,
    m010_response_ids, m011_rate_buckets, m012_operator_page, m013_ended_logins,
)


# PostgreSQL's bodies, where they differ. Counts are BIGINT (INTEGER is 32 bits there, and a
# record holds counts up to 2**63 - 1), times DOUBLE PRECISION (REAL is 4 bytes there).
# Timestamps stay TEXT in the one sortable form every backend and the API share.

# The text search configuration of the full-text columns: words split by PostgreSQL's parser
# and lowercased, no stemming and no stop words (as SQLite's unicode61, but accents are kept:
# `unaccent` is an extension a team's database may not have).
TEXT_SEARCH_CONFIG = "simple"


def _widened(migration: Callable[[Execute], None]) -> Callable[[Execute], None]:
    """`migration` with PostgreSQL's widths: BIGINT for INTEGER, DOUBLE PRECISION for REAL."""
    def body(execute: Execute) -> None:
        statements: list[str] = []
        migration(statements.append)
        for statement in statements:
            execute(statement.replace("INTEGER", "BIGINT").replace(" REAL", " DOUBLE PRECISION"))

    return body


def _pg_m004_context(execute: Execute) -> None:
    """Memories and chunks, each with a generated tsvector column and a GIN index over it, and
    a count of the rows holding each word (what SQLite's searches probe the index for), kept by
    triggers. Rows are kept whole in their page where they fit (toast_tuple_target, storage
    MAIN): ranking reads each matching row's tsvector, and one stored out of line costs a
    lookup in the TOAST table each time (a search ranked 3 to 4 times slower)."""
    kept_whole = "WITH (toast_tuple_target = 8160)"
    execute(
        f"""
        CREATE TABLE memories (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            type TEXT NOT NULL,
            content TEXT NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            token_count BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            use_count BIGINT NOT NULL DEFAULT 0,
            last_used_at TEXT,
            words TSVECTOR GENERATED ALWAYS AS (to_tsvector('{TEXT_SEARCH_CONFIG}', content)) STORED
        ) {kept_whole}
        """
    )
    execute("CREATE INDEX ix_memories_project ON memories (project, status)")
    execute(
        """
        CREATE TABLE sources (
            project TEXT NOT NULL,
            path TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            chunk_count BIGINT NOT NULL,
            ingested_at TEXT NOT NULL,
            PRIMARY KEY (project, path)
        )
        """
    )
    execute(
        f"""
        CREATE TABLE chunks (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            source_path TEXT NOT NULL,
            ordinal BIGINT NOT NULL,
            content TEXT NOT NULL,
            token_count BIGINT NOT NULL,
            words TSVECTOR GENERATED ALWAYS AS (to_tsvector('{TEXT_SEARCH_CONFIG}', content)) STORED
        ) {kept_whole}
        """
    )
    execute("CREATE INDEX ix_chunks_source ON chunks (project, source_path)")
    # The rows of each table holding each word; the word '' counts the table's rows.
    execute(
        """
        CREATE TABLE word_counts (
            kind TEXT NOT NULL,
            word TEXT NOT NULL,
            rows BIGINT NOT NULL,
            PRIMARY KEY (kind, word)
        )
        """
    )
    execute(
        """
        CREATE FUNCTION count_words() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                UPDATE word_counts w SET rows = w.rows - gone.rows
                FROM (SELECT word, count(*) AS rows
                      FROM (SELECT unnest(tsvector_to_array(words)) FROM old_rows
                            UNION ALL SELECT '' FROM old_rows) AS each (word)
                      GROUP BY word) gone
                WHERE w.kind = TG_TABLE_NAME AND w.word = gone.word;
            END IF;
            IF TG_OP = 'INSERT' THEN
                INSERT INTO word_counts AS w (kind, word, rows)
                SELECT TG_TABLE_NAME, word, count(*)
                FROM (SELECT unnest(tsvector_to_array(words)) FROM new_rows
                      UNION ALL SELECT '' FROM new_rows) AS each (word)
                GROUP BY word ORDER BY word
                ON CONFLICT (kind, word) DO UPDATE SET rows = w.rows + excluded.rows;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in ("memories", "chunks"):
        # fastupdate off: new rows go into the index at once, not into a pending list that
        # every search would scan row by row until a vacuum merged it (2 ms a search at 10k rows).
        execute(f"CREATE INDEX {table}_words ON {table} USING GIN (words) WITH (fastupdate = off)")
        for column in ("words", "content"):
            execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE MAIN")
        # Named to fire after the knowledge-version triggers of m006 (triggers fire in name
        # order): every writer of knowledge locks the version row first, so two never wait on
        # each other's word counts in opposite orders. No UPDATE trigger: content is never
        # changed in place (a source's chunks are deleted and inserted again), and counting a
        # memory's use must not lock its words.
        for operation, transition in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows")):
            execute(f"CREATE TRIGGER {table}_words_{operation.lower()} AFTER {operation} ON {table} "
                    f"REFERENCING {transition} FOR EACH STATEMENT EXECUTE FUNCTION count_words()")


def _pg_m005_no_vocabulary_tables(execute: Execute) -> None:
    """PostgreSQL never had them."""


def _pg_m006_knowledge_version(execute: Execute) -> None:
    """As SQLite's, with the bump as a trigger function run once per statement."""
    execute("CREATE TABLE knowledge_version (version BIGINT NOT NULL)")
    execute("INSERT INTO knowledge_version (version) VALUES (0)")
    execute(
        """
        CREATE FUNCTION bump_knowledge_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE knowledge_version SET version = version + 1;
            RETURN NULL;
        END
        $$
        """
    )
    bump = "FOR EACH STATEMENT EXECUTE FUNCTION bump_knowledge_version()"
    execute(f"CREATE TRIGGER memories_version AFTER INSERT OR DELETE OR UPDATE OF project, content, confidence, "
            f"status, token_count ON memories {bump}")
    execute(f"CREATE TRIGGER chunks_version AFTER INSERT OR DELETE OR UPDATE ON chunks {bump}")


def _pg_m010_response_ids(execute: Execute) -> None:
    """The response's id in a column of its own, written with the record: an index on the
    text parsed as jsonb would fail the insert of a response holding `\u0000`, which jsonb
    refuses and the record keeps."""
    execute("ALTER TABLE interactions ADD COLUMN response_id TEXT")
    execute("CREATE INDEX interactions_response_id ON interactions (project, response_id) "
            "WHERE wire = 'openai_responses'")


POSTGRES_BODIES: dict[str, Callable[[Execute], None]] = {
    "m001_interactions": _widened(m001_interactions),
    "m003_sessions": _widened(m003_sessions),
    "m004_context": _pg_m004_context,
    "m005_no_vocabulary_tables": _pg_m005_no_vocabulary_tables,
    "m006_knowledge_version": _pg_m006_knowledge_version,
    "m008_interaction_usage_source": _widened(m008_interaction_usage_source),
    "m010_response_ids": _pg_m010_response_ids,
}
