"""The real Claude Code CLI (`claude -p`, installed by `make agents`) through the gateway to a
fake Anthropic provider, offline: an allowed Bash call runs and its output comes back, a blocked
one never runs and Claude Code still ends cleanly; every turn is one session of the Claude Code
client; Claude Code's own system blocks reach the provider first and unchanged, the pack rides in
the messages, and its beta header passes as sent.

Skipped when node_modules/.bin/claude is absent, except under CI=true, where that fails."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from policy.rules import parse_policy
from proxy.app import create_app
from proxy.config.settings import ModelRoute
from proxy.demo.fake_anthropic import FakeAnthropic
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.edge.server import server_options
from tests.conftest import PROVIDER_KEY, Gateway, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / "node_modules" / ".bin" / "claude"
MODEL = "claude-gateway-test"  # the route's name; Claude Code asks for it with --model
RUN_TIMEOUT_S = 40
PROMPT = "Check the ledger service health with the probe command"
MEMORY = "The ledger service health probe answers on port 7311"
ANSWER_PREFIX = "The probe said: "
CALLER_KEY = "sk-ant-dummy-key"


@pytest.fixture
def claude() -> Path:
    """The installed CLI; without it these tests skip, but under CI they fail (CI installs it)."""
    if CLAUDE.exists() and os.access(CLAUDE, os.X_OK):
        return CLAUDE
    reason = f"Claude Code CLI not installed at {CLAUDE.relative_to(ROOT)}: run `make agents`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: `make test` installs it, so its absence is a failure)")
    pytest.skip(reason)


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


def scripted(command: str) -> Any:
    """Turn 1 of the task: run `command` with Bash; once its result comes back: say what it
    printed. Anything else (a side call Claude Code may make) gets a plain answer."""

    def respond(body: dict[str, Any]) -> Reply:
        result = tool_result_text(body)
        if result is not None:
            return Reply(text=ANSWER_PREFIX + result.strip(), fragment=7)
        if is_the_task(body):
            return Reply(text="Running the probe.", fragment=5,
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


async def start_stack(aiohttp_server: Any, tmp_path: Path, policy: dict[str, Any], command: str) -> Stack:
    provider = FakeAnthropic(respond=scripted(command))
    upstream_server = await aiohttp_server(provider.app())
    provider.base_url = str(upstream_server.make_url("")).rstrip("/")
    route = ModelRoute(model_name=MODEL, model="anthropic/claude-fake", api_base=provider.base_url,
                       api_key=PROVIDER_KEY)
    settings = gateway_settings(FakeUpstream(base_url="http://127.0.0.1:9/v1"), tmp_path,
                                policy=parse_policy(policy), models=(route,))
    app = create_app(settings)
    sniffer = Sniffer()
    app.middlewares.insert(0, sniffer.middleware)  # outermost: sees every request as it came
    options = {k: v for k, v in server_options(settings).items() if k != "handler_cancellation"}
    server = await aiohttp_server(app, **options)
    gateway = Gateway(server=server, app=app, upstream=FakeUpstream())
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/memories", json={"project": settings.default_project,
                                                                        "content": MEMORY})
        assert response.status == 201, await response.text()
    return Stack(gateway=gateway, provider=provider, sniffer=sniffer)


@dataclass(frozen=True)
class Run:
    returncode: int
    result: dict[str, Any]
    stderr: str


async def run_claude(claude: Path, gateway: Gateway, home: Path, cwd: Path,
                     key_env: str = "ANTHROPIC_API_KEY") -> Run:
    """`claude -p` in `cwd` with a HOME of its own, offline but for the gateway; its key from
    `key_env` (ANTHROPIC_API_KEY: sent as x-api-key; ANTHROPIC_AUTH_TOKEN: as a bearer token)."""
    home.mkdir()
    cwd.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "SHELL": "/bin/bash",
        "LANG": "C.UTF-8", "TMPDIR": str(home),
        "ANTHROPIC_BASE_URL": gateway.url, key_env: CALLER_KEY,
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(claude), "-p", PROMPT, "--model", MODEL, "--allowedTools", "Bash", "--output-format", "json",
        cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"claude -p did not finish within {RUN_TIMEOUT_S} s") from None
    assert stdout.strip(), f"claude -p printed nothing (exit {process.returncode}): {stderr.decode()[-2000:]}"
    return Run(process.returncode or 0, orjson.loads(stdout.splitlines()[-1]), stderr.decode())


def assert_one_claude_code_session(records: list[Any], calls: list[Seen]) -> None:
    session = calls[0].headers["X-Claude-Code-Session-Id"]
    assert session and all(c.headers["X-Claude-Code-Session-Id"] == session for c in calls)
    assert all(c.headers["User-Agent"].startswith("claude-cli/") for c in calls)
    assert [r.session_id for r in records] == [session] * len(records)
    assert all(r.client.startswith("claude-cli/") for r in records), [r.client for r in records]
    assert all(r.wire == "anthropic_messages" and r.status == "ok" and r.model == MODEL for r in records)


def without_pack(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": [b for b in m["content"] if not str(b.get("text", "")).startswith("<ctxgate-context")]}
            if isinstance(m["content"], list) else m for m in messages]


def assert_system_first_and_unchanged(stack: Stack, blocked: frozenset[str] = frozenset()) -> None:
    """Every call reached the provider with Claude Code's system blocks as sent (its attribution
    block first) and its beta header as sent, its messages as sent but for the pack block, its
    tools as sent but for the blocked ones."""
    calls = stack.sniffer.messages_calls()
    assert len(stack.provider.received) == len(calls)
    for sent, received in zip(calls, stack.provider.received, strict=True):
        assert received.body["system"] == sent.body["system"]
        assert sent.body["system"][0]["text"].startswith("x-anthropic-billing-header")
        assert received.headers["anthropic-beta"] == sent.headers["anthropic-beta"]
        assert received.headers["anthropic-version"] == sent.headers["anthropic-version"]
        assert received.headers["x-api-key"] == PROVIDER_KEY and "Authorization" not in received.headers
        assert MEMORY not in orjson.dumps(received.body["system"]).decode()
        assert {k: v for k, v in received.body.items() if k not in ("messages", "model", "tools")} == \
            {k: v for k, v in sent.body.items() if k not in ("messages", "model", "tools")}
        assert received.body["model"] == "claude-fake" and sent.body["model"] == MODEL
        assert received.body["tools"] == [t for t in sent.body["tools"] if t["name"] not in blocked]
        assert without_pack(received.body["messages"]) == sent.body["messages"]
    first = stack.provider.received[0].body
    assert is_the_task(first)
    packed = [b for b in latest_user_blocks(first) if MEMORY in b.get("text", "")]
    assert len(packed) == 1 and packed[0]["text"].startswith("<ctxgate-context")


@pytest.mark.parametrize(("key_env", "key_header", "key_value"), [
    ("ANTHROPIC_API_KEY", "x-api-key", CALLER_KEY),
    ("ANTHROPIC_AUTH_TOKEN", "Authorization", f"Bearer {CALLER_KEY}"),
], ids=["api-key", "auth-token"])
async def test_an_allowed_bash_call_runs_and_its_output_comes_back(
    claude: Path, aiohttp_server: Any, tmp_path: Path, key_env: str, key_header: str, key_value: str
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow"}},
                              command=f"echo probe-ok-7311 && echo ok > {marker}")
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work", key_env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert marker.read_text() == "ok\n"
    assert run.result["is_error"] is False and run.result["result"] == ANSWER_PREFIX + "probe-ok-7311"
    calls = stack.sniffer.messages_calls()
    assert all(c.headers.get(key_header) == key_value for c in calls)
    records = await stack.gateway.recorded(at_least=len(calls))
    task = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert len(task) == 2  # the tool call, then the answer to its result
    assert [(d["tool"], d["action"]) for d in task[0].tool_decisions] == [("Bash", "allow")]
    assert tool_result_text({"messages": task[1].prompt["messages"]}) is not None
    assert_one_claude_code_session(records, calls)
    assert run.result["session_id"] == calls[0].headers["X-Claude-Code-Session-Id"]
    assert_system_first_and_unchanged(stack)


async def test_a_blocked_bash_call_never_runs_and_claude_code_ends_cleanly(
    claude: Path, aiohttp_server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "work" / "probe-ran"
    stack = await start_stack(aiohttp_server, tmp_path, {"default": {"mode": "allow", "blocked_tools": ["Bash"]}},
                              command=f"echo ok > {marker}")
    run = await run_claude(claude, stack.gateway, tmp_path / "home", tmp_path / "work")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()
    assert run.result["is_error"] is False and run.result["stop_reason"] == "end_turn"
    assert "'Bash'" in run.result["result"] and "blocked" in run.result["result"]
    calls = stack.sniffer.messages_calls()
    records = await stack.gateway.recorded(at_least=len(calls))
    task = [r for r in records if is_the_task({"messages": r.prompt["messages"]})]
    assert len(task) == 1  # no tool result ever came back: the turn ended
    assert [(d["tool"], d["action"]) for d in task[0].tool_decisions] == [("Bash", "deny")]
    assert_one_claude_code_session(records, calls)
    assert_system_first_and_unchanged(stack, blocked=frozenset({"Bash"}))  # not offered
