"""`ctxgate demo` runs the product end to end, offline."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_plain_streamed_and_tool_calls_and_their_records() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "demo"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "assistant: The prod VPC CIDR is 10.0.0.0/16." in out
    assert "assistant: Streaming works chunk by chunk, exactly as from OpenAI." in out
    assert 'tool call: get_weather({"city": "Paris"})' in out
    table = out.split("recorded interactions")[1].split("one interaction in full")[0]
    assert table.count(" demo-model ") == 3 and table.count(" ok ") == 3
    assert "sk-demo-provider-key" not in out and "sk-demo-client-key" not in out
