"""One order for every command: `--config`, then `CTXGATE_CONFIG`, then `./ctxgate.yaml`;
and the command says which one it used."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli.commands import main
from proxy.config.settings import find_config

BLOCKS = "policy:\n  default: {mode: allow, blocked_tools: [atmos_terraform_destroy]}\n"
ASKS = "policy:\n  default: {mode: prompt}\n"


@pytest.fixture(autouse=True)
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTXGATE_CONFIG", raising=False)
    monkeypatch.delenv("CTXGATE_DB", raising=False)
    return tmp_path


def test_policy_check_uses_the_config_beside_it(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "ctxgate.yaml").write_text(BLOCKS)
    assert main(["policy", "check", "atmos_terraform_destroy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "deny  rule=blocked_tools[0]  project=default"
    assert lines[-1] == f"  config: {here / 'ctxgate.yaml'} (found in the current directory)"


def test_policy_check_without_any_config_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "atmos_terraform_destroy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("allow  rule=mode") and "observe-only" in out
    assert "  config: none (no --config, no CTXGATE_CONFIG, no ./ctxgate.yaml)" in out


def test_the_variable_beats_the_current_directory_and_the_flag_beats_both(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "ctxgate.yaml").write_text(BLOCKS)
    (here / "asks.yaml").write_text(ASKS)
    (here / "empty.yaml").write_text("")
    monkeypatch.setenv("CTXGATE_CONFIG", str(here / "asks.yaml"))
    assert main(["policy", "check", "atmos_terraform_destroy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ask  rule=mode") and f"config: {here / 'asks.yaml'} (from CTXGATE_CONFIG)" in out
    assert main(["policy", "check", "atmos_terraform_destroy", "--config", "empty.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("allow  rule=mode") and "config: empty.yaml (from --config)" in out


def test_a_named_config_that_is_missing_is_an_error_not_a_fallback(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "ctxgate.yaml").write_text(BLOCKS)
    monkeypatch.setenv("CTXGATE_CONFIG", str(here / "absent.yaml"))
    assert main(["policy", "check", "atmos_terraform_destroy"]) == 2
    assert "absent.yaml: cannot read config" in capsys.readouterr().err


def test_find_config_looks_in_the_directory_only_when_given_one(here: Path) -> None:
    (here / "ctxgate.yaml").write_text("")
    assert find_config(None, {}, here).path == here / "ctxgate.yaml"
    assert find_config(None, {}).path is None
    assert find_config(None, {}, here / "elsewhere").chosen_by == "nothing"
