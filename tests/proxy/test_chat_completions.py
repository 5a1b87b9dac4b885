"""The gateway is transparent: the real openai SDK works through it exactly as against the provider."""

from __future__ import annotations

import json

import aiohttp
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from proxy.demo.fake_upstream import Reply, ToolCall
from tests.conftest import CLIENT_KEY, MODEL, PROVIDER_KEY, Gateway

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}


async def test_plain_completion_reaches_client_with_requested_model_name(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="The VPC CIDR is 10.0.0.0/16."))
    completion = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the CIDR?"}]
    )
    assert completion.choices[0].message.content == "The VPC CIDR is 10.0.0.0/16."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL  # restamped: the upstream answered "fake-model"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    [stored] = await gateway.recorded()
    assert stored.wire == "openai_chat" and stored.response["content"] == "The VPC CIDR is 10.0.0.0/16."


async def test_upstream_receives_exactly_what_the_client_sent(gateway: Gateway) -> None:
    sent = {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "seed": 7,
        "stop": ["\n\n"],
        "n": 1,
        "user": "alice@example.com",
        "metadata": {"ticket": "OPS-1"},
        "response_format": {"type": "text"},
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.1,
    }
    await gateway.client().chat.completions.create(model=MODEL, **sent)  # type: ignore[call-overload]
    received = gateway.upstream.received[-1]
    assert received.body == {**sent, "model": "fake-model"}
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_undeclared_model_is_forwarded_with_the_clients_own_key(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in model_list: litellm resolves the name itself; its OpenAI default base is pointed
    # at the fake upstream so the call stays on loopback.
    monkeypatch.setenv("OPENAI_BASE_URL", gateway.upstream.base_url)
    await gateway.client().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"api_base": "http://127.0.0.1:1/v1"},
    )
    received = gateway.upstream.received[-1]
    assert received.headers["Authorization"] == f"Bearer {CLIENT_KEY}"
    assert received.body["model"] == "gpt-4o-mini"
    # A body field reaches the provider verbatim; it never steers where the gateway sends it.
    assert received.body["api_base"] == "http://127.0.0.1:1/v1"


async def test_undeclared_model_without_a_key_is_refused_not_sent_with_gateway_credentials(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", gateway.upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-gateway-environment-key")
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "missing_provider_key"
    assert gateway.upstream.received == []


async def test_streamed_text_arrives_in_order_and_ends_with_done(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="one two three four five", fragment=2))
    stream = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True
    )
    pieces = []
    async for chunk in stream:
        assert chunk.model == MODEL
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == "one two three four five"
    assert gateway.upstream.received[-1].body["stream"] is True


async def test_sse_framing_matches_openai(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="hi"))
    async with _raw_session() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True,
                  "stream_options": {"include_usage": True}},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        body = (await response.read()).decode()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


def _raw_session():  # type: ignore[no-untyped-def]
    import aiohttp

    return aiohttp.ClientSession()


async def test_tool_call_reaches_client_intact(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(tool_calls=(ToolCall("get_weather", '{"city": "Paris"}', id="call_w1"),)))
    completion = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_w1", "get_weather", {"city": "Paris"},
    )


async def test_parallel_tool_calls_streamed_in_fragments_accumulate_to_what_upstream_sent(gateway: Gateway) -> None:
    produced = (
        ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}', id="call_a"),
        ToolCall("get_time", '{"tz": "Europe/Paris"}', id="call_b"),
    )
    gateway.upstream.push(Reply(tool_calls=produced, fragment=2))  # arguments in 2-character pieces
    stream = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather and time?"}], tools=[WEATHER_TOOL, TIME_TOOL],
        stream=True,
    )
    state: ChatCompletionStreamState = ChatCompletionStreamState()  # the SDK's own accumulator
    async for chunk in stream:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        (t.id, t.name, t.arguments) for t in produced
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    [stored] = await gateway.recorded()
    assert [c["function"]["arguments"] for c in stored.response["tool_calls"]] == [t.arguments for t in produced]


async def test_every_response_names_its_interaction_and_session(gateway: Gateway) -> None:
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Ctxgate-Session": "sess-42"}
    )
    interaction_id = raw.headers["X-Ctxgate-Interaction-Id"]
    assert raw.headers["X-Ctxgate-Session"] == "sess-42"
    assert [part.split(";")[0] for part in raw.headers["Server-Timing"].split(", ")] == [
        "context", "upstream", "policy", "capture",
    ]
    [stored] = await gateway.recorded()
    assert stored.id == interaction_id and stored.session_id == "sess-42"


async def test_recorded_interaction_holds_what_was_sent_and_received(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="Paris is sunny."))
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Weather in Paris?"}]
    await gateway.client().chat.completions.create(
        model=MODEL, messages=messages, temperature=0.3,  # type: ignore[arg-type]
        extra_headers={"X-Ctxgate-Project": "atmos", "X-Ctxgate-Client": "ops-bot"},
    )
    [stored] = await gateway.recorded()
    assert stored.prompt == messages
    assert stored.params == {"temperature": 0.3}
    assert stored.response == {"role": "assistant", "content": "Paris is sunny."}
    assert (stored.project, stored.client, stored.model, stored.status) == ("atmos", "ops-bot", MODEL, "ok")
    assert stored.prompt_tokens and stored.completion_tokens
    assert stored.latency_ms is not None and stored.ttft_ms is not None
    assert CLIENT_KEY not in json.dumps(stored.as_dict()) and PROVIDER_KEY not in json.dumps(stored.as_dict())


async def test_streamed_interaction_without_upstream_usage_counts_tokens(gateway: Gateway) -> None:
    gateway.upstream.push(Reply(text="a fairly long answer of several words"))
    stream = await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "talk"}], stream=True
    )
    async for _ in stream:
        pass
    [stored] = await gateway.recorded()
    assert stored.response["content"] == "a fairly long answer of several words"
    assert stored.prompt_tokens > 0 and stored.completion_tokens > 0


async def test_project_path_prefix_sets_project(gateway: Gateway) -> None:
    client = gateway.client(base_url=gateway.url + "/p/atmos/v1")
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    [stored] = await gateway.recorded()
    assert stored.project == "atmos"


async def test_models_lists_declared_models(gateway: Gateway) -> None:
    models = await gateway.client().models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_healthz_reports_store(gateway: Gateway) -> None:
    async with _raw_session() as session:
        response = await session.get(gateway.url + "/healthz")
        body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok" and body["store"] == "ok"
