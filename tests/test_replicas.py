"""Two `ctxgate serve` replicas, real processes, on one PostgreSQL database: any replica answers
for the others' calls, a call held on one is released by a person deciding through the other,
a key's rate holds across both, every call is recorded once, and an outage of the database
loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest

from proxy.config.keys import digest
from proxy.demo.fake_upstream import FakeUpstream, Reply
from tests.test_serve_workers import ADMIN_KEY, DEADLINE_S, DEPLOY, TOOLS, Gateway

TEAM_KEY = "ctxg-team-key-without-a-limit-00"
LIMITED_KEY = "ctxg-team-key-four-per-minute-01"


@pytest.fixture
async def replicas(tmp_path: Path, upstream: FakeUpstream, postgres_url: str) -> AsyncIterator[list[Gateway]]:
    config = ("keys:\n"
              f"  - {{sha256: {digest(TEAM_KEY)}, client: team, projects: [atmos]}}\n"
              f"  - {{sha256: {digest(LIMITED_KEY)}, client: limited, projects: [atmos], rpm: 4}}\n")
    started = [Gateway(tmp_path, upstream, store_url=postgres_url, name=name, config=config) for name in ("a", "b")]
    yield started
    for replica in started:
        if replica.process is not None and replica.process.returncode is None:
            replica.process.kill()
            await replica.process.wait()


def client_of(replica: Gateway, key: str = TEAM_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=replica.url + "/v1", api_key=key, max_retries=0)


async def test_a_call_held_on_one_replica_is_released_by_a_person_deciding_through_the_other(
    replicas: list[Gateway], upstream: FakeUpstream
) -> None:
    holder, other = replicas
    await asyncio.gather(*(replica.start(workers=1) for replica in replicas))
    upstream.push(Reply(text="Deploying.", tool_calls=(DEPLOY,)))
    held = asyncio.create_task(client_of(holder).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "deploy it"}], tools=TOOLS))
    approval_id = (await holder.line(lambda r: r["event"] == "tool_approval_requested"))["approval_id"]

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        async with admin.get(f"{other.url}/approvals", params={"status": "pending"}) as listed:
            assert [a["id"] for a in (await listed.json())["data"]] == [approval_id]  # B sees A's question
        decided_at = time.monotonic()
        async with admin.post(f"{other.url}/approvals/{approval_id}/approve") as decided:
            assert decided.status == 200, await decided.text()
    completion = await asyncio.wait_for(held, DEADLINE_S)
    released_after_s = time.monotonic() - decided_at
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls if c.type == "function"] == [DEPLOY.name]
    # Heard, not polled: the holder asks the store on its own only every 5 s.
    assert released_after_s < 2.5, f"released {released_after_s:.2f} s after the decision"
    assert await asyncio.gather(*(replica.stop() for replica in replicas)) == [0, 0], \
        [replica.errors.decode() for replica in replicas]
    [stored] = await holder.recorded()
    assert [(d["action"], d["decided_by"]) for d in stored.tool_decisions] == [("allow", "human")]


async def test_a_keys_calls_per_minute_hold_across_both_replicas(replicas: list[Gateway]) -> None:
    await asyncio.gather(*(replica.start(workers=1) for replica in replicas))
    statuses = []
    for n in range(6):
        try:
            await client_of(replicas[n % 2], LIMITED_KEY).chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": f"call {n}"}])
            statuses.append(200)
        except openai.RateLimitError as error:
            statuses.append(error.status_code)
            assert int(error.response.headers["Retry-After"]) >= 1
    assert statuses == [200, 200, 200, 200, 429, 429]  # 4 a minute in all, not 4 on each
    assert await asyncio.gather(*(replica.stop() for replica in replicas)) == [0, 0], \
        [replica.errors.decode() for replica in replicas]


async def test_calls_spread_over_both_replicas_are_all_recorded_once_after_both_stop(replicas: list[Gateway]) -> None:
    await asyncio.gather(*(replica.start(workers=1) for replica in replicas))
    clients = [client_of(replica) for replica in replicas]
    gate = asyncio.Semaphore(16)

    async def call(n: int) -> str:
        async with gate:
            answer = await clients[n % 2].chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": f"marker-{n}"}], stream=n % 3 == 0)
            if n % 3 == 0:
                [_ async for _ in answer.parse()]
            return answer.headers["X-Ctxgate-Interaction-Id"]

    answered = await asyncio.gather(*(call(n) for n in range(200)))
    stopped = await asyncio.gather(*(replica.stop() for replica in replicas))  # SIGTERM both at once
    assert stopped == [0, 0], [replica.errors.decode() for replica in replicas]
    db = await asyncpg.connect(replicas[0].store_url)
    stored = [row[0] for row in await db.fetch("SELECT id FROM interactions")]
    await db.close()
    assert len(stored) == 200 and sorted(stored) == sorted(answered)


class Relay:
    """A TCP relay between a gateway and PostgreSQL, which the test takes down and brings back:
    down, it refuses connections and cuts the ones it carried; frozen, it keeps them and
    carries nothing, as a network that drops packets silently."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._carried: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._carried):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._carried |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    await self.flowing.wait()
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._carried -= {writer, up_writer}


async def health(replica: Gateway) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{replica.url}/healthz") as answer:
        body: dict[str, Any] = await answer.json()
        return body


async def test_an_outage_of_the_database_mid_load_loses_no_call_and_stores_each_once(
    tmp_path: Path, upstream: FakeUpstream, postgres_url: str
) -> None:
    server_port = int(postgres_url.rpartition(":")[2].partition("/")[0])
    relay = Relay(server_port)
    await relay.up()
    relayed_url = postgres_url.replace(f":{server_port}/", f":{relay.port}/")
    replica = Gateway(tmp_path, upstream, store_url=relayed_url, name="outage")
    sent: list[str] = []

    async def calls(first: int, count: int) -> None:
        for n in range(first, first + count):
            marker = f"marker-{n:03d}"
            answer = await client.chat.completions.create(model="gpt-test",
                                                          messages=[{"role": "user", "content": marker}])
            assert answer.choices[0].message.content == f"Echo: {marker}"
            sent.append(marker)

    try:
        await replica.start(workers=1)
        client = client_of(replica)
        await calls(0, 40)
        await relay.down()  # mid-load: records in flight are cut with their connections
        await calls(40, 40)
        during = await health(replica)
        assert during["status"] == "degraded" and during["store"] == "unreachable"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            async with admin.get(f"{replica.url}/metrics") as metrics:
                text = await metrics.text()
        backlog = next(line for line in text.splitlines() if line.startswith("ctxgate_capture_spool_segments "))
        assert int(backlog.split()[1]) >= 1
        await relay.up()
        await calls(80, 40)
        deadline = time.monotonic() + DEADLINE_S
        while (await health(replica))["status"] != "ok":  # replayed, and the spool empty again
            assert time.monotonic() < deadline, await health(replica)
            await asyncio.sleep(0.2)
        assert await replica.stop() == 0, replica.errors.decode()
    finally:
        if replica.process is not None and replica.process.returncode is None:
            replica.process.kill()
        with contextlib.suppress(AssertionError):
            await relay.down()
    db = await asyncpg.connect(postgres_url)
    prompts = [row[0] for row in await db.fetch("SELECT prompt FROM interactions")]
    await db.close()
    markers = sorted(prompt.split('"content":"')[1].split('"')[0] for prompt in prompts)
    assert markers == sorted(sent) and len(sent) == 120  # each call stored, and exactly once


async def test_a_database_password_is_neither_on_a_workers_command_line_nor_in_the_logs(
    tmp_path: Path, upstream: FakeUpstream, postgres_url: str
) -> None:
    password = "pg-password-never-shown-7d1e"  # trust auth takes any: only where it shows matters
    with_password = postgres_url.replace("://postgres@", f"://postgres:{password}@")
    assert password in with_password
    replica = Gateway(tmp_path, upstream, store_url=with_password, name="secret")
    try:
        started = await replica.start(workers=2)
        answer = await client_of(replica, "sk-any").chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "Echo: hi"
        for pid in started["worker_pids"]:
            assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        if replica.process is not None and replica.process.returncode is None:
            assert await replica.stop() == 0, replica.errors.decode()
    assert password not in str(replica.records) and password not in replica.errors.decode()
    assert len(await replica.recorded()) == 1


async def test_a_database_that_stops_answering_holds_no_call_up(
    tmp_path: Path, upstream: FakeUpstream, postgres_url: str
) -> None:
    """Frozen, the database takes connections and answers nothing: each call goes on without
    its context search after a short wait (not the 30 s a query may take), the calls after it
    without asking, and every record is stored once it answers again."""
    server_port = int(postgres_url.rpartition(":")[2].partition("/")[0])
    relay = Relay(server_port)
    await relay.up()
    replica = Gateway(tmp_path, upstream, store_url=postgres_url.replace(f":{server_port}/", f":{relay.port}/"),
                      name="frozen")
    try:
        await replica.start(workers=1)
        client = client_of(replica)
        relay.flowing.clear()
        waits = []
        for n in range(6):
            started = time.monotonic()
            answer = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": f"frozen-{n} about the vpc"}])
            waits.append(time.monotonic() - started)
            assert answer.choices[0].message.content == f"Echo: frozen-{n} about the vpc"
        assert max(waits) < 5 and sorted(waits)[len(waits) // 2] < 0.5, waits  # one short wait, then none
        assert (await health(replica))["status"] == "degraded"
        relay.flowing.set()
        assert await replica.stop() == 0, replica.errors.decode()
    finally:
        relay.flowing.set()
        if replica.process is not None and replica.process.returncode is None:
            replica.process.kill()
        await relay.down()
    db = await asyncpg.connect(postgres_url)
    prompts = sorted(row[0] for row in await db.fetch("SELECT prompt FROM interactions"))
    await db.close()
    assert len(prompts) == 6 and all(f"frozen-{n}" in prompts[n] for n in range(6))
