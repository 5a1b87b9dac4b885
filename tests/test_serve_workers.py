"""`ctxgate serve --workers 2` as real processes: one port for both, every answered call recorded
once, an approval decided through one worker releasing the call held in the other, and the
workers stopping with their supervisor, however it ends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from capture.approvals import ApprovalStatus
from capture.records import InteractionQuery
from capture.backends import open_store
from proxy.config.settings import ConfigError, load_settings
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.edge.workers import usable_cpus, worker_count
from tests.test_serve_process import serve_env

ADMIN_KEY = "sk-workers-admin-5f0c9e"
DEADLINE_S = 30  # for any one thing awaited; each test takes a few seconds
TRIES = 64  # fresh connections before giving up on reaching the other worker: 2**-63 by chance
DEPLOY = ToolCall("deploy", '{"env": "prod"}', id="call_deploy")
TOOLS: Any = [{"type": "function", "function": {"name": "deploy", "parameters": {"type": "object", "properties": {}}}}]


class Gateway:
    """`ctxgate serve --workers 2` on a free port, its stdout read line by line as it comes."""

    def __init__(self, tmp_path: Path, upstream: FakeUpstream, *, store_url: str | None = None, name: str = "gw",
                 config: str = "") -> None:
        self.store_url = store_url or str(tmp_path / f"{name}.db")
        self.config = tmp_path / f"{name}.yaml"
        self.config.write_text(
            "server: {port: 0}\n"
            f"store: {{url: '{self.store_url}', spool_dir: '{tmp_path / (name + '.spool')}'}}\n"
            f"{config}"
            "model_list:\n"
            "  - model_name: gpt-test\n"
            f"    litellm_params: {{model: openai/fake-model, api_base: '{upstream.base_url}', api_key: sk-upstream}}\n"
            "policy: {default: {mode: prompt, approval_timeout_s: 120}}\n"
        )
        self.records: list[dict[str, Any]] = []
        self.errors = b""
        self.process: asyncio.subprocess.Process | None = None
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, workers: int = 2, **env: str) -> dict[str, Any]:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.cli.commands", "serve", "--config", str(self.config),
            "--workers", str(workers), cwd=self.config.parent, env=serve_env(CTXGATE_ADMIN_KEY=ADMIN_KEY, **env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        return await self.line(lambda r: r["event"] == "gateway_started")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.started['port']}"

    @property
    def started(self) -> dict[str, Any]:
        return next(r for r in self.records if r["event"] == "gateway_started")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            async with self._arrived:
                self.records.append(json.loads(line))  # every line one JSON object, whoever wrote it
                self._arrived.notify_all()
        async with self._arrived:
            self._arrived.notify_all()

    async def line(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first log record `wanted` accepts, once it is written."""
        def found() -> dict[str, Any] | None:
            return next((r for r in self.records if wanted(r)), None)

        async def written() -> dict[str, Any]:
            async with self._arrived:
                await self._arrived.wait_for(lambda: found() is not None or self._reader is None or self._reader.done())
            record = found()
            if record is None:
                raise AssertionError(f"the gateway's stdout ended first: {self.records}")
            return record

        return await asyncio.wait_for(written(), DEADLINE_S)

    def request_line(self, request_id: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["event"] == "request_completed" and r.get("request_id") == request_id

    async def ended(self) -> int:
        """Waits for the exit and for every writer of stdout (the workers too) to be gone."""
        assert self.process is not None and self.process.stderr is not None and self._reader is not None
        self.errors = await asyncio.wait_for(self.process.stderr.read(), DEADLINE_S)
        await asyncio.wait_for(self._reader, DEADLINE_S)
        return await asyncio.wait_for(self.process.wait(), DEADLINE_S)

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self.ended()

    async def recorded(self) -> list[Any]:
        store = open_store(self.store_url)
        await store.open()
        try:
            summaries = await store.list_interactions(InteractionQuery(limit=500))
            return [await store.get_interaction(s.id) for s in summaries]
        finally:
            await store.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    served = Gateway(tmp_path, upstream)
    yield served
    if served.process is not None and served.process.returncode is None:  # a failed test: no process left over
        served.process.send_signal(signal.SIGTERM)
        try:
            await served.ended()
        except TimeoutError:
            served.process.kill()
            await served.process.wait()


def logged(event: str, worker: int) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["event"] == event and record.get("worker") == worker


def fresh_connections(gateway: Gateway) -> openai.AsyncOpenAI:
    """A client that opens a new connection for each call: the kernel then picks a worker each time."""
    http = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0, http_client=http)


async def test_two_workers_serve_one_port_and_every_answered_call_is_recorded_once(gateway: Gateway) -> None:
    started = await gateway.start()
    assert started["workers"] == 2 and len(set(started["worker_pids"])) == 2
    workers = {r["worker"]: r["pid"] for r in gateway.records if r["event"] == "worker_started"}
    assert sorted(workers) == [1, 2] and sorted(workers.values()) == sorted(started["worker_pids"])
    assert all(r["port"] == started["port"] for r in gateway.records if r["event"] == "worker_started")

    client = fresh_connections(gateway)
    answered: dict[str, int] = {}  # interaction id -> the worker that answered
    for n in range(TRIES):
        options: Any = {"model": "gpt-test", "messages": [{"role": "user", "content": f"call {n}"}],
                        "extra_headers": {"X-Request-Id": f"call-{n}"}}
        if n % 2:
            streamed = await client.chat.completions.with_raw_response.create(**options, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in streamed.parse() if c.choices])
            headers = streamed.headers
        else:
            whole = await client.chat.completions.with_raw_response.create(**options)
            text = whole.parse().choices[0].message.content or ""
            headers = whole.headers
        assert text == f"Echo: call {n}"
        served_by = await gateway.line(gateway.request_line(f"call-{n}"))
        answered[headers["X-Ctxgate-Interaction-Id"]] = served_by["worker"]
        if n >= 5 and set(answered.values()) == {1, 2}:
            break
    assert set(answered.values()) == {1, 2}, "every call went to one worker"

    assert await gateway.stop() == 0, gateway.errors.decode()
    stored = await gateway.recorded()
    assert sorted(s.id for s in stored) == sorted(answered)  # each once: ids are unique in the list
    assert {s.status for s in stored} == {"ok"}
    for worker in (1, 2):
        assert any(map(logged("worker_stopped", worker), gateway.records))
    assert gateway.records[-1]["event"] == "gateway_stopped"  # the supervisor waited for both


async def test_an_approval_decided_through_one_worker_releases_the_call_held_in_the_other(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    await gateway.start()
    upstream.push(Reply(text="Deploying.", tool_calls=(DEPLOY,)))
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)
    held = asyncio.create_task(client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "deploy it"}], tools=TOOLS,
        extra_headers={"X-Request-Id": "held"}))
    asked = await gateway.line(lambda r: r["event"] == "tool_approval_requested")
    holder, approval_id = asked["worker"], asked["approval_id"]
    assert not held.done()

    # A connection is served by one worker from its first request to its last: find one the
    # other worker serves (the probe's log line says which), then approve on it.
    approved = None
    for n in range(TRIES):
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as session:
            async with session.get(f"{gateway.url}/approvals/{approval_id}", headers={"X-Request-Id": f"probe-{n}"}) as seen:
                assert seen.status == 200  # whichever worker: the store is the one both use
                assert (await seen.json())["status"] == "pending"
            if (await gateway.line(gateway.request_line(f"probe-{n}")))["worker"] == holder:
                continue
            async with session.post(f"{gateway.url}/approvals/{approval_id}/approve",
                                    headers={"X-Request-Id": "approve", "X-Ctxgate-Client": "alice"}) as decided:
                assert decided.status == 200, await decided.text()
                approved = await decided.json()
            break
    assert approved is not None, f"no connection reached the worker other than {holder}"
    assert (await gateway.line(gateway.request_line("approve")))["worker"] != holder

    completion = await asyncio.wait_for(held, DEADLINE_S)  # well before the 120 s the call may wait
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls if c.type == "function"] == [
        (DEPLOY.name, DEPLOY.arguments)]
    assert len(calls) == 1
    assert (await gateway.line(gateway.request_line("held")))["worker"] == holder

    assert await gateway.stop() == 0, gateway.errors.decode()
    [stored] = await gateway.recorded()
    [decision] = stored.tool_decisions
    assert (decision["action"], decision["decided_by"], decision["approval_id"]) == ("allow", "human", approval_id)
    assert (approved["status"], approved["decided_by"]) == (ApprovalStatus.APPROVED, "alice")


async def test_workers_stop_gracefully_when_the_supervisor_is_killed(gateway: Gateway, upstream: FakeUpstream) -> None:
    await gateway.start()
    release = asyncio.Event()
    upstream.push(Reply(text="finished after the supervisor died", hold=release))
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)

    async def held_stream() -> tuple[str, str]:
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "in flight"}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in response.parse() if c.choices])
        return response.headers["X-Ctxgate-Interaction-Id"], text

    held = asyncio.create_task(held_stream())
    await asyncio.wait_for(upstream.wait_for_calls(1), DEADLINE_S)
    assert gateway.process is not None
    gateway.process.kill()  # SIGKILL: nothing of the supervisor runs any more
    for worker in (1, 2):
        await gateway.line(logged("supervisor_gone", worker))
    release.set()  # the call in flight finishes, as after a SIGTERM
    interaction_id, text = await asyncio.wait_for(held, DEADLINE_S)
    assert text == "finished after the supervisor died"

    assert await gateway.ended() == -signal.SIGKILL  # and stdout ended: no worker holds it open any more
    for worker in (1, 2):
        assert any(map(logged("worker_stopped", worker), gateway.records))
    [stored] = await gateway.recorded()  # drained before the worker stopped
    assert (stored.id, stored.status) == (interaction_id, "ok")


async def test_a_worker_that_dies_stops_the_gateway_with_status_1(gateway: Gateway) -> None:
    started = await gateway.start()
    dying, other = started["worker_pids"]
    os.kill(dying, signal.SIGKILL)

    assert await gateway.ended() == 1
    exited = next(r for r in gateway.records if r["event"] == "worker_exited")
    assert (exited["pid"], exited["returncode"], exited["signal"], exited["level"]) == (
        dying, -signal.SIGKILL, "SIGKILL", "error")
    stopped = [r["worker"] for r in gateway.records if r["event"] == "worker_stopped"]
    assert stopped == [started["worker_pids"].index(other) + 1]  # the other one, gracefully


def test_workers_come_from_the_flag_else_the_environment_else_the_config_else_the_cpus(tmp_path: Path) -> None:
    config = tmp_path / "ctxgate.yaml"
    config.write_text("server: {workers: 3}\n")
    assert worker_count(load_settings(environ={})) == usable_cpus() >= 1
    assert worker_count(load_settings(str(config), environ={})) == 3
    assert worker_count(load_settings(str(config), environ={"CTXGATE_WORKERS": "5"})) == 5
    assert worker_count(load_settings(str(config), workers=1, environ={"CTXGATE_WORKERS": "5"})) == 1
    with pytest.raises(ConfigError, match="--workers: workers must be at least 1"):
        load_settings(workers=0, environ={})
    with pytest.raises(ConfigError, match="CTXGATE_WORKERS: workers must be an integer"):
        load_settings(environ={"CTXGATE_WORKERS": "many"})
    config.write_text("server: {workers: two}\n")
    with pytest.raises(ConfigError, match="server.workers: must be int"):
        load_settings(str(config), environ={})


def test_an_in_memory_store_runs_one_worker_and_refuses_more() -> None:
    assert worker_count(load_settings(db=":memory:", environ={})) == 1
    with pytest.raises(ConfigError, match="in-memory store"):
        worker_count(load_settings(db=":memory:", workers=2, environ={}))


async def test_a_second_gateway_on_the_same_port_is_refused_not_joined(gateway: Gateway, tmp_path: Path) -> None:
    started = await gateway.start()
    # The workers' sockets share the port with SO_REUSEPORT; another gateway must not slip in beside them.
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli.commands", "serve", "--port", str(started["port"]), "--workers", "2",
        "--db", str(tmp_path / "second.db"), cwd=tmp_path, env=serve_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, errors = await asyncio.wait_for(second.communicate(), DEADLINE_S)
    assert (second.returncode, out) == (1, b"")
    assert errors.decode() == f"ctxgate: error: cannot listen on 127.0.0.1:{started['port']}: address already in use\n"
    assert await gateway.stop() == 0
