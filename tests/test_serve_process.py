"""`ctxgate serve` as a real process: JSON logs on stdout, and SIGTERM loses no interaction."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from capture.records import InteractionQuery
from capture.sqlite import SQLiteStore
from proxy.demo.fake_upstream import FakeUpstream, Reply

PROVIDER_SECRET = "sk-proc-provider-9d1e7a"
CLIENT_SECRET = "sk-proc-client-51c3aa"
ADMIN_SECRET = "sk-proc-admin-0be4d2"
PROMPT_MARKER = "confidential-prompt-text-XYZZY"
REQUIRED_FIELDS = {
    "timestamp", "level", "event", "request_id", "path", "status", "model", "stream", "client", "project",
    "session_id", "interaction_id", "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "stage_ms",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def read_until(stream: asyncio.StreamReader, event: str, seen: list[str]) -> None:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        if not line:
            raise AssertionError(f"gateway exited before {event!r}: {''.join(seen)}")
        seen.append(line)
        if json.loads(line).get("event") == event:
            return


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_in_flight_requests_and_capture(upstream: FakeUpstream, tmp_path: Path, workers: int) -> None:
    db = tmp_path / "gw.db"
    config = tmp_path / "ctxgate.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-test\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {upstream.base_url}\n"
        "      api_key: os.environ/TEST_PROVIDER_KEY\n"
        "logging: {level: debug}\n"
    )
    port = free_port()
    env = {**os.environ, "TEST_PROVIDER_KEY": PROVIDER_SECRET, "CTXGATE_DB": str(db),
           "CTXGATE_ADMIN_KEY": ADMIN_SECRET, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           # litellm's default OpenAI base, for the undeclared model: the fake upstream
           "OPENAI_BASE_URL": upstream.base_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli.commands", "serve", "--config", str(config), "--port", str(port),
        "--workers", str(workers), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    try:
        await read_until(process.stdout, "gateway_started", lines)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_SECRET, max_retries=0)
        messages: Any = [{"role": "user", "content": PROMPT_MARKER}]

        for n in range(8):
            await client.chat.completions.create(model="gpt-test", messages=messages, stream=n % 2 == 1)
        upstream.push(Reply(status=401, error="provider refused the key"))
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-test", messages=messages)
        # Not declared: forwarded with the client's own key, which must not surface anywhere.
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert upstream.received[-1].headers["Authorization"] == f"Bearer {CLIENT_SECRET}"
        completed = 10

        release = asyncio.Event()
        upstream.push(Reply(text="held stream one", hold=release),
                      Reply(text="held stream two", hold=release))

        async def held_stream() -> str:
            stream = await client.chat.completions.create(model="gpt-test", messages=messages, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        held = [asyncio.create_task(held_stream()) for _ in range(2)]
        await asyncio.wait_for(upstream.wait_for_calls(completed + 2), 30)  # both held calls arrived

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_SECRET}"}) as session:
            listing = await session.get(f"http://127.0.0.1:{port}/interactions?limit=500")
            api_text = await listing.text()
            first_id = (await listing.json())["data"][0]["id"]
            api_text += await (await session.get(f"http://127.0.0.1:{port}/interactions/{first_id}")).text()

        process.send_signal(signal.SIGTERM)
        await read_until(process.stdout, "gateway_stopping", lines)
        release.set()  # in-flight requests may still finish after the stop signal
        # the two requests may reach the upstream in either order
        assert sorted(await asyncio.gather(*held)) == ["held stream one", "held stream two"]
        rest, errors = await asyncio.wait_for(process.communicate(), 30)
        lines += rest.decode().splitlines(keepends=True)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, errors.decode()
    store = SQLiteStore(str(db))
    await store.open()
    stored = await store.list_interactions(InteractionQuery(limit=500))
    await store.close()
    assert len(stored) == completed + 2
    assert sorted(s.status for s in stored) == ["ok"] * (completed + 1) + ["upstream_error"]

    records = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    requests = [r for r in records if r["event"] == "request_completed" and r["path"] == "/v1/chat/completions"]
    assert len(requests) == completed + 2
    for record in requests:
        assert REQUIRED_FIELDS <= set(record), REQUIRED_FIELDS - set(record)
        assert record["status"] in (200, 401)
        assert {"context", "upstream", "policy", "capture"} <= set(record["stage_ms"]) or record["status"] == 401
    assert {r["interaction_id"] for r in requests} == {s.id for s in stored}
    everything = "".join(lines) + errors.decode()
    for secret in (PROVIDER_SECRET, CLIENT_SECRET, ADMIN_SECRET, PROMPT_MARKER):
        assert secret not in everything
    for secret in (PROVIDER_SECRET, CLIENT_SECRET, ADMIN_SECRET):
        assert secret not in api_text
    assert PROMPT_MARKER in api_text  # the audit trail does hold the prompt: the check is real


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CTXGATE_CONFIG", "CTXGATE_DB", "CTXGATE_PORT")}
    return {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **extra}


async def test_serve_uses_the_config_in_the_current_directory_and_says_so(tmp_path: Path) -> None:
    # what `make serve` runs: no flags, beside a ctxgate.yaml
    (tmp_path / "ctxgate.yaml").write_text("server: {port: 0}\nstore: {url: from-yaml.db}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli.commands", "serve", cwd=tmp_path, env=serve_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        await read_until(process.stdout, "gateway_started", lines)
        started = json.loads(lines[-1])
        assert (started["config"], started["config_from"]) == (str(tmp_path / "ctxgate.yaml"), "the current directory")
        assert started["store"] == "from-yaml.db" and started["port"] != 0  # the port it really listens on
        async with aiohttp.ClientSession() as session:
            assert (await session.get(f"http://127.0.0.1:{started['port']}/healthz")).status == 200
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "from-yaml.db").is_file()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.cli.commands", "serve", "--port", str(port), "--workers", workers,
            cwd=tmp_path, env=serve_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, errors = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert out == b""  # no gateway_started, no warm-up
    assert errors.decode() == f"ctxgate: error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert list(tmp_path.iterdir()) == []  # nor a store
