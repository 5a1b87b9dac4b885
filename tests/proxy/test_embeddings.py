"""`POST /v1/embeddings` through the gateway with the real openai SDK: carried natively to an
OpenAI-compatible route and through litellm when the route is pinned to translate; the vectors
reach the client as the provider made them, the record keeps the input and the usage but not
the vectors, and bad input, errors and keys behave as on the chat route."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from proxy.config.settings import ModelRoute
from proxy.demo.fake_upstream import EMBEDDING_DIMENSIONS, FakeUpstream, Reply, fake_embedding
from tests.conftest import PROVIDER_KEY, Gateway, make_gateway

EMBEDDER = "embed-test"


@pytest.fixture(params=["native", "translate"])
async def gateway(request: pytest.FixtureRequest, aiohttp_server: Any, upstream: FakeUpstream,
                  tmp_path: Path) -> Gateway:
    route = ModelRoute(model_name=EMBEDDER, model="openai/fake-embedder", api_base=upstream.base_url,
                       api_key=PROVIDER_KEY, transport=request.param)
    return await make_gateway(aiohttp_server, upstream, tmp_path, models=(route,))


def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_vectors_reach_the_sdk_and_the_record_keeps_the_input_without_them(
    gateway: Gateway, upstream: FakeUpstream, encoding: str
) -> None:
    texts = ["the prod VPC is 10.0.0.0/16", "deploys happen on Tuesdays"]
    answer = await client(gateway).embeddings.create(model=EMBEDDER, input=texts, encoding_format=encoding)  # type: ignore[arg-type]
    for item, text in zip(answer.data, texts, strict=True):
        vector = item.embedding if encoding == "float" else \
            list(struct.unpack(f"<{EMBEDDING_DIMENSIONS}f", base64.b64decode(item.embedding)))  # type: ignore[arg-type]
        assert vector == pytest.approx(fake_embedding(text), abs=1e-6)  # float32 on the wire as base64
    assert answer.model == EMBEDDER and answer.usage.prompt_tokens == 9
    [sent] = upstream.received
    assert sent.body["input"] == texts and sent.body["model"] == "fake-embedder"
    assert sent.body["encoding_format"] == encoding and sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    [record] = await gateway.recorded()
    assert record.wire == "openai_embeddings" and record.status == "ok" and record.model == EMBEDDER
    assert record.prompt == texts and record.params == {"encoding_format": encoding}
    assert record.response == {"object": "list", "data": [{"index": 0, "dimensions": EMBEDDING_DIMENSIONS},
                                                          {"index": 1, "dimensions": EMBEDDING_DIMENSIONS}]}
    assert (record.prompt_tokens, record.completion_tokens, record.usage_source) == (9, 0, "provider")
    assert record.context_pack is None and record.memories_used == ()


async def test_a_single_text_and_token_ids_are_embedded_too(gateway: Gateway, upstream: FakeUpstream) -> None:
    one = await client(gateway).embeddings.create(model=EMBEDDER, input="one text", encoding_format="float")
    tokens = await client(gateway).embeddings.create(model=EMBEDDER, input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(one.data) == 1 and len(tokens.data) == 2
    assert [call.body["input"] for call in upstream.received] == ["one text", [[1, 2, 3], [4]]]


async def test_bad_input_is_refused_before_the_provider_is_called(gateway: Gateway, upstream: FakeUpstream) -> None:
    async with aiohttp.ClientSession() as session:
        for body, param in (({"model": EMBEDDER}, "input"), ({"model": EMBEDDER, "input": []}, "input"),
                            ({"model": EMBEDDER, "input": [1, "two"]}, "input"), ({"input": "x"}, "model"),
                            ({"model": EMBEDDER, "input": "x", "stream": True}, "stream")):
            response = await session.post(gateway.url + "/v1/embeddings", json=body)
            answer = await response.json()
            assert response.status == 400 and answer["error"]["param"] == param, answer
    assert upstream.received == []


async def test_a_providers_error_reaches_the_sdk_with_its_status(gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.push(Reply(status=429, error="slow down"))
    with pytest.raises(openai.RateLimitError):
        await client(gateway).embeddings.create(model=EMBEDDER, input="x")
    assert len(upstream.received) == 1  # retrying is the client's call, never the gateway's
    [record] = await gateway.recorded()
    assert record.status == "upstream_error" and record.wire == "openai_embeddings"


async def test_a_provider_that_reports_no_usage_has_the_input_counted_by_the_gateway(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.push(Reply(usage=False))
    await client(gateway).embeddings.create(model=EMBEDDER, input=["the prod VPC is 10.0.0.0/16", "deploys"],
                                            encoding_format="float")
    [record] = await gateway.recorded()
    assert record.usage_source == "counted" and record.prompt_tokens and record.prompt_tokens > 5
    assert record.completion_tokens == 0
