"""A client that goes away mid-stream: recorded with its status and what it was sent, and the
provider's stream is closed rather than left generating."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from capture.records import InteractionQuery
from capture.sqlite import SQLiteStore
from proxy.app import create_app
from proxy.demo.fake_upstream import FakeUpstream, Reply
from proxy.edge.server import server_options
from tests.conftest import MODEL, gateway_settings

FULL_TEXT = "first part, then the rest of it, and more, and more, and still more of it"


async def test_client_disconnect_mid_stream_is_recorded_and_upstream_released(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = gateway_settings(upstream, tmp_path)
    runner = web.AppRunner(create_app(settings), **server_options(settings))  # as `ctxgate serve` runs it
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"

    release = asyncio.Event()
    # chunks: role, "first", " part", ... ; held after " part", then one chunk every 50 ms
    upstream.push(Reply(text=FULL_TEXT, fragment=5, hold=release, hold_after_chunks=3, chunk_interval_s=0.05))
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                url, json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
            )
            for _ in range(3):
                assert (await response.content.readuntil(b"\n\n")).startswith(b"data: ")
            response.close()  # the client hangs up while the upstream is still generating
        release.set()
        # The gateway closes its upstream stream rather than letting the provider run on to
        # the end (which, paced, would take over 0.6 s more).
        await asyncio.wait_for(upstream.streams_cut.wait(), 0.5)
    finally:
        await runner.cleanup()  # graceful: waits for the handler, drains the capture queue

    store = SQLiteStore(settings.store_url)
    await store.open()
    try:
        [summary] = await store.list_interactions(InteractionQuery())
        stored = await store.get_interaction(summary.id)
    finally:
        await store.close()
    assert stored is not None
    assert stored.status == "client_disconnected"
    # What the client was sent. One more chunk can have gone into the socket before the
    # gateway saw the hang-up: TCP accepts a write to a peer that has already closed.
    assert stored.response["content"] in ("first part", "first part, the")
