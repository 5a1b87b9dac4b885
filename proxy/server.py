"""Running the gateway as a process: logging, the app, signals and graceful shutdown."""

from __future__ import annotations

import structlog
from aiohttp import web

from proxy.app import create_app
from proxy.logs import configure_logging
from proxy.settings import Settings


def serve(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM. Shutdown stops accepting, lets in-flight requests finish
    (up to `shutdown_timeout_s`), then drains the capture queue before the store closes."""
    configure_logging(settings.log_level, settings.log_format, settings.secrets)
    log = structlog.get_logger("ctxgate.proxy")
    app = create_app(settings)

    async def announce(_: web.Application) -> None:
        log.info(
            "gateway_started",
            host=settings.host,
            port=settings.port,
            store=_store_label(settings.store_url),
            models=[route.model_name for route in settings.models],
        )
        if not settings.keys:
            log.warning("gateway_open", hint="no keys configured: anyone who reaches it may call it")
        if settings.admin_key is None and not settings.keys:
            log.warning("capture_api_open", hint="set CTXGATE_ADMIN_KEY to require a key for /interactions")

    async def announce_stop(_: web.Application) -> None:
        log.info("gateway_stopping", in_flight_grace_s=settings.shutdown_timeout_s)

    app.on_startup.append(announce)
    app.on_shutdown.append(announce_stop)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    log.info("gateway_stopped")


def _store_label(url: str) -> str:
    """The store URL without credentials, for logs."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
