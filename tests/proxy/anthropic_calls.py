"""What the Anthropic Messages tests ask, on either transport: a policy that blocks `Write` (and
a project that allows only `Read`), three tools, one question."""

from __future__ import annotations

POLICY = {"default": {"mode": "allow", "blocked_tools": ["Write"], "restricted_tools": []},
          "projects": {"strict": {"mode": "deny", "allowed_tools": ["Read"]}}}
TOOLS = [{"name": name, "description": f"{name} a file", "input_schema": {"type": "object"}}
         for name in ("Read", "Bash", "Write")]
ASK = [{"role": "user", "content": "What is in /etc/hosts?"}]
