"""`ctxgate capture dead-letters`: what the store would not take, and why, where it was kept."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from capture.records import Interaction, new_interaction_id
from capture.spool import Spool
from proxy.cli.commands import main


def poison() -> Interaction:
    record = Interaction(id=new_interaction_id(), created_at="2026-05-01 09:00:00", prompt="p", project="atmos")
    return replace(record, session_id="s\udcff")  # what a header that is not UTF-8 once produced


def test_lists_dead_letters_beside_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gw.db"
    record = poison()
    Spool(Path(f"{db}.spool")).dead_letter(record, "RecordRejected: surrogates not allowed")
    assert main(["capture", "dead-letters", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "0 segment(s) waiting" in out
    assert record.id in out and "project=atmos" in out and "surrogates not allowed" in out

    assert main(["capture", "dead-letters", "--db", str(db), "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    letter = json.loads(line)
    assert letter["record"]["id"] == record.id and letter["record"]["session_id"] == "s\\xff"  # its byte, escaped
    assert letter["error"] == "RecordRejected: surrogates not allowed"


def test_a_missing_spool_directory_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capture", "dead-letters", "--db", str(tmp_path / "gw.db"),
                 "--spool-dir", str(tmp_path / "elsewhere")]) == 1
    assert "no spool directory at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
