"""`ctxgate demo`: the product working offline, on embedded defaults, in under a minute.

Starts a built-in fake upstream and the gateway on free ports with a temporary store, sends
real `openai` SDK calls through it, and prints what was recorded.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import openai
from aiohttp import web
from openai.lib.streaming.chat import ChatCompletionStreamState

from capture.ingest import Document, ingest
from capture.knowledge import new_memory
from capture.records import InteractionQuery
from proxy.app import create_app
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, CAPTURE_WRITER, STORE
from proxy.cli.tables import format_table
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.edge.logs import configure_logging
from proxy.edge.server import make_runner
from proxy.config.settings import ModelRoute, Settings

def _tool(name: str, description: str) -> Any:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": {}}}}


WEATHER_TOOL = _tool("get_weather", "Current weather for a city")
TOOLS = [
    WEATHER_TOOL,
    _tool("atmos_describe_component", "Describe a component in a stack"),
    _tool("atmos_terraform_destroy", "Destroy a component's infrastructure"),
    _tool("file_edit", "Edit a file"),
]
DEMO_ADMIN_KEY = "demo-admin-key"  # deciding approvals over HTTP needs one
DEMO_POLICY = {
    "default": {
        "mode": "prompt",
        "allowed_tools": ["get_weather", "atmos_describe_*"],
        "restricted_tools": ["file_edit"],
        "blocked_tools": ["atmos_terraform_destroy"],
        "approval_timeout_s": 30,
    }
}


def run_demo() -> int:
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory(prefix="ctxgate-demo-") as workdir:
        asyncio.run(_demo(Path(workdir)))
    return 0


DEMO_DOCUMENT = """# Networking

## VPC layout

The production VPC spans three availability zones. Each zone has one public and one private
subnet; NAT gateways live in the public subnets.

## Peering

The prod VPC peers with the shared-services VPC for DNS and the artifact registry.
"""


async def _load_knowledge(app: web.Application) -> None:
    """What `ctxgate memories add` and `ctxgate ingest` do, through the store."""
    store = app[STORE]
    for content, kind in (("The prod VPC CIDR is 10.0.0.0/16", "decision"),
                          ("Terraform state for prod lives in the s3 bucket atmos-tfstate-prod", "fact"),
                          ("The team prefers small pull requests", "preference")):
        memory = new_memory("atmos", content, type=kind)
        await store.add_memory(memory)
        print(f"memory {memory.id} ({kind}): {content}")
    document = Document.of("docs/networking.md", DEMO_DOCUMENT)
    print(f"document {document.path}: {(await ingest(store, 'atmos', [document])).chunks} chunks")


async def _show_tool_reply(client: openai.AsyncOpenAI, question: str, *, stream: bool = False) -> None:
    messages: Any = [{"role": "user", "content": question}]
    completion: Any
    if stream:
        state: ChatCompletionStreamState = ChatCompletionStreamState()
        async for chunk in await client.chat.completions.create(
            model="demo-model", messages=messages, tools=TOOLS, stream=True
        ):
            state.handle_chunk(chunk)
        completion = state.get_final_completion()
    else:
        completion = await client.chat.completions.create(model="demo-model", messages=messages, tools=TOOLS)
    message = completion.choices[0].message
    for call in message.tool_calls or []:
        print(f"tool call reached the client: {call.function.name}({call.function.arguments})")
    if message.content:
        print(f"assistant: {message.content}")


async def _approve(app: web.Application, gateway_url: str) -> None:
    """What a person does with `ctxgate approvals approve ID` or the approvals API."""
    await app[APPROVALS].wait_requested(1)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEMO_ADMIN_KEY}"}) as session:
        pending = await (await session.get(f"{gateway_url}/approvals?status=pending")).json()
        for approval in pending["data"]:
            print(f"(a person approves {approval['tool']}({approval['arguments']}): POST /approvals/{approval['id']}/approve)")
            await session.post(f"{gateway_url}/approvals/{approval['id']}/approve", headers={"X-Ctxgate-Client": "demo-operator"})


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)))


async def _demo(workdir: Path) -> None:
    upstream = FakeUpstream()
    await upstream.start()
    settings = Settings(
        port=0,
        store_url=str(workdir / "ctxgate.db"),
        models=(ModelRoute(model_name="demo-model", model="openai/fake-model", api_base=upstream.base_url,
                           api_key="sk-demo-provider-key"),),
        policy=parse_policy(DEMO_POLICY),
        admin_key=DEMO_ADMIN_KEY,
    )
    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gateway_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(f"ctxgate demo: gateway on {gateway_url}, fake upstream on {upstream.base_url}")
    print(f"store: {settings.store_url} (temporary)")
    client = openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key="sk-demo-client-key", max_retries=0)
    try:
        _section("0. the project's knowledge: memories and a document")
        await _load_knowledge(app)

        _section("1. a call through the gateway: the context pack goes in with it")
        upstream.push(Reply(text="The prod VPC CIDR is 10.0.0.0/16."))
        raw = await client.chat.completions.with_raw_response.create(
            model="demo-model",
            messages=[{"role": "system", "content": "You are an infra assistant."},
                      {"role": "user", "content": "What is the prod VPC CIDR, and what does it peer with?"}],
            extra_headers={"X-Ctxgate-Project": "atmos"},
        )
        completion = raw.parse()
        print(f"assistant: {completion.choices[0].message.content}")
        print(f"X-Ctxgate-Interaction-Id: {raw.headers['X-Ctxgate-Interaction-Id']}")
        print(f"X-Ctxgate-Context-Memories: {raw.headers['X-Ctxgate-Context-Memories']}, "
              f"X-Ctxgate-Context-Chunks: {raw.headers['X-Ctxgate-Context-Chunks']}")
        print(f"Server-Timing: {raw.headers['Server-Timing']}")
        injected = upstream.received[-1].body["messages"][-1]["content"]
        print("the question as the model received it, the context pack at its head:")
        print("  " + injected.replace("\n", "\n  "))
        await app[CAPTURE_WRITER].flush()
        recorded = await app[STORE].get_interaction(raw.headers["X-Ctxgate-Interaction-Id"])
        assert recorded is not None
        print(f"recorded: memories_used={list(recorded.memories_used)} chunks_used={list(recorded.chunks_used)}")

        _section("2. streamed call")
        upstream.push(Reply(text="Streaming works chunk by chunk, exactly as from OpenAI.", fragment=6))
        stream = await client.chat.completions.create(
            model="demo-model", messages=[{"role": "user", "content": "Stream something"}], stream=True
        )
        print("assistant: ", end="", flush=True)
        async for chunk in stream:
            if chunk.choices:
                print(chunk.choices[0].delta.content or "", end="", flush=True)
        print()

        print("\npolicy: allowed get_weather, atmos_describe_*; restricted (ask a person) file_edit;"
              " blocked atmos_terraform_destroy")
        _section("3. an allowed tool call")
        upstream.push(Reply(tool_calls=(ToolCall("get_weather", '{"city": "Paris"}', id="call_demo_1"),)))
        await _show_tool_reply(client, "Weather in Paris?")

        _section("4. a blocked tool call (streamed): the client never sees it")
        upstream.push(Reply(tool_calls=(ToolCall("atmos_terraform_destroy", '{"stack": "prod"}', id="call_demo_2"),)))
        await _show_tool_reply(client, "Tear down prod", stream=True)

        _section("5. a restricted tool call, approved by a person mid-stream")
        upstream.push(Reply(tool_calls=(ToolCall("file_edit", '{"path": "/srv/app.conf"}', id="call_demo_3"),)))
        await asyncio.gather(_show_tool_reply(client, "Fix the config", stream=True), _approve(app, gateway_url))

        await app[CAPTURE_WRITER].flush()
        _section("recorded interactions (ctxgate interactions list)")
        summaries = await app[STORE].list_interactions(InteractionQuery())
        print(format_table(summaries))
        _section("one interaction in full (ctxgate interactions show ID)")
        newest = await app[STORE].get_interaction(summaries[0].id)
        assert newest is not None
        print(json.dumps(newest.as_dict(), indent=2))
        print("\nTool decisions recorded across the run:")
        for summary in reversed(summaries):
            full = await app[STORE].get_interaction(summary.id)
            for decision in full.tool_decisions if full else ():
                print(f"  {decision['tool']:<26} {decision['action']:<5} rule={decision['rule']:<20} "
                      f"decided_by={decision['decided_by']}")
        print("\nWhat the upstream received for that call (the provider key, not the client's):")
        print(f"  Authorization: Bearer {'*' * 8}...{upstream.received[-1].headers['Authorization'][-4:]}")
    finally:
        await client.close()
        await runner.cleanup()
        await upstream.stop()
