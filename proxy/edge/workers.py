"""`ctxgate serve --workers N`: N processes serving one port.

The supervisor (the process the user started) binds the port and holds it without listening
(`server.reserve`), migrates the store once, then starts each worker as a fresh interpreter
running `ctxgate serve` again (never a fork: by then an event loop, threads or litellm could
be in the copy). Each worker binds its own SO_REUSEPORT socket on the port, so the kernel
spreads connections over the workers, and runs the app as a single `serve` does, with its own
capture writer (its own spool segment). What must hold across workers goes through the store:
an approval decided through one worker is seen by the worker holding the call (which polls a
SQLite file, and hears PostgreSQL announce it).

Each worker gets one end of a socket pair (`server.WorkerLink`). It writes `serving` on it once it serves, and the
end of file on it means the supervisor is gone (even killed with SIGKILL): the worker then
stops as on SIGTERM, draining what it has to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from capture.backends import open_store, sqlite_path
from proxy.config.settings import ConfigError, ConfigSource, Settings
from proxy.edge.logs import configure_logging
from proxy.edge.server import SERVING, started_fields, warn_if_open

log = structlog.get_logger("ctxgate.proxy")

_STOPPED_BY_US = (0, -signal.SIGTERM, -signal.SIGINT)  # how a worker may end once told to stop


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota where
    one is set (a container's `--cpus`, a Kubernetes CPU limit), which the mask does not show."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the mask is all there is
    return max(count, 1)


def worker_count(settings: Settings) -> int:
    """How many processes `serve` runs: `--workers`/`CTXGATE_WORKERS`/`server.workers`, else
    the CPUs the process may use. An in-memory store is one per process, so it gets one."""
    if sqlite_path(settings.store_url) == ":memory:":
        if settings.workers not in (None, 1):
            raise ConfigError("workers: an in-memory store cannot be shared by several workers; "
                              "use a store file or --workers 1")
        return 1
    return settings.workers or usable_cpus()


def supervise(settings: Settings, config: ConfigSource, reserved: list[socket.socket], count: int) -> int:
    """Run `count` workers on the port `reserved` holds until SIGINT or SIGTERM, then stop them
    all gracefully. Returns the exit status: 0, or 1 when a worker ended on its own."""
    configure_logging(settings.log_level, settings.log_format, settings.secrets)
    try:
        # Once here, before any worker: they open the store at once, and would all wait on the
        # migration's write lock at the same time (safe, but each start waits on the first).
        asyncio.run(_migrate(settings.store_url))
        return asyncio.run(_Supervisor(settings, config, reserved[0].getsockname()[1], count).run())
    finally:
        for sock in reserved:
            sock.close()


async def _migrate(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    await store.close()


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    link: socket.socket  # the supervisor's end
    exited: asyncio.Task[int]

    async def serving(self) -> bool:
        """True once the worker says it serves; False if it ended first."""
        try:
            return await asyncio.get_running_loop().sock_recv(self.link, len(SERVING)) == SERVING
        except OSError:
            return False

    def end(self) -> dict[str, Any]:
        """How it ended, for `worker_exited`."""
        returncode = self.exited.result()
        killed_by = signal.Signals(-returncode).name if returncode < 0 else None
        return {"worker": self.index, "pid": self.process.pid, "returncode": returncode, "signal": killed_by}


class _Supervisor:
    def __init__(self, settings: Settings, config: ConfigSource, port: int, count: int) -> None:
        self.settings = settings
        self.config = config
        self.port = port
        self.count = count
        self.workers: list[_Worker] = []
        self.stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        try:
            for index in range(1, self.count + 1):
                self.workers.append(await self._start(index))
            stopping = asyncio.create_task(self.stop.wait())
            watched: set[asyncio.Future[Any]] = {stopping, *(worker.exited for worker in self.workers)}
            serving = asyncio.gather(*(worker.serving() for worker in self.workers))
            await asyncio.wait({serving, *watched}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done() and all(serving.result()) and not any(task.done() for task in watched):
                log.info("gateway_started", **started_fields(self.settings, self.port, self.config),
                         workers=self.count, worker_pids=[worker.process.pid for worker in self.workers])
                warn_if_open(self.settings)
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            return await self._stop_all()
        finally:
            # Closing our ends tells any worker still running to stop, whatever happened here.
            for worker in self.workers:
                worker.link.close()

    async def _start(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(index, theirs.fileno()), stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                # In the environment, not the command line: a PostgreSQL URL holds a password,
                # and any user of the machine can read a process's command line.
                env={**os.environ, "CTXGATE_DB": self.settings.store_url})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker's copy is its own now
        ours.setblocking(False)
        return _Worker(index, process, ours, asyncio.create_task(process.wait()))

    def _command(self, index: int, fd: int) -> list[str]:
        """`ctxgate serve` again, with what this process resolved: the same config file, the
        port as bound (port 0 was made a real one); the same store comes in CTXGATE_DB. The rest
        (keys, models, policy) the worker reads from the same file and environment."""
        settings = self.settings
        command = [sys.executable, "-m", "proxy.cli.commands", "serve", "--host", settings.host, "--port", str(self.port),
                   "--log-format", settings.log_format,
                   "--worker-index", str(index), "--worker-fd", str(fd)]
        if self.config.path is not None:
            command += ["--config", str(self.config.path)]
        return command

    async def _stop_all(self) -> int:
        """Every worker told to stop (SIGTERM: each drains as a single `serve` does), and waited for.

        A worker that ended on its own makes the gateway stop, with status 1, rather than be
        restarted here: such an end is a crash (our code does not exit while serving), and
        whatever runs the gateway (systemd, Kubernetes, Docker) restarts it with its own
        backoff and shows the failure, where a restart loop here would hide it, or spin when
        a worker cannot start at all."""
        failed = set()
        if not self.stop.is_set():
            for worker in self.workers:
                if worker.exited.done():
                    log.error("worker_exited", **worker.end(), hint="stopping the gateway")
                    failed.add(worker.index)
        log.info("gateway_stopping", workers=self.count, in_flight_grace_s=self.settings.shutdown_timeout_s)
        for worker in self.workers:
            if not worker.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            # A Ctrl-C in a terminal reaches the workers too, and may stop them before us.
            if await worker.exited not in _STOPPED_BY_US and worker.index not in failed:
                log.error("worker_exited", **worker.end())
                failed.add(worker.index)
        log.info("gateway_stopped", workers=self.count)
        return 1 if failed else 0
