"""`ctxgate demo` runs the product end to end, offline."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_plain_streamed_allowed_blocked_and_approved_calls_and_their_records() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli.commands", "demo"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "assistant: The prod VPC CIDR is 10.0.0.0/16." in out
    assert "X-Ctxgate-Context-Memories: 2, X-Ctxgate-Context-Chunks: 2" in out
    assert "  - The prod VPC CIDR is 10.0.0.0/16" in out  # in what the model received
    recorded = next(line for line in out.splitlines() if line.startswith("recorded: memories_used="))
    assert recorded.count("mem_") == 2 and recorded.count("ch_") == 2
    assert "assistant: Streaming works chunk by chunk, exactly as from OpenAI." in out
    assert 'tool call reached the client: get_weather({"city": "Paris"})' in out
    assert "ctxgate refused the call to 'atmos_terraform_destroy'" in out
    assert "tool call reached the client: atmos_terraform_destroy" not in out
    assert 'tool call reached the client: file_edit({"path": "/srv/app.conf"})' in out
    table = out.split("recorded interactions")[1].split("one interaction in full")[0]
    assert table.count(" demo-model ") == 5 and table.count(" ok ") == 5
    decisions = [line.split() for line in out.split("Tool decisions recorded across the run:")[1].splitlines()[1:4]]
    assert [(d[0], d[1], d[-1]) for d in decisions] == [
        ("get_weather", "allow", "decided_by=policy"),
        ("atmos_terraform_destroy", "deny", "decided_by=policy"),
        ("file_edit", "allow", "decided_by=human"),
    ]
    assert "sk-demo-provider-key" not in out and "sk-demo-client-key" not in out
