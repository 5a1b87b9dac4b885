"""`evaluate`: one tool call against a project's policy, to a `Decision`. Pure and total."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from policy.rules import Action, ArgumentRule, Mode, ProjectPolicy


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a call, the rule that decided it (`blocked_tools[0]`, `mode`, ...)
    and a sentence a person can read."""

    action: Action
    rule: str
    reason: str


def evaluate(
    policy: ProjectPolicy, tool_name: str, arguments: Any = None, *, always_allowed: Collection[str] = ()
) -> Decision:
    """Deny beats ask beats allow:
    1. a `blocked_tools` match, or an argument rule that denies -> deny (yolo does not override);
    2. a remembered "allow always" for this tool -> allow, unless an argument rule asks: those
       look at each call's arguments, which a remembered allow never saw;
    3. a `restricted_tools` match, or an argument rule that asks -> ask (yolo -> allow);
    4. an `allowed_tools` match -> allow;
    5. the mode: allow -> allow, prompt -> ask (yolo -> allow), deny -> deny.
    Never raises: a failure inside evaluation denies."""
    try:
        return _evaluate(policy, tool_name, arguments, always_allowed)
    except Exception as error:  # a broken rule or input fails closed
        return Decision(Action.DENY, "internal_error", f"policy evaluation failed ({type(error).__name__}); denied")


def undeclared(tool_name: str) -> Decision:
    """The call names a tool the request never offered: refused whatever the policy says."""
    return Decision(Action.DENY, "undeclared", f"tool {tool_name!r} was not declared in the request's tools")


def _evaluate(policy: ProjectPolicy, name: str, arguments: Any, always_allowed: Collection[str]) -> Decision:
    if not isinstance(name, str):
        return Decision(Action.DENY, "invalid_name", "the tool name is not a string")
    blocked = policy.blocked_tools.first_match(name)
    if blocked is not None:
        return Decision(Action.DENY, f"blocked_tools[{blocked}]",
                        f"tool {name!r} is blocked by {policy.blocked_tools.patterns[blocked]!r}")
    asked_by_argument: Decision | None = None
    for index, rule in enumerate(policy.argument_rules):
        if rule.tool.first_match(name) is None:
            continue
        verdict = _argument_verdict(rule, index, name, arguments)
        if verdict is not None and verdict.action is Action.DENY:
            return verdict
        asked_by_argument = asked_by_argument or verdict
    if name in always_allowed and asked_by_argument is None:
        return Decision(Action.ALLOW, "always_allowed", f"a person allowed {name!r} always for this project")
    restricted = policy.restricted_tools.first_match(name)
    asking_rule = f"restricted_tools[{restricted}]" if restricted is not None else None
    if asking_rule is None and asked_by_argument is not None:
        asking_rule = asked_by_argument.rule
    if asking_rule is not None:
        if policy.yolo_mode:
            return Decision(Action.ALLOW, f"{asking_rule}+yolo_mode",
                            f"tool {name!r} needs confirmation, waived by yolo_mode")
        return Decision(Action.ASK, asking_rule, f"tool {name!r} needs a person's confirmation")
    allowed = policy.allowed_tools.first_match(name)
    if allowed is not None:
        return Decision(Action.ALLOW, f"allowed_tools[{allowed}]",
                        f"tool {name!r} is allowed by {policy.allowed_tools.patterns[allowed]!r}")
    if policy.mode is Mode.ALLOW:
        return Decision(Action.ALLOW, "mode", "the policy's mode is allow")
    if policy.mode is Mode.DENY:
        return Decision(Action.DENY, "mode", "the policy's mode is deny and no rule allows this tool")
    if policy.yolo_mode:
        return Decision(Action.ALLOW, "mode+yolo_mode", "the policy's mode is prompt, waived by yolo_mode")
    return Decision(Action.ASK, "mode", "the policy's mode is prompt")


def _argument_verdict(rule: ArgumentRule, index: int, name: str, arguments: Any) -> Decision | None:
    where = f"argument_rules[{index}]"
    parsed = _parse_arguments(arguments)
    if parsed is None:
        # The rule cannot be checked against arguments we cannot read: fail closed.
        return Decision(Action.DENY, where, f"arguments of {name!r} are not a JSON object, so {where} cannot be checked")
    if rule.argument not in parsed:
        return None
    value = parsed[rule.argument]
    text = value if isinstance(value, str) else json.dumps(value)
    if all(rule.matches.first_match(candidate) is None for candidate in _spellings(text)):
        return None
    return Decision(rule.action, where,
                    f"argument {rule.argument!r} of {name!r} matches {rule.matches.patterns[0]!r}")


def _spellings(text: str) -> set[str]:
    """The value, and for a path its normal form too: `//etc/x`, `/./etc/x` and
    `/tmp/../etc/x` must not slip past a rule written for `/etc/*`."""
    if "/" not in text:
        return {text}
    collapsed = re.sub(r"/+", "/", text)
    normal = posixpath.normpath(collapsed)
    return {text, collapsed, normal}


def _parse_arguments(arguments: Any) -> dict[str, Any] | None:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None
