"""The store seam: what the gateway, the API and the CLI need from a backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from capture.approvals import Approval, ApprovalStatus
from capture.knowledge import Memory, Scored, Source
from capture.records import CleanupResult, Interaction, InteractionQuery, Session


class StoreUnavailable(RuntimeError):
    """The backend cannot be reached or refused the operation."""


class RecordRejected(ValueError):
    """The backend works but cannot store this record as it is (a value it cannot represent):
    retrying will not help, and other records are not affected."""


def shown_url(url: str) -> str:
    """A store URL as it may be logged and shown: its password masked, in the user part
    (`user:pass@host`) and in the query (`?password=`), which libpq both reads."""
    if "://" not in url:
        return url  # a SQLite path
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = parts.query
    if query:
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Store(Protocol):
    """An interaction store. Every method may raise `StoreUnavailable`."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers a trivial query."""

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections in use, connections open) of a pooled backend; None for one without a pool."""

    async def insert_interactions(self, batch: Sequence[Interaction]) -> None:
        """Insert all of `batch` in one transaction; ids already stored are skipped. Raises
        `RecordRejected` (and stores none) when a record in it cannot be stored."""

    async def list_interactions(self, query: InteractionQuery) -> list[Interaction]:
        """Newest first; the records carry no prompt, params, response or pack text."""

    async def get_interaction(self, interaction_id: str) -> Interaction | None: ...

    async def find_response(self, project: str, response_id: str) -> Interaction | None:
        """The latest Responses API record of `project` whose response has the id `response_id`."""
        ...

    async def list_sessions(
        self, *, projects: frozenset[str] | None = None, client: str | None = None, limit: int = 50
    ) -> list[Session]:
        """Most recently active first; `projects` limits to those (None: all)."""

    async def get_sessions(self, session_id: str, projects: frozenset[str] | None = None) -> list[Session]:
        """The sessions with this id (one per project that used it), most recent first."""

    async def session_interactions(self, project: str, session_id: str, limit: int = 500) -> list[Interaction]:
        """The full records of a session, oldest first."""

    async def delete_older_than(self, cutoff: str, batch_size: int = 500) -> CleanupResult:
        """Delete interactions and decided approvals created before `cutoff`, sessions with
        nothing left, and recount the sessions that straddle it. One transaction per batch of
        `batch_size` rows, so capture and reads get their turn in between."""

    async def add_memory(self, memory: Memory) -> None: ...

    async def list_memories(self, project: str | None = None, limit: int = 100) -> list[Memory]:
        """Newest first."""

    async def get_memory(self, memory_id: str) -> Memory | None: ...

    async def delete_memory(self, memory_id: str) -> bool:
        """False when there was no such memory."""

    async def search_knowledge(self, project: str, text: str, limit: int) -> tuple[list[Scored], list[Scored]]:
        """The project's memories and chunks that best match the words of `text`, as the index
        splits them (see `knowledge.query_terms`), in one round trip."""

    async def mark_memories_used(self, memory_ids: Sequence[str], used_at: str) -> None: ...

    async def source_hashes(self, project: str) -> dict[str, str]:
        """The content hash of each source stored for the project, by path."""

    async def replace_sources(self, project: str, sources: Sequence[Source]) -> list[Source]:
        """Store each source's chunks in place of its old ones, all in one transaction. A source
        already stored with the same content hash is left alone; returns the ones replaced."""

    async def insert_approval(self, approval: Approval) -> None: ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def list_approvals(
        self, status: ApprovalStatus | None = None, limit: int = 100, projects: frozenset[str] | None = None
    ) -> list[Approval]:
        """Oldest first: the order in which they are waiting."""

    async def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decided_by: str, *, always: bool = False
    ) -> Approval | None:
        """Decide a pending approval (an `always` approval also remembers the tool for the
        project, in the same transaction). Returns the approval as it now stands, decided by
        this call or earlier; None when there is no such approval."""

    async def expire_stale_approvals(self) -> int:
        """Mark pending approvals past their expiry as expired; returns how many."""

    async def allowed_always(self, project: str) -> frozenset[str]:
        """Tools a person allowed always for `project`."""

    def watch_approvals(self, on_decided: Callable[[str | None], None]) -> bool:
        """Have `on_decided(approval_id)` called whenever an approval is asked or decided, by any process
        using this store, and `on_decided(None)` when decisions may have gone unannounced (the
        backend lost its way of hearing them for a while): look at every approval waited on.
        False when the backend cannot tell: the caller polls instead."""

    async def take_rate_token(self, bucket: str, per_minute: int) -> int | None:
        """Count a call against `bucket`'s `per_minute` calls: None when it may go now, else the
        seconds to wait. A shared store counts for every process that uses it."""

    async def shared_secret(self, name: str) -> str:
        """A random secret made once under `name` (64 hex digits), the same for every process
        using this store: what the operator page signs its logins with."""

    async def end_login(self, login_id: str, until: int) -> None:
        """The login `login_id` ends now for every process, though signed to last until `until`
        (Unix seconds); ended logins past their time are forgotten."""

    async def is_login_ended(self, login_id: str) -> bool: ...
