"""The policy as configured: per-project rules over tool names (and arguments), parsed once."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PolicyConfigError(ValueError):
    """A policy that cannot be used; the message names the field and rule."""


class Mode(StrEnum):
    PROMPT = "prompt"
    ALLOW = "allow"
    DENY = "deny"


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class PatternList:
    """Glob patterns (`*`, `?`, `[...]`) matched against the whole name, case-sensitively.
    Every other character is literal: `.`, `+`, `(` never act as regex syntax."""

    patterns: tuple[str, ...] = ()
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> PatternList:
        if not patterns:
            return cls()
        # One capturing group per pattern (translate() adds none of its own), tried in order:
        # the group that matched is the first pattern that matches.
        joined = "|".join(f"({fnmatch.translate(p)})" for p in patterns)
        return cls(patterns, re.compile(joined, re.DOTALL))

    def first_match(self, name: str) -> int | None:
        """The index of the first pattern matching `name`, or None."""
        if self._compiled is None:
            return None
        found = self._compiled.match(name)
        return None if found is None or found.lastindex is None else found.lastindex - 1


@dataclass(frozen=True, slots=True)
class ArgumentRule:
    """`action` (deny or ask) when `tool` is called with `argument` matching `matches`."""

    tool: PatternList
    argument: str
    matches: PatternList
    action: Action


@dataclass(frozen=True, slots=True)
class ProjectPolicy:
    mode: Mode = Mode.ALLOW
    allowed_tools: PatternList = PatternList()
    restricted_tools: PatternList = PatternList()
    blocked_tools: PatternList = PatternList()
    argument_rules: tuple[ArgumentRule, ...] = ()
    yolo_mode: bool = False
    approval_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The default policy and per-project ones. Not `enforcing` (no `policy` in the config):
    decisions are made and recorded, and every call passes (observe-only)."""

    default: ProjectPolicy = ProjectPolicy()
    projects: Mapping[str, ProjectPolicy] = field(default_factory=dict)
    enforcing: bool = False

    def for_project(self, project: str) -> ProjectPolicy:
        return self.projects.get(project, self.default)


MAX_APPROVAL_TIMEOUT_S = 86_400  # a day: nothing waits forever (this also rules out inf and nan)

_RULE_KEYS = {
    "mode", "allowed_tools", "restricted_tools", "blocked_tools", "argument_rules", "yolo_mode",
    "approval_timeout_s",
}
_LISTS = ("allowed_tools", "restricted_tools", "blocked_tools")


def parse_policy(raw: Mapping[str, Any] | None, where: str = "policy") -> PolicySet:
    """Parse the `policy` config section. A project's settings override the default's, field
    by field, except `blocked_tools`, which add to the default's: a block is absolute."""
    if raw is None:
        return PolicySet()
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"{where}: must be a mapping with 'default' and 'projects'")
    _refuse_unknown_keys(raw, {"default", "projects"}, where)
    default_raw = raw.get("default")
    default = _project_policy({} if default_raw is None else default_raw, ProjectPolicy(), f"{where}.default")
    projects_raw = raw.get("projects") or {}
    if not isinstance(projects_raw, Mapping):
        raise PolicyConfigError(f"{where}.projects: must be a mapping of project name to rules")
    projects = {
        str(name): _project_policy({} if rules is None else rules, default, f"{where}.projects.{name}")
        for name, rules in projects_raw.items()
    }
    return PolicySet(default=default, projects=projects, enforcing=True)


def _project_policy(raw: Any, base: ProjectPolicy, where: str) -> ProjectPolicy:
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"{where}: must be a mapping")
    _refuse_unknown_keys(raw, _RULE_KEYS, where)
    values: dict[str, Any] = {}
    if "mode" in raw:
        try:
            values["mode"] = Mode(raw["mode"])
        except ValueError:
            raise PolicyConfigError(f"{where}.mode: must be prompt, allow or deny, got {raw['mode']!r}") from None
    for name in _LISTS:
        if name in raw:
            patterns = _patterns(raw[name], f"{where}.{name}")
            if name == "blocked_tools":
                patterns = base.blocked_tools.patterns + tuple(p for p in patterns if p not in base.blocked_tools.patterns)
            values[name] = PatternList.of(patterns)
    if "argument_rules" in raw:
        values["argument_rules"] = base.argument_rules + tuple(
            _argument_rule(rule, f"{where}.argument_rules[{i}]") for i, rule in enumerate(_list(raw["argument_rules"], f"{where}.argument_rules"))
        )
    if "yolo_mode" in raw:
        if not isinstance(raw["yolo_mode"], bool):
            raise PolicyConfigError(f"{where}.yolo_mode: must be true or false")
        values["yolo_mode"] = raw["yolo_mode"]
    if "approval_timeout_s" in raw:
        timeout = raw["approval_timeout_s"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_APPROVAL_TIMEOUT_S:
            raise PolicyConfigError(
                f"{where}.approval_timeout_s: must be a number of seconds above 0 and at most {MAX_APPROVAL_TIMEOUT_S}")
        values["approval_timeout_s"] = float(timeout)
    return ProjectPolicy(**{**_fields(base), **values})


def _fields(policy: ProjectPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in ProjectPolicy.__slots__}


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyConfigError(f"{where}: must be a list")
    return value


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    patterns = _list(value, where)
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern:
            raise PolicyConfigError(f"{where}[{index}]: must be a non-empty string (a tool name or glob)")
        if pattern != pattern.strip():
            raise PolicyConfigError(f"{where}[{index}]: {pattern!r} has leading or trailing whitespace, "
                                    "so it would never match a tool name")
    return tuple(patterns)


def _refuse_unknown_keys(raw: Mapping[str, Any], known: Set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _argument_rule(raw: Any, where: str) -> ArgumentRule:
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"{where}: must be a mapping with tool, argument, matches, action")
    _refuse_unknown_keys(raw, {"tool", "argument", "matches", "action"}, where)
    for key in ("tool", "argument", "matches"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise PolicyConfigError(f"{where}.{key}: required, a non-empty string")
    action = raw.get("action", "deny")
    if action not in ("deny", "ask"):
        raise PolicyConfigError(f"{where}.action: must be deny or ask, got {action!r}")
    return ArgumentRule(
        tool=PatternList.of((raw["tool"],)),
        argument=raw["argument"],
        matches=PatternList.of((raw["matches"],)),
        action=Action(action),
    )
