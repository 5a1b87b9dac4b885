"""Commands that read or delete refuse a store that is not there, and say where they looked;
commands that write on purpose create it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from capture.records import Interaction
from capture.sqlite import SQLiteStore
from proxy.cli.commands import main

READING = [
    ["interactions", "list"],
    ["interactions", "show", "i-1"],
    ["sessions", "list"],
    ["sessions", "show", "s-1"],
    ["sessions", "clean", "--older-than", "30d"],
    ["memories", "list"],
    ["memories", "rm", "m-1"],
    ["approvals", "list"],
    ["approvals", "approve", "a-1"],
    ["approvals", "deny", "a-1"],
    ["context", "what CIDR?", "--project", "atmos"],
]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, and no store or config named by the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTXGATE_DB", raising=False)
    monkeypatch.delenv("CTXGATE_CONFIG", raising=False)
    return tmp_path


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("argv", READING, ids=lambda argv: " ".join(argv[:2]))
def test_a_read_of_the_default_store_in_the_wrong_folder_is_an_error(
    argv: list[str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ctxgate: error: no store at {elsewhere / 'ctxgate.db'} "
                          "(looked at it because of the default ./ctxgate.db)")
    assert listing(elsewhere) == []  # not even an empty file


def test_the_error_names_the_flag_or_variable_that_chose_the_store(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["approvals", "list", "--db", "nested/dirs/x.db"]) == 1
    assert f"no store at {elsewhere / 'nested/dirs/x.db'} (looked at it because of --db)" in capsys.readouterr().err
    monkeypatch.setenv("CTXGATE_DB", f"sqlite:///{elsewhere / 'gone.db'}")
    assert main(["interactions", "list"]) == 1
    assert f"no store at {elsewhere / 'gone.db'} (looked at it because of CTXGATE_DB)" in capsys.readouterr().err
    assert main(["policy", "check", "file_edit", "--db", "nowhere.db"]) == 1
    assert "(looked at it because of --db)" in capsys.readouterr().err
    assert listing(elsewhere) == []


def test_writing_commands_create_the_store_and_reads_then_find_it(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["memories", "add", "Deploys happen on Tuesdays", "--project", "atmos", "--db", "data/kb.db"]) == 0
    assert (elsewhere / "data" / "kb.db").is_file()
    (elsewhere / "docs").mkdir()
    (elsewhere / "docs" / "a.md").write_text("# A\n\nsome text\n")
    assert main(["ingest", "docs", "--project", "atmos"]) == 0  # into the default ./ctxgate.db
    assert (elsewhere / "ctxgate.db").is_file()
    capsys.readouterr()
    assert main(["memories", "list", "--json", "--db", "data/kb.db"]) == 0
    assert [json.loads(line)["content"] for line in capsys.readouterr().out.splitlines()] == ["Deploys happen on Tuesdays"]


def test_an_existing_store_with_nothing_in_it_is_read_as_empty(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def create() -> None:
        store = SQLiteStore(str(elsewhere / "ctxgate.db"))
        await store.open()
        await store.close()

    asyncio.run(create())
    assert main(["approvals", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no pending approvals"


def test_the_store_url_of_the_config_in_the_current_directory_is_the_one_read(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (elsewhere / "ctxgate.yaml").write_text(
        "store: {url: data/team.db}\n"
        # a command that only reads the store does not need the provider's key
        "model_list: [{model_name: m, litellm_params: {model: openai/m, api_key: os.environ/UNSET_KEY_4B1E}}]\n"
    )
    (elsewhere / "data").mkdir()

    async def seed() -> None:
        store = SQLiteStore(str(elsewhere / "data" / "team.db"))
        await store.open()
        await store.insert_interactions([Interaction(id="i-1", created_at="2026-02-01 10:00:00", prompt="hi")])
        await store.close()

    asyncio.run(seed())
    assert main(["interactions", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["i-1"]
    assert f"store data/team.db (store.url in {elsewhere / 'ctxgate.yaml'})" in err
    assert main(["interactions", "list", "--db", "other.db"]) == 1  # the flag still wins
    assert "(looked at it because of --db)" in capsys.readouterr().err
