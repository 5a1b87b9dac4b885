"""What an operator watches: /metrics, /healthz, request ids."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from capture.store import StoreUnavailable
from proxy.appkeys import CAPTURE_WRITER, STORE
from proxy.demo.fake_upstream import FakeUpstream
from tests.conftest import MODEL, Gateway, make_gateway


async def get(gateway: Gateway, path: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as session:
        response = await session.get(gateway.url + path)
        return response.status, await response.text(), response.headers


async def test_metrics_count_requests_by_route_and_status(gateway: Gateway) -> None:
    client = gateway.client()
    for _ in range(3):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await gateway.recorded(at_least=3)
    status, text, headers = await get(gateway, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'ctxgate_requests_total{route="/v1/chat/completions",status="200"} 3' in text
    assert "ctxgate_capture_written_total 3" in text
    assert "ctxgate_request_latency_ms_count 3" in text


async def test_healthz_says_when_the_store_is_unreachable(gateway: Gateway) -> None:
    store = gateway.app[STORE]

    async def down() -> bool:
        return False

    store.ping = down  # type: ignore[method-assign]
    status, text, _ = await get(gateway, "/healthz")
    assert status == 200  # still proxying: captures wait in the writer, so the gateway stays in rotation
    assert '"store":"unreachable"' in text and '"status":"degraded"' in text


async def test_capture_api_reports_an_unavailable_store_as_503(gateway: Gateway) -> None:
    async def broken(*_: object) -> None:
        raise StoreUnavailable("disk detached")

    gateway.app[STORE].get_interaction = broken  # type: ignore[method-assign,assignment]
    status, text, _ = await get(gateway, "/interactions/some-id")
    assert status == 503 and "disk detached" in text and '"error"' in text


async def test_request_id_is_echoed_or_made(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        given = await session.get(gateway.url + "/healthz", headers={"X-Request-Id": "trace-123"})
        made = await session.get(gateway.url + "/healthz")
    assert given.headers["X-Request-Id"] == "trace-123"
    assert len(made.headers["X-Request-Id"]) == 32


async def test_healthz_fails_when_neither_store_nor_spool_takes_records(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "spool-here").write_text("a file where the spool directory should be")
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, spool_dir=str(tmp_path / "spool-here"))
    status, text, _ = await get(gateway, "/healthz")
    assert status == 200 and '"status":"degraded"' in text and "the spool refuses writes" in text

    async def refuse(*_: Any) -> None:
        raise StoreUnavailable("disk full")

    gateway.app[STORE].insert_interactions = refuse  # type: ignore[method-assign]
    await gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    writer = gateway.app[CAPTURE_WRITER]
    while writer.store_error is None:  # the writer tries the store, then the spool, and holds it
        await asyncio.sleep(0.01)
    status, text, _ = await get(gateway, "/healthz")
    body = json.loads(text)
    assert status == 503 and body["status"] == "failing"
    assert "the store refuses writes: disk full" in body["reasons"] and body["capture"]["pending"] == 1
    status, text, _ = await get(gateway, "/livez")
    assert status == 200


def test_a_model_not_in_model_list_is_counted_under_one_label_whatever_its_name() -> None:
    from capture.writer import CaptureWriter
    from proxy.edge.metrics import Metrics
    from proxy.pipeline.dialect import UpstreamCall
    from proxy.pipeline.exchange import Exchange

    metrics = Metrics(declared_models=frozenset({MODEL}))
    for model in (MODEL, "x" * 200_000, 'evil"}\nctxgate_fake 1', MODEL):  # an open gateway forwards any name
        exchange = Exchange(call=UpstreamCall(wire="openai_chat", path="/chat/completions", model=model, stream=False,
                                              body={}))
        metrics.observe("/v1/chat/completions", 200, 5.0, exchange)

    class NoStore:
        def pool_usage(self) -> None:
            return None

    text = metrics.render(CaptureWriter(NoStore(), spool=None), NoStore())  # type: ignore[arg-type]
    calls = [line for line in text.splitlines() if line.startswith("ctxgate_model_calls_total{")]
    assert calls == [f'ctxgate_model_calls_total{{model="{MODEL}",route="/v1/chat/completions",status="200"}} 2',
                     'ctxgate_model_calls_total{model="undeclared",route="/v1/chat/completions",status="200"} 2']
    assert len(text) < 20_000 and "ctxgate_fake" not in text
