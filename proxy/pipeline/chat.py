"""`POST /v1/chat/completions`: the gateway's pipeline, top to bottom in one handler."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiohttp import web

from capture.store import StoreUnavailable
from proxy.appkeys import APPROVALS, CAPTURE_WRITER, EXCHANGE, KEYRING, SETTINGS, STORE, UPSTREAM
from proxy.dialects.openai_chat.assembly import StreamAssembler
from proxy.edge.bodies import read_json
from proxy.dialects.openai_chat.chat_request import ChatRequest, UpstreamCall, parse_chat_request
from proxy.pipeline.context import ContextPack, build_pack, inject
from proxy.edge.errors import NotFound, Unauthorized, UpstreamError
from proxy.pipeline.exchange import Exchange, Outcome, Stage
from proxy.pipeline.identity import Identity, identify
from proxy.config.settings import Settings
from proxy.dialects.openai_chat.gate import StreamToolGate, enforce_completion
from proxy.dialects.openai_chat.screening import declared_tool_names, screen_request
from proxy.pipeline.tool_guard import ToolGuard
from proxy.upstream.seam import Upstream
from proxy.edge.wire import SSE_DONE, SSE_KEEPALIVE, error_envelope, json_response, sse_frame

log = structlog.get_logger("ctxgate.proxy")

CONTEXT_HEADER = "X-Ctxgate-Context"  # `off`: no context pack for this request


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """parse -> identify -> pack context -> forward -> enforce policy -> respond -> record."""
    app = request.app
    exchange = request[EXCHANGE] = Exchange()
    chat = exchange.chat = parse_chat_request(await read_json(request))
    started = time.perf_counter_ns()
    identity = exchange.identity = identify(request, chat, app[SETTINGS], app[KEYRING])
    ensure_model_reachable(chat, identity, app[SETTINGS])
    pack = exchange.pack = await pack_context(request, chat, identity, app[SETTINGS])
    call = exchange.call = prepare_call(chat, identity, app[SETTINGS], pack)
    exchange.transport = app[UPSTREAM].transport_for(call)
    guard = ToolGuard(
        policies=app[SETTINGS].policy, book=app[APPROVALS], store=app[STORE], project=identity.project,
        session_id=identity.session_id, interaction_id=exchange.id, declared=declared_tool_names(chat.params),
    )
    exchange.tool_decisions = guard.decisions
    exchange.time_stage(Stage.CONTEXT, started)
    try:
        if chat.stream:
            return await relay_stream(request, call, exchange, app[UPSTREAM], guard)
        return await relay_completion(request, call, exchange, app[UPSTREAM], guard)
    except asyncio.CancelledError:  # the client went away (the upstream call is cancelled with us)
        exchange.finish(Outcome.CLIENT_DISCONNECTED, error="the client closed the connection before the answer")
        raise
    except Exception as error:  # a bug of ours: the error boundary answers; the record says so
        exchange.finish(Outcome.GATEWAY_ERROR, error=f"{type(error).__name__} in the gateway")
        raise
    finally:
        if exchange.outcome is None:
            exchange.finish(Outcome.CLIENT_DISCONNECTED, error="request cancelled before completion")
        enqueued = time.perf_counter_ns()
        app[CAPTURE_WRITER].submit(exchange.to_interaction())
        exchange.time_stage(Stage.CAPTURE, enqueued)


async def pack_context(
    request: web.Request, chat: ChatRequest, identity: Identity, settings: Settings
) -> ContextPack | None:
    """The project's knowledge for this request, unless the project or the request opts out."""
    context = settings.context_for(identity.project)
    if not context.enabled or request.headers.get(CONTEXT_HEADER, "").lower() == "off":
        return None
    try:
        return await build_pack(request.app[STORE], identity.project, chat.messages, context.budget_tokens)
    except StoreUnavailable as error:  # the call goes on without its context rather than fail
        log.warning("context_pack_skipped", error=str(error), project=identity.project)
        return None


def ensure_model_reachable(chat: ChatRequest, identity: Identity, settings: Settings) -> None:
    """Refuse, before any work, a model this caller cannot reach."""
    if settings.route_for(chat.model) is not None:
        return
    if identity.key is not None:
        # Behind virtual keys the caller holds no provider key: only declared models exist.
        raise NotFound(f"model {chat.model!r} is not available through this gateway", param="model",
                       code="model_not_found")
    if identity.bearer_token is None:
        # Without this, litellm would fall back to provider credentials in the gateway's own
        # environment, and any caller could spend them on any model.
        raise Unauthorized(
            f"model {chat.model!r} is not declared in this gateway's model_list, so the call needs "
            "your own provider key: send it as 'Authorization: Bearer <key>'",
            code="missing_provider_key",
        )


def prepare_call(chat: ChatRequest, identity: Identity, settings: Settings, pack: ContextPack | None) -> UpstreamCall:
    """The call as it will be sent upstream: the client's messages with the context pack
    injected, and its parameters less the tools the project's policy blocks."""
    params = chat.params
    if settings.policy.enforcing:
        params = screen_request(params, settings.policy.for_project(identity.project))
    return UpstreamCall(
        model=chat.model,
        messages=inject(chat.messages, pack),
        stream=chat.stream,
        params=params,
        client_api_key=identity.bearer_token,
    )


async def relay_completion(
    request: web.Request, call: UpstreamCall, exchange: Exchange, upstream: Upstream, guard: ToolGuard
) -> web.Response:
    started = time.perf_counter_ns()
    try:
        completion = await upstream.complete(call)
    except UpstreamError as error:
        exchange.time_stage(Stage.UPSTREAM, started)
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        return _with_headers(error.response(), exchange)
    started = exchange.time_stage(Stage.UPSTREAM, started)
    completion = await enforce_completion(completion, guard, is_client_gone=lambda: _is_gone(request))
    exchange.time_stage(Stage.POLICY, started)
    messages = [choice.get("message") for choice in completion.get("choices", ())]
    exchange.response = messages[0] if len(messages) == 1 else messages
    exchange.set_usage(completion.get("usage"))
    exchange.finish(Outcome.OK)
    exchange.ttft_ms = exchange.latency_ms
    return json_response(completion, headers=exchange.headers())


async def relay_stream(
    request: web.Request, call: UpstreamCall, exchange: Exchange, upstream: Upstream, guard: ToolGuard
) -> web.StreamResponse:
    """Starts the client's stream only once the first upstream chunk is in hand, so a call
    that fails at once still gets a proper error status."""
    started = time.perf_counter_ns()
    chunks = upstream.stream(call)
    try:
        chunk = await anext(chunks, None)
    except UpstreamError as error:
        exchange.time_stage(Stage.UPSTREAM, started)
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        return _with_headers(error.response(), exchange)
    exchange.time_stage(Stage.UPSTREAM, started)
    exchange.ttft_ms = round(exchange.elapsed_ms(), 3)

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **exchange.headers()}
    )
    assembler = StreamAssembler()
    # The SDK skips SSE comments: they keep the connection alive while a person decides.
    gate = StreamToolGate(guard, keepalive=lambda: response.write(SSE_KEEPALIVE),
                          is_client_gone=lambda: _is_gone(request))
    try:
        await response.prepare(request)
        while chunk is not None:
            gated = time.perf_counter_ns()
            for allowed in await gate.feed(chunk):
                await response.write(sse_frame(allowed))
                assembler.add(allowed)  # after the write: what could not be sent is not recorded
            exchange.time_stage(Stage.POLICY, gated)
            chunk = await anext(chunks, None)
        for settled in await gate.finish():
            await response.write(sse_frame(settled))
            assembler.add(settled)
        await response.write(SSE_DONE)
        exchange.finish(Outcome.OK)
    except UpstreamError as error:
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        # Mid-stream, the status is sent: OpenAI's own way is an error event the SDK raises.
        try:
            await response.write(sse_frame(error_envelope(error.message, error.kind, code=error.code)))
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        exchange.finish(Outcome.CLIENT_DISCONNECTED, error="client closed the connection mid-stream")
    except Exception as error:  # boundary: the status is sent, so the stream ends with an error event
        log.exception("stream_failed", interaction_id=exchange.id)
        exchange.finish(Outcome.GATEWAY_ERROR, error=f"{type(error).__name__} in the gateway")
        with contextlib.suppress(ConnectionResetError):
            await response.write(sse_frame(error_envelope(
                "the gateway failed while streaming this answer; see its log", "internal_error",
                code="gateway_error")))
    finally:
        await chunks.aclose()  # releases the upstream connection when we stop early
        exchange.response = assembler.message()
        exchange.set_usage(assembler.usage)
    return response


def _is_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _with_headers(response: web.Response, exchange: Exchange) -> web.Response:
    response.headers.update(exchange.headers())
    return response
