"""`evaluate`: one tool call against a project's policy, to a `Decision`. Pure and total."""

from __future__ import annotations

import json
import re
import unicodedata
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
    try:
        parsed = _parse_arguments(arguments)
    except _Unreadable as unreadable:
        # The rule cannot be checked against arguments we cannot read for sure: fail closed.
        return Decision(Action.DENY, where, f"arguments of {name!r} {unreadable}, so {where} cannot be checked")
    wanted = _key(rule.argument)
    values = [value for key, value in parsed.items() if _key(str(key)) == wanted]
    for text in _leaves(values):
        if any(rule.matches.first_match(candidate) is not None for candidate in _spellings(text)):
            return Decision(rule.action, where,
                            f"argument {rule.argument!r} of {name!r} matches {rule.matches.patterns[0]!r}")
    return None


def _key(key: str) -> str:
    """Keys that differ only in case, width or surrounding spaces are one argument: a tool
    may well accept `Path` for `path`, so each such value is checked."""
    return unicodedata.normalize("NFKC", key).strip().casefold()


def _leaves(values: list[Any]) -> list[str]:
    """Every scalar in the values, lists and objects (keys too) taken apart at any depth,
    as text: a tool given a list may act on each element, and one given an object is
    unknown ground, so each string in it is checked rather than none."""
    found, todo, seen = [], list(values), set()
    while todo:  # not recursive: a deep value must not exhaust the stack
        value = todo.pop()
        if isinstance(value, (list, dict)):
            if id(value) in seen:  # a Python caller's value may contain itself
                continue
            seen.add(id(value))
        if isinstance(value, list):
            todo += value
        elif isinstance(value, dict):
            todo += [*map(str, value), *value.values()]
        else:
            found.append(value if isinstance(value, str) else json.dumps(value))
    return found


def _spellings(text: str) -> set[str]:
    """The value as written and every spelling of the path it may stand for, so a rule for
    `/etc/*` catches ` /etc/passwd`, `etc/passwd`, `//etc/./x/../passwd`, `\\etc\\passwd`
    and `/proc/self/root/etc/passwd`. Lexical: a symlink elsewhere is not followed.

    - Surrounding whitespace is dropped, and anything from a NUL on (C code stops there).
    - A relative path is compared as written and as if at `/`: the tool's working directory
      is unknown, and anchored at `/` a `../` climb out of any directory is caught.
    - `~` and `~user` are compared as written and as if at `/`, for the same reason: the
      home directory is the tool's, so `~/../../etc` is caught but `~/.ssh` is not `/home/*`.
    - `file://` is taken off; backslashes are also read as separators (Windows tools)."""
    written = text.split("\x00", 1)[0].strip()
    starts = {written, written.replace("\\", "/")}
    starts |= {s[len("file://"):] for s in starts if s[:len("file://")].lower() == "file://"}
    starts |= {"/" + s.partition("/")[2] for s in starts if s.startswith("~")}
    starts |= {"/" + s for s in starts if not s.startswith("/")}
    return {text, *starts, *(re.sub(r"/+", "/", s) for s in starts), *map(_resolve, starts)}


def _resolve(path: str) -> str:
    """`path` with `//`, `.` and `..` resolved as the kernel walks them (`..` at `/` stays
    at `/`), and `/proc/<pid>/root` or `/proc/<pid>/cwd` read as the `/` they link to (a
    process's root; its cwd is unknown, so as if at `/`): `/proc/self/root/..` is `/`,
    which resolving the `..` before the link would miss."""
    is_absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
            if is_absolute and _is_proc_link(parts):
                parts.clear()
        elif parts and parts[-1] != "..":
            parts.pop()
        elif not is_absolute:
            parts.append("..")
    resolved = "/".join(parts)
    return "/" + resolved if is_absolute else resolved or "."


_PROCESS = re.compile(r"self|thread-self|\d+")


def _is_proc_link(parts: list[str]) -> bool:
    """`proc/<pid>/root` or `proc/<pid>/task/<tid>/root` (or `cwd`), `self` for a pid."""
    if len(parts) not in (3, 5) or parts[0] != "proc" or parts[-1] not in ("root", "cwd"):
        return False
    if not _PROCESS.fullmatch(parts[1]):
        return False
    return len(parts) == 3 or (parts[2] == "task" and _PROCESS.fullmatch(parts[3]) is not None)


class _Unreadable(Exception):
    """Arguments that cannot be read as one JSON object for sure; the message says why."""


def _parse_arguments(arguments: Any) -> dict[Any, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise _Unreadable("are not a JSON object")
    try:
        parsed = json.loads(arguments, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise _Unreadable("are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _Unreadable("are not a JSON object")
    return parsed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice is ambiguous: parsers keep the first or the last, and the tool's
    may not keep the one checked here."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Unreadable(f"give the key {key!r} more than once")
        seen.add(key)
    return dict(pairs)
