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

import openai
from aiohttp import web

from capture.records import InteractionQuery
from proxy.app import create_app
from proxy.appkeys import CAPTURE_WRITER, STORE
from proxy.cli import format_table
from proxy.fake_upstream import FakeUpstream, Reply, ToolCall
from proxy.logs import configure_logging
from proxy.settings import ModelRoute, Settings

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def run_demo() -> int:
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory(prefix="ctxgate-demo-") as workdir:
        asyncio.run(_demo(Path(workdir)))
    return 0


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
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gateway_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(f"ctxgate demo: gateway on {gateway_url}, fake upstream on {upstream.base_url}")
    print(f"store: {settings.store_url} (temporary)")
    client = openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key="sk-demo-client-key", max_retries=0)
    try:
        _section("1. plain call through the gateway")
        upstream.push(Reply(text="The prod VPC CIDR is 10.0.0.0/16."))
        raw = await client.chat.completions.with_raw_response.create(
            model="demo-model",
            messages=[{"role": "system", "content": "You are an infra assistant."},
                      {"role": "user", "content": "What is the prod VPC CIDR?"}],
            extra_headers={"X-Ctxgate-Project": "atmos"},
        )
        completion = raw.parse()
        print(f"assistant: {completion.choices[0].message.content}")
        print(f"X-Ctxgate-Interaction-Id: {raw.headers['X-Ctxgate-Interaction-Id']}")
        print(f"Server-Timing: {raw.headers['Server-Timing']}")

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

        _section("3. tool call")
        upstream.push(Reply(tool_calls=(ToolCall("get_weather", '{"city": "Paris"}', id="call_demo_1"),)))
        completion = await client.chat.completions.create(
            model="demo-model", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL]
        )
        for call in completion.choices[0].message.tool_calls or []:
            print(f"tool call: {call.function.name}({call.function.arguments})")  # type: ignore[union-attr]

        await app[CAPTURE_WRITER].flush()
        _section("recorded interactions (ctxgate interactions list)")
        summaries = await app[STORE].list_interactions(InteractionQuery())
        print(format_table(summaries))
        _section("one interaction in full (ctxgate interactions show ID)")
        newest = await app[STORE].get_interaction(summaries[0].id)
        assert newest is not None
        print(json.dumps(newest.as_dict(), indent=2))
        print("\nWhat the upstream received for that call (the provider key, not the client's):")
        print(f"  Authorization: Bearer {'*' * 8}...{upstream.received[-1].headers['Authorization'][-4:]}")
    finally:
        await client.close()
        await runner.cleanup()
        await upstream.stop()
