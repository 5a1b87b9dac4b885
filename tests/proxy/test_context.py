"""Context packs: the project's knowledge reaches the model, within budget, and is recorded."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.ingest import Document, ingest
from capture.knowledge import new_memory, query_terms
from capture.migrations import TOKENIZER
from capture.sqlite import SQLiteStore
from capture.store import Store
from proxy.appkeys import STORE
from proxy.pipeline.context import ITEM_OVERHEAD_TOKENS, build_pack, render
from proxy.demo.fake_upstream import FakeUpstream
from proxy.config.settings import ContextSettings
from capture.tokens import count_tokens
from tests.conftest import MODEL, Gateway, make_gateway

CIDR = "The prod VPC CIDR is 10.0.0.0/16"


async def remember(gateway: Gateway, content: str, project: str = "atmos", **fields: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/memories", json={"project": project, "content": content, **fields})
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def ask(gateway: Gateway, question: str, project: str = "atmos", headers: dict[str, str] | None = None) -> Any:
    messages: Any = [{"role": "system", "content": "You are an infra assistant."},
                     {"role": "user", "content": "Hello"},
                     {"role": "assistant", "content": "Hi, how can I help?"},
                     {"role": "user", "content": question}]
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, extra_headers={"X-Ctxgate-Project": project, **(headers or {})})
    return messages, raw


async def test_memory_reaches_the_model_ahead_of_the_latest_question_and_is_recorded(gateway: Gateway) -> None:
    memory = await remember(gateway, CIDR, type="decision")
    await remember(gateway, "Deploys happen on Tuesdays")
    sent, raw = await ask(gateway, "What CIDR does the prod VPC use?")
    received = gateway.upstream.received[-1].body["messages"]
    assert received[:-1] == sent[:-1]  # everything before the latest message as the client sent it
    pack = received[-1]["content"].split("</ctxgate-context>")[0]
    assert received[-1]["role"] == "user" and CIDR in pack and "Tuesdays" not in pack  # only what is relevant
    assert received[-1]["content"].endswith("</ctxgate-context>\n\nWhat CIDR does the prod VPC use?")
    assert raw.headers["X-Ctxgate-Context-Memories"] == "1"
    [stored] = await gateway.recorded()
    assert stored.memories_used == (memory["id"],) and stored.chunks_used == ()
    assert received[-1]["content"] == f"{stored.context_pack}\n\nWhat CIDR does the prod VPC use?"
    assert stored.prompt == received


async def test_memory_use_is_counted(gateway: Gateway) -> None:
    memory = await remember(gateway, CIDR)
    await ask(gateway, "prod VPC CIDR?")
    await gateway.recorded()  # the writer counts uses right after storing the record
    [stored] = [m for m in await gateway.app[STORE].list_memories("atmos") if m.id == memory["id"]]
    assert stored.use_count == 1 and stored.last_used_at is not None


async def test_no_pack_with_the_off_header_or_for_a_project_turned_off(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path,
                                 context_projects={"quiet": ContextSettings(enabled=False)})
    for project in ("atmos", "quiet"):
        await remember(gateway, CIDR, project=project)
    _, raw = await ask(gateway, "prod VPC CIDR?", headers={"X-Ctxgate-Context": "off"})
    assert raw.headers["X-Ctxgate-Context-Memories"] == "0"
    _, raw = await ask(gateway, "prod VPC CIDR?", project="quiet")
    assert raw.headers["X-Ctxgate-Context-Memories"] == "0"
    assert all(CIDR not in str(call.body["messages"]) for call in upstream.received)


async def test_one_projects_knowledge_never_reaches_another(gateway: Gateway) -> None:
    await remember(gateway, CIDR, project="atmos")
    await ask(gateway, "prod VPC CIDR?", project="atmos")
    assert CIDR in str(gateway.upstream.received[-1].body["messages"])  # the same question finds it at home
    await ask(gateway, "prod VPC CIDR?", project="web")
    assert CIDR not in str(gateway.upstream.received[-1].body["messages"])


async def test_a_forgotten_memory_is_never_injected(gateway: Gateway) -> None:
    memory = await remember(gateway, CIDR)
    async with aiohttp.ClientSession() as session:
        assert (await session.delete(gateway.url + f"/memories/{memory['id']}")).status == 204
        assert (await session.delete(gateway.url + f"/memories/{memory['id']}")).status == 404
    await ask(gateway, "prod VPC CIDR?")
    assert CIDR not in str(gateway.upstream.received[-1].body["messages"])


async def test_documents_ingested_over_http_reach_the_model_with_their_chunk_ids_recorded(gateway: Gateway) -> None:
    document = {"path": "runbooks/deploy.md", "text": "# Deploys\n\nProd deploys are frozen on Fridays after noon."}
    async with aiohttp.ClientSession() as session:
        first = await session.post(gateway.url + "/ingest", json={"project": "atmos", "documents": [document]})
        again = await session.post(gateway.url + "/ingest", json={"project": "atmos", "documents": [document]})
        wrong = await session.post(gateway.url + "/ingest", json={"project": "atmos", "documents": [{"path": 3}]})
        assert (first.status, again.status, wrong.status) == (200, 200, 400)
        assert await first.json() == {"project": "atmos", "ingested": 1, "unchanged": 0, "skipped": 0, "chunks": 1}
        assert (await again.json())["unchanged"] == 1
        assert (await wrong.json())["error"]["param"] == "documents"
    _, raw = await ask(gateway, "Can I deploy prod on Friday afternoon?")
    injected = gateway.upstream.received[-1].body["messages"][-1]["content"]
    assert "frozen on Fridays" in injected and "[runbooks/deploy.md]" in injected
    assert raw.headers["X-Ctxgate-Context-Chunks"] == "1"
    [stored] = await gateway.recorded()
    assert len(stored.chunks_used) == 1 and stored.chunks_used[0].startswith("ch_")



async def test_the_budget_is_respected_at_the_boundary(any_store: Store) -> None:
    store = any_store
    facts = [f"Subnet {n} of the prod VPC is 10.0.{n}.0/24" for n in range(4)]
    for fact in facts:
        await store.add_memory(new_memory("atmos", fact))
    question = "prod VPC subnet"
    frame = count_tokens(render("atmos", [], []))
    per_item = [count_tokens(f) + ITEM_OVERHEAD_TOKENS for f in facts]
    # memories get half of what the frame leaves: exactly three fit in this budget, not four
    exact = frame + 2 * sum(sorted(per_item)[:3])
    pack = await build_pack(store, "atmos", question, exact)
    assert pack is not None and len(pack.memories) == 3
    smaller = await build_pack(store, "atmos", question, exact - 2)
    assert smaller is not None and len(smaller.memories) == 2
    assert pack.tokens <= exact


async def test_reingesting_unchanged_changes_nothing_and_changed_replaces(any_store: Store) -> None:
    store = any_store
    first = Document.of("docs/vpc.md", "# VPC\n\nThe prod VPC peers with shared services.")
    assert (await ingest(store, "atmos", [first])).as_dict() == {"ingested": 1, "unchanged": 0, "skipped": 0, "chunks": 1}
    assert (await ingest(store, "atmos", [first])).as_dict() == {"ingested": 0, "unchanged": 1, "skipped": 0, "chunks": 0}
    changed = Document.of("docs/vpc.md", "# VPC\n\nThe prod VPC no longer peers with anything.")
    assert (await ingest(store, "atmos", [changed])).ingested == 1
    _, found = await store.search_knowledge("atmos", "prod VPC peers", 10)
    assert [c.content for c in found] == ["# VPC\n\nThe prod VPC no longer peers with anything."]
    twice = [Document.of("docs/vpc.md", "The prod VPC peers with billing."),
             Document.of("docs/vpc.md", "The prod VPC peers with search.")]  # in one batch: the last one stands
    await ingest(store, "atmos", twice)
    _, found = await store.search_knowledge("atmos", "prod VPC peers", 10)
    assert [c.content for c in found] == ["The prod VPC peers with search."]


async def test_a_large_ingest_is_written_in_batches_and_an_unchanged_one_is_not_rechunked(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = any_store
    import capture.ingest

    monkeypatch.setattr(capture.ingest, "BATCH_BYTES", 200)
    documents = [Document.of(f"docs/{n}.md", f"# Service {n}\n\nService {n} listens on port {8000 + n}.")
                 for n in range(40)]
    writes = []
    replace_sources = store.replace_sources

    async def counted(project: str, sources: Any) -> Any:
        writes.append(len(sources))
        return await replace_sources(project, sources)

    monkeypatch.setattr(store, "replace_sources", counted)
    seen = []
    report = await ingest(store, "atmos", [*documents, None], progress=lambda r: seen.append(r.documents))
    assert report.as_dict() == {"ingested": 40, "unchanged": 0, "skipped": 1, "chunks": 40}
    assert len(writes) > 5 and sum(writes) == 40 and seen == list(range(1, 42))
    _, found = await store.search_knowledge("atmos", "which service listens on port 8039?", 5)
    assert found and found[0].content.endswith("port 8039.")

    def never(*_: object) -> None:
        raise AssertionError("an unchanged document was chunked again")

    monkeypatch.setattr(capture.ingest, "chunk_document", never)
    assert (await ingest(store, "atmos", documents)).unchanged == 40


HOSTILE = ['"', 'say "hi', "*", "OR", "NEAR(a b)", "a AND (b", "-x", "col:val", "^start", "", "   ",
           "日本語の質問", "ÄÖÜ ß", "x" * 10_000, "word " * 5_000, "a\x00b", "NOT", "{c d}", "\\", "'; DROP TABLE x; --"]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_query_text_never_errors(any_store: Store, text: str) -> None:
    store = any_store
    await store.add_memory(new_memory("atmos", "日本語 and plain words about the VPC"))
    pack = await build_pack(store, "atmos", text, 1500)
    assert pack is None or pack.memories


# SQLite only from here to the preview test: these encode SQLite's search (its FTS5 tokenizer,
# its MATCH_BUDGET planner, its reader threads). PostgreSQL splits words with its own parser and
# plans by its statistics; what both must do alike is in tests/capture/test_store_backends.py.


def indexed_words(text: str) -> list[str]:
    """The searchable words of `text` as an index with the store's tokenizer splits them."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
    db.execute("INSERT INTO t VALUES (?)", (text,))
    return query_terms(word for (word,) in db.execute("SELECT term FROM v"))


@pytest.mark.parametrize("match_budget", [500, 1])  # 1: each word is in two rows, so every search is bounded
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=200))  # JSON bodies cannot hold Cs
async def test_any_text_makes_a_valid_query_and_finds_itself(
    store: SQLiteStore, match_budget: int, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    import capture.sqlite

    monkeypatch.setattr(capture.sqlite, "MATCH_BUDGET", match_budget)
    project = f"p{uuid.uuid4().hex}"  # each example its own: the store is shared between examples
    await store.search_knowledge(project, text, 5)
    if indexed_words(text):
        for _ in range(2):
            await store.add_memory(new_memory(project, text))
        found, _ = await store.search_knowledge(project, text, 5)
        assert text.strip() in [m.content for m in found]


async def test_a_repeated_question_is_answered_from_recent_searches_until_the_knowledge_changes(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import capture.search_cache
    import capture.sqlite

    searches = []
    search = capture.sqlite._search
    monkeypatch.setattr(capture.sqlite, "_search", lambda *args: searches.append(args[1]) or search(*args))
    monkeypatch.setattr(capture.search_cache, "KNOWLEDGE_VERSION_TTL_S", 0.05)  # outlived below in 0.1 s, not 1 s
    ours = new_memory("atmos", CIDR)
    await store.add_memory(ours)
    question = "What CIDR does the prod VPC use?"
    for _ in range(3):  # an agent's tool loop: the same latest user turn again and again
        found, _ = await store.search_knowledge("atmos", question, 5)
        assert [m.id for m in found] == [ours.id]
    assert len(searches) == 2  # memories and chunks, once

    other_process = sqlite3.connect(tmp_path / "db")  # as `ctxgate memories add` would, elsewhere
    with other_process:
        other_process.execute("UPDATE memories SET status = 'archived' WHERE id = ?", (ours.id,))
    found, _ = await store.search_knowledge("atmos", question, 5)
    assert [m.id for m in found] == [ours.id] and len(searches) == 2  # the version read stands a moment
    await asyncio.sleep(2 * capture.search_cache.KNOWLEDGE_VERSION_TTL_S)
    found, _ = await store.search_knowledge("atmos", question, 5)
    assert found == [] and len(searches) == 4
    await store.mark_memories_used([ours.id], "2026-11-22 10:00:00")  # counting a use changes no result
    await store.search_knowledge("atmos", question, 5)
    assert len(searches) == 4
    await ingest(store, "atmos", [Document.of("docs/vpc.md", "The prod VPC CIDR moved to 10.8.0.0/16.")])
    _, chunks = await store.search_knowledge("atmos", question, 5)
    assert [c.content for c in chunks] == ["The prod VPC CIDR moved to 10.8.0.0/16."]


async def test_preview_shows_the_pack_with_scores(gateway: Gateway) -> None:
    memory = await remember(gateway, CIDR)
    await remember(gateway, "Deploys happen on Tuesdays")
    async with aiohttp.ClientSession() as session:
        body = await (await session.get(gateway.url + "/context", params={"project": "atmos", "q": "prod CIDR"})).json()
    assert [m["id"] for m in body["memories"]] == [memory["id"]] and body["memories"][0]["score"] > 0
    assert CIDR in body["text"] and body["tokens"] <= body["budget_tokens"]


async def test_a_store_failing_during_the_search_does_not_fail_the_call(gateway: Gateway) -> None:
    from capture.store import StoreUnavailable

    async def broken(*_: object) -> None:
        raise StoreUnavailable("disk detached")

    gateway.app[STORE].search_knowledge = broken  # type: ignore[method-assign,assignment]
    _, raw = await ask(gateway, "prod VPC CIDR?")
    assert raw.parse().choices[0].message.content.startswith("Echo:")
    assert raw.headers["X-Ctxgate-Context-Memories"] == "0"


@pytest.mark.parametrize("question", ["café_menu?", "cafe", "CAFÉ", "menu", "Søren", "가격"])
async def test_query_words_are_split_and_folded_as_the_index_does(store: SQLiteStore, question: str) -> None:
    # The query is split by the index's own tokenizer: on `_`, accents dropped, Hangul kept whole.
    memory = new_memory("atmos", "The café_menu lists prices (가격) in euros, says Søren")
    await store.add_memory(memory)
    found, _ = await store.search_knowledge("atmos", question, 5)
    assert [m.id for m in found] == [memory.id]


TURNS = [  # an agent's conversation: questions, and tool calls answered by the client
    "What CIDR does the prod VPC use?", "Which subnets are public?", "When are deploys frozen?",
    "Who owns the NAT gateways?", "What does the VPC peer with?", "How do I rotate the RDS password?",
    "Where do the Terraform states live?", "Which region hosts staging?", "What is the on-call rotation?",
    "Summarise what we discussed.",
]
FACTS = [CIDR, "Public subnets are 10.0.100.0/24 and 10.0.101.0/24", "Deploys are frozen on Fridays after noon",
         "The network team owns the NAT gateways", "The prod VPC peers with the shared-services VPC",
         "Rotate the RDS password with the rotate-rds runbook", "Terraform states live in the tf-states bucket",
         "Staging runs in eu-west-1", "On-call rotates weekly on Mondays"]


async def test_over_ten_turns_each_request_starts_with_the_whole_previous_one_but_its_latest_message(
    gateway: Gateway, transport: str
) -> None:
    """Providers cache prompts by prefix: a pack that changed an early message every turn would
    make the whole conversation a cache miss on every turn."""
    for fact in FACTS:
        await remember(gateway, fact)
    client = gateway.client()
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are an infra assistant."}]
    for number, question in enumerate(TURNS):
        messages.append({"role": "user", "content": question})
        if number % 3 == 1:  # the model calls a tool; the client answers it in the next request
            messages += [{"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{number}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": f"call_{number}", "content": f"lookup result {number}"}]
        completion = await client.chat.completions.create(
            model=MODEL, messages=messages, extra_headers={"X-Ctxgate-Project": "atmos"})
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    sent = gateway.upstream.received[-len(TURNS):]
    assert all("<ctxgate-context" in str(call.body["messages"][-1]) for call in sent)  # a pack every turn
    assert len({str(call.body["messages"][-1]) for call in sent}) == len(TURNS)
    for before, after in zip(sent, sent[1:]):
        kept = before.body["messages"][:-1]
        assert after.body["messages"][:len(kept)] == kept
        if transport == "native":  # and byte for byte, as a provider's cache compares them
            latest = before.raw.rfind(b'{"role":"' + before.body["messages"][-1]["role"].encode())
            assert latest > 0 and after.raw[:latest] == before.raw[:latest]
