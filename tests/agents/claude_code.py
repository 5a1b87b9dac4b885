"""The real Claude Code CLI (`claude -p`, installed by `make agents`) driven through the gateway
to a fake Anthropic provider, offline: the stack (provider, gateway, and a sniffer of what
Claude Code sent the gateway), the scripted task (run a probe with Bash, then say what it
printed), and a run of the CLI with a HOME of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from policy.rules import parse_policy
from proxy.app import create_app
from proxy.config.settings import ModelRoute
from proxy.demo.fake_anthropic import FakeAnthropic
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.edge.server import server_options
from tests.agents.cli import run_cli
from tests.conftest import PROVIDER_KEY, Gateway, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / "node_modules" / ".bin" / "claude"
MODEL = "claude-gateway-test"  # the route's name; Claude Code asks for it with --model
RUN_TIMEOUT_S = 40
PROMPT = "Check the ledger service health with the probe command"
MEMORY = "The ledger service health probe answers on port 7311"
PREAMBLE = "Running the probe."
ANSWER_PREFIX = "The probe said: "
CALLER_KEY = "sk-ant-dummy-key"

Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class Seen:
    """What Claude Code sent the gateway, before the gateway touched it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class Sniffer:
    seen: list[Seen] = field(default_factory=list)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/ui"):  # the operator page: forms, not the agent's calls
            page: web.StreamResponse = await handler(request)
            return page
        raw = await request.read()  # aiohttp keeps the bytes: the gateway reads them again
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers),
                              orjson.loads(raw) if raw else None))
        response: web.StreamResponse = await handler(request)
        return response

    def messages_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path.startswith("/v1/messages")
                and not s.path.startswith("/v1/messages/count_tokens")]


def latest_user_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            content = message["content"]
            return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    return []


def tool_result_text(body: dict[str, Any]) -> str | None:
    """The text of the tool results in the latest user message, if it carries any."""
    results = [b for b in latest_user_blocks(body) if b.get("type") == "tool_result"]
    if not results:
        return None
    texts: list[str] = []
    for result in results:
        content = result.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [c.get("text", "") for c in content if isinstance(c, dict)]
    return "\n".join(texts)


def is_the_task(body: dict[str, Any]) -> bool:
    return PROMPT in orjson.dumps(body["messages"]).decode()


def scripted(command: str, *, preamble: str | None = PREAMBLE) -> Responder:
    """Turn 1 of the task: `preamble` (None: no text block), then run `command` with Bash; once
    its result comes back: say what it printed. Anything else (a side call Claude Code may make)
    gets a plain answer."""

    def respond(body: dict[str, Any]) -> Reply:
        result = tool_result_text(body)
        if result is not None:
            return Reply(text=ANSWER_PREFIX + result.strip(), fragment=7)
        if is_the_task(body):
            return Reply(text=preamble, fragment=5,
                         tool_calls=(ToolCall("Bash", orjson.dumps({"command": command,
                                                                    "description": "Probe"}).decode(),
                                              id="toolu_probe"),))
        return Reply(text="ok")
    return respond


@dataclass
class Stack:
    gateway: Gateway
    provider: FakeAnthropic
    sniffer: Sniffer


async def start_stack(aiohttp_server: Any, tmp_path: Path, policy: dict[str, Any], respond: Responder,
                      *, admin_key: str | None = None) -> Stack:
    """The fake provider answering with `respond`, and the gateway in front of it (its store
    under `tmp_path`) with `policy` and the memory the task's pack carries; with `admin_key`,
    people decide on the operator page with it."""
    provider = FakeAnthropic(respond=respond)
    upstream_server = await aiohttp_server(provider.app())
    provider.base_url = str(upstream_server.make_url("")).rstrip("/")
    route = ModelRoute(model_name=MODEL, model="anthropic/claude-fake", api_base=provider.base_url,
                       api_key=PROVIDER_KEY)
    settings = gateway_settings(FakeUpstream(base_url="http://127.0.0.1:9/v1"), tmp_path,
                                policy=parse_policy(policy), models=(route,), admin_key=admin_key)
    app = create_app(settings)
    sniffer = Sniffer()
    app.middlewares.insert(0, sniffer.middleware)  # outermost: sees every request as it came
    options = {k: v for k, v in server_options(settings).items() if k != "handler_cancellation"}
    server = await aiohttp_server(app, **options)
    gateway = Gateway(server=server, app=app, upstream=FakeUpstream())
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/memories", json={"project": settings.default_project,
                                                                        "content": MEMORY},
                                      headers={"Authorization": f"Bearer {admin_key}"} if admin_key else {})
        assert response.status == 201, await response.text()
    return Stack(gateway=gateway, provider=provider, sniffer=sniffer)


@dataclass(frozen=True)
class Run:
    returncode: int
    result: dict[str, Any]
    stderr: str


async def run_claude(claude: Path, gateway: Gateway, home: Path, cwd: Path,
                     key_env: str = "ANTHROPIC_API_KEY", env: Mapping[str, str] | None = None,
                     allowed_tools: str = "Bash") -> Run:
    """`claude -p` in `cwd` with a HOME of its own, offline but for the gateway; its key from
    `key_env` (ANTHROPIC_API_KEY: sent as x-api-key; ANTHROPIC_AUTH_TOKEN: as a bearer token),
    and `env` on top; it may use `allowed_tools` (comma-separated) without asking. Killed if it outlives RUN_TIMEOUT_S or the caller stops waiting for it."""
    home.mkdir()
    cwd.mkdir()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "SHELL": "/bin/bash",
        "LANG": "C.UTF-8", "TMPDIR": str(home),
        "ANTHROPIC_BASE_URL": gateway.url, key_env: CALLER_KEY,
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", **(env or {}),
    }
    returncode, stdout, stderr = await run_cli(
        [str(claude), "-p", PROMPT, "--model", MODEL, "--allowedTools", allowed_tools, "--output-format", "json"],
        cwd, environment, RUN_TIMEOUT_S)
    assert stdout.strip(), f"claude -p printed nothing (exit {returncode}): {stderr.decode()[-2000:]}"
    return Run(returncode, orjson.loads(stdout.splitlines()[-1]), stderr.decode())


@contextlib.asynccontextmanager
async def claude_running(claude: Path, gateway: Gateway, tmp_path: Path,
                         env: Mapping[str, str] | None = None) -> AsyncIterator[asyncio.Task[Run]]:
    """`run_claude` (HOME and the work directory under `tmp_path`) as a task, for a test that
    acts while it runs; on leaving, the task is awaited or, if the test failed first, cancelled
    (which kills the CLI)."""
    run = asyncio.ensure_future(run_claude(claude, gateway, tmp_path / "home", tmp_path / "work", env=env))
    try:
        yield run
    finally:
        if not run.done():
            run.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await run


async def until(condition: Awaitable[Any], run: asyncio.Task[Run]) -> None:
    """Until `condition` is done; a failure if Claude Code ends first (its
    output in the message) or RUN_TIMEOUT_S passes."""
    waiting = asyncio.ensure_future(condition)
    done, _ = await asyncio.wait({waiting, run}, timeout=RUN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        waiting.result()
        return
    waiting.cancel()
    if run in done:
        raise AssertionError(f"claude -p ended first: {run.result()}")
    raise AssertionError(f"still waiting after {RUN_TIMEOUT_S} s")


def assert_one_claude_code_session(records: list[Any], calls: list[Seen]) -> None:
    session = calls[0].headers["X-Claude-Code-Session-Id"]
    assert session and all(c.headers["X-Claude-Code-Session-Id"] == session for c in calls)
    assert all(c.headers["User-Agent"].startswith("claude-cli/") for c in calls)
    assert [r.session_id for r in records] == [session] * len(records)
    assert all(r.client.startswith("claude-cli/") for r in records), [r.client for r in records]
    assert all(r.wire == "anthropic_messages" and r.model == MODEL for r in records)
