"""`ctxgate serve` with its store on a small tmpfs that fills up under load, stopped with SIGTERM,
then restarted once the store is mended: every call that was answered is in the store exactly
once, and /healthz said so while it was degraded.

(A store that turns read-only under load could not be made here: the kernel refuses to
remount a filesystem read-only while the gateway holds files on it open for writing. The
writer takes it the same way: the store raises StoreUnavailable; tests/capture covers that.)

Mounting needs root (CI runs as root); elsewhere this skips, saying why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from proxy.demo.fake_upstream import FakeUpstream, Reply
from tests.test_serve_process import free_port, read_until, serve_env


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


class Gateway:
    def __init__(self, config: Path, port: int, cwd: Path) -> None:
        self.config, self.port, self.cwd = config, port, cwd
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # One worker: /healthz describes the worker that answers it, and the test reads, through
        # it, the state of the one capture writer that met the full disk.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.cli.commands", "serve", "--config", str(self.config), "--port", str(self.port),
            "--workers", "1", cwd=self.cwd, env=serve_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.process.stdout is not None
        await read_until(self.process.stdout, "gateway_started", self.lines)

    async def stop(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        self.process.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(self.process.communicate(), 60)
        self.lines += rest.decode().splitlines(keepends=True)
        assert b"Traceback" not in errors, errors.decode()
        return self.process.returncode or 0

    def events(self) -> list[str]:
        return [json.loads(line).get("event", "") for line in self.lines if line.startswith("{")]

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            response = await session.get(self.url + "/healthz")
            return response.status, await response.json()


@pytest.fixture
async def upstream_for_faults() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(default_reply=Reply(text="noted"))  # not an echo of the large prompts
    await fake.start()
    yield fake
    await fake.stop()


def config_for(tmp_path: Path, db: Path, upstream: FakeUpstream) -> Path:
    config = tmp_path / "ctxgate.yaml"
    config.write_text(
        f"store: {{url: {db}, spool_dir: {tmp_path / 'spool'}}}\n"
        "model_list:\n"
        "  - model_name: gpt-test\n"
        f"    litellm_params: {{model: openai/fake-model, api_base: '{upstream.base_url}', api_key: sk-fault-test-key}}\n"
    )
    return config


async def answered_calls(gateway: Gateway, count: int, tag: str) -> set[str]:
    """`count` calls with prompts large enough to make the store grow; the ids answered."""
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)
    ids = set()
    for n in range(count):
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": f"{tag} {n} " + "lorem ipsum " * 2000}],
            stream=n % 3 == 2)
        ids.add(response.headers["X-Ctxgate-Interaction-Id"])
        if n % 3 == 2:
            async for _ in response.parse():  # type: ignore[attr-defined]
                pass
    return ids


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM interactions")]


async def wait_for_health(gateway: Gateway, wanted: str) -> dict[str, Any]:
    for _ in range(200):  # the writer notices at its next write; bounded at 20 s
        status, body = await gateway.health()
        if body["status"] == wanted:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never said {wanted!r}: {body}")


async def test_a_store_whose_disk_fills_under_load_loses_no_answered_call(
    small_disk: Path, tmp_path: Path, upstream_for_faults: FakeUpstream
) -> None:
    db = small_disk / "ctxgate.db"
    gateway = Gateway(config_for(tmp_path, db, upstream_for_faults), free_port(), tmp_path)
    await gateway.start()
    try:
        answered = await answered_calls(gateway, 5, "before")
        await wait_for_health(gateway, "ok")
        subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=64k"], capture_output=True)
        answered |= await answered_calls(gateway, 9, "during")
        degraded = await wait_for_health(gateway, "degraded")
        assert any("refuses writes" in reason for reason in degraded["reasons"]), degraded
        assert degraded["capture"]["spool_segments"] >= 1
    finally:
        code = await gateway.stop()  # SIGTERM with the store still failing
    assert code == 0
    assert {"capture_write_failed", "capture_spooled"} <= set(gateway.events())
    assert "capture_lost" not in gateway.events() and "capture_dropped" not in gateway.events()

    os.remove(small_disk / "filler")
    restarted = Gateway(gateway.config, free_port(), tmp_path)
    await restarted.start()
    try:
        answered |= await answered_calls(restarted, 2, "after")
        await wait_for_health(restarted, "ok")
    finally:
        assert await restarted.stop() == 0
    assert "capture_spool_replayed" in restarted.events()
    ids = stored_ids(db)
    assert len(ids) == len(set(ids)) == len(answered) == 16
    assert set(ids) == answered
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))
