"""Shared fixtures: a fake upstream, the gateway in front of it, the real openai SDK as client."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

import asyncio  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from capture.postgres import PostgresStore  # noqa: E402
from capture.sqlite import SQLiteStore  # noqa: E402
from capture.store import Store  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.appkeys import CAPTURE_WRITER, STORE  # noqa: E402
from proxy.demo.fake_upstream import FakeUpstream  # noqa: E402
from proxy.edge.server import server_options  # noqa: E402
from proxy.config.settings import ModelRoute, Settings  # noqa: E402

PROVIDER_KEY = "sk-provider-secret-4f9a1c"
CLIENT_KEY = "sk-client-secret-77e0b2"
MODEL = "gpt-test"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A fresh SQLite store, open for the test."""
    opened = SQLiteStore(str(tmp_path / "db"))
    await opened.open()
    yield opened
    await opened.close()


# The PostgreSQL server the tests make their databases on; trust auth, as on the dev machine.
POSTGRES_SERVER = os.environ.get("CTXGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a fresh database on the test PostgreSQL server, dropped after the test. With
    no server the test is skipped, saying why, except under CI=true, where it fails."""
    try:
        admin = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        reason = f"no PostgreSQL server at {POSTGRES_SERVER} ({type(error).__name__}: {error})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI runs every store test on PostgreSQL")
        pytest.skip(reason + "; set CTXGATE_TEST_POSTGRES to run the PostgreSQL store tests")
    name = f"ctxgate_test_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_SERVER.rpartition("/")[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's URL on each backend: every test that takes it runs on both."""
    if request.param == "sqlite":
        return str(tmp_path / "ctxgate.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def any_store(store_url: str) -> AsyncIterator[Store]:
    """A fresh store, open for the test, on each backend in turn."""
    opened: Store = PostgresStore(store_url) if store_url.startswith("postgresql://") else SQLiteStore(store_url)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


@dataclass
class Gateway:
    server: TestServer
    app: web.Application
    upstream: FakeUpstream

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        options: dict[str, Any] = {"base_url": self.url + "/v1", "api_key": CLIENT_KEY, "max_retries": 0}
        options.update(kwargs)
        return openai.AsyncOpenAI(**options)

    async def recorded(self, at_least: int = 1) -> list[Any]:
        """Every stored interaction, oldest first, once at least `at_least` have been written
        (a handler records after its last byte, so the client can finish first)."""
        from capture.records import InteractionQuery

        await asyncio.wait_for(self.app[CAPTURE_WRITER].wait_written(at_least), 10)
        summaries = await self.app[STORE].list_interactions(InteractionQuery(limit=500))
        full = [await self.app[STORE].get_interaction(s.id) for s in reversed(summaries)]
        return full


def gateway_settings(
    upstream: FakeUpstream, tmp_path: Path, *, transport: str | None = None, **overrides: Any
) -> Settings:
    """The fake upstream as the one declared model; `transport` pins how it is called (None:
    as the gateway chooses, which for this OpenAI-speaking route is native)."""
    settings = Settings(
        store_url=str(tmp_path / "ctxgate.db"),
        models=(ModelRoute(model_name=MODEL, model="openai/fake-model", api_base=upstream.base_url, api_key=PROVIDER_KEY,
                           transport=transport),),
    )
    return replace(settings, **overrides)


async def make_gateway(
    aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, *, transport: str | None = None, **overrides: Any
) -> Gateway:
    settings = gateway_settings(upstream, tmp_path, transport=transport, **overrides)
    app = create_app(settings)
    # As `ctxgate serve` runs it (TestServer always sets handler_cancellation, as serve does).
    options = {k: v for k, v in server_options(settings).items() if k != "handler_cancellation"}
    server = await aiohttp_server(app, **options)
    return Gateway(server=server, app=app, upstream=upstream)


@pytest.fixture(params=["native", "translate"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both ways of carrying a call: every test of the `gateway` fixture runs on each."""
    value: str = request.param
    return value


@pytest.fixture
async def gateway(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, transport: str) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, transport=transport)


async def settled(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Until `condition()` holds (a counter moved by work off the request's path, which has
    nothing to await), or `timeout_s` passed: the assertion after it says what was found."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
