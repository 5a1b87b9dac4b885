"""A client that goes away mid-stream still leaves a record, with its status and partial response."""

from __future__ import annotations

import asyncio

import aiohttp

from capture.records import InteractionQuery
from capture.sqlite import SQLiteStore
from proxy.appkeys import SETTINGS
from proxy.fake_upstream import Reply
from tests.conftest import MODEL, Gateway


async def test_client_disconnect_mid_stream_is_recorded(gateway: Gateway) -> None:
    release = asyncio.Event()
    gateway.upstream.push(Reply(text="first part, then the rest", fragment=5, hold_after_first=release))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        response.close()  # the client hangs up while the upstream is still generating
    release.set()
    # Graceful shutdown waits for the handler to notice, then drains the capture queue.
    await gateway.server.close()
    store = SQLiteStore(gateway.app[SETTINGS].store_url)
    await store.open()
    try:
        [summary] = await store.list_interactions(InteractionQuery())
        stored = await store.get_interaction(summary.id)
    finally:
        await store.close()
    assert stored is not None
    assert stored.status == "client_disconnected"
    assert stored.response["role"] == "assistant"
    assert stored.response["content"] is None or "the rest" not in stored.response["content"]
