"""Bad input and failing upstreams get the OpenAI error envelope with the right status."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog

from proxy.app import create_app
from proxy.demo.fake_upstream import FakeUpstream, Reply
from proxy.config.settings import ModelRoute
from tests.conftest import MODEL, Gateway, gateway_settings, make_gateway


async def post(gateway: Gateway, data: bytes, path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + path, data=data, headers={"Content-Type": "application/json"})
        return response.status, await response.json()


def assert_envelope(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-test"}', "messages"),
        (b'{"model": "gpt-test", "messages": "hello"}', "messages"),
        (b'{"model": "gpt-test", "messages": []}', "messages"),
        (b'{"model": "gpt-test", "messages": ["hello"]}', "messages[0]"),
        (b'{"model": "gpt-test", "messages": [{"content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "stream": true, '
         b'"stream_options": true}', "stream_options"),
    ],
)
async def test_bad_request_bodies_get_400_naming_the_field(gateway: Gateway, data: bytes, param: str | None) -> None:
    status, body = await post(gateway, data)
    assert status == 400
    error = assert_envelope(body)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert gateway.upstream.received == []


async def test_body_over_the_limit_gets_413(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    app = create_app(gateway_settings(upstream, tmp_path, max_body_bytes=64 * 1024))
    server = await aiohttp_server(app)
    big = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "' + b"x" * 100_000 + b'"}]}'
    async with aiohttp.ClientSession() as session:
        response = await session.post(str(server.make_url("/v1/chat/completions")), data=big)
        body = await response.json()
    assert response.status == 413
    assert assert_envelope(body)["code"] == "request_too_large"
    assert upstream.received == []


async def test_body_that_does_not_decode_gets_400(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions",
            data=b"this is not gzip at all",
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        body = await response.json()
    assert response.status == 400
    assert assert_envelope(body)["code"] == "invalid_body"


async def test_unknown_route_gets_404_envelope(gateway: Gateway) -> None:
    status, body = await post(gateway, b"{}", path="/v1/nothing-here")
    assert status == 404
    assert_envelope(body)


@pytest.mark.parametrize(
    ("upstream_status", "client_status", "sdk_error"),
    [
        (400, 400, openai.BadRequestError),
        (401, 401, openai.AuthenticationError),
        (403, 403, openai.PermissionDeniedError),
        (404, 404, openai.NotFoundError),
        (429, 429, openai.RateLimitError),
        (500, 502, openai.InternalServerError),
        (503, 502, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_pass_on_with_their_status(
    gateway: Gateway, upstream_status: int, client_status: int, sdk_error: type[Exception], stream: bool
) -> None:
    gateway.upstream.push(Reply(status=upstream_status, error="provider says no"))
    with pytest.raises(sdk_error) as caught:
        await gateway.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    assert caught.value.status_code == client_status  # type: ignore[attr-defined]
    assert "provider says no" in caught.value.message  # type: ignore[attr-defined]
    [stored] = await gateway.recorded()
    assert stored.status == "upstream_error" and "provider says no" in stored.error
    assert caught.value.response.headers["X-Ctxgate-Interaction-Id"] == stored.id  # type: ignore[attr-defined]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_upstream_gets_502(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    dead = ModelRoute(model_name=MODEL, model="openai/fake-model", api_base=f"http://127.0.0.1:{closed_port()}/v1", api_key="k")
    app = create_app(gateway_settings(upstream, tmp_path, models=(dead,)))
    server = await aiohttp_server(app)
    client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unavailable"  # type: ignore[index]


@pytest.mark.parametrize(
    ("route_params", "gateway_timeout_s"),
    [({}, 0.3), ({"timeout": 0.3}, 600)],  # the gateway's default; a route's own timeout wins over it
)
async def test_upstream_timeout_gets_504(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, route_params: dict[str, Any], gateway_timeout_s: float
) -> None:
    route = ModelRoute(model_name=MODEL, model="openai/fake-model", api_base=upstream.base_url, api_key="k",
                       extra=route_params)
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,), upstream_timeout_s=gateway_timeout_s)
    upstream.push(Reply(text="too late", delay_s=2))
    with pytest.raises(openai.APIStatusError) as caught:
        await gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]
    [stored] = await gateway.recorded()
    assert stored.status == "upstream_error" and "timed out" in (stored.error or "")


async def test_stream_cut_by_upstream_raises_in_sdk_and_keeps_partial_response(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="abcdefghijklmnop", fragment=2, reset_after_chunks=4))
    stream = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "abcdef"
    [stored] = await gateway.recorded()
    assert stored.status == "upstream_error"
    assert stored.response["content"] == "abcdef"


async def test_a_refused_request_logs_no_interaction_id(gateway: Gateway) -> None:
    with structlog.testing.capture_logs() as logs:
        status, _ = await post(gateway, b'{"model": "gpt-test"}')
    assert status == 400
    [line] = [entry for entry in logs if entry["event"] == "request_completed"]
    assert line["status"] == 400 and "interaction_id" not in line


@pytest.mark.parametrize("failure", ["too_large", "bad_request", "store_down"])
async def test_a_routes_errors_are_rendered_in_the_shape_its_dialect_sets(aiohttp_client: Any, failure: str) -> None:
    from aiohttp import web

    from capture.store import StoreUnavailable
    from proxy.edge.errors import ERROR_BODY, BadRequest, GatewayError, error_middleware

    def anthropic_like(error: GatewayError) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error.kind, "message": error.message}}

    async def handler(request: web.Request) -> web.Response:
        request[ERROR_BODY] = anthropic_like
        if failure == "too_large":
            await request.read()  # over client_max_size: aiohttp raises its 413
        if failure == "store_down":
            raise StoreUnavailable("disk gone")
        raise BadRequest("'max_tokens' is required", param="max_tokens")

    app = web.Application(middlewares=[error_middleware], client_max_size=10)
    app.router.add_post("/v1/messages", handler)
    client = await aiohttp_client(app)
    response = await client.post("/v1/messages", data=b"x" * 100)
    body = await response.json()
    assert response.status == {"too_large": 413, "bad_request": 400, "store_down": 503}[failure]
    assert set(body) == {"type", "error"} and body["type"] == "error" and body["error"]["message"]
    if failure == "store_down":
        assert response.headers["Retry-After"] == "5"
    unrouted = await client.get("/nowhere")  # no dialect took the request: OpenAI's envelope
    assert_envelope(await unrouted.json())
