"""The real Codex CLI (`codex exec`, installed by `make agents`) driven through the gateway to a
fake Responses API provider, offline: the stack (provider and gateway), the scripted task (run a
probe with `exec_command`, then say what it printed), and a run of the CLI with a CODEX_HOME of
its own whose config points its one model provider at the gateway."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from capture.knowledge import new_memory
from policy.rules import parse_policy
from proxy.appkeys import STORE
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.agents.cli import run_cli
from tests.conftest import Gateway, make_gateway

ROOT = Path(__file__).resolve().parents[2]
CODEX = ROOT / "node_modules" / ".bin" / "codex"
MODEL = "gpt-test"  # the route's name, as tests.conftest declares it
RUN_TIMEOUT_S = 60
PROMPT = "Check the ledger service health with the probe command"
MEMORY = "The ledger service health probe answers on port 7311"
ANSWER_PREFIX = "The probe said: "
CALLER_KEY = "sk-codex-dummy-key"
# Off: everything that would reach past the gateway (telemetry, feedback, plugins and apps
# fetched from OpenAI, model discovery), so the run stays offline.
CONFIG = f"""
model = "{MODEL}"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.gateway]
name = "ctxgate"
base_url = "{{base_url}}"
wire_api = "responses"
env_key = "CTXGATE_TEST_KEY"
stream_max_retries = 0
request_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[features]
apps = false
plugins = false
remote_plugin = false
plugin_sharing = false
api_key_model_discovery = false
"""


def function_output(body: dict[str, Any]) -> str | None:
    """The output of the call Codex ran, when its latest turn sends one back."""
    outputs = [item for item in body.get("input") or () if isinstance(item, dict)
               and item.get("type") == "function_call_output"]
    if not outputs:
        return None
    output = outputs[-1].get("output")
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def scripted(command: str) -> Any:
    """The task's first turn: run `command` with exec_command; once its output comes back, say
    what it printed."""

    def respond(body: dict[str, Any]) -> Reply:
        output = function_output(body)
        if output is not None:
            return Reply(text=ANSWER_PREFIX + output.strip()[-200:], fragment=7)
        if PROMPT in orjson.dumps(body.get("input")).decode():
            return Reply(text="Running the probe.", fragment=5, tool_calls=(
                ToolCall("exec_command", orjson.dumps({"cmd": command}).decode(), id="call_probe"),))
        return Reply(text="ok")
    return respond


async def start_gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, policy: dict[str, Any],
                        command: str, **settings: Any) -> Gateway:
    """The gateway in front of the fake provider (natively), with `policy` and the memory the
    task's pack carries; the provider runs the scripted task with `command`."""
    upstream.respond = scripted(command)
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(policy), **settings)
    await gateway.app[STORE].add_memory(new_memory("default", MEMORY))
    return gateway


@dataclass(frozen=True)
class Run:
    returncode: int
    events: list[dict[str, Any]]  # `--json`'s lines
    stderr: str

    @property
    def last_message(self) -> str:
        texts = [e["item"]["text"] for e in self.events if e.get("type") == "item.completed"
                 and e["item"].get("type") == "agent_message"]
        return texts[-1] if texts else ""


async def run_codex(codex: Path, gateway: Gateway, home: Path, cwd: Path) -> Run:
    """`codex exec --json` in `cwd` with a CODEX_HOME of its own, offline but for the gateway;
    killed if it outlives RUN_TIMEOUT_S or the caller stops waiting for it."""
    home.mkdir()
    cwd.mkdir()
    (home / "config.toml").write_text(CONFIG.replace("{base_url}", gateway.url + "/v1"))
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CODEX_HOME": str(home),
                   "LANG": "C.UTF-8", "CTXGATE_TEST_KEY": CALLER_KEY}
    returncode, stdout, stderr = await run_cli(
        [str(codex), "exec", "--json", "--skip-git-repo-check", PROMPT], cwd, environment, RUN_TIMEOUT_S)
    events = [orjson.loads(line) for line in stdout.splitlines() if line.startswith(b"{")]
    return Run(returncode, events, stderr.decode())
