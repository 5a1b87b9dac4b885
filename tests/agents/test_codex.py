"""The real Codex CLI (`codex exec`, installed by `make agents`) through the gateway to a fake
Responses API provider, offline: an allowed shell call runs and its output comes back, a blocked
one never runs and Codex still ends cleanly, an asked one runs once a person approves it; the pack
reaches the provider after Codex's developer messages, which arrive unchanged; every turn is one
session of the Codex client.

Skipped when node_modules/.bin/codex is absent, except under CI=true, where that fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from proxy.demo.fake_upstream import FakeUpstream
from tests.agents.codex import (
    ANSWER_PREFIX, CALLER_KEY, MEMORY, MODEL, PROMPT, Run, function_output, run_codex, start_gateway,
)
from tests.conftest import PROVIDER_KEY, Gateway
from tests.proxy.test_tool_policy import ADMIN_KEY, approve_when_asked


def assert_one_codex_session(run: Run, records: list[Any]) -> None:
    """Every turn in the session Codex named in its `session-id` header: its thread's id."""
    [thread] = [event["thread_id"] for event in run.events if event.get("type") == "thread.started"]
    assert [record.session_id for record in records] == [thread] * len(records)
    assert all(record.client.startswith("codex_exec/") and record.wire == "openai_responses"
               and record.model == MODEL for record in records), [(r.client, r.wire) for r in records]


def assert_pack_after_the_developer_messages(gateway: Gateway) -> None:
    """Codex's developer messages reach the provider first and unchanged; the pack rides at the
    head of the latest user message; its key is the route's, never the caller's."""
    for call in gateway.upstream.received:
        assert call.headers["Authorization"] == f"Bearer {PROVIDER_KEY}" and CALLER_KEY not in str(call.headers)
        items = call.body["input"]
        lead = [item for item in items[:2] if item.get("role") == "developer"]
        assert len(lead) == 2 and lead[0]["content"][0]["text"].startswith("You are a coding agent")
        latest = max(i for i, item in enumerate(items) if item.get("role") == "user")
        assert items[latest]["content"][0]["text"].startswith("<ctxgate-context")
        assert MEMORY in items[latest]["content"][0]["text"]
        assert MEMORY not in orjson.dumps(items[:latest]).decode()
        assert PROMPT in orjson.dumps(items[latest]).decode()


async def test_an_allowed_shell_call_runs_and_its_output_comes_back(
    codex: Path, aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_server, upstream, tmp_path, {"default": {"mode": "allow"}},
                                  "echo probe-ok-7311 && touch ran.marker")
    run = await run_codex(codex, gateway, tmp_path / "home", tmp_path / "work")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "work" / "ran.marker").exists()
    assert len(upstream.received) == 2
    assert "probe-ok-7311" in (function_output(upstream.received[1].body) or "")
    assert run.last_message.startswith(ANSWER_PREFIX) and "probe-ok-7311" in run.last_message
    records = await gateway.recorded(2)
    assert [d["action"] for d in records[0].tool_decisions] == ["allow"]
    assert records[0].tool_decisions[0]["tool"] == "exec_command"
    assert_one_codex_session(run, records)
    assert_pack_after_the_developer_messages(gateway)


async def test_a_blocked_shell_call_never_runs_and_codex_ends_cleanly(
    codex: Path, aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_server, upstream, tmp_path,
                                  {"default": {"mode": "allow", "blocked_tools": ["exec_command"]}}, "touch ran.marker")
    run = await run_codex(codex, gateway, tmp_path / "home", tmp_path / "work")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (tmp_path / "work" / "ran.marker").exists()
    assert len(upstream.received) == 1  # nothing ran, so nothing went back
    offered = [tool.get("name") for tool in upstream.received[0].body["tools"]]
    assert "exec_command" not in offered and "write_stdin" in offered
    assert "ctxgate refused the call to 'exec_command'" in run.last_message
    [record] = await gateway.recorded()
    assert [(d["tool"], d["action"], d["rule"]) for d in record.tool_decisions] == [
        ("exec_command", "deny", "blocked_tools[0]")]
    assert_one_codex_session(run, [record])


async def test_an_asked_shell_call_runs_after_a_person_approves_it(
    codex: Path, aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_server, upstream, tmp_path,
                                  {"default": {"mode": "allow", "restricted_tools": ["exec_command"]}},
                                  "echo approved-7311 && touch ran.marker", admin_key=ADMIN_KEY)
    run, approval = await asyncio.gather(run_codex(codex, gateway, tmp_path / "home", tmp_path / "work"),
                                         approve_when_asked(gateway))
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "work" / "ran.marker").exists()
    assert "approved-7311" in run.last_message
    assert approval["tool"] == "exec_command" and "ran.marker" in approval["arguments"]
    records = await gateway.recorded(2)
    assert [(d["decided_by"], d["action"]) for d in records[0].tool_decisions] == [("human", "allow")]
    assert_one_codex_session(run, records)
