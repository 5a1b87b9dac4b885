"""The published contract: `GET /openapi.json` names every route the gateway serves, and the
gateway keeps it: schemathesis sends generated requests (valid and invalid) to each management
operation and checks there is no 5xx and each answer conforms (status, content type, schema)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from capture.approvals import Approval
from capture.records import format_timestamp
from proxy.appkeys import STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, Gateway, make_gateway

ADMIN_KEY = "ctxgate-admin-key-5e1d0a"
# Proxied upstream: its answers are the provider's, not the gateway's to describe.
NOT_FUZZED = {"POST /v1/chat/completions", "POST /p/{project}/v1/chat/completions", "POST /v1/messages",
              "POST /p/{project}/v1/messages", "POST /v1/messages/count_tokens",
              "POST /p/{project}/v1/messages/count_tokens"}
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


async def fetch_spec(gateway: Gateway) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(gateway.url + "/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        spec: dict[str, Any] = await response.json()
        return spec


def operations(schema: Any) -> list[Any]:
    """The schema's operations; schemathesis reports one it cannot read as an error value."""
    found = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in found), [r for r in found if not isinstance(r, Ok)]
    return [result.ok() for result in found]


def sample_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


async def test_spec_is_valid_openapi_and_names_every_route(gateway: Gateway) -> None:
    spec = await fetch_spec(gateway)
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.1 meta-schema
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    # HEAD: aiohttp's, per GET. /ui: the operator's HTML pages, not the management API.
    registered = [r for r in gateway.app.router.routes() if r.method != "HEAD"
                  and not (r.resource is not None and r.resource.canonical.startswith("/ui"))]

    def serves(route: Any, method: str, path: str) -> bool:
        info = route.resource.get_info()
        sample = sample_path(path)
        return route.method == method and (info.get("path") == path or bool(
            "pattern" in info and info["pattern"].fullmatch(sample)))

    undocumented = [f"{r.method} {r.resource.canonical if r.resource else r}" for r in registered
                    if not any(serves(r, method, path) for method, path in documented)]
    unserved = [f"{method} {path}" for method, path in documented
                if not any(serves(r, method, path) for r in registered)]
    assert undocumented == [], "routes missing from proxy/admin/openapi.py"
    assert unserved == [], "documented operations the app does not serve"


async def test_spec_is_served_without_a_key_when_keys_are_configured(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, admin_key=ADMIN_KEY)
    spec = await fetch_spec(gateway)
    assert spec["openapi"].startswith("3.1")
    assert spec["paths"]["/approvals"]["get"]["parameters"][0]["schema"]["enum"] == [
        "pending", "approved", "denied", "expired"]


async def seed(gateway: Gateway, headers: dict[str, str]) -> dict[str, str]:
    """Records of every kind, so lists are not empty and their ids can be asked for."""
    upstream = gateway.upstream
    upstream.push(Reply(text="10.0.0.0/16"), Reply(tool_calls=(ToolCall("file_read", '{"path": "/tmp/x"}'),)))
    client = gateway.client()
    for question in ("What is the prod VPC CIDR?", "Read /tmp/x"):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}],
            tools=[{"type": "function", "function": {"name": "file_read", "parameters": {"type": "object"}}}],
            extra_headers={"X-Ctxgate-Session": "sess-seed", "X-Ctxgate-Project": "atmos"},
        )
    await gateway.recorded(2)
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(gateway.url + "/interactions", json={
            "prompt": "recorded by a client", "project": "atmos", "session_id": "sess-client", "prompt_tokens": 3,
        }) as response:
            assert response.status == 201
            interaction_id = (await response.json())["id"]
        async with session.post(gateway.url + "/memories", json={
            "project": "atmos", "content": "The prod VPC CIDR is 10.0.0.0/16"}) as response:
            assert response.status == 201
            memory_id = (await response.json())["id"]
        async with session.post(gateway.url + "/ingest", json={"project": "atmos", "documents": [
            {"path": "docs/vpc.md", "text": "# VPC\n\nThe prod VPC CIDR is 10.0.0.0/16."}]}) as response:
            assert response.status == 200
    now = datetime.now(UTC)
    for approval_id in ("appr-seed-1", "appr-seed-2"):
        await gateway.app[STORE].insert_approval(Approval(
            id=approval_id, created_at=format_timestamp(now), expires_at=format_timestamp(now + timedelta(hours=1)),
            project="atmos", tool="file_edit", call_id="call_1", arguments='{"path": "/etc/hosts"}'))
    return {"interaction_id": interaction_id, "memory_id": memory_id, "session_id": "sess-seed",
            "approval_id": "appr-seed-1"}


def explicit_cases(schema: Any, ids: dict[str, str]) -> list[Any]:
    """The operations on records that exist: the fuzzer rarely guesses an id."""
    by_label = {operation.label: operation for operation in operations(schema)}
    return [
        by_label["GET /interactions/{interaction_id}"].Case(path_parameters={"interaction_id": ids["interaction_id"]}),
        by_label["GET /sessions/{session_id}"].Case(path_parameters={"session_id": ids["session_id"]}),
        by_label["GET /context"].Case(query={"project": "atmos", "q": "prod VPC CIDR"}),
        by_label["GET /approvals/{approval_id}"].Case(path_parameters={"approval_id": ids["approval_id"]}),
        by_label["POST /approvals/{approval_id}/approve"].Case(
            path_parameters={"approval_id": ids["approval_id"]}, body={"always": True}, media_type="application/json"),
        by_label["POST /approvals/{approval_id}/approve"].Case(path_parameters={"approval_id": ids["approval_id"]}),
        by_label["POST /approvals/{approval_id}/deny"].Case(path_parameters={"approval_id": ids["approval_id"]}),
        by_label["POST /approvals/{approval_id}/deny"].Case(path_parameters={"approval_id": "appr-seed-2"}),
        by_label["DELETE /memories/{memory_id}"].Case(path_parameters={"memory_id": ids["memory_id"]}),
        by_label["DELETE /memories/{memory_id}"].Case(path_parameters={"memory_id": ids["memory_id"]}),
    ]


def describe(case: Any, response: Any, group: FailureGroup) -> str:
    titles = "; ".join(sorted({f"{failure.title}: {failure.message[:300]}" for failure in group.exceptions}))
    request = response.request
    body = request.body[:300] if isinstance(request.body, bytes) else request.body
    return (f"{case.operation.label}: {titles}\n    {request.method} {request.url[:300]} body={body!r}\n"
            f"    -> {response.status_code} {response.text[:300]!r}")


def fuzz(spec: dict[str, Any], base_url: str, headers: dict[str, str], ids: dict[str, str]) -> list[str]:
    """Every failing exchange, described; runs in a thread (requests is blocking, the gateway
    serves on the test's event loop)."""
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    http = requests.Session()

    def check(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, session=http, timeout=10)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            failures.append(describe(case, response, group))

    for case in explicit_cases(schema, ids):
        check(case)
    for operation in operations(schema):
        if operation.label in NOT_FUZZED:
            continue
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            check(case)

        run()
    http.close()
    return failures


@pytest.mark.parametrize(("admin_key", "is_key_sent"), [(None, False), (ADMIN_KEY, True), (ADMIN_KEY, False)],
                         ids=["open", "admin_key", "admin_key_not_sent"])
async def test_gateway_keeps_its_published_contract(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, admin_key: str | None, is_key_sent: bool
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, admin_key=admin_key)
    admin = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    ids = await seed(gateway, admin)
    spec = await fetch_spec(gateway)
    failures = await asyncio.to_thread(fuzz, spec, gateway.url, admin if is_key_sent else {}, ids)
    assert failures == [], "\n".join(failures)
