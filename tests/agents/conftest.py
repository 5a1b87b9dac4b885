"""The real agent CLIs these tests drive: skipped when absent, except under CI=true, where that fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agents.claude_code import CLAUDE, ROOT


@pytest.fixture
def claude() -> Path:
    """The installed CLI; without it these tests skip, but under CI they fail (CI installs it)."""
    if CLAUDE.exists() and os.access(CLAUDE, os.X_OK):
        return CLAUDE
    reason = f"Claude Code CLI not installed at {CLAUDE.relative_to(ROOT)}: run `make agents`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: `make test` installs it, so its absence is a failure)")
    pytest.skip(reason)
