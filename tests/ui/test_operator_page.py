"""A person at the operator page, in Chromium: held calls decided by clicking (streamed, from
the real openai SDK), what the page shows of them, and what a scoped key may see."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from playwright.async_api import Browser, Page, expect

from capture.approvals import ApprovalStatus
from proxy.appkeys import APPROVALS, STORE
from proxy.demo.fake_upstream import Reply, ToolCall
from tests.conftest import MODEL
from tests.ui.conftest import (ADMIN_KEY, ALPHA_AGENT_KEY, ALPHA_APPROVER_KEY, ALPHA_READER_KEY, BETA_AGENT_KEY,
                               Operated, logged_in,
                               screenshot)

EDIT = ToolCall("file_edit", '{"path": "/srv/payments/deploy.yaml", "content": "replicas: 3"}', id="call_edit")
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
         for name in ("file_edit", "file_read")]
QUESTION = "Please deploy the payments service to staging"


async def ask(operated: Operated, *, key: str = ALPHA_AGENT_KEY, project: str = "alpha",
              question: str = QUESTION) -> Any:
    """One streamed call through the SDK, assembled as the SDK assembles it."""
    client = openai.AsyncOpenAI(base_url=operated.url + "/v1", api_key=key, max_retries=0)
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "You deploy services."},
                               {"role": "user", "content": question}],
        tools=TOOLS, stream=True, extra_headers={"X-Ctxgate-Project": project})  # type: ignore[arg-type]
    async for chunk in stream:
        state.handle_chunk(chunk)
    return state.get_final_completion()


def calls_of(completion: Any) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in completion.choices[0].message.tool_calls or []]


async def held_card(page: Page) -> Any:
    """The held call's card, once the live list shows it (no reload)."""
    card = page.locator("article.approval")
    await expect(card).to_have_count(1, timeout=10_000)
    return card


async def test_a_streamed_call_held_on_the_gateway_is_approved_by_clicking_and_reaches_the_client(
        operated: Operated, browser: Browser) -> None:
    page = await logged_in(browser, operated.url, ADMIN_KEY)
    await expect(page.locator("#live-state")).to_have_text(re.compile("^Live"))
    operated.gateway.upstream.push(Reply(text="Editing the deploy file.", tool_calls=(EDIT,), fragment=5))
    call = asyncio.create_task(ask(operated))
    card = await held_card(page)
    # What the person decides from: the tool and its arguments, pretty-printed, who and where,
    # the last turns, the pack that led to the call, and the time left.
    await expect(card.locator("h2")).to_have_text("file_edit")
    await expect(card.locator("pre.arguments")).to_have_text(
        '{\n  "path": "/srv/payments/deploy.yaml",\n  "content": "replicas: 3"\n}')
    await expect(card.locator(".facts")).to_contain_text("alpha")
    await expect(card.locator(".facts")).to_contain_text("alpha-agent")  # the client
    await expect(card.locator(".turns")).to_contain_text(QUESTION)
    await card.get_by_text("Context pack: 1 item").click()
    await expect(card.locator("table")).to_contain_text(operated.memory_id)
    await expect(card.locator("[data-expires]")).to_have_text(re.compile(r"^(5\d|60) s$"))
    await screenshot(page, "approvals-pending")
    assert not call.done()  # held while the person reads

    await card.get_by_role("button", name="Approve").click()
    completion = await asyncio.wait_for(call, 10)
    assert calls_of(completion) == [(EDIT.name, EDIT.arguments)]
    await expect(page.locator("article.approval")).to_have_count(0)
    await expect(page.locator("#decided-log")).to_contain_text("file_edit in alpha: approved by ui:admin")
    await screenshot(page, "approvals-decided")
    [stored] = await operated.gateway.recorded()
    [decision] = stored.tool_decisions
    assert (decision["action"], decision["decided_by"]) == ("allow", "human")
    approval = await operated.gateway.app[STORE].get_approval(decision["approval_id"])
    assert approval is not None and (approval.status, approval.decided_by) == (ApprovalStatus.APPROVED, "ui:admin")


async def test_a_call_denied_from_the_keyboard_is_refused_to_the_client(operated: Operated, browser: Browser) -> None:
    page = await logged_in(browser, operated.url, ALPHA_APPROVER_KEY)  # a project lead: approve scope, alpha only
    operated.gateway.upstream.push(Reply(tool_calls=(EDIT,), fragment=3))
    call = asyncio.create_task(ask(operated))
    card = await held_card(page)
    await card.get_by_role("button", name="Deny").focus()
    await page.keyboard.press("Enter")
    completion = await asyncio.wait_for(call, 10)
    assert calls_of(completion) == []
    assert "a person denied it" in completion.choices[0].message.content
    await expect(page.locator("#decided-log")).to_contain_text("denied by ui:key:alpha-lead")


async def test_always_allow_lets_this_call_through_and_the_next_without_asking(
        operated: Operated, browser: Browser) -> None:
    page = await logged_in(browser, operated.url, ADMIN_KEY)
    operated.gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    call = asyncio.create_task(ask(operated))
    card = await held_card(page)
    await card.get_by_role("button", name=re.compile("^Always allow")).click()
    assert calls_of(await asyncio.wait_for(call, 10)) == [(EDIT.name, EDIT.arguments)]

    operated.gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    assert calls_of(await asyncio.wait_for(ask(operated), 10)) == [(EDIT.name, EDIT.arguments)]
    assert operated.gateway.app[APPROVALS].requested_total == 1  # nobody was asked the second time
    stored = await operated.gateway.recorded(2)
    assert stored[-1].tool_decisions[0]["rule"] == "always_allowed"


async def test_a_decision_made_elsewhere_updates_the_open_page(operated: Operated, browser: Browser) -> None:
    page = await logged_in(browser, operated.url, ADMIN_KEY)
    operated.gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    call = asyncio.create_task(ask(operated))
    await held_card(page)
    [pending] = await operated.gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    # As `ctxgate approvals approve` does from another process: straight to the store, unannounced.
    await operated.gateway.app[STORE].decide_approval(pending.id, ApprovalStatus.APPROVED, "bob-on-the-cli")
    await expect(page.locator("article.approval")).to_have_count(0, timeout=10_000)
    await expect(page.locator("#decided-log")).to_contain_text("file_edit in alpha: approved by bob-on-the-cli")
    assert calls_of(await asyncio.wait_for(call, 10)) == [(EDIT.name, EDIT.arguments)]


async def test_without_javascript_the_page_reads_and_its_buttons_still_decide(
        operated: Operated, browser: Browser) -> None:
    operated.gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    call = asyncio.create_task(ask(operated))
    await asyncio.wait_for(operated.gateway.app[APPROVALS].wait_requested(1), 10)
    page = await logged_in(browser, operated.url, ADMIN_KEY, javascript=False)
    card = page.locator("article.approval")
    await expect(card).to_have_count(1)
    await expect(page.locator("#live-state")).to_contain_text("reload to see newer calls")
    await screenshot(page, "approvals-without-javascript")
    await card.get_by_role("button", name="Approve").click()  # a plain form post, then a redirect
    await page.wait_for_url("**/ui/approvals?decided=*")
    await expect(page.locator(".notice")).to_contain_text("file_edit in alpha: approved by ui:admin")
    assert calls_of(await asyncio.wait_for(call, 10)) == [(EDIT.name, EDIT.arguments)]


async def test_a_read_only_key_sees_its_projects_rows_only_and_cannot_decide(
        operated: Operated, browser: Browser) -> None:
    gateway = operated.gateway
    gateway.upstream.push(Reply(text="beta answer"))
    await ask(operated, key=BETA_AGENT_KEY, project="beta", question="beta secret plans")
    gateway.upstream.push(Reply(text="alpha answer"))
    await ask(operated, question="alpha plans")
    stored = await gateway.recorded(2)
    beta_id = next(r.id for r in stored if r.project == "beta")
    gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    held_in_beta = asyncio.create_task(ask(operated, key=BETA_AGENT_KEY, project="beta"))
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)

    page = await logged_in(browser, operated.url, ALPHA_READER_KEY)
    await expect(page.locator(".who")).to_contain_text("alpha-reader")
    await expect(page.locator("article.approval")).to_have_count(0)  # beta's held call is not for this key
    await expect(page.locator(".note")).to_contain_text("reads only")
    await page.get_by_role("link", name="Interactions").click()
    rows = page.locator("table.records tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("alpha")
    await expect(page.locator("main")).not_to_contain_text("beta")
    await screenshot(page, "interactions-scoped")
    response = await page.goto(operated.url + f"/ui/interactions/{beta_id}")
    assert response is not None and response.status == 404
    await expect(page.locator("main")).not_to_contain_text("beta secret plans")
    await page.goto(operated.url + "/ui/sessions")
    await expect(page.locator("table.records tbody tr")).to_have_count(1)
    held_in_beta.cancel()


async def test_the_interaction_page_shows_the_prompt_the_pack_and_the_decision(
        operated: Operated, browser: Browser) -> None:
    operated.gateway.upstream.push(Reply(text="Editing.", tool_calls=(EDIT,)))
    call = asyncio.create_task(ask(operated))
    await asyncio.wait_for(operated.gateway.app[APPROVALS].wait_requested(1), 10)
    [pending] = await operated.gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    await operated.gateway.app[APPROVALS].decide(pending.id, approve=False, decided_by="carol")
    await asyncio.wait_for(call, 10)
    [stored] = await operated.gateway.recorded()

    page = await logged_in(browser, operated.url, ADMIN_KEY)
    await page.get_by_role("link", name="Interactions").click()
    await page.get_by_role("link", name=stored.created_at).click()
    await expect(page.locator("h1")).to_contain_text(stored.id)
    prompt = page.locator("section", has=page.get_by_role("heading", name="Prompt as sent"))
    await expect(prompt.locator(".turns")).to_contain_text(QUESTION)
    await expect(prompt.locator(".turns")).to_contain_text(MEMORY_START)  # the pack, as injected into the prompt
    pack = page.locator("#pack")
    await expect(pack).to_contain_text(operated.memory_id)
    score = stored.context_scores[operated.memory_id]
    await expect(pack).to_contain_text(f"{score:.4g}")
    decisions = page.locator("#decisions")
    await expect(decisions).to_contain_text("file_edit")
    await expect(decisions).to_contain_text("deny")
    await expect(decisions).to_contain_text("human")
    await expect(page.locator("main")).to_contain_text("Latency")
    await screenshot(page, "interaction")

    await page.get_by_role("link", name=stored.session_id).first.click()
    await expect(page.locator(".replay-turn")).to_have_count(1)
    await expect(page.locator(".replay-turn")).to_contain_text(QUESTION)
    await screenshot(page, "session")
    await page.get_by_role("link", name="Knowledge").click()
    await page.get_by_label("Project", exact=True).fill("alpha")
    await page.get_by_label("Question", exact=True).fill("how do payments deployments go")
    await page.get_by_role("button", name="Show the pack").click()
    await expect(page.locator("#pack")).to_contain_text(operated.memory_id)
    await screenshot(page, "knowledge")


MEMORY_START = "Deployments of the payments service"


AXE = Path(__file__).parents[2] / "node_modules" / "axe-core" / "axe.min.js"  # make agents installs it


async def accessibility_violations(page: Page) -> list[str]:
    """What axe-core's WCAG 2.0 and 2.1 A and AA rules find on the page as it stands."""
    await page.add_script_tag(path=str(AXE))
    found = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))")
    return [f"{v['id']} ({v['impact']}): {v['nodes'][:3]}" for v in found]


async def test_every_page_passes_the_wcag_checks_axe_makes(operated: Operated, browser: Browser) -> None:
    operated.gateway.upstream.push(Reply(text="Editing.", tool_calls=(EDIT,)))
    call = asyncio.create_task(ask(operated))
    await asyncio.wait_for(operated.gateway.app[APPROVALS].wait_requested(1), 10)
    context = await browser.new_context(bypass_csp=True)  # the page's policy refuses added scripts
    login = await context.new_page()
    await login.goto(operated.url + "/ui/login")
    assert await accessibility_violations(login) == []
    page = await logged_in(browser, operated.url, ADMIN_KEY, bypass_csp=True)
    await held_card(page)
    assert await accessibility_violations(page) == [], "approvals"
    [pending] = await operated.gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    await operated.gateway.app[APPROVALS].decide(pending.id, approve=True, decided_by="ivy")
    await asyncio.wait_for(call, 10)
    [stored] = await operated.gateway.recorded()
    for path in ("/ui/interactions", f"/ui/interactions/{stored.id}", "/ui/sessions",
                 f"/ui/sessions/{stored.session_id}", "/ui/knowledge?project=alpha&q=payments+deployments",
                 f"/ui/approvals/{pending.id}"):
        await page.goto(operated.url + path)
        assert await accessibility_violations(page) == [], path
