"""The real agent CLIs these tests drive: skipped when absent, except under CI=true, where that fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agents.claude_code import CLAUDE, ROOT
from tests.agents.codex import CODEX


@pytest.fixture
def claude() -> Path:
    return installed(CLAUDE, "Claude Code")


@pytest.fixture
def codex() -> Path:
    return installed(CODEX, "Codex")


def installed(cli: Path, name: str) -> Path:
    """The installed CLI; without it these tests skip, but under CI they fail (CI installs it)."""
    if cli.exists() and os.access(cli, os.X_OK):
        return cli
    reason = f"{name} CLI not installed at {cli.relative_to(ROOT)}: run `make agents`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: `make test` installs it, so its absence is a failure)")
    pytest.skip(reason)
