"""The real Claude Code CLI (`claude -p`, installed by `make agents`) through the gateway to a
fake Anthropic provider, offline: an allowed Bash call runs and its output comes back, a blocked
one never runs and Claude Code still ends cleanly; every turn is one session of the Claude Code
client; Claude Code's own system blocks reach the provider first and unchanged, the pack rides in
the messages, and its beta header passes as sent.

Skipped when node_modules/.bin/claude is absent, except under CI=true, where that fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.demo.fake_upstream import Reply, ToolCall
from tests.agents.claude_code import (
    ANSWER_PREFIX, CALLER_KEY, MEMORY, MODEL, Stack, assert_one_claude_code_session, is_the_task, latest_user_blocks,
    run_claude, scripted, start_stack, tool_result_text,
)
from tests.conftest import PROVIDER_KEY


def without_pack(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": [b for b in m["content"] if not str(b.get("text", "")).startswith("<ctxgate-context")]}
            if isinstance(m["content"], list) else m for m in messages]


def assert_system_first_and_unchanged(stack: Stack, blocked: frozenset[str] = frozenset()) -> None:
    """Every call reached the provider with Claude Code's system blocks as sent (its attribution
    block first) and its beta header as sent, its messages as sent but for the pack block, its
    tools as sent but for the blocked ones."""
    calls = stack.sniffer.messages_calls()
    assert len(stack.provider.received) == len(calls)
    for sent, received in zip(calls, stack.provider.received, strict=True):
        assert received.body["system"] == sent.body["system"]
        assert sent.body["system"][0]["text"].startswith("x-anthropic-billing-header")
        assert received.headers["anthropic-beta"] == sent.headers["anthropic-beta"]
        assert received.headers["anthropic-version"] == sent.headers["anthropic-version"]
        assert received.headers["x-api-key"] == PROVIDER_KEY and "Authorization" not in received.headers
        assert MEMORY not in orjson.dumps(received.body["system"]).decode()
        assert {k: v for k, v in received.body.items() if k not in ("messages", "model", "tools")} == \
            {k: v for k, v in sent.body.items() if k not in ("messages", "model", "tools")}
        assert received.body["model"] == "claude-fake" and sent.body["model"] == MODEL
        assert received.body["tools"] == [t for t in sent.body["tools"] if t["name"] not in blocked]
        assert without_pack(received.body["messages"]) == sent.body["messages"]
    first = stack.provider.received[0].body
    assert is_the_task(first)
    packed = [b for b in latest_user_blocks(first) if MEMORY in b.get("text", "")]
    assert len(packed) == 1 and packed[0]["text"].startswith("<ctxgate-context")


@pytest.mark.parametrize(("key_env", "key_header", "key_value"), [
    ("ANTHROPIC_API_KEY", "x-api-key", CALLER_KEY),
    ("ANTHROPIC_AUTH_TOKEN", "Authorization", f"Bearer {CALLER_KEY}"),
], ids=["api-key", "auth-token"])
async def test_an_allowed_bash_call_runs_and_its_output_comes_back(
    claude: Path, aiohttp_server: Any, tmp_path: Path, key_env: str, key_header: str, key_value: str
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow"}},
                              scripted(f"echo probe-ok-7311 && echo ok > {marker}"))
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work", key_env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert marker.read_text() == "ok\n"
    assert run.result["is_error"] is False and run.result["result"] == ANSWER_PREFIX + "probe-ok-7311"
    calls = stack.sniffer.messages_calls()
    assert all(c.headers.get(key_header) == key_value for c in calls)
    records = await stack.gateway.recorded(at_least=len(calls))
    task = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert len(task) == 2  # the tool call, then the answer to its result
    assert [(d["tool"], d["action"]) for d in task[0].tool_decisions] == [("Bash", "allow")]
    assert tool_result_text({"messages": task[1].prompt["messages"]}) is not None
    assert_one_claude_code_session(records, calls)
    assert all(r.status == "ok" for r in records)
    assert run.result["session_id"] == calls[0].headers["X-Claude-Code-Session-Id"]
    assert_system_first_and_unchanged(stack)


async def test_a_blocked_bash_call_never_runs_and_claude_code_ends_cleanly(
    claude: Path, aiohttp_server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow", "blocked_tools": ["Bash"]}},
                              scripted(f"echo ok > {marker}"))
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()
    assert run.result["is_error"] is False and run.result["stop_reason"] == "end_turn"
    assert "'Bash'" in run.result["result"] and "blocked" in run.result["result"]
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    task = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert len(task) == 1  # no tool result ever came back: the turn ended
    assert [(d["tool"], d["action"]) for d in task[0].tool_decisions] == [("Bash", "deny")]
    assert_one_claude_code_session(records, calls)
    assert all(r.status == "ok" for r in records)
    assert_system_first_and_unchanged(stack, blocked=frozenset({"Bash"}))  # not offered


async def test_a_sub_agents_calls_are_gated_and_recorded_in_the_session_under_its_agent_id(
    claude: Path, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Claude Code's Agent tool runs a sub-agent with tools of its own: its calls carry the main
    session's id and an agent id of their own, and the policy governs its tools as the main agent's."""
    marker = tmp_path / "work" / "sub-agent-ran"
    delegated = "Find the ledger probe's port in this repository"

    def respond(body: dict[str, Any]) -> Reply:
        sent = orjson.dumps(body["messages"]).decode()
        if delegated in orjson.dumps(body["messages"][0]).decode():  # the sub-agent's own conversation
            if tool_result_text(body) is None and "tool_use" not in sent:
                return Reply(text="Looking.", tool_calls=(ToolCall("Bash", orjson.dumps(
                    {"command": f"echo ok > {marker}", "description": "Look"}).decode(), id="toolu_look"),))
            return Reply(text="The port is 7311.")
        if tool_result_text(body) is not None:
            return Reply(text=ANSWER_PREFIX + "done")
        if is_the_task(body):
            return Reply(text="Delegating.", tool_calls=(ToolCall("Agent", orjson.dumps(
                {"description": "Find the port", "prompt": delegated, "subagent_type": "general-purpose"}).decode(),
                id="toolu_delegate"),))
        return Reply(text="ok")

    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow", "blocked_tools": ["Bash"]}},
                              respond)
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work", allowed_tools="Bash,Agent")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()  # the sub-agent's Bash was refused like the main agent's would be
    assert run.result["result"] == ANSWER_PREFIX + "done"
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    assert_one_claude_code_session(records, calls)
    by_agent = {r.agent_id for r in records}
    sub_agent_ids = {c.headers.get("x-claude-code-agent-id") for c in calls} - {None}
    assert len(sub_agent_ids) == 1 and by_agent == {None, *sub_agent_ids}
    sub_agent = [r for r in records if r.agent_id is not None]
    assert all(delegated in orjson.dumps(r.prompt["messages"][0]).decode() for r in sub_agent)
    assert [(d["tool"], d["action"]) for r in sub_agent for d in r.tool_decisions] == [("Bash", "deny")]
    assert [(d["tool"], d["action"]) for r in records if r.agent_id is None for d in r.tool_decisions] == \
        [("Agent", "allow")]


async def test_claude_codes_gateway_model_discovery_finds_the_gateways_claude_models(
    claude: Path, aiohttp_server: Any, tmp_path: Path
) -> None:
    """With CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY, Claude Code asks `GET /v1/models?limit=1000`
    at start and offers the models whose ids start with `claude` in its model picker (it skips
    the call when non-essential traffic is off)."""
    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow"}}, scripted("echo ok"))
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work", env={
        "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    [listing] = [s for s in stack.sniffer.seen if s.method == "GET" and s.path.startswith("/v1/models")]
    assert listing.headers["anthropic-version"] and listing.headers["x-api-key"] == CALLER_KEY
    cached = orjson.loads((tmp_path / "home" / ".claude" / "cache" / "gateway-models.json").read_bytes())
    assert cached["baseUrl"] == stack.gateway.url
    assert [(m["id"], m.get("display_name")) for m in cached["models"]] == [(MODEL, MODEL)]
