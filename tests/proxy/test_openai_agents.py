"""The openai-agents SDK's default model (the Responses API) through the gateway, on both
transports: an agent whose function tool the policy allows runs it and answers with its result;
one whose tool the policy blocks never runs it. Streamed and not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import agents
import orjson
import pytest

from policy.rules import parse_policy
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, Gateway, make_gateway

POLICY = {"default": {"mode": "allow", "blocked_tools": ["wipe_disk"]}}


@pytest.fixture
async def gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, transport=transport, policy=parse_policy(POLICY))


def weather_call(tool: str) -> Reply:
    return Reply(tool_calls=(ToolCall(tool, orjson.dumps({"city": "Oslo"}).decode(), id="call_1"),))


def tool_output_in(body: dict[str, Any]) -> list[Any]:
    """What the client sent back of the tools it ran, on either wire (Responses items, chat messages)."""
    if "input" in body:
        return [item["output"] for item in body["input"] if isinstance(item, dict)
                and item.get("type") == "function_call_output"]
    return [message["content"] for message in body["messages"] if message.get("role") == "tool"]


async def run(gateway: Gateway, agent: agents.Agent[Any], stream: bool) -> str:
    if stream:
        result = agents.Runner.run_streamed(agent, "What is the weather in Oslo?")
        async for _ in result.stream_events():
            pass
    else:
        result = await agents.Runner.run(agent, "What is the weather in Oslo?")
    return str(result.final_output)


def model(gateway: Gateway) -> agents.OpenAIResponsesModel:
    return agents.OpenAIResponsesModel(model=MODEL, openai_client=gateway.client())


@pytest.fixture(autouse=True)
def no_tracing() -> None:
    agents.set_tracing_disabled(True)  # its exporter would reach out to OpenAI


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_allowed_function_tool_runs_and_its_result_comes_back(gateway: Gateway, stream: bool) -> None:
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    gateway.upstream.push(weather_call("get_weather"), Reply(text="The tool said: sunny in Oslo"))
    agent = agents.Agent(name="weather", instructions="Answer briefly.", tools=[get_weather], model=model(gateway))
    answer = await run(gateway, agent, stream)
    assert ran == ["Oslo"] and answer == "The tool said: sunny in Oslo"
    assert tool_output_in(gateway.upstream.received[-1].body) == ["sunny in Oslo"]
    records = await gateway.recorded(2)
    assert [(d["tool"], d["action"]) for d in records[0].tool_decisions] == [("get_weather", "allow")]
    assert all(record.wire == "openai_responses" for record in records)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_blocked_function_tool_never_runs(gateway: Gateway, stream: bool) -> None:
    ran: list[str] = []

    @agents.function_tool
    def wipe_disk(city: str) -> str:
        """Wipes the disk."""
        ran.append(city)
        return "wiped"

    gateway.upstream.push(weather_call("wipe_disk"))
    agent = agents.Agent(name="wiper", tools=[wipe_disk], model=model(gateway))
    answer = await run(gateway, agent, stream)
    assert ran == [] and "ctxgate refused the call to 'wipe_disk'" in answer
    assert len(gateway.upstream.received) == 1  # the agent ended its run: nothing ran to report
    [record] = await gateway.recorded()
    assert [(d["tool"], d["action"]) for d in record.tool_decisions] == [("wipe_disk", "deny")]
