"""`ctxgate memories`, `ctxgate ingest` and `ctxgate context` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli.commands import main


def test_memories_add_list_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "db")
    assert main(["memories", "add", "The prod VPC CIDR is 10.0.0.0/16", "--project", "atmos",
                 "--type", "decision", "--confidence", "0.9", "--db", db]) == 0
    memory_id = capsys.readouterr().out.strip()
    assert main(["memories", "list", "--project", "atmos", "--json", "--db", db]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["id"], listed["type"], listed["confidence"], listed["status"]) == (memory_id, "decision", 0.9, "active")
    assert main(["memories", "rm", memory_id, "--db", db]) == 0
    assert main(["memories", "rm", memory_id, "--db", db]) == 1
    assert main(["memories", "add", "   ", "--project", "atmos", "--db", db]) == 2
    assert main(["memories", "add", "x", "--project", "atmos", "--confidence", "3", "--db", db]) == 2


def test_ingest_a_tree_then_again_then_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "vpc.md").write_text("# VPC\n\nThe prod VPC peers with shared services.\n")
    (docs / "sub" / "notes.txt").write_text("Deploys happen on Tuesdays.\n")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.md").write_text("never ingested")
    db = str(tmp_path / "db")
    assert main(["ingest", str(docs), "--project", "atmos", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "2 ingested (2 chunks), 0 unchanged, 2 skipped (empty, binary or unreadable)"
    assert main(["ingest", str(docs), "--project", "atmos", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("0 ingested (0 chunks), 2 unchanged")
    (docs / "vpc.md").write_text("# VPC\n\nThe prod VPC no longer peers with anything.\n")
    assert main(["ingest", str(docs), "--project", "atmos", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("1 ingested (1 chunks), 1 unchanged")

    assert main(["context", "does the prod VPC peer?", "--project", "atmos", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "vpc.md" in out and "no longer peers" in out and "shared services" not in out
    assert "never ingested" not in out
    assert main(["context", "does the prod VPC peer?", "--project", "web", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "nothing in this project matches"
