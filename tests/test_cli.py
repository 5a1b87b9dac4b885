"""`ctxgate interactions list|show` read the store directly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from capture.records import Interaction, new_interaction_id
from capture.sqlite import SQLiteStore
from proxy.cli.commands import main


def seed(path: Path) -> list[Interaction]:
    return asyncio.run(_seed(path))


async def _seed(path: Path) -> list[Interaction]:
    records = [
        Interaction(id=new_interaction_id(), created_at=f"2026-02-0{n} 10:00:00", prompt=f"prompt {n}",
                    project="atmos" if n % 2 else "web", client="alice", model="gpt-test",
                    response={"role": "assistant", "content": f"answer {n}"}, prompt_tokens=n, latency_ms=12.5,
                    usage_source="provider", cache_read_tokens=n - 1)
        for n in range(1, 5)
    ]
    store = SQLiteStore(str(path))
    await store.open()
    await store.insert_interactions(records)
    await store.close()
    return records


def test_list_prints_a_table_newest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = seed(tmp_path / "db")
    assert main(["interactions", "list", "--db", str(tmp_path / "db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "created_at", "project"]
    assert [line.split()[0] for line in lines[1:]] == [r.id for r in reversed(records)]


def test_list_json_filters_like_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "db")
    monkeypatch.setenv("CTXGATE_DB", str(tmp_path / "db"))
    assert main(["interactions", "list", "--project", "atmos", "--since", "2026-02-03 10:00:00", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["project"], r["created_at"]) for r in rows] == [("atmos", "2026-02-03 10:00:00")]
    assert "response" not in rows[0]


def test_show_prints_the_full_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = seed(tmp_path / "db")
    assert main(["interactions", "show", records[0].id, "--json", "--db", str(tmp_path / "db")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["response"] == {"role": "assistant", "content": "answer 1"} and shown["prompt"] == "prompt 1"
    assert (shown["prompt_tokens"], shown["usage_source"], shown["cache_read_tokens"]) == (1, "provider", 0)


def test_show_unknown_id_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(tmp_path / "db")
    assert main(["interactions", "show", "nope", "--db", str(tmp_path / "db")]) == 1
    assert "no interaction with id 'nope'" in capsys.readouterr().err


def test_bad_since_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interactions", "list", "--since", "last tuesday", "--db", str(tmp_path / "db")]) == 2
    assert "since" in capsys.readouterr().err


def test_sessions_show_reads_either_wire_as_a_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = '<ctxgate-context project="atmos">\nMemories:\n- the VPC is 10.0.0.0/16\n</ctxgate-context>\n\n'
    turns = [
        Interaction(id=new_interaction_id(), created_at="2026-02-01 10:00:00", project="atmos", session_id="s-1",
                    client="openai-python/2.x", model="gpt-test", wire="openai_chat",
                    prompt=[{"role": "user", "content": pack + "What is the CIDR?"}],
                    response={"role": "assistant", "content": "10.0.0.0/16"}),
        Interaction(id=new_interaction_id(), created_at="2026-02-01 10:01:00", project="atmos", session_id="s-1",
                    client="claude-cli/2.1.197", model="claude-test", wire="anthropic_messages",
                    prompt={"system": [{"type": "text", "text": "You are Claude Code."}], "messages": [
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                                     {"type": "text", "text": pack},
                                                     {"type": "text", "text": "<system-reminder>\nmind the todo list\n"
                                                                              "</system-reminder>\n"},
                                                     {"type": "text", "text": "go on"}]}]},
                    response={"role": "assistant", "stop_reason": "tool_use", "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "Running."},
                        {"type": "tool_use", "id": "t2", "name": "Bash", "input": {"command": "ls"}}]}),
        Interaction(id=new_interaction_id(), created_at="2026-02-01 10:02:00", project="atmos", session_id="s-1",
                    client="claude-cli/2.1.197", model="claude-test", wire="anthropic_messages",
                    agent_id="a-explore", parent_agent_id=None,
                    prompt={"messages": [{"role": "user", "content": "Find the CIDR in the repo"}]},
                    response={"role": "assistant", "content": [{"type": "text", "text": "terraform/vpc.tf"}]}),
    ]

    async def seed_turns() -> None:
        store = SQLiteStore(str(tmp_path / "db"))
        await store.open()
        await store.insert_interactions(turns)
        await store.close()

    asyncio.run(seed_turns())
    assert main(["sessions", "show", "s-1", "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    assert "user: What is the CIDR?" in out and "assistant: 10.0.0.0/16" in out
    assert "user: [tool_result ok] go on" in out
    assert 'assistant: [thinking] Running. [tool_use Bash {"command":"ls"}]' in out
    assert "ctxgate-context" not in out and "system-reminder" not in out and "mind the todo" not in out
    assert "agent=a-explore (started by the main agent)" in out and out.count("agent=") == 1
