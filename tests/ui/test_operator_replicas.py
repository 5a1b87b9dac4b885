"""The live list across replicas on one PostgreSQL database: a call held on one replica shows
on another's page at once, and leaves it when decided there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from policy.rules import parse_policy
from proxy.demo.fake_upstream import FakeUpstream, Reply
from proxy.ui import approvals_page
from tests.conftest import make_gateway
from tests.ui.conftest import ADMIN_KEY, POLICY
from tests.ui.test_operator_login import EDIT, TOOLS, browser_like, chat, log_in


async def next_event(events: aiohttp.ClientResponse) -> bytes:
    return await asyncio.wait_for(events.content.readuntil(b"\n\n"), 10)


async def test_a_call_held_on_one_replica_is_live_on_anothers_page_until_decided(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approvals_page, "LIVE_POLL_S", 30.0)  # only the database's announcement can be in time
    replicas = [await make_gateway(aiohttp_server, upstream, tmp_path, store_url=postgres_url,
                                   spool_dir=str(tmp_path / f"spool-{name}"), policy=parse_policy(POLICY),
                                   admin_key=ADMIN_KEY) for name in ("a", "b")]
    watching, holding = replicas
    async with browser_like() as session:
        await log_in(session, watching.url, ADMIN_KEY)
        events = await session.get(watching.url + "/ui/approvals/events")
        assert b'"count":0' in await next_event(events)

        upstream.push(Reply(tool_calls=(EDIT,)))
        asked = time.monotonic()
        call = asyncio.create_task(chat(holding.url, "client-provider-key", tools=TOOLS))
        shown = await next_event(events)
        assert b'"count":1' in shown and b"file_edit" in shown
        assert time.monotonic() - asked < 5

        [approval_id] = [part.split(b'\\"')[0].decode() for part in shown.split(b'data-approval-id=\\"')[1:]]
        decided = await session.post(holding.url + f"/approvals/{approval_id}/approve",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}", "X-Ctxgate-Client": "gina"})
        assert decided.status == 200
        gone = await next_event(events)
        assert b'"count":0' in gone and b'"decided_by":"gina"' in gone
        assert (await asyncio.wait_for(call, 10)).status == 200
        events.close()
