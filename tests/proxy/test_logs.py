"""One JSON renderer for our events and for the stdlib loggers of aiohttp and litellm."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from proxy.edge.logs import configure_logging


@pytest.fixture
def json_logging() -> Iterator[None]:
    """Configures JSON logging in the test body (the handler binds the stdout that capsys has
    in place then) and restores the previous set-up afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def configure() -> None:
    configure_logging("info", "json", secrets=("sk-configured-provider-key",))


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_foreign_loggers_render_as_the_same_json(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure()
    logging.getLogger("aiohttp.server").error("Error handling request")
    logging.getLogger("LiteLLM").warning("provider said %s", "no")
    structlog.get_logger("ctxgate.proxy").info("gateway_started", port=8080)
    records = lines(capsys.readouterr().out)
    assert [(r["logger"], r["event"], r["level"]) for r in records] == [
        ("aiohttp.server", "Error handling request", "error"),
        ("LiteLLM", "provider said no", "warning"),
        ("ctxgate.proxy", "gateway_started", "info"),
    ]
    assert all(str(r["timestamp"]).endswith("Z") for r in records)


def test_litellm_debug_chatter_stays_below_the_line(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure()
    logging.getLogger("LiteLLM").info("POST Request Sent from LiteLLM: Authorization: Bearer sk-...")
    assert capsys.readouterr().out == ""


def test_configured_secrets_are_redacted_wherever_they_appear(
    json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure()
    structlog.get_logger("ctxgate.proxy").warning(
        "upstream_call_failed", error="bad key sk-configured-provider-key", detail={"key": ["sk-configured-provider-key"]}
    )
    logging.getLogger("aiohttp.client").error("rejected sk-configured-provider-key")
    out = capsys.readouterr().out
    assert "sk-configured-provider-key" not in out and out.count("[redacted]") == 3


@pytest.mark.parametrize("logged", [
    "first line\nsk-configured-provider-key",  # known, right after an escaped character
    "trace:\tsk-proj-unknownToThisGateway123",  # shaped like a key, after a tab
    'quoted "Bearer abcdefgh12345678"',
    "\u001bghp_0123456789abcdefghij",  # after a control character, escaped as \u001b
])
def test_a_secret_next_to_an_escaped_character_is_still_redacted(
    json_logging: None, capsys: pytest.CaptureFixture[str], logged: str
) -> None:
    configure()
    structlog.get_logger("ctxgate.proxy").warning("upstream_call_failed", error=logged)
    logging.getLogger("aiohttp.client").error(logged)
    out = capsys.readouterr().out
    assert out.count("[redacted]") == 2, out
    secret = logged.split()[-1].strip('"').lstrip("\u001b")
    assert secret not in out


def test_lines_without_secrets_are_written_as_rendered(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure()
    structlog.get_logger("ctxgate.proxy").info("request_completed", path="/v1/chat/completions", client="task-runner",
                                               session_id="s_desk-12345678901234")
    [record] = lines(capsys.readouterr().out)
    assert (record["path"], record["client"], record["session_id"]) == (
        "/v1/chat/completions", "task-runner", "s_desk-12345678901234")
