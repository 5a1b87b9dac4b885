"""Sessions with no client change, virtual keys, project routing and scoped reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog

from proxy.demo.fake_upstream import FakeUpstream
from proxy.config.keys import KeyConfigError, digest, parse_keys
from tests.conftest import MODEL, Gateway, make_gateway


async def get(gateway: Gateway, path: str, key: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        response = await session.get(gateway.url + path)
        return response.status, await response.json(), response.headers


async def converse(client: openai.AsyncOpenAI, opening: str, turns: int, **options: Any) -> list[str]:
    """A conversation as an agent has it: every turn resends the history, nothing else added."""
    messages: list[Any] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": opening}]
    sessions = []
    for turn in range(turns):
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, **options)
        sessions.append(raw.headers["X-Ctxgate-Session"])
        messages += [{"role": "assistant", "content": raw.parse().choices[0].message.content},
                     {"role": "user", "content": f"and then {turn}?"}]
    return sessions


async def test_a_three_turn_conversation_is_one_session_and_two_are_two(gateway: Gateway) -> None:
    client = gateway.client()
    first = await converse(client, "Plan the VPC", 3)
    second = await converse(client, "Plan the database", 2)
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    await gateway.recorded(at_least=5)
    status, body, _ = await get(gateway, f"/sessions/{first[0]}")
    assert status == 200
    assert body["interaction_count"] == 3 and len(body["turns"]) == 3
    assert [t["prompt"][-1]["content"] for t in body["turns"]] == ["Plan the VPC", "and then 0?", "and then 1?"]
    assert body["prompt_tokens"] == sum(t["prompt_tokens"] for t in body["turns"])
    _, listing, _ = await get(gateway, "/sessions")
    assert {s["id"] for s in listing["data"]} == {first[0], second[0]}


async def test_the_same_question_in_two_projects_is_two_sessions(gateway: Gateway) -> None:
    client = gateway.client()
    atmos = await converse(client, "Same question", 1, extra_headers={"X-Ctxgate-Project": "atmos"})
    web = await converse(client, "Same question", 1, extra_headers={"X-Ctxgate-Project": "web"})
    assert atmos != web


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"X-Ctxgate-Session": "mine"}, {}, "mine"),
        ({"X-Claude-Code-Session-Id": "cc-123"}, {}, "cc-123"),
        ({"session-id": "codex-9"}, {}, "codex-9"),
        ({"session_id": "codex-old"}, {}, "codex-old"),
        ({"x-opencode-session": "oc-1"}, {}, "oc-1"),
        ({"Helicone-Session-Id": "hel-7"}, {}, "hel-7"),
        ({"X-Session-Id": "or-1"}, {}, "or-1"),
        ({"x-session-affinity": "aff-1"}, {}, "aff-1"),
        ({"x-litellm-session-id": "ll-h"}, {}, "ll-h"),
        ({}, {"session_id": "body-top"}, "body-top"),
        ({}, {"metadata": {"session_id": "meta-1"}}, "meta-1"),
        ({}, {"litellm_session_id": "ll-1"}, "ll-1"),
        ({"X-Ctxgate-Session": "wins", "X-Claude-Code-Session-Id": "loses"}, {}, "wins"),
    ],
)
async def test_session_ids_agents_already_send_are_used(
    gateway: Gateway, headers: dict[str, str], body: dict[str, Any], expected: str
) -> None:
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=headers, extra_body=body
    )
    assert raw.headers["X-Ctxgate-Session"] == expected


async def test_a_body_session_id_with_control_characters_is_not_echoed(gateway: Gateway) -> None:
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"metadata": {"session_id": "a\r\nX-Evil: 1"}}
    )
    assert raw.headers["X-Ctxgate-Session"].startswith("s_") and "X-Evil" not in raw.headers


def test_short_user_agent_of_the_sdk() -> None:
    from proxy.pipeline.identity import short_user_agent

    assert short_user_agent("AsyncOpenAI/Python 2.54.0") == "openai-python/2.x"
    assert short_user_agent("OpenAI/JS 5.1.0") == "openai-js/5.x"
    assert short_user_agent("curl/8.5.0") == "curl/8.5.0"
    assert short_user_agent(None) == "unknown"


ALICE = "ctxg-alice-0123456789abcdefghij"
BOB = "ctxg-bob-abcdefghij0123456789"
READER = "ctxg-reader-for-atmos-only-xyz"
LIMITED = "ctxg-limited-two-per-minute-xx"
KEYS = parse_keys([
    {"sha256": digest(ALICE), "client": "alice", "projects": ["atmos"], "models": ["gpt-*"]},
    {"sha256": digest(BOB), "client": "bob", "projects": ["web"]},
    {"sha256": digest(READER), "client": "reader", "projects": ["atmos"], "scopes": ["read"]},
    {"sha256": digest(LIMITED), "client": "limited", "rpm": 2},
], "keys")


@pytest.fixture
async def keyed(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, keys=KEYS, admin_key="admin-k")


async def chat(gateway: Gateway, key: str, **options: Any) -> Any:
    client = gateway.client(api_key=key)
    return await client.chat.completions.with_raw_response.create(
        model=options.pop("model", MODEL), messages=[{"role": "user", "content": "hi"}], **options)


@pytest.mark.parametrize("key", ["ctxg-not-a-key", "sk-some-provider-key", READER])
async def test_a_call_without_a_valid_key_is_401(keyed: Gateway, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(keyed, key)  # READER: a read-only key cannot call models
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert keyed.upstream.received == []


async def test_a_call_with_no_authorization_at_all_is_401(keyed: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(keyed.url + "/v1/chat/completions",
                                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert (response.status, (await response.json())["error"]["code"]) == (401, "invalid_api_key")


async def test_a_key_is_its_client_and_project_and_never_reaches_the_provider(keyed: Gateway) -> None:
    raw = await chat(keyed, ALICE)
    [stored] = await keyed.recorded()
    assert (stored.client, stored.project) == ("alice", "atmos")
    assert raw.headers["X-Ctxgate-Interaction-Id"] == stored.id
    assert ALICE not in str(keyed.upstream.received[-1].headers)


@pytest.mark.parametrize(
    ("key", "options", "code"),
    [
        (ALICE, {"extra_headers": {"X-Ctxgate-Project": "web"}}, "project_not_allowed"),
        (BOB, {"extra_headers": {"X-Ctxgate-Project": "atmos"}}, "project_not_allowed"),
        (ALICE, {"model": "claude-x"}, "model_not_allowed"),
    ],
)
async def test_outside_a_keys_scope_is_403(keyed: Gateway, key: str, options: dict[str, Any], code: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await chat(keyed, key, **options)
    assert caught.value.body["code"] == code  # type: ignore[index]
    assert keyed.upstream.received == []


async def test_path_prefix_is_checked_against_the_key_too(keyed: Gateway) -> None:
    client = keyed.client(api_key=ALICE, base_url=keyed.url + "/p/web/v1")
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


async def test_undeclared_models_do_not_exist_behind_keys(keyed: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await chat(keyed, BOB, model="gpt-4o-mini")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_over_the_rate_limit_is_429_with_retry_after(keyed: Gateway) -> None:
    await chat(keyed, LIMITED)
    await chat(keyed, LIMITED)
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(keyed, LIMITED)
    retry_after = int(caught.value.response.headers["Retry-After"])
    assert 1 <= retry_after <= 30
    await chat(keyed, ALICE)  # another key is not affected


async def test_scoped_reads_never_return_another_projects_rows(keyed: Gateway) -> None:
    await converse(keyed.client(api_key=ALICE), "atmos question", 1)
    await converse(keyed.client(api_key=BOB), "web question", 1)
    records = await keyed.recorded(at_least=2)
    web_record = next(r for r in records if r.project == "web")

    status, listing, _ = await get(keyed, "/interactions", READER)
    assert status == 200 and {r["project"] for r in listing["data"]} == {"atmos"}
    status, _, _ = await get(keyed, f"/interactions/{web_record.id}", READER)
    assert status == 404
    status, sessions, _ = await get(keyed, "/sessions", READER)
    assert {s["project"] for s in sessions["data"]} == {"atmos"}
    status, _, _ = await get(keyed, f"/sessions/{web_record.session_id}", READER)
    assert status == 404
    status, filtered, _ = await get(keyed, "/sessions?project=web", READER)
    assert status == 200 and filtered["data"] == []

    status, approvals, _ = await get(keyed, "/approvals?status=pending", READER)
    assert status == 200 and approvals["data"] == []

    status, everything, _ = await get(keyed, "/interactions", "admin-k")
    assert {r["project"] for r in everything["data"]} == {"atmos", "web"}
    for key, expected in ((ALICE, 403), (None, 401), ("wrong", 401)):  # a proxy-only key cannot read
        status, body, _ = await get(keyed, "/interactions", key)
        assert status == expected, (key, body)


async def test_a_session_id_shared_by_two_projects_stays_two_sessions(keyed: Gateway) -> None:
    shared = {"extra_headers": {"X-Ctxgate-Session": "s1"}}
    await chat(keyed, ALICE, **shared)
    await chat(keyed, BOB, **shared)
    await keyed.recorded(at_least=2)
    status, body, _ = await get(keyed, "/sessions/s1", READER)
    assert status == 200 and body["project"] == "atmos" and body["interaction_count"] == 1
    assert [t["project"] for t in body["turns"]] == ["atmos"]
    status, body, _ = await get(keyed, "/sessions/s1", "admin-k")
    assert (status, body["error"]["code"]) == (400, "session_ambiguous")
    status, body, _ = await get(keyed, "/sessions/s1?project=web", "admin-k")
    assert status == 200 and [t["client"] for t in body["turns"]] == ["bob"]


async def test_models_need_a_key_and_list_only_what_it_may_use(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from proxy.config.settings import ModelRoute

    routes = tuple(ModelRoute(model_name=name, model="openai/fake-model", api_base=upstream.base_url, api_key="k")
                   for name in ("gpt-test", "claude-test"))
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, keys=KEYS, models=routes)
    status, _, _ = await get(gateway, "/v1/models")
    assert status == 401
    assert [m["id"] for m in (await get(gateway, "/v1/models", ALICE))[1]["data"]] == ["gpt-test"]
    assert [m["id"] for m in (await get(gateway, "/v1/models", BOB))[1]["data"]] == ["gpt-test", "claude-test"]


async def test_keys_new_prints_a_key_its_entry_admits(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from proxy.cli.commands import main
    from proxy.config.keys import KeyRing

    assert await asyncio.to_thread(main, ["keys", "new", "--client", "carol", "--project", "atmos", "--rpm", "30"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    entry = json.loads(out[2].strip().removeprefix("- "))
    assert key not in out[2] and entry["client"] == "carol" and entry["rpm"] == 30
    found = KeyRing(parse_keys([entry], "keys")).find(key)
    assert found is not None and found.projects == frozenset({"atmos"})
    assert found.scopes == frozenset({"proxy"})

    assert await asyncio.to_thread(main, ["keys", "new", "--client", "lead", "--project", "atmos", "--approve"]) == 0
    entry = json.loads(capsys.readouterr().out.splitlines()[2].strip().removeprefix("- "))
    assert parse_keys([entry], "keys")[0].scopes == frozenset({"read", "approve"})  # a person's key: no model calls
    with pytest.raises(KeyConfigError, match="cannot also approve"):
        parse_keys([{**entry, "scopes": ["proxy", "approve"]}], "keys")


async def test_retention_days_cleans_inside_the_gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    from capture.records import Interaction, now_timestamp
    from capture.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ctxgate.db"))
    await store.open()
    await store.insert_interactions([
        Interaction(id="ancient", created_at="2020-01-01 00:00:00", prompt="p", session_id="s-ancient"),
        Interaction(id="recent", created_at=now_timestamp(), prompt="p", session_id="s-recent"),
    ])
    await store.close()
    with structlog.testing.capture_logs() as logs:
        gateway = await make_gateway(aiohttp_server, upstream, tmp_path, retention_days=30)

        async def cleaned() -> None:  # the cleanup task runs at start; yield to it until it has
            while not any(entry["event"] == "retention_cleaned" for entry in logs):
                await asyncio.sleep(0)

        await asyncio.wait_for(cleaned(), 10)
    [cleaned] = [entry for entry in logs if entry["event"] == "retention_cleaned"]
    assert (cleaned["sessions"], cleaned["interactions"]) == (1, 1)
    status, _, _ = await get(gateway, "/interactions/ancient")
    assert status == 404
    status, _, _ = await get(gateway, "/interactions/recent")
    assert status == 200


async def test_no_secret_of_a_keyed_run_reaches_logs_records_or_api(keyed: Gateway, tmp_path: Path) -> None:
    from proxy.appkeys import SETTINGS

    secrets = [ALICE, BOB, READER, "admin-k", "sk-provider-secret-4f9a1c"]
    errors = []
    with structlog.testing.capture_logs() as logs:
        await converse(keyed.client(api_key=ALICE), "hello", 2)
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            await chat(keyed, BOB, extra_headers={"X-Ctxgate-Project": "atmos"})
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await chat(keyed, "ctxg-wrong-" + ALICE)
        errors = [forbidden.value.body, unauthorized.value.body]
        records = await keyed.recorded(at_least=2)
        api = [await get(keyed, path, "admin-k") for path in
               ("/interactions", f"/interactions/{records[0].id}", "/sessions", f"/sessions/{records[0].session_id}")]
    produced = repr(logs) + repr(api) + repr(errors) + repr([r.as_dict() for r in records])
    db = Path(keyed.app[SETTINGS].store_url)
    for file in (db, db.with_name(db.name + "-wal")):  # fresh rows live in the WAL
        produced += file.read_bytes().decode(errors="replace") if file.exists() else ""
    assert "hello" in produced  # the sweep does see the stored prompts
    for secret in secrets:
        assert secret not in produced
