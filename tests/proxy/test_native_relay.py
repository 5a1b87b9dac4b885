"""On the native transport a stream's frames reach the client as the provider wrote them: only
the model name is stamped in, and only tool calls are held and written anew."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from policy.rules import parse_policy
from proxy.demo.fake_upstream import FakeUpstream
from proxy.edge.errors import UpstreamError
from proxy.upstream.native import _event, _frames
from tests.conftest import MODEL, Gateway, make_gateway

CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
POLICY = {"default": {"mode": "allow", "blocked_tools": ["destroy"]}}


def frame(data: dict[str, Any], *, compact: bool = True) -> bytes:
    # ensure_ascii: the provider escapes non-ASCII text, which orjson would write as UTF-8
    text = json.dumps(data, separators=(",", ":") if compact else None, ensure_ascii=True)
    return b"data: " + text.encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "provider-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


async def behind(aiohttp_server: Any, tmp_path: Path, pieces: list[bytes]) -> Gateway:
    """A gateway in front of a provider that writes `pieces`, one write each."""
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        return response

    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(provider)
    return await make_gateway(aiohttp_server, FakeUpstream(base_url=str(server.make_url("/v1"))), tmp_path,
                              transport="native", policy=parse_policy(POLICY))


async def stream_bytes(gateway: Gateway) -> bytes:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json=CHAT)
        assert response.status == 200
        return await response.read()


def stamped(raw: bytes) -> bytes:
    return raw.replace(b'"model":"provider-model"', b'"model":"' + MODEL.encode() + b'"')


async def test_text_frames_reach_the_client_byte_for_byte_with_the_model_name_stamped(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    texts = [frame(chunk({"role": "assistant", "content": ""})),
             frame(chunk({"content": "caf\u00e9 \u2603 "}, provider_field={"kept": True})),  # escaped as sent
             frame(chunk({"content": "done"}, system_fingerprint="fp_1"))]
    finish = frame(chunk({}, "stop"))
    gateway = await behind(aiohttp_server, tmp_path, [*texts, finish, b"data: [DONE]\n\n"])
    body = await stream_bytes(gateway)
    for raw in texts:
        assert stamped(raw) in body  # not decoded and written anew: the escapes and key order stay
    assert b"provider-model" not in body and body.endswith(b"data: [DONE]\n\n")
    [record] = await gateway.recorded(1)
    assert record.status == "ok" and record.response["content"] == "caf\u00e9 \u2603 done"


async def test_a_tool_call_among_relayed_text_is_still_held_and_decided(aiohttp_server: Any, tmp_path: Path) -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "destroy", "arguments": "{}"}}
    text = frame(chunk({"role": "assistant", "content": "let me"}))
    gateway = await behind(aiohttp_server, tmp_path, [
        text, frame(chunk({"tool_calls": [call]})), frame(chunk({}, "tool_calls")), b"data: [DONE]\n\n"])
    body = await stream_bytes(gateway)
    assert stamped(text) in body and b"call_1" not in body
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["stop"] and all(e["model"] == MODEL for e in events)
    [record] = await gateway.recorded(1)
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [("destroy", "deny")]


async def test_a_provider_writing_json_with_spaces_still_gets_the_model_name_stamped(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    text = frame(chunk({"role": "assistant", "content": "spaced"}), compact=False)
    gateway = await behind(aiohttp_server, tmp_path, [text, frame(chunk({}, "stop"), compact=False),
                                                       b"data: [DONE]\n\n"])
    body = await stream_bytes(gateway)
    assert b"provider-model" not in body
    assert text.replace(b'"model": "provider-model"', b'"model":"' + MODEL.encode() + b'"') in body


class Pieces:
    """Stands in for aiohttp's reader: each piece is one network read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def frames_of(pieces: list[bytes]) -> list[bytes]:
    return [f async for batch in _frames(Pieces(pieces)) for f in batch]  # type: ignore[arg-type]  # a stand-in


STREAM = (b"data: {\"a\":1}\r\n\r\n: keep-alive\r\n\r\nevent: delta\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\n"
          b"data: {\"c\":\"x\\r\\ny\"}\n\ndata: [DONE]\n\n")


async def test_events_cut_anywhere_across_reads_come_out_whole() -> None:
    whole = await frames_of([STREAM])
    assert [e.data if e else None for e in map(_event, whole)][:3] == [{"a": 1}, None, {"b": 2}]
    assert _event(whole[2]).name == "delta"  # type: ignore[union-attr]
    for cut in range(1, len(STREAM)):
        assert await frames_of([STREAM[:cut], STREAM[cut:]]) == whole, cut
    assert await frames_of([bytes([byte]) for byte in STREAM]) == whole


async def test_an_event_that_is_not_json_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON"):
        _event(b"data: <html>")
