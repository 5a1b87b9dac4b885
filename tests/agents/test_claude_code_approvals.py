"""The real Claude Code CLI (`claude -p`) through the gateway when the policy asks about Bash: the
call is held until a person answers with `ctxgate approvals approve|deny ID` (another process,
the same store), then it runs or Claude Code reads the refusal and ends cleanly.

A stream the provider cuts inside the call: the gateway never releases the partial call and
ends the stream with an `error` event; Claude Code 2.1.197, having had no whole block yet,
falls back to sending the same request once without streaming (its non-streaming fallback,
which CLAUDE_CODE_MAX_RETRIES=0 does not turn off; CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK
does). That retry is gated as the stream would have been: a blocked call is refused, an asked
one asked once. When a held retry outlives Claude Code's request timeout (API_TIMEOUT_MS) it
re-sends it, and the re-sent call joins the pending approval: the person still sees one.
Cut after the call's block was whole, the call was asked and released on the stream, and
Claude Code runs it without re-sending anything.

Skipped when node_modules/.bin/claude is absent, except under CI=true, where that fails."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, expect

from proxy.appkeys import APPROVALS, SETTINGS
from proxy.demo.fake_anthropic import FakeAnthropic
from proxy.demo.fake_upstream import Reply
from tests.agents.claude_code import (
    ANSWER_PREFIX, PROMPT, Responder, Stack, assert_one_claude_code_session, claude_running, is_the_task, scripted,
    start_stack, tool_result_text, until,
)
from tests.conftest import Gateway
from tests.ui.conftest import browser, logged_in, screenshot  # noqa: F401 (browser: a fixture, used by name)

CTXGATE = Path(sys.executable).with_name("ctxgate")  # the console script of this venv
PERSON = "carol"
PROBE = "probe-ok-7311"
ASKED = {"default": {"mode": "allow", "restricted_tools": ["Bash"], "approval_timeout_s": 60}}
BLOCKED = {"default": {"mode": "allow", "blocked_tools": ["Bash"]}}
DECIDED = {"approve": "approved", "deny": "denied"}  # a verdict, and the status it leaves
HELD_RETRY_TIMEOUT_MS = 3000  # Claude Code's request timeout when a test wants a held retry re-sent


def probe(marker: Path) -> str:
    """The command the task runs: it prints PROBE and appends a line to `marker`, so a second
    run would show."""
    return f"echo {PROBE} && echo ok >> {marker}"


async def ctxgate(*argv: str) -> str:
    """`ctxgate` in a process of its own, as a person at a terminal runs it; its output."""
    process = await asyncio.create_subprocess_exec(
        str(CTXGATE), *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, f"ctxgate {' '.join(argv)}: exit {process.returncode}: {stderr.decode()}"
    return stdout.decode()


async def approvals(gateway: Gateway, status: str = "pending") -> list[dict[str, Any]]:
    """`ctxgate approvals list --json` on the gateway's store."""
    listed = await ctxgate("approvals", "list", "--status", status, "--json", "--db", gateway.app[SETTINGS].store_url)
    return [orjson.loads(line) for line in listed.splitlines()]


async def answer(gateway: Gateway, verdict: str) -> dict[str, Any]:
    """What the person does: list what waits (exactly one approval, of Bash), then
    `ctxgate approvals approve|deny ID`. The approval as it was listed."""
    [pending] = await approvals(gateway)
    assert pending["tool"] == "Bash" and pending["status"] == "pending", pending
    said = await ctxgate("approvals", verdict, pending["id"], "--by", PERSON, "--db", gateway.app[SETTINGS].store_url)
    assert said.startswith(f"{DECIDED[verdict]} Bash for project default"), said
    return pending


def cut_first_stream(provider: FakeAnthropic, where: str) -> None:
    """The provider drops the connection in the first streamed answer that carries a tool call:
    `inside_call` after the tool_use block's start and first delta, `after_call` once the block
    is whole (its stop sent, the message's end never)."""
    answer_to: Responder | None = provider.respond
    assert answer_to is not None
    cut: list[int] = []

    def respond(body: dict[str, Any]) -> Reply:
        reply = answer_to(body)
        if cut or not (body.get("stream") and reply.tool_calls):
            return reply
        events = provider.events_of(body, reply)
        call_at = next(n for n, e in enumerate(events) if e["type"] == "content_block_start"
                       and e["content_block"]["type"] == "tool_use")
        at = call_at + 2 if where == "inside_call" else \
            next(n for n, e in enumerate(events) if e["type"] == "message_delta")
        cut.append(at)
        return replace(reply, reset_after_chunks=at)
    provider.respond = respond


def bodies(stack: Stack) -> list[dict[str, Any]]:
    """What the provider was sent for the task's first turn (the task, no tool result yet)."""
    return [r.body for r in stack.provider.received if is_the_task(r.body) and tool_result_text(r.body) is None]


def assert_resent_without_streaming(stack: Stack, resent: int = 1) -> None:
    """The task's first turn reached the provider streamed, then `resent` more times: the same
    request as Claude Code sent it, but for `stream: true`, which the retry leaves out."""
    first, *retries = bodies(stack)
    assert first["stream"] is True
    assert len(retries) == resent and all("stream" not in retry for retry in retries)
    assert all(retry == {k: v for k, v in first.items() if k != "stream"} for retry in retries)
    sent = [s.body for s in stack.sniffer.messages_calls() if is_the_task(s.body) and tool_result_text(s.body) is None]
    assert [("stream" in body) for body in sent] == [True] + [False] * resent


def decisions(record: Any) -> list[tuple[str, str, str, str | None]]:
    return [(d["tool"], d["action"], d["decided_by"], d["approval_id"]) for d in record.tool_decisions]


@pytest.mark.parametrize("verdict", ["approve", "deny"])
async def test_an_asked_bash_call_waits_for_the_person_and_their_ctxgate_answer_decides_it(
    claude: Path, aiohttp_server: Any, tmp_path: Path, verdict: str
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, ASKED, scripted(probe(marker)))
    book = stack.gateway.app[APPROVALS]
    async with claude_running(claude, stack.gateway, tmp_path) as running:
        await until(book.wait_requested(1), running)
        assert not marker.exists()  # held: Claude Code has not been given the call
        pending = await answer(stack.gateway, verdict)
        run = await running
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.result["is_error"] is False
    if verdict == "approve":
        assert marker.read_text() == "ok\n"
        assert run.result["result"] == ANSWER_PREFIX + PROBE
    else:
        assert not marker.exists()
        assert run.result["stop_reason"] == "end_turn"
        refusal = run.result["result"]
        assert "ctxgate refused the call to 'Bash'" in refusal and "a person denied it" in refusal
    assert orjson.loads(pending["arguments"])["command"] == probe(marker)
    [decided] = await approvals(stack.gateway, "all")
    assert (decided["id"], decided["status"], decided["decided_by"]) == (pending["id"], DECIDED[verdict], PERSON)
    assert (book.requested_total, book.joined_total) == (1, 0)
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    task = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert len(task) == (2 if verdict == "approve" else 1)  # the held call, then the answer to its result
    action = "allow" if verdict == "approve" else "deny"
    assert decisions(task[0]) == [("Bash", action, "human", pending["id"])]
    assert task[0].tool_decisions[0]["policy_action"] == "ask"
    assert task[0].tool_decisions[0]["rule"] == "restricted_tools[0]"
    assert all(r.status == "ok" for r in records)
    assert_one_claude_code_session(records, calls)


@pytest.mark.parametrize("env", [{}, {"CLAUDE_CODE_MAX_RETRIES": "0"}], ids=["default", "max-retries-0"])
async def test_a_stream_cut_inside_a_blocked_call_is_resent_without_streaming_and_refused_there(
    claude: Path, aiohttp_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, BLOCKED, scripted(probe(marker), preamble=None))
    cut_first_stream(stack.provider, "inside_call")
    async with claude_running(claude, stack.gateway, tmp_path, env) as running:
        run = await running
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()
    assert run.result["is_error"] is False and run.result["stop_reason"] == "end_turn"
    assert "ctxgate refused the call to 'Bash'" in run.result["result"] and "blocked" in run.result["result"]
    assert_resent_without_streaming(stack)
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    cut, retried = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert (cut.status, decisions(cut)) == ("upstream_error", [])  # the partial call never decided nor sent
    assert (retried.status, decisions(retried)) == ("ok", [("Bash", "deny", "policy", None)])
    assert stack.gateway.app[APPROVALS].requested_total == 0
    assert_one_claude_code_session(records, calls)


@pytest.mark.parametrize("held_past_timeout", [False, True], ids=["answered-in-time", "resent-while-held"])
async def test_a_stream_cut_inside_an_asked_call_asks_once_on_the_retry_and_the_approval_runs_it_once(
    claude: Path, aiohttp_server: Any, tmp_path: Path, held_past_timeout: bool
) -> None:
    """`resent-while-held`: Claude Code gives up on the held retry after its request timeout and
    sends it again; that call joins the pending approval, and the one answer releases it."""
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, ASKED, scripted(probe(marker), preamble=None))
    cut_first_stream(stack.provider, "inside_call")
    book = stack.gateway.app[APPROVALS]
    env = {"API_TIMEOUT_MS": str(HELD_RETRY_TIMEOUT_MS)} if held_past_timeout else {}
    async with claude_running(claude, stack.gateway, tmp_path, env) as running:
        await until(book.wait_requested(1, joined=1 if held_past_timeout else 0), running)
        assert not marker.exists()
        pending = await answer(stack.gateway, "approve")
        run = await running
    assert run.returncode == 0, run.stderr[-2000:]
    assert marker.read_text() == "ok\n"
    assert run.result["is_error"] is False and run.result["result"] == ANSWER_PREFIX + PROBE
    assert book.requested_total == 1 and (book.joined_total >= 1 if held_past_timeout else book.joined_total == 0)
    assert await approvals(stack.gateway) == []
    assert_resent_without_streaming(stack, resent=1 + book.joined_total)
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    cut, *held, released, _answer = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert (cut.status, decisions(cut)) == ("upstream_error", [])
    assert len(held) == book.joined_total  # each retry Claude Code gave up on while it was held
    assert all(r.status == "client_disconnected" and [d["decided_by"] for d in r.tool_decisions] == ["client_gone"]
               for r in held)
    assert (released.status, decisions(released)) == ("ok", [("Bash", "allow", "human", pending["id"])])
    assert_one_claude_code_session(records, calls)


async def test_a_stream_cut_after_an_asked_call_was_whole_runs_it_once_without_a_retry(
    claude: Path, aiohttp_server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, ASKED, scripted(probe(marker), preamble=None))
    cut_first_stream(stack.provider, "after_call")
    book = stack.gateway.app[APPROVALS]
    async with claude_running(claude, stack.gateway, tmp_path) as running:
        await until(book.wait_requested(1), running)
        pending = await answer(stack.gateway, "approve")
        run = await running
    assert run.returncode == 0, run.stderr[-2000:]
    assert marker.read_text() == "ok\n"
    assert run.result["is_error"] is False and run.result["result"] == ANSWER_PREFIX + PROBE
    assert (book.requested_total, book.joined_total) == (1, 0)
    assert_resent_without_streaming(stack, resent=0)
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    cut, answered = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert (cut.status, decisions(cut)) == ("upstream_error", [("Bash", "allow", "human", pending["id"])])
    assert answered.status == "ok" and tool_result_text({"messages": answered.prompt["messages"]}) is not None
    assert_one_claude_code_session(records, calls)


ADMIN_KEY = "admin-key-of-the-person-at-the-page"


async def test_a_bash_call_claude_code_waits_on_is_approved_on_the_page_and_runs(
    claude: Path, aiohttp_server: Any, tmp_path: Path, browser: Browser
) -> None:
    """The person in the loop, end to end: Claude Code's Bash call held on the gateway, shown on
    the operator page in Chromium with the command and the task, approved by a click."""
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, ASKED, scripted(probe(marker)), admin_key=ADMIN_KEY)
    book = stack.gateway.app[APPROVALS]
    page = await logged_in(browser, stack.gateway.url, ADMIN_KEY)
    async with claude_running(claude, stack.gateway, tmp_path) as running:
        await until(book.wait_requested(1), running)
        card = page.locator("article.approval")
        await expect(card).to_have_count(1, timeout=10_000)
        await expect(card.locator("h2")).to_have_text("Bash")
        await expect(card.locator("pre.arguments")).to_contain_text(probe(marker))
        await expect(card.locator(".facts")).to_contain_text("claude-cli")  # the client, from Claude Code's User-Agent
        await expect(card.locator(".turns")).to_contain_text(PROMPT)  # the task it was given, among the last turns
        await screenshot(page, "approvals-claude-code")
        assert not marker.exists()  # held: Claude Code has not been given the call
        await card.get_by_role("button", name="Approve").click()
        run = await running
    assert run.returncode == 0, run.stderr[-2000:]
    assert marker.read_text() == "ok\n" and run.result["result"] == ANSWER_PREFIX + PROBE
    [decided] = await approvals(stack.gateway, "all")
    assert (decided["status"], decided["decided_by"]) == ("approved", "ui:admin")
