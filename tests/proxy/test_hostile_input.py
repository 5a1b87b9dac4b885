"""Input that once stopped capture for everyone or answered 500: each now gets a clear error in
the OpenAI envelope (or is normalised), and the calls that follow are still recorded."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
import orjson
import pytest

from capture.store import StoreUnavailable
from proxy.appkeys import CAPTURE_WRITER, STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply
from proxy.config.keys import digest, parse_keys
from tests.conftest import MODEL, Gateway, make_gateway

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def raw_request(gateway: Gateway, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any] | None]:
    """Send bytes as they are (aiohttp's client would not send a header that is not UTF-8)."""
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header_part, _, payload = response.partition(b"\r\n\r\n")
    status = int(header_part.split(b" ", 2)[1])
    is_json = b"application/json" in header_part.lower()
    return status, orjson.loads(payload) if is_json and payload else None


def chat_head(*extra: bytes) -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"".join(
        line + b"\r\n" for line in extra)


async def still_recording(gateway: Gateway, already: int) -> None:
    """A plain call after the bad one is recorded: capture was not stopped."""
    await gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "after"}])
    await asyncio.wait_for(gateway.app[CAPTURE_WRITER].wait_written(already + 1), 10)
    assert gateway.app[CAPTURE_WRITER].dead_letters_total == 0


@pytest.mark.parametrize("header", [b"X-Ctxgate-Session", b"X-Ctxgate-Client", b"X-Ctxgate-Project"])
async def test_our_headers_that_are_not_utf8_get_400_naming_them(gateway: Gateway, header: bytes) -> None:
    status, body = await raw_request(gateway, chat_head(header + b": s\xff\xfe"), orjson.dumps(CHAT))
    assert status == 400 and body is not None
    assert body["error"]["code"] == "invalid_header" and header.decode() in body["error"]["param"]
    assert gateway.upstream.received == []
    await still_recording(gateway, 0)


async def test_an_agent_session_header_that_is_not_utf8_is_ignored(gateway: Gateway) -> None:
    status, _ = await raw_request(gateway, chat_head(b"session-id: \xffcodex"), orjson.dumps(CHAT))
    assert status == 200
    [record] = await gateway.recorded(1)
    assert record.session_id.startswith("s_")  # inferred instead
    await still_recording(gateway, 1)


async def test_a_user_agent_that_is_not_utf8_is_recorded_with_its_bytes_replaced(gateway: Gateway) -> None:
    status, _ = await raw_request(gateway, chat_head(b"User-Agent: bot\xff/1.0 (x)"), orjson.dumps(CHAT))
    assert status == 200
    [record] = await gateway.recorded(1)
    assert record.client == "bot\ufffd/1.0"


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/interactions"])
async def test_a_body_nested_past_the_limit_gets_400_naming_it(gateway: Gateway, path: str) -> None:
    payload = {**CHAT, "metadata": {"deep": nested(300)}} if "chat" in path else {"prompt": nested(300)}
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + path, data=json.dumps(payload),  # orjson writes 254 deep
                                      headers={"Content-Type": "application/json"})
        body = await response.json()
    assert response.status == 400 and body["error"]["code"] == "json_too_deep"
    assert "nested more than 128 levels" in body["error"]["message"]
    await still_recording(gateway, 0)


async def test_a_body_nested_within_the_limit_is_forwarded_and_recorded(gateway: Gateway) -> None:
    payload = {**CHAT, "metadata": {"deep": nested(100)}}
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json=payload)
    assert response.status == 200
    [record] = await gateway.recorded(1)
    assert record.params["metadata"] == {"deep": nested(100)}


async def provider_with_usage(
    aiohttp_server: Any, tmp_path: Path, usage: dict[str, Any], transport: str | None = None
) -> Gateway:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "four words of answer"},
                         "finish_reason": "stop"}],
            "usage": usage,
        })

    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(provider)
    return await make_gateway(aiohttp_server, FakeUpstream(base_url=str(server.make_url("/v1"))), tmp_path,
                              transport=transport)


@pytest.mark.parametrize("usage", [{"prompt_tokens": 2**63, "completion_tokens": 3},
                                   {"prompt_tokens": -4, "completion_tokens": 2**64 - 1}])
async def test_a_provider_usage_past_what_a_count_can_be_is_counted_locally(
    aiohttp_server: Any, tmp_path: Path, usage: dict[str, Any]
) -> None:
    gateway = await provider_with_usage(aiohttp_server, tmp_path, usage)
    for _ in range(2):
        await gateway.client().chat.completions.create(**CHAT)
    records = await gateway.recorded(2)
    assert all(r.prompt_tokens is not None and 0 < r.prompt_tokens < 100 for r in records)
    assert gateway.app[CAPTURE_WRITER].dead_letters_total == 0


@pytest.mark.parametrize(("payload", "param"), [
    ({"prompt": "p", "prompt_tokens": 2**63}, "prompt_tokens"),
    ({"prompt": "p", "latency_ms": -1}, "latency_ms"),
    ({"prompt": "p", "created_at": "0001-01-01T00:00:00+05:00"}, "created_at"),
    ({"prompt": "p", "created_at": "9999-12-31T23:59:59-05:00"}, "created_at"),
])
async def test_recorded_values_out_of_range_get_400(gateway: Gateway, payload: dict[str, Any], param: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/interactions", json=payload)
        body = await response.json()
    assert response.status == 400 and body["error"]["param"] == param


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_a_since_out_of_range_gets_400(gateway: Gateway, since: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(gateway.url + "/interactions", params={"since": since})
        body = await response.json()
    assert response.status == 400 and body["error"]["param"] == "since"


async def test_a_year_before_1000_is_stored_with_four_digits_and_sorts(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/interactions", json={"prompt": "p", "created_at": "0999-05-01"})
        assert response.status == 201
        assert (await response.json())["created_at"] == "0999-05-01 00:00:00"


async def test_ingest_with_a_project_that_is_not_text_gets_400(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/ingest", json={"project": 7, "documents": []})
        body = await response.json()
    assert response.status == 400 and body["error"]["param"] == "project"


async def test_an_authorization_header_that_is_not_utf8_gets_401(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    keys = parse_keys([{"sha256": digest("ctxg-good"), "client": "alice"}], "keys")
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, keys=keys)
    status, body = await raw_request(gateway, chat_head(b"Authorization: Bearer ctxg-\xff\xfe"), orjson.dumps(CHAT))
    assert status == 401 and body is not None and body["error"]["code"] == "invalid_api_key"
    status, _ = await raw_request(gateway, b"GET /interactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n")
    assert status == 401


STORE_ROUTES = [
    ("GET", "/sessions", None, "list_sessions"),
    ("GET", "/sessions/s1", None, "get_sessions"),
    ("GET", "/memories", None, "list_memories"),
    ("POST", "/memories", {"project": "p", "content": "c"}, "add_memory"),
    ("DELETE", "/memories/m1", None, "delete_memory"),
    ("GET", "/approvals/a1", None, "get_approval"),
    ("GET", "/approvals", None, "list_approvals"),
    ("GET", "/context?q=hello", None, "search_knowledge"),
    ("GET", "/interactions", None, "list_interactions"),
    ("POST", "/interactions", {"prompt": "p"}, "insert_interactions"),
    ("POST", "/ingest", {"project": "p", "documents": [{"path": "a.md", "text": "hello"}]}, "source_hashes"),
]


@pytest.mark.parametrize(("method", "path", "payload", "method_name"), STORE_ROUTES)
async def test_a_store_that_is_down_gets_503_with_retry_after(
    gateway: Gateway, method: str, path: str, payload: Any, method_name: str
) -> None:
    async def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("disk detached")

    setattr(gateway.app[STORE], method_name, down)
    async with aiohttp.ClientSession() as session:
        response = await session.request(method, gateway.url + path, json=payload)
        body = await response.json()
    assert response.status == 503, body
    assert response.headers["Retry-After"] == "5"
    assert body["error"]["code"] == "store_unavailable" and "disk detached" in body["error"]["message"]


async def test_a_message_content_of_the_wrong_type_is_refused_before_any_call(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions",
                                      json={**CHAT, "messages": [{"role": "user", "content": 5}]})
        body = await response.json()
    assert response.status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == ("messages[0].content", "invalid_type")
    assert gateway.upstream.received == []


@pytest.mark.parametrize(("params", "wrong"), [
    ({"response_format": "json"}, "response_format"),
])
async def test_a_request_litellm_cannot_send_gets_400_not_502(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, params: dict[str, Any], wrong: str
) -> None:
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, transport="translate")  # litellm's own checks
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, **params})
        body = await response.json()
    assert response.status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_request"
    assert gateway.upstream.received == []


async def test_a_provider_that_is_down_still_gets_502(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(status=503, error="overloaded"))
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json=CHAT)
    assert response.status == 502


async def test_a_provider_answer_litellm_cannot_read_gets_502_without_a_traceback(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    # litellm cannot read it; the native transport passes the provider's answer on as it came
    gateway = await provider_with_usage(aiohttp_server, tmp_path, {"prompt_tokens": "many"}, transport="translate")
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json=CHAT)
        body = await response.json()
    assert response.status == 502
    assert "Traceback" not in body["error"]["message"] and "received_args" not in body["error"]["message"]
    [record] = await gateway.recorded(1)
    assert record.status == "upstream_error" and "Traceback" not in record.error


@pytest.mark.parametrize("field", ["status", "project", "session_id", "client", "model"])
@pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "x" * 257])
async def test_recorded_labels_must_be_printable_and_short(gateway: Gateway, field: str, value: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/interactions", json={"prompt": "p", field: value})
        body = await response.json()
    assert response.status == 400 and body["error"]["param"] == field


async def test_a_request_id_that_is_not_printable_ascii_is_replaced(gateway: Gateway) -> None:
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: s\xff\xfe\r\nConnection: close\r\n\r\n")
    head = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")[0].decode()
    writer.close()
    assert head.startswith("HTTP/1.1 200")
    [request_id] = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id")]
    assert len(request_id) == 32 and request_id.isalnum()


def test_a_log_line_with_text_orjson_will_not_write_is_written_all_the_same() -> None:
    from proxy.edge.logs import _dumps

    assert orjson.loads(_dumps({"event": "x", "request_id": "s\udcff", "n": 2**70})) == {
        "event": "x", "request_id": "s\\xff", "n": str(2**70)}


async def test_a_body_whose_encoding_does_not_decode_gets_400_and_no_stack_trace(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    import structlog

    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            response = await session.post(gateway.url + "/v1/chat/completions", data=orjson.dumps(CHAT),
                                          headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            body = await response.json()
        await asyncio.sleep(0)  # aiohttp's own handling of the connection after the answer
    assert response.status == 400 and body["error"]["code"] == "invalid_body"
    assert all(entry["log_level"] != "error" for entry in logs), logs
    # aiohttp logs through the standard library, not structlog
    aiohttp_errors = [r.getMessage() for r in caplog.records
                      if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR]
    assert aiohttp_errors == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_answer_orjson_cannot_write_is_passed_on_and_recorded(
    aiohttp_server: Any, tmp_path: Path, stream: bool
) -> None:
    """A lone surrogate escaped in the provider's JSON, and usage past 64 bits."""
    async def answer(request: web.Request) -> web.StreamResponse:
        message = '{"role": "assistant", "content": "half \\\\ud800 a pair"}'
        if not stream:
            return web.Response(content_type="application/json", text=(
                '{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, '
                f'"message": {message}, "finish_reason": "stop"}}], "usage": {{"prompt_tokens": 3, '
                '"completion_tokens": 18446744073709551615, "total_tokens": 36893488147419103232}}'))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", '
                             b'"choices": [{"index": 0, "delta": {"content": "half \\ud800 a pair"}, '
                             b'"finish_reason": null}]}\n\n')
        await response.write(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", '
                             b'"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
        return response

    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(provider)
    gateway = await make_gateway(aiohttp_server, FakeUpstream(base_url=str(server.make_url("/v1"))), tmp_path)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": stream})
        text = await response.text()
    assert response.status == 200 and "gateway_error" not in text
    assert "half \\\\ud800 a pair" in text or "half \\\\xed\\\\xa0\\\\x80 a pair" in text
    [record] = await gateway.recorded(1)
    assert record.status == "ok" and record.response["content"].startswith("half ")
    assert gateway.app[CAPTURE_WRITER].dead_letters_total == 0


@pytest.mark.parametrize(("path", "field"), [("/v1/embeddings", "input"), ("/v1/completions", "prompt")])
async def test_the_embeddings_and_completions_routes_answer_bad_input_with_400(
    gateway: Gateway, upstream: FakeUpstream, path: str, field: str
) -> None:
    bad = [b"[1, 2]", b"\xff\xfe{", b'{"model": 5, "' + field.encode() + b'": "x"}',
           orjson.dumps({"model": MODEL, field: {"a": 1}}), orjson.dumps({"model": MODEL, field: [[1], "x"]}),
           json.dumps({"model": MODEL, field: nested(300)}).encode()]
    async with aiohttp.ClientSession() as session:
        for body in bad:
            response = await session.post(gateway.url + path, data=body, headers={"Content-Type": "application/json"})
            answer = await response.json()
            assert response.status == 400 and answer["error"]["message"], (body, answer)
    assert upstream.received == []
    await still_recording(gateway, 0)


async def test_the_responses_route_answers_bad_input_with_400(gateway: Gateway, upstream: FakeUpstream) -> None:
    bad = [b"[1, 2]", b"\xff\xfe{", b'{"model": 5, "input": "x"}', orjson.dumps({"model": MODEL}),
           orjson.dumps({"model": MODEL, "input": {"a": 1}}), orjson.dumps({"model": MODEL, "input": [1, 2]}),
           orjson.dumps({"model": MODEL, "input": [{"role": "user", "content": 5}]}),
           orjson.dumps({"model": MODEL, "input": "x", "instructions": 5}),
           orjson.dumps({"model": MODEL, "input": "x", "stream": "yes"}),
           orjson.dumps({"model": MODEL, "input": "x", "tools": "all"}),
           orjson.dumps({"model": MODEL, "input": "x", "previous_response_id": 7}),
           json.dumps({"model": MODEL, "input": nested(300)}).encode()]
    async with aiohttp.ClientSession() as session:
        for body in bad:
            response = await session.post(gateway.url + "/v1/responses", data=body,
                                          headers={"Content-Type": "application/json"})
            answer = await response.json()
            assert response.status == 400 and answer["error"]["message"], (body, answer)
    assert upstream.received == []
    await still_recording(gateway, 0)
