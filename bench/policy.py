"""Cost of evaluating one tool call against a 200-rule policy.

    python -m bench.policy

Names are drawn to hit each kind of rule (blocked, restricted, allowed, argument rules) and
none (the mode decides: every list is scanned). Reports the median over repeated batches.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from policy.evaluate import evaluate
from policy.rules import parse_policy

RULES_PER_LIST = 60


def big_policy() -> dict[str, Any]:
    """200 rules: 60 allowed, 60 restricted, 60 blocked globs and 20 argument rules."""
    return {
        "default": {
            "mode": "prompt",
            "allowed_tools": [f"svc{i}_describe_*" for i in range(RULES_PER_LIST)],
            "restricted_tools": [f"svc{i}_edit_[a-z]*" for i in range(RULES_PER_LIST)],
            "blocked_tools": [f"svc{i}_destroy?" for i in range(RULES_PER_LIST)],
            "argument_rules": [
                {"tool": f"svc{i}_write*", "argument": "path", "matches": f"/etc/svc{i}/*", "action": "deny"}
                for i in range(20)
            ],
        }
    }


def calls(count: int) -> list[tuple[str, str]]:
    rng = random.Random(7)
    kinds = [
        lambda i: (f"svc{i}_describe_component", "{}"),
        lambda i: (f"svc{i}_edit_config", "{}"),
        lambda i: (f"svc{i}_destroy1", "{}"),
        lambda i: (f"svc{i % 20}_write_file", f'{{"path": "/etc/svc{i % 20}/x.conf"}}'),
        lambda i: (f"unmatched_tool_{i}", '{"a": 1}'),
    ]
    return [rng.choice(kinds)(rng.randrange(RULES_PER_LIST)) for _ in range(count)]


def main() -> None:
    policy = parse_policy(big_policy()).default
    sample = calls(2000)
    per_call_us = []
    for _ in range(30):
        started = time.perf_counter()
        for name, arguments in sample:
            evaluate(policy, name, arguments)
        per_call_us.append((time.perf_counter() - started) / len(sample) * 1e6)
    worst = [("unmatched_tool", '{"a": 1}')] * 2000
    started = time.perf_counter()
    for name, arguments in worst:
        evaluate(policy, name, arguments)
    worst_us = (time.perf_counter() - started) / len(worst) * 1e6
    print(f"policy of {3 * RULES_PER_LIST + 20} rules: {statistics.median(per_call_us):.2f} us per call (median of "
          f"30 batches of {len(sample)} mixed calls); no rule matching: {worst_us:.2f} us per call; target < 50 us")


if __name__ == "__main__":
    main()
