"""Webhooks told of a held tool call: a receiver in the test gets signed bodies (generic JSON
and Slack's), retried as it fails, and a slow or missing receiver never holds the call up."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from capture.approvals import ApprovalStatus
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, STORE, WEBHOOKS
from proxy.config.notifications import NotificationSettings, Webhook
from proxy.config.settings import ConfigError, load_settings
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, Gateway, make_gateway, settled

SECRET = "whsec-0123456789abcdef0123"
LEAK = "sk-live-0123456789abcdefghijklmnop"
EDIT = ToolCall("file_edit", json.dumps({"path": "/srv/app.conf", "token": LEAK,
                                         "note": "<!channel> <https://evil.example|Approve here>"}), id="call_edit")
TOOLS = [{"type": "function", "function": {"name": "file_edit", "parameters": {"type": "object"}}}]
POLICY = {"default": {"mode": "prompt", "restricted_tools": ["file_edit"], "approval_timeout_s": 30}}
PAGE = "https://ctxgate.example.com"
ADMIN_KEY = "admin-key-for-notifications"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Receiver:
    """Answers with `statuses` in turn (then 200), or never answers while `hanging`."""

    statuses: list[int] = field(default_factory=list)
    hanging: bool = False
    received: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read(), time.monotonic()))
        self.arrived.set()
        if self.hanging:
            await asyncio.sleep(3600)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    fake = Receiver()
    app = web.Application()
    app.router.add_post("/hook", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/hook"))
    return fake


async def notifying(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, *hooks: Webhook) -> Gateway:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY),
                                 admin_key=ADMIN_KEY,
                                 notifications=NotificationSettings(page_url=PAGE, webhooks=hooks))
    gateway.app[WEBHOOKS].backoff_s = 0.02
    return gateway


async def held_call(gateway: Gateway) -> asyncio.Task[Any]:
    """A streamed call whose tool call the policy holds; returns once it is held."""
    gateway.upstream.push(Reply(tool_calls=(EDIT,)))
    client = gateway.client(default_headers={"X-Ctxgate-Client": "deploy-bot"})

    async def call() -> list[Any]:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "edit it"}], tools=TOOLS, stream=True)  # type: ignore[arg-type]
        return [chunk async for chunk in stream]

    task = asyncio.create_task(call())
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)
    return task


async def approve_pending(gateway: Gateway) -> str:
    [pending] = await gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    await gateway.app[APPROVALS].decide(pending.id, approve=True, decided_by="erin")
    return pending.id


def verified(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """What a receiver does: the HMAC of "<t>." + body, and t within five minutes."""
    parts = dict(part.split("=", 1) for part in headers["X-Ctxgate-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected) and abs(time.time() - int(parts["t"])) < 300


async def test_a_held_call_posts_a_signed_event_linking_to_its_approval(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "json", SECRET))
    call = await held_call(gateway)
    await receiver.wait(1)
    [(headers, body, _)] = receiver.received
    assert verified(headers, body, SECRET)
    assert not verified(headers, body.replace(b"file_edit", b"file_read"), SECRET)  # a changed body fails
    event = json.loads(body)
    [pending] = await gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    assert event["type"] == headers["X-Ctxgate-Event"] == "approval.requested"
    assert event["id"] == headers["X-Ctxgate-Delivery"]
    assert event["url"] == f"{PAGE}/ui/approvals/{pending.id}"
    approval = event["approval"]
    assert (approval["id"], approval["tool"], approval["project"], approval["client"]) == (
        pending.id, "file_edit", "default", "deploy-bot")
    assert json.loads(approval["arguments"])["path"] == "/srv/app.conf"
    assert LEAK not in body.decode() and "[redacted]" in approval["arguments"]
    assert not call.done()  # the call waits for a person; the notification only told one
    await approve_pending(gateway)
    chunks = await asyncio.wait_for(call, 10)
    assert any(choice.delta.tool_calls for chunk in chunks for choice in chunk.choices)


async def test_slack_gets_a_message_with_a_button_to_the_approval(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "slack", SECRET))
    call = await held_call(gateway)
    await receiver.wait(1)
    [(headers, body, _)] = receiver.received
    assert verified(headers, body, SECRET)
    message = json.loads(body)
    approval_id = await approve_pending(gateway)
    assert "`file_edit`" in message["text"] and "deploy-bot" in message["text"]
    [button] = message["blocks"][-1]["elements"]
    assert button["url"] == f"{PAGE}/ui/approvals/{approval_id}"
    assert any("/srv/app.conf" in block.get("text", {}).get("text", "") for block in message["blocks"])
    assert LEAK not in body.decode()
    # What the model wrote can neither mention the channel nor make a link there.
    assert "<!channel>" not in body.decode() and "<https://evil" not in body.decode()
    assert "&lt;!channel&gt;" in json.dumps(message["blocks"][1])
    await asyncio.wait_for(call, 10)


async def test_a_failing_receiver_is_retried_with_backoff_and_the_same_delivery_id(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [503, 429, 500]
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "json", SECRET))
    call = await held_call(gateway)
    await receiver.wait(4)
    sender = gateway.app[WEBHOOKS]
    await settled(lambda: sender.delivered_total > 0)
    assert {headers["X-Ctxgate-Delivery"] for headers, _, _ in receiver.received} == {
        json.loads(receiver.received[0][1])["id"]}
    gaps = [later[2] - earlier[2] for earlier, later in zip(receiver.received, receiver.received[1:])]
    assert gaps[2] > gaps[0]  # backing off (0.02 s doubling, jittered by at most half either way)
    assert (sender.delivered_total, sender.retried_total, sender.failed_total) == (1, 3, 0)
    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(gateway.url + "/metrics", headers=ADMIN)).text()
    assert "ctxgate_notifications_delivered_total 1" in metrics and "ctxgate_notifications_retried_total 3" in metrics
    await approve_pending(gateway)
    await asyncio.wait_for(call, 10)


async def test_a_receiver_refusing_the_body_is_not_retried(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [400]
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "json"))
    call = await held_call(gateway)
    await receiver.wait(1)
    sender = gateway.app[WEBHOOKS]
    await settled(lambda: sender.failed_total > 0)
    assert (len(receiver.received), sender.failed_total, sender.retried_total) == (1, 1, 0)
    assert "X-Ctxgate-Signature" not in receiver.received[0][0]  # no secret configured: unsigned
    await approve_pending(gateway)
    await asyncio.wait_for(call, 10)


async def test_a_hanging_or_missing_receiver_never_holds_the_call_up(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    receiver.hanging = True
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "json", SECRET),
                              Webhook("http://127.0.0.1:9/nobody-listens", "slack"))
    call = await held_call(gateway)
    await receiver.wait(1)
    started = time.monotonic()
    await approve_pending(gateway)
    chunks = await asyncio.wait_for(call, 10)
    assert time.monotonic() - started < 2  # answered as soon as decided, while the hook still hangs
    assert any(choice.delta.tool_calls for chunk in chunks for choice in chunk.choices)


def test_the_notifications_config_is_checked_and_its_secrets_are_secrets(tmp_path: Path) -> None:
    config = tmp_path / "ctxgate.yaml"
    config.write_text("notifications:\n  page_url: https://gw.example.com\n  webhooks:\n"
                      "    - {url: os.environ/SLACK_HOOK, format: slack, secret: os.environ/HOOK_SECRET}\n")
    environ = {"SLACK_HOOK": "https://hooks.slack.com/services/T0/B0/abcdefgh", "HOOK_SECRET": SECRET}
    settings = load_settings(str(config), environ=environ)
    [hook] = settings.notifications.webhooks
    assert (hook.url, hook.format, hook.secret) == (environ["SLACK_HOOK"], "slack", SECRET)
    assert environ["SLACK_HOOK"] in settings.secrets and SECRET in settings.secrets
    assert environ["SLACK_HOOK"] not in repr(settings)
    for bad, named in [("webhooks: [{url: ftp://x}]", "webhooks[0].url"),
                       ("webhooks: [{url: 'https://x', format: teams}]", "webhooks[0].format"),
                       ("webhooks: [{url: 'https://x', secret: short}]", "webhooks[0].secret"),
                       ("webhooks: [{url: 'https://x', colour: red}]", "'colour'"),
                       ("webhooks: [{url: 'https://x', events: [approval.eaten]}]", "webhooks[0].events"),
                       ("page_url: gw.example.com", "page_url")]:
        config.write_text(f"notifications: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
            load_settings(str(config), environ=environ)


async def test_the_decision_follows_the_question_and_a_hook_may_take_questions_only(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    questions_only = Receiver()
    app = web.Application()
    app.router.add_post("/hook", questions_only.handle)
    server = await aiohttp_server(app)
    questions_only.url = str(server.make_url("/hook"))
    gateway = await notifying(aiohttp_server, upstream, tmp_path, Webhook(receiver.url, "json", SECRET),
                              Webhook(questions_only.url, "slack", events=frozenset({"approval.requested"})))
    call = await held_call(gateway)
    approval_id = await approve_pending(gateway)
    await asyncio.wait_for(call, 10)
    await receiver.wait(2)
    asked, decided = (json.loads(body) for _, body, _ in receiver.received)
    assert (asked["type"], decided["type"]) == ("approval.requested", "approval.decided")
    assert decided["approval"]["id"] == approval_id and decided["id"] != asked["id"]
    assert (decided["approval"]["status"], decided["approval"]["decided_by"]) == ("approved", "erin")
    assert verified(receiver.received[1][0], receiver.received[1][1], SECRET)
    await questions_only.wait(1)
    await asyncio.sleep(0.2)
    assert len(questions_only.received) == 1  # its question only, never the decision


async def test_a_call_that_times_out_is_told_as_expired_once(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    gateway = await make_gateway(
        aiohttp_server, upstream, tmp_path, admin_key=ADMIN_KEY,
        policy=parse_policy({"default": {"mode": "prompt", "restricted_tools": ["file_edit"], "approval_timeout_s": 0.3}}),
        notifications=NotificationSettings(page_url=PAGE, webhooks=(Webhook(receiver.url, "slack"),)))
    upstream.push(Reply(tool_calls=(EDIT,)))
    chunks = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "edit it"}], tools=TOOLS)  # type: ignore[arg-type]
    assert not chunks.choices[0].message.tool_calls
    await receiver.wait(2)
    await asyncio.sleep(0.2)
    held, expired = (json.loads(body) for _, body, _ in receiver.received)
    assert "holds a call to `file_edit`" in held["text"]
    assert "was expired by timeout" in expired["text"] and len(receiver.received) == 2
