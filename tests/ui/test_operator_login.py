"""The operator page's doors, over plain HTTP: logging in and out, logins that no longer
stand, posts from another site, errors as pages, and nothing secret on a page."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capture.approvals import Approval, ApprovalStatus
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, OPERATOR_PAGE, STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.ui.login import COOKIE
from tests.conftest import MODEL, PROVIDER_KEY, Gateway, make_gateway
from tests.ui.conftest import (ADMIN_KEY, ALPHA_AGENT_KEY, ALPHA_APPROVER_KEY, ALPHA_READER_KEY, BETA_AGENT_KEY,
                               POLICY, Operated)

EDIT = ToolCall("file_edit", '{"path": "/srv/x"}', id="call_edit")
TOOLS = [{"type": "function", "function": {"name": "file_edit", "parameters": {"type": "object"}}}]


async def held(gateway: Gateway, key: str, *, project: str = "alpha") -> tuple[asyncio.Task[Any], Approval]:
    """A call whose file_edit the policy holds, made with `key`; the call, and its approval."""
    gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    call = asyncio.create_task(chat(gateway.url, key, project=project, tools=TOOLS))
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)
    [pending] = await gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    return call, pending


def browser_like() -> aiohttp.ClientSession:
    """A session that keeps cookies as a browser does (aiohttp's jar refuses an IP's by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(session: aiohttp.ClientSession, url: str, key: str) -> aiohttp.ClientResponse:
    return await session.post(url + "/ui/login", data={"key": key, "next": "/ui/interactions"},
                              allow_redirects=False)


async def chat(url: str, key: str, *, project: str = "alpha", content: str = "hello",
               tools: list[Any] | None = None) -> aiohttp.ClientResponse:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if tools:
        body["tools"] = tools
    async with aiohttp.ClientSession() as session:
        response = await session.post(url + "/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {key}", "X-Ctxgate-Project": project})
        await response.read()
        return response


async def test_a_key_logs_in_once_and_the_browser_keeps_a_signed_login_not_the_key(operated: Operated) -> None:
    async with browser_like() as session:
        response = await log_in(session, operated.url, ALPHA_READER_KEY)
        assert response.status == 303 and response.headers["Location"] == "/ui/interactions"
        cookie = response.cookies[COOKIE]
        assert ALPHA_READER_KEY not in cookie.value
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/ui"
        page = await session.get(operated.url + "/ui/interactions", allow_redirects=False)
        assert page.status == 200 and "alpha-reader" in await page.text()

        await session.post(operated.url + "/ui/logout", allow_redirects=False)
        after = await session.get(operated.url + "/ui/interactions", allow_redirects=False)
        assert after.status == 303 and after.headers["Location"].startswith("/ui/login")
    # A copy of the cookie taken before logging out (another tab, or someone who took it) ends too.
    async with aiohttp.ClientSession(cookies={COOKIE: cookie.value}) as copy:
        response = await copy.get(operated.url + "/ui/interactions", allow_redirects=False)
        assert response.status == 303


@pytest.mark.parametrize("key", ["not-a-key", "", "ctxg-beta-agent-key-0123456789abcdef"])  # the last: no read scope
async def test_a_key_that_does_not_read_gets_the_form_again_and_no_login(operated: Operated, key: str) -> None:
    async with browser_like() as session:
        response = await log_in(session, operated.url, key)
        assert response.status == 401 and COOKIE not in response.cookies
        assert "That key does not log in here" in await response.text()


async def test_a_tampered_or_expired_login_is_refused(operated: Operated) -> None:
    async with browser_like() as session:
        cookie = (await log_in(session, operated.url, ALPHA_READER_KEY)).cookies[COOKIE].value
    principal, until, login_id, signature = cookie.split(".")
    forged = [
        f"admin:0000000000000000.{until}.{login_id}.{signature}",  # someone else, same signature
        f"{principal}.{int(until) + 3600}.{login_id}.{signature}",  # a longer login than was signed
        f"{principal}.{until}.{'1' * 24}.{signature}",  # another login's id
        f"{principal}.{until}.{login_id}.{'0' * 64}",
    ]
    logins = operated.gateway.app[OPERATOR_PAGE].logins
    expired = await logins.cookie_for(principal, now=1_000_000.0)
    for value in [*forged, expired]:
        async with aiohttp.ClientSession(cookies={COOKIE: value}) as session:
            response = await session.get(operated.url + "/ui/interactions", allow_redirects=False)
            assert response.status == 303, value


async def test_a_login_ends_when_its_key_leaves_the_config(aiohttp_server: Any, upstream: FakeUpstream,
                                                           tmp_path: Path, operated: Operated) -> None:
    async with browser_like() as session:
        cookie = (await log_in(session, operated.url, ALPHA_READER_KEY)).cookies[COOKIE].value
    await operated.gateway.server.close()
    # The same store (so the same signing secret), restarted without that key.
    again = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY), admin_key=ADMIN_KEY,
                               keys=())
    async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as session:
        response = await session.get(again.url + "/ui/interactions", allow_redirects=False)
        assert response.status == 303


async def test_a_post_from_another_site_decides_nothing(operated: Operated) -> None:
    call, pending = await held(operated.gateway, ALPHA_AGENT_KEY)
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            response = await session.post(operated.url + f"/ui/approvals/{pending.id}/decide",
                                          data={"verdict": "approve"}, headers=headers, allow_redirects=False)
            assert response.status == 403 and "text/html" in response.headers["Content-Type"]
    assert (await operated.gateway.app[STORE].get_approval(pending.id)).status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    call.cancel()


async def test_a_read_only_login_cannot_decide_even_by_posting(operated: Operated) -> None:
    call, pending = await held(operated.gateway, ALPHA_AGENT_KEY)
    async with browser_like() as session:
        await log_in(session, operated.url, ALPHA_READER_KEY)
        page = await (await session.get(operated.url + "/ui/approvals")).text()
        assert "file_edit" in page and 'value="approve"' not in page
        response = await session.post(operated.url + f"/ui/approvals/{pending.id}/decide",
                                      data={"verdict": "approve"}, allow_redirects=False)
        assert response.status == 403
    assert (await operated.gateway.app[STORE].get_approval(pending.id)).status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    call.cancel()


async def test_errors_are_pages_with_their_status(operated: Operated) -> None:
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        for path, status in [("/ui/interactions/no-such-id", 404), ("/ui/no-such-page", 404),
                             ("/ui/approvals/nope", 404), ("/ui/interactions?since=yesterday", 400),
                             ("/ui/sessions/nobody", 404)]:
            response = await session.get(operated.url + path, allow_redirects=False)
            assert response.status == status, path
            assert response.headers["Content-Type"].startswith("text/html")
            assert "Traceback" not in await response.text()
        bad = await session.post(operated.url + "/ui/approvals/nope/decide", data={"verdict": "maybe"})
        assert bad.status == 400


async def test_no_secret_reaches_a_page(operated: Operated) -> None:
    leaked = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    operated.gateway.upstream.push(Reply(text=f"your key is {leaked} and the admin's is {ADMIN_KEY}"))
    await chat(operated.url, ALPHA_AGENT_KEY, content=f"remember {leaked} and {PROVIDER_KEY}")
    [stored] = await operated.gateway.recorded()
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        page = await (await session.get(operated.url + f"/ui/interactions/{stored.id}")).text()
        session_page = await (await session.get(operated.url + f"/ui/sessions/{stored.session_id}")).text()
    for text in (page, session_page):
        assert "remember" in text and "[redacted]" in text
        for secret in (leaked, ADMIN_KEY, PROVIDER_KEY, ALPHA_AGENT_KEY):
            assert secret not in text


async def test_an_open_gateway_shows_its_pages_to_anyone_and_lets_nobody_decide_there(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY))
    call, pending = await held(gateway, "client-provider-key")
    async with aiohttp.ClientSession() as session:
        page = await session.get(gateway.url + "/ui/approvals", allow_redirects=False)
        text = await page.text()
        assert page.status == 200 and "file_edit" in text and "CTXGATE_ADMIN_KEY" in text
        refused = await session.post(gateway.url + f"/ui/approvals/{pending.id}/decide", data={"verdict": "approve"},
                                     allow_redirects=False)
        assert refused.status == 403
    call.cancel()


async def test_the_live_list_streams_the_held_call_and_its_end(operated: Operated) -> None:
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        events = await session.get(operated.url + "/ui/approvals/events")
        assert events.headers["Content-Type"] == "text/event-stream"
        first = await events.content.readuntil(b"\n\n")
        assert first.startswith(b"event: approvals\n") and b'"count":0' in first
        operated.gateway.upstream.push(Reply(tool_calls=(EDIT,)))
        call = asyncio.create_task(chat(operated.url, ALPHA_AGENT_KEY, tools=TOOLS))
        held = await asyncio.wait_for(events.content.readuntil(b"\n\n"), 10)
        assert b'"count":1' in held and b"file_edit" in held
        [pending] = await operated.gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
        await operated.gateway.app[APPROVALS].decide(pending.id, approve=True, decided_by="dana")
        ended = await asyncio.wait_for(events.content.readuntil(b"\n\n"), 10)
        assert b'"count":0' in ended and b'"decided_by":"dana"' in ended
        await asyncio.wait_for(call, 10)
        events.close()


async def test_an_approve_scoped_key_decides_its_projects_calls_over_the_api_and_no_others(
        operated: Operated) -> None:
    call, pending = await held(operated.gateway, ALPHA_AGENT_KEY)
    async with aiohttp.ClientSession() as session:
        url = operated.url + f"/approvals/{pending.id}/approve"
        refused = await session.post(url, headers={"Authorization": f"Bearer {ALPHA_READER_KEY}"})
        assert (refused.status, (await refused.json())["error"]["code"]) == (403, "approve_scope_required")
        elsewhere = await session.post(url, headers={"Authorization": f"Bearer {BETA_AGENT_KEY}"})
        assert elsewhere.status == 403  # no read scope at all
        decided = await session.post(url, headers={"Authorization": f"Bearer {ALPHA_APPROVER_KEY}",
                                                   "X-Ctxgate-Client": "admin"})  # a key is who it is
        assert decided.status == 200 and (await decided.json())["decided_by"] == "key:alpha-lead"
    response = await asyncio.wait_for(call, 10)
    assert response.status == 200


async def test_an_approve_scoped_key_cannot_reach_another_projects_call(operated: Operated) -> None:
    call, pending = await held(operated.gateway, BETA_AGENT_KEY, project="beta")
    async with aiohttp.ClientSession() as session:
        response = await session.post(operated.url + f"/approvals/{pending.id}/approve",
                                      headers={"Authorization": f"Bearer {ALPHA_APPROVER_KEY}"})
        assert response.status == 404  # another project's approval is as good as missing
    assert (await operated.gateway.app[STORE].get_approval(pending.id)).status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    call.cancel()


async def test_pages_render_whatever_a_record_holds(operated: Operated) -> None:
    """Records posted through the capture API, and approvals kept before their context was,
    hold what they hold: every page still renders, and no secret in them shows."""
    odd = [
        {"prompt": "p", "tool_decisions": [{"tool": "Bash", "action": "deny"}, "x", {}, {"wait_ms": "12"},
                                           {"tool": {"key": PROVIDER_KEY}, "action": ["sk-nested-0123456789abcdef"]}]},
        {"prompt": [{"role": "user", "content": "q", "tool_calls": 1}], "response": {"tool_calls": True},
         "wire": "openai_chat", "session_id": "odd", "project": "alpha"},
        {"prompt": {"messages": 3}, "wire": "anthropic_messages", "response": [1, 2]},
        {"prompt": {"input": [{"type": "function_call"}]}, "wire": "openai_responses", "context_scores": {"m": 1}},
        {"prompt": "p", "wire": "no_such_wire", "memories_used": ["m1"]},
    ]
    await operated.gateway.app[STORE].insert_approval(Approval(
        id="from-before", created_at="2026-01-01 00:00:00", expires_at="2999-01-01 00:00:00", project="alpha",
        tool="Bash", arguments="not json"))
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        ids = []
        for record in odd:
            posted = await session.post(operated.url + "/interactions", json=record,
                                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert posted.status == 201, await posted.text()
            ids.append((await posted.json())["id"])
        pages = [f"/ui/interactions/{i}" for i in ids] + [
            "/ui/interactions", "/ui/sessions", "/ui/sessions/odd?project=alpha", "/ui/approvals",
            "/ui/approvals/from-before"]
        for path in pages:
            response = await session.get(operated.url + path)
            text = await response.text()
            assert response.status == 200, (path, text[-400:])
            assert PROVIDER_KEY not in text and "sk-nested-0123456789abcdef" not in text, path


@pytest.mark.parametrize("cookie", ["x", "a.b.c", "admin:0.²²².aa", "p.1" + "9" * 5000 + ".sig", "p.1.é"])
async def test_a_malformed_login_cookie_is_no_login(operated: Operated, cookie: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(operated.url + "/ui/interactions", allow_redirects=False,
                                     headers={"Cookie": f"{COOKIE}={cookie}".encode().decode("latin-1")})
        assert response.status == 303


async def test_a_session_id_with_a_slash_links_to_its_replay(operated: Operated) -> None:
    operated.gateway.upstream.push(Reply(text="ok"))
    async with aiohttp.ClientSession() as session:
        await session.post(operated.url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {ALPHA_AGENT_KEY}", "X-Ctxgate-Session": "team/x"})
    await operated.gateway.recorded()
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        listing = await (await session.get(operated.url + "/ui/sessions")).text()
        assert 'href="/ui/sessions/team%2Fx?project=alpha"' in listing
        replay = await session.get(operated.url + "/ui/sessions/team%2Fx?project=alpha")
        assert replay.status == 200 and "team/x" in await replay.text()


async def test_where_a_post_came_from_is_read_from_the_browser_not_the_host(operated: Operated) -> None:
    async with browser_like() as session:
        await log_in(session, operated.url, ADMIN_KEY)
        # Behind a proxy that rewrote Host: the browser still says same-origin.
        behind_proxy = await session.post(operated.url + "/ui/approvals/nope/decide", data={"verdict": "approve"},
                                          headers={"Sec-Fetch-Site": "same-origin",
                                                   "Origin": "https://gate.example.com"})
        assert behind_proxy.status == 404  # past the origin check, to the missing approval
        opaque = await session.post(operated.url + "/ui/approvals/nope/decide", data={"verdict": "approve"},
                                    headers={"Origin": "null"})
        assert opaque.status == 403
    async with browser_like() as session:
        login = await session.post(operated.url + "/ui/login", data={"key": ADMIN_KEY}, allow_redirects=False,
                                   headers={"Origin": "null"})
        assert login.status == 403 and COOKIE not in login.cookies


async def test_the_pages_script_gets_a_refusal_it_can_show(operated: Operated) -> None:
    async with browser_like() as session:
        await log_in(session, operated.url, ALPHA_READER_KEY)
        refused = await session.post(operated.url + "/ui/approvals/nope/decide", data={"verdict": "approve"},
                                     headers={"X-Requested-With": "ctxgate-ui"})
        assert refused.status == 404
        assert (await refused.json())["error"]["code"] == "approval_not_found"
