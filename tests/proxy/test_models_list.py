"""`GET /v1/models` and `GET /v1/models/{model}` in the shape of the SDK that asks: the anthropic
SDK (and Claude Code's gateway model discovery) gets Anthropic's pages, the openai SDK OpenAI's
list; only the models the caller's key may use, errors in the asker's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy.config.keys import digest, parse_keys
from proxy.config.settings import ModelRoute
from proxy.demo.fake_upstream import FakeUpstream
from tests.conftest import Gateway, make_gateway

NAMES = [f"claude-{n:02d}" for n in range(25)] + ["gpt-test", "org/model-x"]
SCOPED = "ctxg-scoped-0123456789abcdefghij"


@pytest.fixture
async def gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    routes = tuple(ModelRoute(model_name=name, model="openai/fake-model", api_base=upstream.base_url, api_key="k")
                   for name in NAMES)
    return await make_gateway(aiohttp_server, upstream, tmp_path, models=routes)


async def test_the_anthropic_sdk_pages_through_every_model(gateway: Gateway) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-ant-client", max_retries=0)
    first = await client.models.list()
    assert [m.id for m in first.data] == NAMES[:20] and first.has_more and first.last_id == NAMES[19]
    assert [m.id async for m in client.models.list()] == NAMES  # the SDK follows after_id to the end
    before = await client.models.list(before_id="claude-05", limit=3)
    assert [m.id for m in before.data] == ["claude-02", "claude-03", "claude-04"] and before.has_more
    assert (await client.models.list(before_id="claude-03", limit=3)).has_more is False
    assert (await client.models.list(after_id="claude-24", limit=2)).has_more is False
    model = await client.models.retrieve("claude-07")
    assert (model.id, model.type, model.display_name) == ("claude-07", "model", "claude-07")
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.models.retrieve("claude-nope")
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_the_openai_sdk_lists_and_retrieves_in_openais_shape(gateway: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)
    assert [m.id async for m in client.models.list()] == NAMES
    assert (await client.models.retrieve("gpt-test")).owned_by == "ctxgate"
    assert (await client.models.retrieve("org/model-x")).id == "org/model-x"  # a name with a slash
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-nope")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.parametrize("query", ["limit=1001", "limit=0", "limit=%C2%B2", "limit=-1", "limit=", "after_id=nope",
                                   "before_id=nope"])
async def test_a_bad_page_is_refused_in_anthropics_shape(gateway: Gateway, query: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(gateway.url + "/v1/models?" + query, headers={"anthropic-version": "2023-06-01"})
        body = await response.json()
    assert response.status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


async def test_claude_codes_model_discovery_sees_only_what_its_key_may_use(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    routes = tuple(ModelRoute(model_name=name, model="openai/fake-model", api_base=upstream.base_url, api_key="k")
                   for name in NAMES)
    keys = parse_keys([{"sha256": digest(SCOPED), "client": "cc", "projects": ["atmos"], "models": ["claude-1*"]}], "keys")
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, models=routes, keys=keys)
    async with aiohttp.ClientSession() as session:
        # As Claude Code 2.1.197 asks when ANTHROPIC_BASE_URL is set: its key as x-api-key.
        asked = {"x-api-key": SCOPED, "anthropic-version": "2023-06-01", "User-Agent": "claude-cli/2.1.197"}
        response = await session.get(gateway.url + "/v1/models?limit=1000", headers=asked)
        body = await response.json()
        refused = await session.get(gateway.url + "/v1/models?limit=1000", headers={"anthropic-version": "2023-06-01"})
        refused_body = await refused.json()
    assert response.status == 200
    assert [m["id"] for m in body["data"]] == [f"claude-1{n}" for n in range(10)] and body["has_more"] is False
    assert refused.status == 401 and refused_body["type"] == "error"
