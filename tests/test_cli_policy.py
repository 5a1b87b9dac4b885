"""`ctxgate policy check` and `ctxgate approvals` from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from capture.approvals import Approval
from capture.backends import open_store
from proxy.cli.commands import main

CONFIG = """
policy:
  default:
    mode: prompt
    allowed_tools: [atmos_describe_*, file_read]
    restricted_tools: [file_edit]
    blocked_tools: [atmos_terraform_destroy]
    argument_rules: [{tool: file_edit, argument: path, matches: "/etc/*", action: deny}]
  projects:
    sandbox: {mode: allow}
"""


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["atmos_describe_component"], "allow  rule=allowed_tools[0]  project=default"),
        (["atmos_terraform_destroy", "--project", "sandbox"], "deny  rule=blocked_tools[0]  project=sandbox"),
        (["file_edit"], "ask  rule=restricted_tools[0]  project=default"),
        (["file_edit", "--args", '{"path": "/etc/shadow"}'], "deny  rule=argument_rules[0]  project=default"),
        (["something_else"], "ask  rule=mode  project=default"),
        (["something_else", "--project", "sandbox"], "allow  rule=mode  project=sandbox"),
    ],
)
def test_policy_check_prints_the_decision_and_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], first_line: str
) -> None:
    config = tmp_path / "ctxgate.yaml"
    config.write_text(CONFIG)
    assert main(["policy", "check", *argv, "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == first_line


def test_policy_check_without_a_policy_says_observe_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.yaml").write_text("default_project: x\n")
    assert main(["policy", "check", "rm_rf", "--config", str(tmp_path / "empty.yaml")]) == 0
    assert "observe-only" in capsys.readouterr().out


def seed_pending(db: Path | str, expires_at: str = "2999-01-01 00:00:00") -> Approval:
    approval = Approval(id="ap-1", created_at="2026-05-01 10:00:00", expires_at=expires_at,
                        project="atmos", tool="file_edit", arguments='{"path": "/srv/x"}', reason="needs a person")

    async def insert() -> None:
        store = open_store(str(db))
        await store.open()
        await store.insert_approval(approval)
        await store.close()

    asyncio.run(insert())
    return approval


def test_approvals_list_then_approve_always(tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = store_url  # on each backend: `--db postgresql://...` from any machine that reaches the database
    seed_pending(db)
    assert main(["approvals", "list", "--json", "--db", str(db)]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["id"], listed["status"], listed["tool"]) == ("ap-1", "pending", "file_edit")

    assert main(["approvals", "approve", "ap-1", "--always", "--by", "carol", "--db", str(db)]) == 0
    assert "approved file_edit for project atmos (allowed always" in capsys.readouterr().out
    assert main(["approvals", "deny", "ap-1", "--db", str(db)]) == 1  # already decided
    assert "already approved" in capsys.readouterr().err
    assert main(["policy", "check", "file_edit", "--project", "atmos", "--db", str(db),
                 "--config", str(_config(tmp_path))]) == 0
    assert capsys.readouterr().out.startswith("allow  rule=always_allowed")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "ctxgate.yaml"
    path.write_text(CONFIG)
    return path


def test_unknown_approval_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed_pending(tmp_path / "db")
    assert main(["approvals", "approve", "nope", "--db", str(tmp_path / "db")]) == 1
    assert "no approval with id 'nope'" in capsys.readouterr().err


def test_approvals_status_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed_pending(tmp_path / "db")
    assert main(["approvals", "list", "--status", "approved", "--db", str(tmp_path / "db")]) == 0
    assert capsys.readouterr().out.strip() == "no approved approvals"


def test_a_pending_approval_past_its_expiry_cannot_be_approved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # e.g. the gateway that waited for it was killed: nobody waits for it any more
    seed_pending(tmp_path / "db", expires_at="2020-01-01 00:00:00")
    assert main(["approvals", "approve", "ap-1", "--always", "--db", str(tmp_path / "db")]) == 1
    assert "already pending" in capsys.readouterr().err
