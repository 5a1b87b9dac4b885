"""The gateway's pipeline, top to bottom in one handler, for every dialect: parse -> identify ->
pack context -> prepare -> forward -> gate -> respond -> record. The dialect reads and writes
its wire shape at both ends; nothing here knows a body's JSON."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog
from aiohttp import web

from capture.records import Interaction
from capture.store import Store, StoreUnavailable
from proxy.appkeys import APPROVALS, CAPTURE_WRITER, EXCHANGE, KEYRING, SETTINGS, STORE, UPSTREAM
from proxy.config.settings import Settings
from proxy.edge.bodies import read_json
from proxy.edge.errors import ERROR_BODY, BadRequest, GatewayError, NotFound, Unauthorized, UpstreamError
from proxy.edge.wire import SSE_KEEPALIVE, json_response
from proxy.pipeline.context import ContextPack, build_pack
from proxy.pipeline.dialect import (
    ClientRequest, Continuation, Dialect, StreamRelay, UpstreamCall, interaction_of_made_response,
)
from proxy.pipeline.exchange import Exchange, Outcome, Stage
from proxy.pipeline.identity import Identity, hold_to_rate, identify
from proxy.pipeline.tool_guard import ToolGuard
from proxy.upstream.seam import Upstream

log = structlog.get_logger("ctxgate.proxy")

CONTEXT_HEADER = "X-Ctxgate-Context"  # `off`: no context pack for this request
# How long a continuation waits for the record it goes on from (the writer stores within ~20 ms).
RECORD_WAIT_TRIES, RECORD_WAIT_S = 40, 0.025


def proxy_handler(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route handler for one dialect's endpoint."""
    async def handle(request: web.Request) -> web.StreamResponse:
        return await proxy_call(request, dialect)
    return handle


async def proxy_call(request: web.Request, dialect: Dialect) -> web.StreamResponse:
    """parse -> identify -> pack context -> prepare -> forward -> enforce policy -> respond -> record."""
    app = request.app
    request[ERROR_BODY] = dialect.error_body
    exchange = request[EXCHANGE] = Exchange(wire=dialect.wire)
    asked = exchange.request = dialect.parse(await read_json(request), request.headers)
    started = time.perf_counter_ns()
    settings = app[SETTINGS]
    identity = exchange.identity = identify(request, asked, settings, app[KEYRING])
    ensure_model_reachable(asked, identity, settings)
    await hold_to_rate(app[STORE], identity.key)  # a call refused before is not counted
    packing = time.perf_counter_ns()
    pack = exchange.pack = await pack_context(request, asked, identity, settings)
    exchange.pack_ns = (packing, time.perf_counter_ns())
    policy = settings.policy.for_project(identity.project) if settings.policy.enforcing else None
    call = exchange.call = dialect.prepare(asked, pack, policy, identity.bearer_token)
    exchange.transport = app[UPSTREAM].transport_for(call)
    if exchange.transport == "translate":  # where litellm's answer becomes a response the gateway names
        call = exchange.call = replace(call, interaction_id=exchange.id)
    if asked.continues is not None and (exchange.transport == "translate"
                                        or interaction_of_made_response(asked.continues.response_id)):
        call = exchange.call = await continue_from_record(request, asked.continues, call, identity)
    exchange.prompt, exchange.params = dialect.recorded_prompt(call)
    guard = ToolGuard(
        policies=settings.policy, book=app[APPROVALS], store=app[STORE], project=identity.project,
        session_id=identity.session_id, interaction_id=exchange.id, declared=asked.declared_tools,
        asked_in=lambda: exchange.asked_in(dialect),
    )
    exchange.tool_decisions = guard.decisions
    exchange.time_stage(Stage.CONTEXT, started)
    try:
        if call.stream:
            return await relay_stream(request, dialect, call, exchange, app[UPSTREAM], guard)
        return await relay_reply(request, dialect, call, exchange, app[UPSTREAM], guard)
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
    request: web.Request, asked: ClientRequest, identity: Identity, settings: Settings
) -> ContextPack | None:
    """The project's knowledge for this request, unless the project or the request opts out."""
    context = settings.context_for(identity.project)
    if not context.enabled or request.headers.get(CONTEXT_HEADER, "").lower() == "off":
        return None
    try:
        return await build_pack(request.app[STORE], identity.project, asked.query, context.budget_tokens)
    except StoreUnavailable as error:  # the call goes on without its context rather than fail
        log.warning("context_pack_skipped", error=str(error), project=identity.project)
        return None


async def continue_from_record(request: web.Request, continues: Continuation, call: UpstreamCall,
                               identity: Identity) -> UpstreamCall:
    """The call with the earlier turns put back from the record of the response it goes on
    from: the provider behind a translated route keeps none. 400 when there is no such record
    the caller may read."""
    interaction_id = interaction_of_made_response(continues.response_id)
    earlier = await _record_once_written(request.app[STORE], interaction_id) if interaction_id else None
    if earlier is None or earlier.project != identity.project or earlier.wire != call.wire or earlier.status != "ok":
        raise BadRequest(
            f"previous_response_id {continues.response_id!r} names no response this gateway made for project "
            f"{identity.project!r}; model {call.model!r} is translated, so its provider keeps no earlier turns: "
            "send the conversation as input items instead", param="previous_response_id",
            code="previous_response_not_found")
    return continues.rebuild(call, earlier)


async def _record_once_written(store: Store, interaction_id: str) -> Interaction | None:
    """The record, waiting a little for it: a follow-up sent at once can come before the
    capture writer stored the turn it goes on from."""
    for _ in range(RECORD_WAIT_TRIES):
        record = await store.get_interaction(interaction_id)
        if record is not None:
            return record
        await asyncio.sleep(RECORD_WAIT_S)
    return None


def ensure_model_reachable(asked: ClientRequest, identity: Identity, settings: Settings) -> None:
    """Refuse, before any work, a model this caller cannot reach."""
    if settings.route_for(asked.model) is not None:
        return
    if identity.key is not None:
        # Behind virtual keys the caller holds no provider key: only declared models exist.
        raise NotFound(f"model {asked.model!r} is not available through this gateway", param="model",
                       code="model_not_found")
    if identity.bearer_token is None:
        # Without this, litellm would fall back to provider credentials in the gateway's own
        # environment, and any caller could spend them on any model.
        raise Unauthorized(
            f"model {asked.model!r} is not declared in this gateway's model_list, so the call needs "
            "your own provider key: send it as 'Authorization: Bearer <key>'",
            code="missing_provider_key",
        )


async def relay_reply(
    request: web.Request, dialect: Dialect, call: UpstreamCall, exchange: Exchange, upstream: Upstream,
    guard: ToolGuard,
) -> web.Response:
    started = time.perf_counter_ns()
    try:
        reply = dialect.read_reply(await upstream.complete(call), call)
    except UpstreamError as error:
        exchange.time_stage(Stage.UPSTREAM, started)
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        return _error_response(error, dialect, exchange)
    started = exchange.time_stage(Stage.UPSTREAM, started)
    reply = await dialect.gate_reply(reply, guard, is_client_gone=lambda: _is_gone(request))
    exchange.time_stage(Stage.POLICY, started)
    exchange.response = dialect.recorded_reply(reply)
    exchange.usage = dialect.usage(reply)
    exchange.finish(Outcome.OK)
    exchange.ttft_ms = exchange.latency_ms
    return json_response(reply, headers=exchange.headers())


async def relay_stream(
    request: web.Request, dialect: Dialect, call: UpstreamCall, exchange: Exchange, upstream: Upstream,
    guard: ToolGuard,
) -> web.StreamResponse:
    """Starts the client's stream only once the first upstream events are in hand, so a call
    that fails at once still gets a proper error status."""
    started = time.perf_counter_ns()
    batches = upstream.stream(call)
    try:
        events = await anext(batches, None)
    except UpstreamError as error:
        exchange.time_stage(Stage.UPSTREAM, started)
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        return _error_response(error, dialect, exchange)
    exchange.time_stage(Stage.UPSTREAM, started)
    exchange.ttft_ms = round(exchange.elapsed_ms(), 3)

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **exchange.headers()}
    )
    # SSE comments keep the connection alive while a person decides; clients skip them.
    relay: StreamRelay = dialect.stream_relay(call, guard, keepalive=lambda: response.write(SSE_KEEPALIVE),
                                              is_client_gone=lambda: _is_gone(request))
    try:
        await response.prepare(request)
        while events is not None:
            gated = time.perf_counter_ns()
            frames = await relay.feed(events)
            exchange.time_stage(Stage.POLICY, gated)
            if frames:
                await response.write(frames)
            relay.commit()  # after the write: what could not be sent is not recorded
            events = await anext(batches, None)
        await response.write(await relay.finish())
        relay.commit()
        exchange.finish(Outcome.OK)
    except UpstreamError as error:
        exchange.finish(Outcome.UPSTREAM_ERROR, error=error.message)
        with contextlib.suppress(ConnectionResetError):
            await response.write(relay.error_frame(error))
    except ConnectionResetError:
        exchange.finish(Outcome.CLIENT_DISCONNECTED, error="client closed the connection mid-stream")
    except Exception as error:  # boundary: the status is sent, so the stream ends with an error event
        log.exception("stream_failed", interaction_id=exchange.id)
        exchange.finish(Outcome.GATEWAY_ERROR, error=f"{type(error).__name__} in the gateway")
        with contextlib.suppress(ConnectionResetError):
            await response.write(relay.error_frame(GatewayError(
                "the gateway failed while streaming this answer; see its log", code="gateway_error")))
    finally:
        await batches.aclose()  # releases the upstream connection when we stop early
        exchange.response = relay.reply()
        exchange.usage = relay.usage()
    return response


def _is_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _error_response(error: GatewayError, dialect: Dialect, exchange: Exchange) -> web.Response:
    response = error.response(dialect.error_body(error))
    response.headers.update(exchange.headers())
    return response
