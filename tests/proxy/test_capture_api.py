"""The capture API: record, list (summaries, filters, order, limits) and read interactions."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from capture.records import Interaction, new_interaction_id
from proxy.appkeys import STORE
from tests.conftest import Gateway

FULL_RECORD = {
    "prompt": [{"role": "user", "content": "What is the prod VPC CIDR?"}],
    "response": {"role": "assistant", "content": "10.0.0.0/16"},
    "project": "atmos",
    "session_id": "sess-1",
    "client": "claude-code",
    "model": "gpt-4o-mini",
    "params": {"temperature": 0},
    "memories_used": ["mem-1", "mem-2"],
    "chunks_used": ["chunk-9"],
    "context_pack": "## Memories\n- The prod VPC CIDR is 10.0.0.0/16",
    "tool_decisions": [{"tool": "file_read", "action": "allow"}],
    "status": "ok",
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "usage_source": "provider",
    "cache_read_tokens": 8,
    "cache_creation_tokens": 2,
    "latency_ms": 123.5,
    "ttft_ms": 40.25,
}


async def call(gateway: Gateway, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        response = await session.request(method, gateway.url + path, **kwargs)
        return response.status, await response.json()


async def record(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    status, body = await call(gateway, "POST", "/interactions", json=fields)
    assert status == 201, body
    result: dict[str, Any] = body
    return result


async def test_every_field_round_trips(gateway: Gateway) -> None:
    created = await record(gateway, **FULL_RECORD)
    status, fetched = await call(gateway, "GET", f"/interactions/{created['id']}")
    assert status == 200
    assert fetched == created
    for name, value in FULL_RECORD.items():
        assert fetched[name] == value, name
    assert len(fetched["created_at"]) == 19  # 'YYYY-MM-DD HH:MM:SS'


async def test_prompt_alone_is_enough(gateway: Gateway) -> None:
    created = await record(gateway, prompt="just a prompt")
    status, fetched = await call(gateway, "GET", f"/interactions/{created['id']}")
    assert status == 200
    assert fetched["prompt"] == "just a prompt"
    assert fetched["response"] is None and fetched["memories_used"] == [] and fetched["status"] == "ok"


@pytest.mark.parametrize("prompt", ["", "   \n\t", None, []])
async def test_blank_or_missing_prompt_is_refused(gateway: Gateway, prompt: Any) -> None:
    fields = {} if prompt is None else {"prompt": prompt}
    status, body = await call(gateway, "POST", "/interactions", json=fields)
    assert status == 400
    assert body["error"]["param"] == "prompt"


async def test_wrong_types_are_refused_naming_the_field(gateway: Gateway) -> None:
    status, body = await call(gateway, "POST", "/interactions", json={"prompt": "p", "latency_ms": "fast"})
    assert (status, body["error"]["param"]) == (400, "latency_ms")
    status, body = await call(gateway, "POST", "/interactions", json={"prompt": "p", "colour": "red"})
    assert (status, body["error"]["param"]) == (400, "colour")


@pytest.mark.parametrize(("field", "value"), [
    ("usage_source", "guessed"), ("usage_source", 1), ("cache_read_tokens", -1), ("cache_read_tokens", 2.5),
    ("cache_creation_tokens", True), ("cache_creation_tokens", 2**63),
])
async def test_a_usage_source_or_cache_count_that_cannot_be_is_refused(gateway: Gateway, field: str, value: Any) -> None:
    status, body = await call(gateway, "POST", "/interactions", json={"prompt": "p", field: value})
    assert (status, body["error"]["param"]) == (400, field)


async def test_a_record_without_usage_fields_reads_them_as_null(gateway: Gateway) -> None:
    created = await record(gateway, prompt="p", prompt_tokens=3)
    assert (created["usage_source"], created["cache_read_tokens"], created["cache_creation_tokens"]) == (None, None, None)


async def test_missing_id_is_404(gateway: Gateway) -> None:
    status, body = await call(gateway, "GET", "/interactions/no-such-id")
    assert status == 404
    assert body["error"]["code"] == "interaction_not_found"


async def test_filters_by_project_session_and_client(gateway: Gateway) -> None:
    await record(gateway, prompt="a", project="atmos", session_id="s1", client="alice")
    await record(gateway, prompt="b", project="atmos", session_id="s2", client="bob")
    await record(gateway, prompt="c", project="web", session_id="s1", client="alice")

    async def prompts_of(query: str) -> set[str]:
        status, body = await call(gateway, "GET", f"/interactions?{query}")
        assert status == 200
        ids = [item["id"] for item in body["data"]]
        return {(await call(gateway, "GET", f"/interactions/{i}"))[1]["prompt"] for i in ids}

    assert await prompts_of("project=atmos") == {"a", "b"}
    assert await prompts_of("session_id=s1") == {"a", "c"}
    assert await prompts_of("client=bob") == {"b"}
    assert await prompts_of("project=atmos&client=alice") == {"a"}
    assert await prompts_of("project=nothing") == set()


async def test_newest_first_with_limit(gateway: Gateway) -> None:
    for n, moment in enumerate(["2026-01-01 10:00:00", "2026-01-01 10:00:01", "2026-01-01 10:00:02"]):
        await record(gateway, prompt=f"p{n}", created_at=moment)
    status, body = await call(gateway, "GET", "/interactions?limit=2")
    assert status == 200
    assert [item["created_at"] for item in body["data"]] == ["2026-01-01 10:00:02", "2026-01-01 10:00:01"]


async def test_same_second_records_list_in_creation_order_reversed(gateway: Gateway) -> None:
    first = await record(gateway, prompt="first", created_at="2026-01-01 10:00:00")
    second = await record(gateway, prompt="second", created_at="2026-01-01 10:00:00")
    _, body = await call(gateway, "GET", "/interactions")
    assert [item["id"] for item in body["data"]] == [second["id"], first["id"]]


async def test_since_is_inclusive_on_the_cutoff(gateway: Gateway) -> None:
    await record(gateway, prompt="before", created_at="2026-03-01 11:59:59")
    await record(gateway, prompt="at", created_at="2026-03-01 12:00:00")
    await record(gateway, prompt="after", created_at="2026-03-01 12:00:01")
    for cutoff in ("2026-03-01 12:00:00", "2026-03-01T12:00:00Z", "2026-03-01T14:00:00+02:00"):
        status, body = await call(gateway, "GET", "/interactions", params={"since": cutoff})
        assert status == 200
        assert [item["created_at"] for item in body["data"]] == ["2026-03-01 12:00:01", "2026-03-01 12:00:00"], cutoff


async def test_bad_since_and_limit_are_400(gateway: Gateway) -> None:
    for query, param in (("since=yesterday-ish", "since"), ("limit=ten", "limit"), ("limit=-1", "limit")):
        status, body = await call(gateway, "GET", f"/interactions?{query}")
        assert (status, body["error"]["param"]) == (400, param)


async def test_limit_zero_is_empty(gateway: Gateway) -> None:
    await record(gateway, prompt="something")
    status, body = await call(gateway, "GET", "/interactions?limit=0")
    assert (status, body["data"]) == (200, [])


async def test_list_returns_summaries_without_the_full_response(gateway: Gateway) -> None:
    await record(gateway, **FULL_RECORD)
    _, body = await call(gateway, "GET", "/interactions")
    [summary] = body["data"]
    assert "response" not in summary and "prompt" not in summary and "context_pack" not in summary
    assert summary["memories_used"] == ["mem-1", "mem-2"] and summary["project"] == "atmos"


async def test_list_is_capped_at_500(gateway: Gateway) -> None:
    batch = [Interaction(id=new_interaction_id(), created_at="2026-01-01 00:00:00", prompt=f"p{n}") for n in range(501)]
    await gateway.app[STORE].insert_interactions(batch)
    _, body = await call(gateway, "GET", "/interactions?limit=10000")
    assert len(body["data"]) == 500
    _, body = await call(gateway, "GET", "/interactions")
    assert len(body["data"]) == 50


async def test_admin_key_guards_the_capture_api(aiohttp_server: Any, upstream: Any, tmp_path: Any) -> None:
    from proxy.app import create_app
    from tests.conftest import gateway_settings

    app = create_app(gateway_settings(upstream, tmp_path, admin_key="admin-secret-k3y"))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            for method, path in (("GET", "/interactions"), ("GET", "/interactions/x"), ("POST", "/interactions")):
                response = await session.request(method, base + path, headers=headers, json={"prompt": "p"})
                body = await response.json()
                assert response.status == 401 and body["error"]["code"] == "admin_key_required", (method, path)
        ok = await session.post(base + "/interactions", json={"prompt": "p"},
                                headers={"Authorization": "Bearer admin-secret-k3y"})
        assert ok.status == 201
