"""Fixtures of the proxy tests beyond the shared ones in tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.demo.fake_anthropic import FakeAnthropic


@pytest.fixture
async def provider(aiohttp_server: Any) -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic Messages provider on a port of its own; `base_url` has no `/v1`."""
    fake = FakeAnthropic()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    yield fake
