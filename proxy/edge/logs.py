"""Structured logs: structlog processors for our events and for the stdlib loggers of aiohttp
and litellm, ISO UTC timestamps, orjson rendering, and one canonical line per request."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from capture.writable import safe_json
from proxy.appkeys import EXCHANGE, METRICS, REQUEST_ID, TRACES, UPSTREAM
from proxy.edge.errors import Handler
from proxy.edge.redaction import Redactor

log = structlog.get_logger("ctxgate.proxy")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# These libraries log request details (litellm at debug logs whole calls, keys included);
# below WARNING they stay quiet whatever our level.
_NOISY_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai")


def configure_logging(
    level: str = "info", fmt: str = "json", secrets: Iterable[str] = (), *, worker: int | None = None
) -> None:
    """Route structlog and the stdlib's root logger through one chain to stdout. `worker`: the
    number of this process among `serve --workers N`'s, on every line it writes.

    Our own events take structlog's native path straight to the stream: through the stdlib's
    logging (a LogRecord, copied once more by the formatter, and a stack walk for the caller)
    the canonical request line cost about 80 us, a tenth of a proxied call's CPU."""
    stream = sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if worker is not None:
        shared.insert(0, _WorkerStamp(worker))
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    redacting = _RedactingRenderer(renderer, Redactor(secrets))
    numeric = _LEVELS[level]
    structlog.configure(
        processors=[*shared, redacting],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LineWriterFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redacting],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("aiohttp.access").disabled = True  # request_completed replaces it


def _dumps(value: Any, **_: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # a lone surrogate or a huge integer: the line is written all the same
        return orjson.dumps(safe_json(value), default=str).decode()


class _LineWriter:
    """structlog's logger for our events: each rendered line written and flushed at once (the
    logs are meant to be tailed), on the stream the stdlib's handler writes to as well."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name  # what add_logger_name reads

    def msg(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _LineWriterFactory:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __call__(self, name: str = "ctxgate", *_: Any) -> _LineWriter:
        return _LineWriter(self.stream, name)


class _WorkerStamp:
    """Adds `worker` to each line, so that the lines of several workers on one stdout can be told apart."""

    def __init__(self, worker: int) -> None:
        self.worker = worker

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event["worker"] = self.worker
        return event


# Key shapes as `Redactor` knows them, without its word boundary: in rendered JSON a key may
# follow an escape (`\nsk-...`), whose letter would hide it from a boundary check. The
# prefixes are looked for first: a regex scan of every line cost more than the rest of it.
_KEY_PREFIXES = ("sk-", "ctxg-", "AIza", "AKIA", "ghp_", "github_pat_", "xox")
_KEY_HINT = re.compile(r"(?:sk-|ctxg-|AIza|AKIA|ghp_|github_pat_|xox[abpr]-)[A-Za-z0-9_\-.]{12,}|(?i:bearer)\s")


def _may_hold_key(text: str) -> bool:
    if not any(prefix in text for prefix in _KEY_PREFIXES) and "bearer" not in text.lower():
        return False
    return _KEY_HINT.search(text) is not None


class _RedactingRenderer:
    """Last line of defence: a known secret, or text shaped like a key, never leaves in a log
    line, whoever logged it. The line is rendered first; only one that holds a known secret or
    something shaped like a key (rare) is rendered again from its values, each scrubbed."""

    def __init__(self, renderer: Any, redactor: Redactor) -> None:
        self.renderer = renderer
        self.redactor = redactor
        # each secret as it stands in rendered text: as is, and JSON-escaped
        self.needles = tuple({form for secret in redactor.secrets
                              for form in (secret, orjson.dumps(secret).decode()[1:-1])})

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        line = self.renderer(logger, name, dict(event))  # the console renderer takes keys out of its dict
        text = line if isinstance(line, str) else str(line)
        if any(needle in text for needle in self.needles) or _may_hold_key(text):
            return self.renderer(logger, name, {key: self._scrub(value) for key, value in event.items()})
        return line

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor.scrub(value)
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(item) for item in value]
        return value


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds a request id for every log line of the request, then writes the canonical line."""
    given = request.headers.get("X-Request-Id", "")
    # Echoed in a header and every log line: only a printable ASCII id of the client's is kept.
    is_usable = 0 < len(given) <= 128 and given.isascii() and given.isprintable()
    request_id = request[REQUEST_ID] = given if is_usable else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # the client closed the connection before the answer (nginx's convention)
        raise
    finally:
        fields: dict[str, Any] = {}
        exchange = request.get(EXCHANGE)
        if exchange is not None:
            fields = exchange.log_fields()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        route = request.match_info.route.resource
        request.app[METRICS].observe(route.canonical if route else "unmatched", status, latency_ms, exchange)
        traces = request.app.get(TRACES)
        if traces is not None and exchange is not None and exchange.call is not None:
            traces.finished(exchange, traceparent=request.headers.get("traceparent"), http_status=status,
                            provider=request.app[UPSTREAM].provider_name(exchange.call.model))
        log.info(
            "request_completed",
            method=request.method,
            path=request.path,
            status=status,
            latency_ms=latency_ms,
            **fields,
        )
        structlog.contextvars.unbind_contextvars("request_id")


async def stamp_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: runs just before headers go out, streamed responses included, so
    `Server-Timing` holds every stage done by then (for a stream: up to its first chunk)."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id
    exchange = request.get(EXCHANGE)
    if exchange is not None and exchange.stage_ms:
        response.headers["Server-Timing"] = exchange.server_timing()
