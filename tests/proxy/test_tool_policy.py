"""The tool policy, enforced on what the real openai SDK receives, streamed and not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from capture.approvals import ApprovalStatus
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, Gateway, make_gateway


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOLS = [tool(n) for n in ("atmos_describe_component", "atmos_terraform_destroy", "file_edit", "file_read")]
POLICY = {
    "default": {
        "mode": "prompt",
        "allowed_tools": ["atmos_describe_*", "file_read"],
        "restricted_tools": ["file_edit"],
        "blocked_tools": ["atmos_terraform_destroy"],
        "argument_rules": [{"tool": "file_edit", "argument": "path", "matches": "/etc/*", "action": "deny"}],
        "approval_timeout_s": 30,
    },
    "projects": {"quick": {"approval_timeout_s": 0.3}},
}
DESCRIBE = ToolCall("atmos_describe_component", '{"component": "vpc", "stack": "prod-use1"}', id="call_ok")
DESTROY = ToolCall("atmos_terraform_destroy", '{"component": "vpc", "stack": "prod-use1", "auto_approve": true}',
                   id="call_bad")
EDIT = ToolCall("file_edit", '{"path": "/srv/app.conf", "content": "x=1"}', id="call_edit")


ADMIN_KEY = "admin-key-for-approvals"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def guarded(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str) -> Gateway:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, transport=transport, policy=parse_policy(POLICY),
                                 admin_key=ADMIN_KEY)
    gateway.app[APPROVALS].keepalive_every_s = 0.05
    return gateway


async def ask(gateway: Gateway, *, stream: bool, project: str = "default", tools: list[Any] = TOOLS) -> Any:
    """One call through the SDK; returns the final completion as the SDK assembles it."""
    client = gateway.client()
    options: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "do it"}], "tools": tools,
                               "extra_headers": {"X-Ctxgate-Project": project}}
    if not stream:
        return await client.chat.completions.create(**options)
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    async for chunk in await client.chat.completions.create(**options, stream=True):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def calls_of(completion: Any) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in completion.choices[0].message.tool_calls or []]


async def test_blocked_tools_are_not_offered_to_the_model(guarded: Gateway) -> None:
    await ask(guarded, stream=False)
    offered = [t["function"]["name"] for t in guarded.upstream.received[-1].body["tools"]]
    assert offered == ["atmos_describe_component", "file_edit", "file_read"]


async def test_tool_choice_forcing_a_blocked_tool_is_400(guarded: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await guarded.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "atmos_terraform_destroy"}},
        )
    assert "atmos_terraform_destroy" in caught.value.message and guarded.upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
async def test_blocked_call_never_reaches_the_client_and_the_refusal_is_said(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(DESTROY,), fragment=2))
    completion = await ask(guarded, stream=stream)
    choice = completion.choices[0]
    assert calls_of(completion) == []
    assert choice.finish_reason == "stop"
    assert "atmos_terraform_destroy" in choice.message.content and "blocked_tools[0]" in choice.message.content
    [stored] = await guarded.recorded()
    [decision] = stored.tool_decisions
    assert (decision["tool"], decision["action"], decision["rule"], decision["decided_by"]) == (
        "atmos_terraform_destroy", "deny", "blocked_tools[0]", "policy")
    assert decision["arguments"] == DESTROY.arguments


@pytest.mark.parametrize("stream", [False, True])
async def test_allowed_call_beside_a_blocked_one_arrives_alone(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(DESTROY, DESCRIBE), fragment=3))
    completion = await ask(guarded, stream=stream)
    assert calls_of(completion) == [(DESCRIBE.name, DESCRIBE.arguments)]
    assert completion.choices[0].finish_reason == "tool_calls"
    [stored] = await guarded.recorded()
    assert [(d["tool"], d["action"]) for d in stored.tool_decisions] == [(DESTROY.name, "deny"), (DESCRIBE.name, "allow")]
    assert stored.response["tool_calls"][0]["function"]["name"] == DESCRIBE.name  # what the client got


async def test_no_fragment_of_a_denied_call_is_ever_streamed(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(text="Sure.", tool_calls=(DESCRIBE, DESTROY), fragment=1))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            guarded.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "stream": True},
        )
        raw = (await response.read()).decode()
    assert "atmos_terraform_destroy" not in raw.split("ctxgate refused")[0]  # only named in the refusal text
    assert "auto_approve" not in raw
    assert "Sure." in "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                              for line in raw.splitlines() if line.startswith("data: {") and '"content"' in line)


async def test_undeclared_tool_is_refused(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(ToolCall("file_read", "{}", id="c1"),)))
    completion = await ask(guarded, stream=False, tools=[tool("atmos_describe_component")])
    assert calls_of(completion) == []
    [stored] = await guarded.recorded()
    assert stored.tool_decisions[0]["rule"] == "undeclared"


@pytest.mark.parametrize("trick", ["File_read", "file_read ", " file_read", "ｆile_read", "file\u200bread", "file_reaD"])
@pytest.mark.parametrize("stream", [False, True])
async def test_names_are_compared_exactly(guarded: Gateway, trick: str, stream: bool) -> None:
    # file_read is declared and allowed; a look-alike the request never declared is refused.
    guarded.upstream.push(Reply(tool_calls=(ToolCall(trick, "{}", id="c1"),)))
    completion = await ask(guarded, stream=stream)
    assert calls_of(completion) == []
    [stored] = await guarded.recorded()
    assert stored.tool_decisions[0]["rule"] == "undeclared"


@pytest.mark.parametrize("arguments", [
    '{"path": "/etc/passwd"}', '{"path": "etc/passwd"}', '{"path": " /etc/passwd"}', '{"path": ["/tmp/x", "/etc/passwd"]}',
    '{"path": "/proc/self/root/etc/passwd"}', '{"Path": "/etc/passwd"}', '{"path": "/tmp/x", "path": "/etc/passwd"}',
])
@pytest.mark.parametrize("stream", [False, True])
async def test_argument_rule_denies_by_path_in_any_spelling(guarded: Gateway, arguments: str, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(ToolCall("file_edit", arguments, id="c1"),), fragment=5))
    completion = await ask(guarded, stream=stream)
    assert calls_of(completion) == [] and "argument_rules[0]" in completion.choices[0].message.content
    [stored] = await guarded.recorded()
    assert (stored.tool_decisions[0]["rule"], stored.tool_decisions[0]["arguments"]) == ("argument_rules[0]", arguments)


async def approve_when_asked(gateway: Gateway, count: int = 1, *, always: bool = False, verdict: str = "approve") -> dict[str, Any]:
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(count), 10)
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        pending = await (await session.get(gateway.url + "/approvals?status=pending")).json()
        [approval] = pending["data"]
        decided = await session.post(gateway.url + f"/approvals/{approval['id']}/{verdict}",
                                     json={"always": always}, headers={"X-Ctxgate-Client": "alice"})
        assert decided.status == 200
        result: dict[str, Any] = await decided.json()
        return result


@pytest.mark.parametrize("stream", [False, True])
async def test_asked_call_approved_through_the_api_reaches_the_client(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(text="Editing.", tool_calls=(EDIT,), fragment=4))
    completion, approval = await asyncio.gather(ask(guarded, stream=stream), approve_when_asked(guarded))
    assert calls_of(completion) == [(EDIT.name, EDIT.arguments)]
    assert approval["status"] == "approved" and approval["decided_by"] == "alice" and approval["tool"] == "file_edit"
    [stored] = await guarded.recorded()
    [decision] = stored.tool_decisions
    assert (decision["action"], decision["policy_action"], decision["decided_by"], decision["approval_id"]) == (
        "allow", "ask", "human", approval["id"])
    assert decision["wait_ms"] > 0


async def test_keepalive_comments_flow_while_waiting_and_do_not_break_the_stream(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            guarded.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "stream": True},
        )
        seen = b""
        while b": keep-alive" not in seen:  # the gateway is waiting for a person, and says so
            seen += await response.content.readuntil(b"\n\n")
        await approve_when_asked(guarded)
        seen += await response.read()
    events = [e for e in seen.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    sent = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    calls = [c for chunk in sent for choice in chunk["choices"] for c in choice["delta"].get("tool_calls", [])]
    assert [c["function"]["arguments"] for c in calls] == [EDIT.arguments]


async def test_asked_call_denied_by_a_person_is_refused(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    completion, _ = await asyncio.gather(ask(guarded, stream=True), approve_when_asked(guarded, verdict="deny"))
    assert calls_of(completion) == [] and "a person denied it" in completion.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
async def test_asked_call_that_times_out_is_refused(guarded: Gateway, stream: bool) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    completion = await ask(guarded, stream=stream, project="quick")  # approval_timeout_s: 0.3
    assert calls_of(completion) == []
    [stored] = await guarded.recorded()
    assert stored.tool_decisions[0]["decided_by"] == "timeout"
    [approval] = await guarded.app[STORE].list_approvals(ApprovalStatus.EXPIRED)
    assert approval.tool == "file_edit"


async def test_approval_from_the_cli_in_another_process_reaches_the_client(guarded: Gateway) -> None:
    from proxy.appkeys import SETTINGS
    from proxy.cli.commands import main

    guarded.upstream.push(Reply(tool_calls=(EDIT,)))

    async def approve_with_cli() -> int:
        await asyncio.wait_for(guarded.app[APPROVALS].wait_requested(1), 10)
        [pending] = await guarded.app[STORE].list_approvals(ApprovalStatus.PENDING)
        db = guarded.app[SETTINGS].store_url
        return await asyncio.to_thread(main, ["approvals", "approve", pending.id, "--by", "bob", "--db", db])

    completion, exit_code = await asyncio.gather(ask(guarded, stream=True), approve_with_cli())
    assert exit_code == 0 and calls_of(completion) == [(EDIT.name, EDIT.arguments)]


async def test_allow_always_persists_across_a_restart(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    first = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY), admin_key=ADMIN_KEY)
    upstream.push(Reply(tool_calls=(EDIT,)))
    await asyncio.gather(ask(first, stream=False), approve_when_asked(first, always=True))
    await first.server.close()

    second = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY), admin_key=ADMIN_KEY)
    upstream.push(Reply(tool_calls=(EDIT,)))
    completion = await ask(second, stream=False)  # no one approves this time
    assert calls_of(completion) == [(EDIT.name, EDIT.arguments)]
    stored = (await second.recorded())[-1]
    assert stored.tool_decisions[0]["rule"] == "always_allowed"
    assert second.app[APPROVALS].requested_total == 0


async def test_without_a_policy_calls_are_recorded_but_never_blocked(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(tool_calls=(ToolCall("anything_at_all", "{}", id="c1"),)))
    completion = await ask(gateway, stream=False, tools=[tool("something_else")])
    assert calls_of(completion) == [("anything_at_all", "{}")]
    [stored] = await gateway.recorded()
    assert stored.tool_decisions[0]["decided_by"] == "observe_only"
    assert stored.tool_decisions[0]["policy_action"] == "deny"  # what enforcing would have done


async def test_gateway_shutdown_while_waiting_denies(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    waiting = asyncio.create_task(ask(guarded, stream=False))
    await asyncio.wait_for(guarded.app[APPROVALS].wait_requested(1), 10)
    closing = asyncio.create_task(guarded.server.close())  # on_shutdown releases the waiters first
    completion = await waiting
    await closing
    assert calls_of(completion) == [] and "shutdown" in completion.choices[0].message.content


async def held_stream_then_gone(gateway: Gateway, project: str = "default") -> None:
    """A streamed call held for a person, whose client then hangs up."""
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions", headers={"X-Ctxgate-Project": project},
            json={"model": MODEL, "messages": [{"role": "user", "content": "do it"}], "tools": TOOLS, "stream": True},
        )
        await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)
        response.close()


async def test_a_client_leaving_keeps_the_question_open_until_its_deadline(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    await held_stream_then_gone(guarded)
    [stored] = await guarded.recorded()
    assert stored.status == "client_disconnected"
    [decision] = stored.tool_decisions  # the cut wait is in the audit trail too
    assert (decision["tool"], decision["action"], decision["decided_by"]) == ("file_edit", "deny", "client_gone")
    [approval] = await guarded.app[STORE].list_approvals()
    assert approval.status is ApprovalStatus.PENDING  # a retry of the call may still join it
    assert decision["approval_id"] == approval.id  # the left exchange names the question it asked


async def test_a_question_nobody_comes_back_for_expires_at_its_deadline(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    await held_stream_then_gone(guarded, project="quick")  # a 0.3 s deadline
    for _ in range(100):
        [approval] = await guarded.app[STORE].list_approvals()
        if approval.status is not ApprovalStatus.PENDING:
            break
        await asyncio.sleep(0.05)
    assert (approval.status, approval.decided_by) == (ApprovalStatus.EXPIRED, "client_gone")


async def test_a_retried_call_joins_the_approval_its_dropped_stream_asked_for(guarded: Gateway) -> None:
    """Claude Code re-sends a stream it lost, without streaming: one question for the person,
    and their answer releases the retry."""
    guarded.upstream.push(Reply(tool_calls=(EDIT,)), Reply(tool_calls=(EDIT,)))
    await held_stream_then_gone(guarded)

    async def send_again() -> Any:  # the same client, the same conversation, not streamed
        async with aiohttp.ClientSession() as session:
            response = await session.post(guarded.url + "/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "do it"}], "tools": TOOLS})
            return await response.json()

    retry = asyncio.create_task(send_again())
    await asyncio.wait_for(guarded.app[APPROVALS].wait_requested(1, joined=1), 10)
    decided = await approve_when_asked(guarded)
    completion = await retry
    [call] = completion["choices"][0]["message"]["tool_calls"]
    assert (call["function"]["name"], call["function"]["arguments"]) == ("file_edit", EDIT.arguments)
    assert [a.status for a in await guarded.app[STORE].list_approvals()] == [ApprovalStatus.APPROVED]
    assert guarded.app[APPROVALS].requested_total == 1
    gone, released = await guarded.recorded(2)
    assert gone.tool_decisions[0]["decided_by"] == "client_gone"
    assert (released.tool_decisions[0]["action"], released.tool_decisions[0]["approval_id"]) == ("allow", decided["id"])


async def test_approvals_api_errors(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(EDIT,)))
    waiting = asyncio.create_task(ask(guarded, stream=False))
    approval = await approve_when_asked(guarded, verdict="deny")
    await waiting
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        again = await session.post(guarded.url + f"/approvals/{approval['id']}/approve")
        missing = await session.post(guarded.url + "/approvals/nope/approve")
        bad = await session.get(guarded.url + "/approvals?status=maybe")
        one = await session.get(guarded.url + f"/approvals/{approval['id']}")
        assert (again.status, (await again.json())["error"]["code"]) == (409, "approval_already_decided")
        assert (missing.status, (await missing.json())["error"]["code"]) == (404, "approval_not_found")
        assert (bad.status, (await bad.json())["error"]["param"]) == (400, "status")
        assert (await one.json())["status"] == "denied"


async def test_without_an_admin_key_approvals_cannot_be_decided_over_http(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # Otherwise the client whose call is held could approve it itself.
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY))
    upstream.push(Reply(tool_calls=(EDIT,)))
    waiting = asyncio.create_task(ask(gateway, stream=False, project="quick"))
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)
    [pending] = await gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + f"/approvals/{pending.id}/approve", json={"always": True})
        assert (response.status, (await response.json())["error"]["code"]) == (403, "admin_key_not_set")
    completion = await waiting
    assert calls_of(completion) == []


async def test_the_legacy_functions_api_is_refused_under_a_policy(guarded: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await guarded.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}],
            functions=[{"name": "atmos_terraform_destroy", "parameters": {"type": "object"}}],
        )
    assert caught.value.body["code"] == "legacy_functions_refused"  # type: ignore[index]
    assert guarded.upstream.received == []


async def test_metrics_count_calls_by_model_their_tokens_first_tokens_and_tool_decisions(guarded: Gateway) -> None:
    guarded.upstream.push(Reply(tool_calls=(DESTROY,)))
    await ask(guarded, stream=True)
    guarded.upstream.push(Reply(tool_calls=(DESCRIBE,)))
    await ask(guarded, stream=False)
    await guarded.recorded(at_least=2)
    async with aiohttp.ClientSession(headers=ADMIN) as session, session.get(guarded.url + "/metrics") as answer:
        text = await answer.text()
    lines = set(text.splitlines())
    assert f'ctxgate_model_calls_total{{model="{MODEL}",route="/v1/chat/completions",status="200"}} 2' in lines
    assert f'ctxgate_model_call_latency_ms_count{{model="{MODEL}"}} 2' in lines
    assert f'ctxgate_time_to_first_token_ms_count{{model="{MODEL}"}} 1' in lines  # the streamed one
    assert 'ctxgate_tool_decisions_total{action="deny",decided_by="policy"} 1' in lines
    assert 'ctxgate_tool_decisions_total{action="allow",decided_by="policy"} 1' in lines
    # Those the provider reported: a stream without usage is counted later, off the request path.
    prompt_tokens = sum(r.prompt_tokens for r in await guarded.recorded(at_least=2) if r.usage_source == "provider")
    assert f'ctxgate_tokens_total{{model="{MODEL}",kind="prompt"}} {prompt_tokens}' in lines
