"""What every store backend must do alike: each test runs on SQLite and on PostgreSQL
(`any_store`), and the PostgreSQL-only ones check what several replicas on one database share."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from capture.approvals import Approval, ApprovalStatus
from capture.knowledge import Chunk, MemoryStatus, Source, new_memory
from capture.migrations import MIGRATIONS
from capture.postgres import RETENTION_LOCK, PostgresStore
from capture.records import Interaction, InteractionQuery, new_interaction_id
from capture.backends import open_store
from capture.store import RecordRejected, Store, StoreUnavailable, shown_url


def interaction(**fields: Any) -> Interaction:
    defaults: dict[str, Any] = {"id": new_interaction_id(), "created_at": "2026-05-01 09:00:00", "prompt": "p",
                                "project": "atmos"}
    defaults.update(fields)
    return Interaction(**defaults)


def approval(approval_id: str, **fields: Any) -> Approval:
    defaults: dict[str, Any] = {"created_at": "2026-05-01 09:00:00", "expires_at": "2999-01-01 00:00:00",
                                "project": "atmos", "tool": "Bash", "arguments": '{"command": "ls"}'}
    defaults.update(fields)
    return Approval(id=approval_id, **defaults)


async def test_a_record_round_trips_whole(any_store: Store) -> None:
    record = interaction(
        session_id="s", client="codex", model="gpt-x", status="ok", error=None,
        prompt=[{"role": "user", "content": "héllo \u0000 ✓"}], params={"temperature": 0.2},
        response={"id": "resp_1", "output": [{"type": "message"}]}, memories_used=("mem_1",),
        chunks_used=("ch_1", "ch_2"), context_pack="pack", tool_decisions=({"tool": "Bash", "action": "deny"},),
        prompt_tokens=2**62, completion_tokens=3, latency_ms=12.345678, ttft_ms=1.5, wire="openai_responses",
        usage_source="provider", cache_read_tokens=7, cache_creation_tokens=0, agent_id="a1", parent_agent_id="a0",
        context_scores={"mem_1": 0.5, "ch_1": 1.25e-6, "ch_2": 3.0},
    )
    await any_store.insert_interactions([record])
    assert await any_store.get_interaction(record.id) == record
    assert await any_store.get_interaction("missing") is None
    assert await any_store.find_response("atmos", "resp_1") == record
    assert await any_store.find_response("other-project", "resp_1") is None


async def test_listing_is_newest_first_filtered_and_limited_to_the_readers_projects(any_store: Store) -> None:
    records = [interaction(created_at=f"2026-05-0{day} 09:00:00", project=project, client=client, session_id="s")
               for day, project, client in ((1, "atmos", "a"), (2, "orbit", "b"), (3, "atmos", "b"), (4, None, "a"))]
    await any_store.insert_interactions(records)

    async def listed(**query: Any) -> list[str]:
        return [i.id for i in await any_store.list_interactions(InteractionQuery(**query))]

    ids = [r.id for r in records]
    assert await listed() == ids[::-1]
    assert await listed(project="atmos") == [ids[2], ids[0]]
    assert await listed(client="b", since="2026-05-03 00:00:00") == [ids[2]]
    assert await listed(projects=frozenset({"orbit", ""})) == [ids[3], ids[1]]  # "" is the record without one
    assert await listed(projects=frozenset()) == [] and await listed(limit=1) == [ids[3]]
    summary = (await any_store.list_interactions(InteractionQuery(limit=1)))[0]
    assert summary.prompt is None and summary.response is None  # a listing carries no bodies


async def test_listing_filters_by_status_and_model_and_pages_past_an_id(any_store: Store) -> None:
    records = [interaction(created_at="2026-05-01 09:00:00", status=status, model=model)
               for status, model in [("ok", "a"), ("upstream_error", "a"), ("ok", "b"), ("ok", "a"), ("ok", "a")]]
    await any_store.insert_interactions(records)

    async def listed(**query: Any) -> list[str]:
        return [i.id for i in await any_store.list_interactions(InteractionQuery.build(**query))]

    ids = [r.id for r in records][::-1]  # one second for all: the id orders them
    assert await listed(status="upstream_error") == [records[1].id]
    assert await listed(model="b") == [records[2].id]
    assert await listed(status="ok", model="a") == [records[4].id, records[3].id, records[0].id]
    first = await listed(limit=2)
    second = await listed(limit=2, before=first[-1])
    third = await listed(limit=2, before=second[-1])
    assert first + second + third == ids
    assert await listed(before="no-such-id") == []


async def test_an_approval_keeps_what_its_person_is_shown(any_store: Store) -> None:
    context = {"client": "codex", "turns": [{"role": "user", "text": "deploy ✓"}],
               "pack": [{"kind": "memory", "id": "mem_1", "score": 0.25, "text": "staging first"}]}
    await any_store.insert_approval(approval("a-ctx", context=context))
    await any_store.insert_approval(approval("a-bare"))
    assert (await any_store.get_approval("a-ctx")).context == context  # type: ignore[union-attr]
    assert (await any_store.get_approval("a-bare")).context is None  # type: ignore[union-attr]


async def test_a_shared_secret_is_made_once_and_kept(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    await first.open()
    await second.open()
    made = await first.shared_secret("logins")
    assert len(made) == 64 and await second.shared_secret("logins") == made
    assert await second.shared_secret("other") != made
    await first.close()
    await second.close()


async def test_an_ended_login_is_ended_for_every_store_and_forgotten_after_its_time(store_url: str) -> None:
    import time

    first, second = open_store(store_url), open_store(store_url)
    await first.open()
    await second.open()
    await first.end_login("old", int(time.time()) - 10)
    assert await second.is_login_ended("old")
    await first.end_login("current", int(time.time()) + 3600)  # ending another forgets those out of time
    assert await second.is_login_ended("current") and not await second.is_login_ended("old")
    assert not await second.is_login_ended("never")
    await first.close()
    await second.close()


async def test_a_batch_holding_a_record_the_store_cannot_hold_is_refused_whole(any_store: Store) -> None:
    fine = interaction()
    with pytest.raises(RecordRejected):
        await any_store.insert_interactions([fine, interaction(prompt_tokens=2**64)])  # past 64 bits
    assert await any_store.list_interactions(InteractionQuery()) == []
    with pytest.raises(RecordRejected):
        await any_store.insert_interactions([interaction(model="\ud800")])  # a lone surrogate is not text
    await any_store.insert_interactions([fine, interaction(model="gpt\u0000x")])  # a NUL in plain text: kept
    assert len(await any_store.list_interactions(InteractionQuery())) == 2


async def test_an_id_twice_in_one_batch_is_stored_and_counted_once(any_store: Store) -> None:
    twice = interaction(session_id="s1", prompt_tokens=5)
    await any_store.insert_interactions([twice, twice, interaction(session_id="s1", prompt_tokens=1)])
    (session,) = await any_store.get_sessions("s1")
    assert (session.interaction_count, session.prompt_tokens) == (2, 6)


async def test_two_ingests_of_the_same_documents_at_once_both_succeed(store_url: str) -> None:
    stores = [open_store(store_url), open_store(store_url)]  # two replicas, or the CLI beside a gateway
    for store in stores:
        await store.open()
    sources = [Source(f"doc{n}.md", f"h{n}", (Chunk(f"ch_{n}", "atmos", f"doc{n}.md", 0, f"text {n}", 2),))
               for n in range(50)]
    changed = await asyncio.gather(*(store.replace_sources("atmos", sources) for store in stores))
    hashes = await stores[0].source_hashes("atmos")
    for store in stores:
        await store.close()
    assert sorted(len(c) for c in changed) == [0, 50] and len(hashes) == 50  # the second found them stored


def test_a_store_url_is_shown_without_its_password() -> None:
    assert shown_url("postgresql://u:p@ss@db:5432/ctxgate") == "postgresql://u:***@db:5432/ctxgate"
    assert shown_url("postgresql://db/ctxgate?user=u&password=s%40cret&sslmode=require") == \
        "postgresql://db/ctxgate?user=u&password=***&sslmode=require"
    assert shown_url("postgresql://u@db/ctxgate") == "postgresql://u@db/ctxgate"
    assert shown_url("/data/ctxgate.db") == "/data/ctxgate.db"


async def test_sessions_are_counted_listed_and_limited_to_projects(any_store: Store) -> None:
    await any_store.insert_interactions([
        interaction(session_id="s1", client="codex", created_at="2026-05-01 09:00:00", prompt_tokens=5),
        interaction(session_id="s1", client="codex", created_at="2026-05-01 09:03:00", prompt_tokens=6),
        interaction(session_id="s2", client="claude", project="orbit", created_at="2026-05-01 09:01:00"),
    ])
    listed = await any_store.list_sessions()
    assert [(s.project, s.id, s.interaction_count) for s in listed] == [("atmos", "s1", 2), ("orbit", "s2", 1)]
    assert [s.id for s in await any_store.list_sessions(client="claude")] == ["s2"]
    assert [s.id for s in await any_store.list_sessions(projects=frozenset({"orbit"}))] == ["s2"]
    (s1,) = await any_store.get_sessions("s1")
    assert (s1.first_at, s1.last_at, s1.prompt_tokens) == ("2026-05-01 09:00:00", "2026-05-01 09:03:00", 11)
    assert await any_store.get_sessions("s1", projects=frozenset({"orbit"})) == []
    turns = await any_store.session_interactions("atmos", "s1")
    assert [t.created_at for t in turns] == ["2026-05-01 09:00:00", "2026-05-01 09:03:00"] and turns[0].prompt == "p"


async def test_memories_are_kept_found_by_their_words_and_forgotten(any_store: Store) -> None:
    vpc = new_memory("atmos", "The prod VPC uses CIDR 10.42.0.0/16", confidence=0.9)
    deploys = new_memory("atmos", "Deploys go out on Tuesdays through the release train")
    archived = new_memory("atmos", "The old VPC CIDR was 10.1.0.0/16", status="archived")
    elsewhere = new_memory("orbit", "Orbit's VPC CIDR is 172.16.0.0/12")
    for memory in (vpc, deploys, archived, elsewhere):
        await any_store.add_memory(memory)
    assert {m.id for m in await any_store.list_memories("atmos")} == {vpc.id, deploys.id, archived.id}
    assert await any_store.get_memory(vpc.id) == vpc

    memories, chunks = await any_store.search_knowledge("atmos", "Which CIDR does the VPC use?", 5)
    assert [m.id for m in memories] == [vpc.id] and chunks == []  # not archived, not another project's
    assert memories[0].score > 0 and memories[0].content == vpc.content

    await any_store.mark_memories_used([vpc.id], "2026-05-02 10:00:00")
    used = await any_store.get_memory(vpc.id)
    assert used is not None and (used.use_count, used.last_used_at) == (1, "2026-05-02 10:00:00")
    assert await any_store.delete_memory(vpc.id) and not await any_store.delete_memory(vpc.id)
    memories, _ = await any_store.search_knowledge("atmos", "Which CIDR does the VPC use?", 5)
    assert memories == []  # seen at once by the process that forgot it
    assert (await any_store.get_memory(archived.id)).status is MemoryStatus.ARCHIVED  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["", "   ", "?!", "a' | b & !c:*", "\u0000", "x" * 20_000, "(((", "'\\'"])
async def test_any_question_searches_without_error(any_store: Store, text: str) -> None:
    await any_store.add_memory(new_memory("atmos", "quoting rules: a' | b & !c:*"))
    await any_store.search_knowledge("atmos", text, 5)


async def test_sources_replace_their_chunks_and_an_unchanged_one_is_left_alone(any_store: Store) -> None:
    def source(path: str, digest: str, *texts: str) -> Source:
        return Source(path, digest, tuple(Chunk(f"ch_{digest}_{n}", "atmos", path, n, text, 10)
                                          for n, text in enumerate(texts)))

    runbook = source("runbook.md", "h1", "Restart the ingress controller with kubectl rollout restart", "Then page")
    first = await any_store.replace_sources("atmos", [runbook, source("faq.md", "h2", "Billing questions")])
    assert [s.path for s in first] == ["runbook.md", "faq.md"]
    assert await any_store.source_hashes("atmos") == {"runbook.md": "h1", "faq.md": "h2"}
    _, chunks = await any_store.search_knowledge("atmos", "how to restart the ingress controller", 5)
    assert [(c.id, c.source) for c in chunks] == [("ch_h1_0", "runbook.md")]

    changed = await any_store.replace_sources("atmos", [runbook, source("faq.md", "h3", "Refund policy")])
    assert [s.path for s in changed] == ["faq.md"]  # the runbook is unchanged: left alone
    _, chunks = await any_store.search_knowledge("atmos", "billing refund", 5)
    assert [c.id for c in chunks] == ["ch_h3_0"]  # the old chunk went with its version


async def test_an_approval_is_decided_once_and_always_remembers_the_tool(any_store: Store) -> None:
    await any_store.insert_approval(approval("a1"))
    await any_store.insert_approval(approval("a2", project="orbit", tool="Write"))
    assert [a.id for a in await any_store.list_approvals(ApprovalStatus.PENDING)] == ["a1", "a2"]
    assert [a.id for a in await any_store.list_approvals(projects=frozenset({"orbit"}))] == ["a2"]

    decided = await any_store.decide_approval("a1", ApprovalStatus.APPROVED, "alice", always=True)
    assert decided is not None and decided.is_decided_as(ApprovalStatus.APPROVED, "alice") and decided.always
    again = await any_store.decide_approval("a1", ApprovalStatus.DENIED, "bob")
    assert again is not None and again.is_decided_as(ApprovalStatus.APPROVED, "alice")  # the first decision stands
    assert await any_store.allowed_always("atmos") == frozenset({"Bash"})
    assert await any_store.allowed_always("orbit") == frozenset()
    assert await any_store.decide_approval("missing", ApprovalStatus.APPROVED, "alice") is None


async def test_an_approval_past_its_expiry_can_only_expire(any_store: Store) -> None:
    await any_store.insert_approval(approval("late", expires_at="2026-01-01 00:00:00"))
    refused = await any_store.decide_approval("late", ApprovalStatus.APPROVED, "alice")
    assert refused is not None and refused.status is ApprovalStatus.PENDING
    assert await any_store.expire_stale_approvals() == 1
    expired = await any_store.get_approval("late")
    assert expired is not None and expired.is_decided_as(ApprovalStatus.EXPIRED, "gateway_restart")


async def test_a_keys_calls_are_counted_per_minute(any_store: Store) -> None:
    assert [await any_store.take_rate_token("key-a", 2) for _ in range(2)] == [None, None]
    wait = await any_store.take_rate_token("key-a", 2)
    assert wait is not None and 1 <= wait <= 30  # one call every 30 s refills
    assert await any_store.take_rate_token("key-b", 2) is None  # each key its own bucket


# PostgreSQL only: what replicas on one database share.


async def test_replicas_starting_at_once_on_a_fresh_database_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    db = await asyncpg.connect(postgres_url)
    names = [name for (name,) in await db.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    await db.close()
    for store in stores:
        await store.close()
    assert names == [m.__name__ for m in MIGRATIONS]


async def test_a_question_and_its_decision_on_one_replica_are_heard_on_another_at_once(postgres_url: str) -> None:
    holding, deciding = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await holding.open()
    await deciding.open()
    heard: asyncio.Queue[str] = asyncio.Queue()
    watching: asyncio.Queue[str] = asyncio.Queue()
    assert holding.watch_approvals(heard.put_nowait)
    assert deciding.watch_approvals(watching.put_nowait)
    await holding.wait_listening()
    await deciding.wait_listening()
    await holding.insert_approval(approval("a1"))
    assert await asyncio.wait_for(watching.get(), 1.0) == "a1"  # another replica's page shows it
    assert await asyncio.wait_for(heard.get(), 1.0) == "a1"
    await deciding.decide_approval("a1", ApprovalStatus.APPROVED, "alice")
    assert await asyncio.wait_for(heard.get(), 1.0) == "a1"
    await deciding.decide_approval("a1", ApprovalStatus.DENIED, "bob")  # changes nothing: announces nothing
    await asyncio.sleep(0.3)  # what it would have announced has arrived by now
    await holding.close()
    await deciding.close()
    assert heard.empty()


async def test_a_keys_rate_holds_across_replicas(postgres_url: str) -> None:
    replicas = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    for replica in replicas:
        await replica.open()
    answers = [await replicas[n % 2].take_rate_token("key-a", 3) for n in range(6)]
    for replica in replicas:
        await replica.close()
    assert answers[:3] == [None, None, None] and all(wait is not None for wait in answers[3:])


async def test_retention_is_left_to_the_replica_already_cleaning(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.insert_interactions([interaction(created_at="2020-01-01 00:00:00")])
    other_replica = await asyncpg.connect(postgres_url)
    await other_replica.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK)
    skipped = await store.delete_older_than("2021-01-01 00:00:00")
    await other_replica.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)
    cleaned = await store.delete_older_than("2021-01-01 00:00:00")
    await other_replica.close()
    await store.close()
    assert (skipped.interactions, cleaned.interactions) == (0, 1)


async def test_an_unreachable_database_is_unavailable_and_its_password_never_shown() -> None:
    store = PostgresStore("postgresql://ctxgate:hunter2-secret@127.0.0.1:1/ctxgate")
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    assert "hunter2-secret" not in str(raised.value) and "ctxgate:***@127.0.0.1:1" in str(raised.value)
    assert not await store.ping()


async def test_the_word_counts_searches_are_planned_by_follow_inserts_and_deletes(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    first, second = new_memory("atmos", "Rotate the vault token"), new_memory("atmos", "The vault seals at night")
    for memory in (first, second):
        await store.add_memory(memory)
    await store.replace_sources("atmos", [Source("a.md", "h1", (Chunk("c1", "atmos", "a.md", 0, "vault vault runbook", 3),))])
    db = await asyncpg.connect(postgres_url)

    async def counts() -> dict[tuple[str, str], int]:
        rows = await db.fetch("SELECT kind, word, rows FROM word_counts WHERE word IN ('', 'vault', 'token', 'runbook')")
        return {(kind, word): count for kind, word, count in rows}

    assert await counts() == {("memories", ""): 2, ("memories", "vault"): 2, ("memories", "token"): 1,
                              ("chunks", ""): 1, ("chunks", "vault"): 1, ("chunks", "runbook"): 1}
    await store.delete_memory(first.id)
    await store.replace_sources("atmos", [Source("a.md", "h2", (Chunk("c2", "atmos", "a.md", 0, "new text", 2),))])
    after = await counts()
    await db.close()
    await store.close()
    assert after == {("memories", ""): 1, ("memories", "vault"): 1, ("memories", "token"): 0,
                     ("chunks", ""): 1, ("chunks", "vault"): 0, ("chunks", "runbook"): 0}


async def test_a_common_word_still_finds_a_projects_rows_past_its_bound(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MATCH_BUDGET matches only the first are ranked: another project's older rows
    never take the place of the project's own, and the rarest words are the ones searched."""
    import capture.postgres
    import capture.sqlite

    for module in (capture.postgres, capture.sqlite):
        monkeypatch.setattr(module, "MATCH_BUDGET", 3)
    names = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
    for name in names:
        await any_store.add_memory(new_memory("web", f"Deploy step {name} of the web frontend"))
    ours = new_memory("atmos", "Deploy the billing service with the blue-green script")
    await any_store.add_memory(ours)
    found, _ = await any_store.search_knowledge("atmos", "deploy", 5)
    assert [m.id for m in found] == [ours.id]
    found, _ = await any_store.search_knowledge("web", "deploy frontend step", 5)
    assert len(found) == 3  # the first MATCH_BUDGET of the matches ranked
    found, _ = await any_store.search_knowledge("web", "deploy frontend step juliet", 5)
    assert [m.content for m in found] == ["Deploy step juliet of the web frontend"]  # the rarest word, alone
