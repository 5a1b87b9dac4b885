"""Running the gateway as a process: the listening sockets, logging, the app, signals and
graceful shutdown; for a worker of `serve --workers N` (see workers.py), its link to the
supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from capture.store import shown_url
from proxy.edge.logs import configure_logging
from proxy.config.settings import ConfigSource, Settings
from proxy.edge.wire import error_envelope, json_response

log = structlog.get_logger("ctxgate.proxy")

BACKLOG = 128  # aiohttp's default
SERVING = b"serving\n"  # what a worker of `serve --workers N` tells its supervisor once it serves


def server_options(settings: Settings) -> dict[str, Any]:
    """How the HTTP server runs the app, wherever it runs (serve, demo, tests).

    - `handler_cancellation`: a client that leaves cancels its handler, so the provider call
      is cancelled too (not run to the end and billed) and the call is recorded as
      `client_disconnected`, also when it was not streamed.
    - `keepalive_timeout`: aiohttp closes a connection that has not sent a whole request line
      and headers this long after it opened (or after its last answer): the header timeout,
      which also bounds idle kept-alive connections.
    """
    return {"handler_cancellation": True, "keepalive_timeout": settings.header_timeout_s, "access_log": None}


def listen(host: str, port: int, *, is_shared: bool = False) -> list[socket.socket]:
    """Sockets bound to every address `host` names, as the event loop's server would bind them,
    and listening. Called before the app is built, so that a port in use (`OSError`) is known at once, not
    after the warm-up and a `gateway_started` line that would not be true. `is_shared` (a
    worker of `serve --workers N`): SO_REUSEPORT, so that the kernel spreads connections over
    every worker's own socket on the port."""
    bound = _bind(host, port, is_shared=is_shared)
    try:
        for sock in bound:
            # Listening now, not when the site starts after `on_startup`: a client that has read
            # `gateway_started` then connects (and waits in the backlog) instead of being refused.
            sock.listen(BACKLOG)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def reserve(host: str, port: int) -> list[socket.socket]:
    """The supervisor's hold on the port for `serve --workers N`: bound like `listen`'s sockets
    (so a port taken is the same `OSError`, and port 0 becomes a real one), never listening
    (the kernel gives connections to listening sockets only), kept while the workers run so
    that nobody else takes the port meanwhile.

    SO_REUSEPORT is set after the bind, not before: a socket bound with it joins any other that
    has it, so a second `serve --workers` started on this port by mistake would share it
    silently instead of failing here. When a later socket binds, the kernel checks the flag as
    it is then, so the workers' sockets may join this one."""
    bound = _bind(host, port, is_shared=False)
    for sock in bound:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return bound


def _bind(host: str, port: int, *, is_shared: bool) -> list[socket.socket]:
    """A socket bound to each address `host` names; with port 0, one free port for all."""
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what asyncio sets on Unix
            if is_shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own
            if len(bound) > 1:  # the port the first address got, so that the banner's one port is true
                address = (address[0], bound[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def serve(
    settings: Settings, sockets: Sequence[socket.socket], config: ConfigSource, link: WorkerLink | None = None
) -> None:
    """Serve on `sockets` (from `listen`) until SIGINT/SIGTERM. Shutdown stops accepting, lets
    in-flight requests finish (up to `shutdown_timeout_s`), then drains the capture queue
    before the store closes. `config` is only reported. With `link`, this process is one
    worker of `serve --workers N`: its log lines carry `worker`, the supervisor announces the
    gateway, and the worker stops as on SIGTERM when the supervisor is gone."""
    from proxy.app import create_app  # imports litellm: only the commands that proxy pay for it

    configure_logging(settings.log_level, settings.log_format, settings.secrets,
                      worker=link.index if link is not None else None)
    app = create_app(settings)
    port = sockets[0].getsockname()[1] if sockets else settings.port  # the real one for port 0
    scope = "gateway" if link is None else "worker"

    async def announce(_: web.Application) -> None:
        if link is None:
            log.info("gateway_started", **started_fields(settings, port, config))
            warn_if_open(settings)
        else:
            log.info("worker_started", pid=os.getpid(), port=port)

    async def announce_stop(_: web.Application) -> None:
        log.info(f"{scope}_stopping", in_flight_grace_s=settings.shutdown_timeout_s)

    app.on_startup.append(announce)
    app.on_shutdown.append(announce_stop)
    asyncio.run(_serve_until_signalled(make_runner(app, settings), sockets, link))
    log.info(f"{scope}_stopped")


def started_fields(settings: Settings, port: int, config: ConfigSource) -> dict[str, Any]:
    """What `gateway_started` says, whichever process says it."""
    return {
        "host": settings.host,
        "port": port,
        "config": str(config.path) if config.path else None,
        "config_from": config.chosen_by,
        "store": shown_url(settings.store_url),
        "models": [route.model_name for route in settings.models],
    }


def warn_if_open(settings: Settings) -> None:
    if not settings.keys:
        log.warning("gateway_open", hint="no keys configured: anyone who reaches it may call it")
    if settings.admin_key is None and not settings.keys:
        log.warning("capture_api_open", hint="set CTXGATE_ADMIN_KEY to require a key for /interactions")


async def _serve_until_signalled(
    runner: web.AppRunner, sockets: Sequence[socket.socket], link: WorkerLink | None
) -> None:
    """What `web.run_app` does, with our runner: start, serve until SIGINT or SIGTERM (or, for
    a worker, its supervisor gone), then shut down gracefully (in-flight requests get
    `shutdown_timeout_s`, cleanup contexts drain)."""
    await runner.setup()
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        if link is not None:
            link.stop_with_supervisor(loop, stopped.set)
            link.report_serving()  # after the signal handlers: from now on a SIGTERM drains
        await stopped.wait()
    finally:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """A worker's end of the socket pair its supervisor made for it."""

    index: int  # 1..N, in the `worker` field of every log line
    fd: int

    def report_serving(self) -> None:
        try:
            os.write(self.fd, SERVING)
        except OSError:
            pass  # the supervisor is gone: `stop_with_supervisor` sees the end of file

    def stop_with_supervisor(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Call `stop` once the supervisor's end is closed, by its exit or its death."""
        os.set_blocking(self.fd, False)

        def read() -> None:
            try:
                if os.read(self.fd, 64):
                    return  # the supervisor sends nothing; a byte would not be an end
            except BlockingIOError:
                return
            except OSError:
                pass  # a reset is an end too
            loop.remove_reader(self.fd)
            log.warning("supervisor_gone", hint="the process that started this worker ended: stopping as on SIGTERM")
            stop()

        loop.add_reader(self.fd, read)


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner `ctxgate serve` (and the demo, and tests that need it) serve the app with."""
    return _Runner(app, shutdown_timeout=settings.shutdown_timeout_s, **server_options(settings))


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside Application (private); the class is swapped, not
        # rebuilt, so that nothing else of how it is made changes.
        server.__class__ = _Server
        return server


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class _RequestHandler(RequestHandler):
    """Requests aiohttp's parser refuses before any handler runs (a line or header too long,
    too many headers, a NUL or bare CR in one, a bad Content-Length) get the OpenAI envelope
    like every other error, and one log line instead of a stack trace."""

    __slots__ = ()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:  # not the parser's: aiohttp's last resort for a failure of ours
            return super().handle_error(request, status, exc, message)
        reason = (getattr(exc, "message", None) or message or str(exc or "")).strip()
        log.info("request_refused_by_parser", status=status, reason=reason[:200])
        response = json_response(error_envelope(f"the request could not be read as HTTP: {reason[:200]}",
                                                "invalid_request_error", code="bad_http_request"), status=status)
        response.force_close()
        return response
