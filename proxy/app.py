"""The application factory: routes, middlewares, and the long-lived parts in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from capture.records import Interaction, format_timestamp
from capture.spool import Spool, SpoolUnavailable
from capture.backends import open_store
from capture.tokens import count_tokens
from capture.writer import CaptureWriter
from proxy.admin import approvals_api, capture_api, knowledge_api, openapi, sessions_api
from proxy.edge import health
from proxy.appkeys import (APPROVALS, CAPTURE_WRITER, KEYRING, METRICS, OPERATOR_PAGE, SETTINGS, STORE, TRACES,
                           UPSTREAM, WEBHOOKS)
from proxy.pipeline.approvals import ApprovalBook
from proxy.dialects.anthropic_messages.dialect import AnthropicMessages
from proxy.dialects.openai_chat.dialect import OpenAIChat
from proxy.dialects.openai_completions.dialect import OpenAICompletions
from proxy.dialects.openai_embeddings.dialect import OpenAIEmbeddings
from proxy.dialects.openai_responses.dialect import OpenAIResponses
from proxy.pipeline.models import model_handlers
from proxy.pipeline.stored_responses import stored_response_handlers
from proxy.pipeline.count_tokens import count_tokens_handler
from proxy.pipeline.handler import proxy_handler
from proxy.pipeline.dialect import Dialect
from proxy.edge.errors import error_middleware
from proxy.config.keys import KeyRing
from proxy.edge.logs import stamp_response_headers, request_log_middleware
from proxy.edge.metrics import Metrics
from proxy.config.settings import Settings, legacy_spool_file, spool_directory
from proxy.upstream.seam import Upstream
from proxy.edge.redaction import Redactor
from proxy.notify.webhooks import WebhookSender
from proxy.edge.traces import TraceExporter
from proxy.ui import routes as ui_routes
from proxy.ui.logins import Logins
from proxy.ui.site import OperatorPage

log = structlog.get_logger("ctxgate.proxy")
RETENTION_EVERY_S = 3600
OPENAI_CHAT = OpenAIChat()
OPENAI_EMBEDDINGS = OpenAIEmbeddings()
OPENAI_COMPLETIONS = OpenAICompletions()
OPENAI_RESPONSES = OpenAIResponses()
ANTHROPIC_MESSAGES = AnthropicMessages()
DIALECTS: dict[str, Dialect] = {dialect.wire: dialect for dialect in (OPENAI_CHAT, OPENAI_EMBEDDINGS, OPENAI_COMPLETIONS,
                                                                      OPENAI_RESPONSES, ANTHROPIC_MESSAGES)}


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_log_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics(declared_models=frozenset(route.model_name for route in settings.models))
    app[KEYRING] = KeyRing(settings.keys)
    # Started in this order, stopped in reverse: the writer drains before the store closes.
    app.cleanup_ctx.extend([_store, _upstream, _capture_writer, _traces, _notifications, _approvals,
                            _operator_page, _retention])
    app.on_shutdown.append(_release_waiters)
    app.on_response_prepare.append(stamp_response_headers)
    list_models, get_model = model_handlers(OPENAI_CHAT, {ANTHROPIC_MESSAGES.marker_header: ANTHROPIC_MESSAGES})
    get_response, list_input_items, delete_response = stored_response_handlers(OPENAI_RESPONSES)
    for prefix in ("", "/p/{project}"):
        app.router.add_post(f"{prefix}/v1/chat/completions", proxy_handler(OPENAI_CHAT))
        app.router.add_post(f"{prefix}/v1/embeddings", proxy_handler(OPENAI_EMBEDDINGS))
        app.router.add_post(f"{prefix}/v1/completions", proxy_handler(OPENAI_COMPLETIONS))
        app.router.add_post(f"{prefix}/v1/responses", proxy_handler(OPENAI_RESPONSES))
        app.router.add_get(f"{prefix}/v1/responses/{{response_id}}", get_response)
        app.router.add_get(f"{prefix}/v1/responses/{{response_id}}/input_items", list_input_items)
        app.router.add_delete(f"{prefix}/v1/responses/{{response_id}}", delete_response)
        app.router.add_post(f"{prefix}/v1/messages", proxy_handler(ANTHROPIC_MESSAGES))
        app.router.add_post(f"{prefix}/v1/messages/count_tokens", count_tokens_handler(ANTHROPIC_MESSAGES))
        app.router.add_get(f"{prefix}/v1/models", list_models)
        app.router.add_get(f"{prefix}/v1/models/{{model:.+}}", get_model)  # names may hold `/`
        app.router.add_route("HEAD", prefix or "/", answer_head)
    app.router.add_post("/interactions", capture_api.record_interaction)
    app.router.add_get("/interactions", capture_api.list_interactions)
    app.router.add_get("/interactions/{interaction_id}", capture_api.get_interaction)
    app.router.add_post("/memories", knowledge_api.add_memory)
    app.router.add_get("/memories", knowledge_api.list_memories)
    app.router.add_delete("/memories/{memory_id}", knowledge_api.delete_memory)
    app.router.add_post("/ingest", knowledge_api.ingest_documents)
    app.router.add_get("/context", knowledge_api.preview_context)
    app.router.add_get("/sessions", sessions_api.list_sessions)
    app.router.add_get("/sessions/{session_id}", sessions_api.get_session)
    app.router.add_get("/approvals", approvals_api.list_approvals)
    app.router.add_get("/approvals/{approval_id}", approvals_api.get_approval)
    app.router.add_post(r"/approvals/{approval_id}/{verdict:approve|deny}", approvals_api.decide_approval)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.healthz)
    app.router.add_get("/livez", health.livez)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/openapi.json", openapi.spec)
    ui_routes.add_routes(app)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS].store_url)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _capture_writer(app: web.Application) -> AsyncIterator[None]:
    upstream = app[UPSTREAM]

    def count_usage(interaction: Interaction) -> tuple[int, int]:
        dialect = DIALECTS.get(interaction.wire or "", OPENAI_CHAT)  # records from before `wire` are OpenAI chat
        return upstream.count_tokens(interaction.model or "", interaction.prompt,
                                     dialect.completion_text(interaction.response))

    spool = spool_for(app[SETTINGS])
    writer = CaptureWriter(app[STORE], spool=spool, usage_counter=count_usage)
    if spool is None:
        log.warning("capture_spool_off", hint="an in-memory store has no spool: records the store refuses are lost")
    else:
        try:
            spool.check_writable()
        except SpoolUnavailable as error:  # start all the same: /healthz says so until it is mended
            writer.spool_error = str(error)
            log.error("capture_spool_unwritable", error=str(error))
    await writer.start()
    app[CAPTURE_WRITER] = writer
    yield
    await writer.stop()
    log.info("capture_drained", written_total=writer.written_total)


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    upstream = Upstream(app[SETTINGS])
    log.info("upstream_warmed_up", ms=round(await upstream.warm_up(), 1))
    await asyncio.to_thread(count_tokens, "warm-up")  # loads the tokenizer (~0.3 s) before /healthz answers
    # What is loaded by now (litellm: some 320k objects) lives as long as the process. Frozen, the
    # collector no longer walks it in every full collection (~200 ms of CPU each, at random moments).
    gc.collect()
    gc.freeze()
    app[UPSTREAM] = upstream
    yield
    await upstream.aclose()


async def _traces(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.telemetry.traces_url is None:
        yield
        return
    exporter = TraceExporter(settings.telemetry, DIALECTS, Redactor(settings.secrets))
    await exporter.start()
    app[TRACES] = exporter
    collector = urlsplit(settings.telemetry.traces_url)  # its host only: the address may hold a password
    log.info("traces_exported", to=f"{collector.hostname}:{collector.port or collector.scheme}",
             capture_content=settings.telemetry.capture_content)
    yield
    await exporter.close()


async def _notifications(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].notifications
    if not settings.webhooks:
        yield
        return
    if settings.page_url is None:
        log.warning("notifications_without_links", hint="set notifications.page_url to the address people open "
                                                        "the gateway at: the notifications then link to the approval")
    sender = WebhookSender(settings, Redactor(app[SETTINGS].secrets))
    await sender.start()
    app[WEBHOOKS] = sender
    yield
    await sender.close()


async def _approvals(app: web.Application) -> AsyncIterator[None]:
    expired = await app[STORE].expire_stale_approvals()
    if expired:
        log.info("stale_approvals_expired", count=expired)
    sender = app.get(WEBHOOKS)
    app[APPROVALS] = ApprovalBook(app[STORE], on_asked=sender.approval_asked if sender is not None else None,
                                  on_decided=sender.approval_decided if sender is not None else None)
    yield


async def _operator_page(app: web.Application) -> AsyncIterator[None]:
    app[OPERATOR_PAGE] = OperatorPage(Logins(app[STORE]), DIALECTS, app[SETTINGS].secrets)
    yield


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """With `retention_days`, the same cleanup as `ctxgate sessions clean`, hourly."""
    days = app[SETTINGS].retention_days
    task = asyncio.create_task(_clean_periodically(app, days), name="ctxgate-retention") if days else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _clean_periodically(app: web.Application, days: int) -> None:
    while True:
        cutoff = format_timestamp(datetime.now(UTC) - timedelta(days=days))
        try:
            result = await app[STORE].delete_older_than(cutoff)
            log.info("retention_cleaned", older_than=cutoff, sessions=result.sessions,
                     interactions=result.interactions, approvals=result.approvals)
        except Exception as error:  # boundary: a failed cleanup is retried at the next hour
            log.warning("retention_failed", error=str(error))
        await asyncio.sleep(RETENTION_EVERY_S)


async def _release_waiters(app: web.Application) -> None:
    """On shutdown, before in-flight requests are awaited: calls waiting for a person deny,
    and /healthz tells the load balancer to send no more."""
    app[health.STOPPING] = True
    app[APPROVALS].close()


def spool_for(settings: Settings) -> Spool | None:
    directory = spool_directory(settings.store_url, settings.spool_dir)
    if directory is None:
        return None
    legacy = legacy_spool_file(settings.store_url)
    return Spool(directory, legacy_files=[legacy] if legacy else [])


async def answer_head(_: web.Request) -> web.Response:
    """`HEAD /`: 200 and no body, for a client that checks the gateway is there before its first
    call (Claude Code does, at start)."""
    return web.Response()

