"""What each benchmark target is, and how it is started.

| target | what it is |
|---|---|
| `direct` | the client calls the fake upstream itself |
| `passthrough` | a raw aiohttp byte relay: the floor for any Python proxy |
| `bare_litellm` | an aiohttp handler that only awaits `litellm.acompletion` |
| `litellm_proxy` | LiteLLM proxy (`litellm --config`), one worker, from its own venv |
| `ctxgate` | `ctxgate serve`, native transport, capture on, context on, JSON logs on, one worker |
| `ctxgate_policy` | the same, enforcing the 200-rule policy of `bench/policy.py`: the issue's configuration |
| `ctxgate_translate` | `ctxgate` with the route pinned to `transport: translate` (through litellm) |
| `ctxgate_workers1`, `ctxgate_workers2` | `ctxgate_policy` served with `--workers 1` / `--workers 2` |
| `ctxgate_postgres` | `ctxgate_policy` on a PostgreSQL store (a database of its own, dropped after) |
| `ctxgate_traced` | `ctxgate_policy` exporting its traces over OTLP/HTTP to the fake upstream's `/v1/traces` |

`passthrough` and `ctxgate_policy` are measured on Anthropic Messages too (`POST /v1/messages`,
ctxgate's `claude-bench` route carried natively to the same upstream), and on the Responses API
(`POST /v1/responses`, the chat route's model, which ctxgate carries natively too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson

from bench import litellm_proxy
from bench.policy import big_policy

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
ALL = ("direct", "passthrough", "bare_litellm", "litellm_proxy", "ctxgate", "ctxgate_policy", "ctxgate_translate",
       "ctxgate_workers1", "ctxgate_workers2", "ctxgate_postgres", "ctxgate_traced")
WORKERS = {"ctxgate_workers1": 1, "ctxgate_workers2": 2}
# The wires a scenario's calls are sent in: OpenAI chat (POST /v1/chat/completions) to every
# target; Anthropic Messages (POST /v1/messages) and the Responses API (POST /v1/responses) to
# NATIVE_WIRE_TARGETS only, which keeps `make bench` within its minutes.
CHAT, ANTHROPIC, RESPONSES = "chat", "anthropic", "responses"
NATIVE_WIRES = (ANTHROPIC, RESPONSES)
NATIVE_WIRE_TARGETS = ("passthrough", "ctxgate_policy")
ANTHROPIC_MODEL = "claude-bench"


@dataclass(frozen=True)
class Target:
    """A target ready to start; `command` None means the client calls the upstream itself."""

    name: str
    command: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    db: str | None = None  # ctxgate: the store whose rows are counted once it has stopped (a path or a URL)

    @property
    def is_ctxgate(self) -> bool:
        return self.db is not None


def prepare(name: str, workdir: Path, upstream_base: str, port: int) -> Target | str:
    """The target, or the reason it cannot run here (printed, and its rows skipped)."""
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CTXGATE_")}
    base_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if name == "direct":
        return Target(name, None)
    if name in ("passthrough", "bare_litellm"):
        return Target(name, [python, "-m", "bench.servers", name, str(port), upstream_base], base_env)
    if name == "litellm_proxy":
        why_not = litellm_proxy.ensure_venv()
        if why_not:
            return why_not
        config = workdir / "litellm_proxy.yaml"
        config.write_text(litellm_proxy.config_text(MODEL, upstream_base))
        return Target(name, litellm_proxy.command(config, port), litellm_proxy.environment(os.environ))
    if name.startswith("ctxgate"):
        # One worker unless the row is about workers, so that req/s compares with the one-process
        # baselines (LiteLLM proxy runs --num_workers 1); CPU is the whole tree's either way.
        extra = ["--workers", str(WORKERS.get(name, 1))] if has_workers_flag() else []
        if name in WORKERS and not extra:
            return "`ctxgate serve --help` lists no --workers flag (not in this checkout yet)"
        config = workdir / f"{name}.yaml"
        # The spool in the round's own directory: a PostgreSQL store's default is ./ctxgate-spool,
        # which every round would share (and replay from).
        config.write_text(ctxgate_config(name, upstream_base) + f"store: {{spool_dir: '{workdir / name}.spool'}}\n")
        db = str(workdir / f"{name}.db")
        if name == "ctxgate_postgres":
            made = make_database()
            if made is None:
                return f"no PostgreSQL server at {POSTGRES_SERVER} (set CTXGATE_BENCH_POSTGRES)"
            db = made
        command = [python, "-m", "proxy.cli.commands", "serve", "--config", str(config), "--port", str(port),
                   "--db", db, *extra]
        return Target(name, command, base_env, db)
    return f"unknown target {name!r} (known: {', '.join(ALL)})"


def ctxgate_config(name: str, upstream_base: str) -> str:
    """Capture on (the store given by --db), context on (searched per request; the store is
    empty, so no pack is added), JSON logs; the policy for `ctxgate_policy` and the workers rows,
    and for the targets measured on Anthropic Messages a second route, `anthropic/...` to the same
    upstream (whose base has no /v1: the gateway posts to `<api_base>/v1/messages`)."""
    # ctxgate_translate: the same route carried through litellm, as before the native transport
    transport = "translate" if name == "ctxgate_translate" else "native"
    text = (
        f"model_list:\n  - model_name: {MODEL}\n    transport: {transport}\n    litellm_params:\n"
        f"      model: openai/fake-model\n      api_base: {upstream_base}\n      api_key: sk-bench\n"
    )
    if name in NATIVE_WIRE_TARGETS:  # pinned native, so that a change of default cannot make it measure litellm
        text += (
            f"  - model_name: {ANTHROPIC_MODEL}\n    transport: native\n    litellm_params:\n"
            f"      model: anthropic/claude-fake\n      api_base: {upstream_base.removesuffix('/v1')}\n"
            "      api_key: sk-bench\n"
        )
    text += "context:\n  enabled: true\n"
    if name in ("ctxgate_policy", "ctxgate_postgres", "ctxgate_traced") or name in WORKERS:  # bench/policy.py's 200 rules
        text += "policy: " + orjson.dumps(big_policy()).decode() + "\n"
    if name == "ctxgate_traced":  # the collector is the fake upstream's: its CPU is not the target's
        text += f"telemetry: {{otlp_endpoint: '{upstream_base.removesuffix('/v1')}'}}\n"
    return text


@functools.cache
def has_workers_flag() -> bool:
    done = subprocess.run([sys.executable, "-m", "proxy.cli.commands", "serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return "--workers" in done.stdout


POSTGRES_SERVER = os.environ.get("CTXGATE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_database() -> str | None:
    """A fresh database on the PostgreSQL server, its URL; None when the server cannot be reached."""
    name = f"ctxgate_bench_{uuid.uuid4().hex[:12]}"

    async def make() -> None:
        admin = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    try:
        asyncio.run(make())
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return None
    return POSTGRES_SERVER.rpartition("/")[0] + "/" + name


def stored_interactions(db: str) -> int:
    """The interactions a stopped target's store holds."""
    if not db.startswith("postgresql://"):
        with contextlib.closing(sqlite3.connect(db)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM interactions").fetchone()
            return int(count)

    async def count() -> int:
        connection = await asyncpg.connect(db)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM interactions"))
        finally:
            await connection.close()

    return asyncio.run(count())


def drop_database(db: str | None) -> None:
    """A target's PostgreSQL database, dropped (a SQLite file goes with the work directory)."""
    if db is None or not db.startswith("postgresql://"):
        return

    async def drop() -> None:
        admin = await asyncpg.connect(POSTGRES_SERVER)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db.rpartition("/")[2]}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())
