"""Policy semantics: the precedence table of DESIGN.md row by row, and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.evaluate import evaluate
from policy.rules import Action, PolicyConfigError, parse_policy

STRICTNESS = {Action.ALLOW: 0, Action.ASK: 1, Action.DENY: 2}


def policy(**rules: Any) -> Any:
    return parse_policy({"default": rules}).default


@pytest.mark.parametrize(
    ("rules", "tool", "remembered", "action", "rule"),
    [
        # 1. blocked -> deny, whatever else; yolo does not override a block
        ({"blocked_tools": ["rm_*"], "allowed_tools": ["rm_rf"]}, "rm_rf", (), Action.DENY, "blocked_tools[0]"),
        ({"blocked_tools": ["rm_*"], "yolo_mode": True, "mode": "allow"}, "rm_rf", (), Action.DENY, "blocked_tools[0]"),
        ({"blocked_tools": ["rm_*"]}, "rm_rf", ("rm_rf",), Action.DENY, "blocked_tools[0]"),
        # 2. remembered allow-always -> allow, even when restricted
        ({"restricted_tools": ["file_edit"], "mode": "deny"}, "file_edit", ("file_edit",), Action.ALLOW, "always_allowed"),
        # 3. restricted -> ask; yolo -> allow
        ({"restricted_tools": ["file_edit"], "allowed_tools": ["file_*"]}, "file_edit", (), Action.ASK, "restricted_tools[0]"),
        ({"restricted_tools": ["file_edit"], "yolo_mode": True}, "file_edit", (), Action.ALLOW, "restricted_tools[0]+yolo_mode"),
        # 4. allowed -> allow, even in deny mode
        ({"allowed_tools": ["atmos_describe_*"], "mode": "deny"}, "atmos_describe_component", (), Action.ALLOW, "allowed_tools[0]"),
        # 5. the mode
        ({"mode": "allow"}, "anything", (), Action.ALLOW, "mode"),
        ({"mode": "prompt"}, "anything", (), Action.ASK, "mode"),
        ({"mode": "prompt", "yolo_mode": True}, "anything", (), Action.ALLOW, "mode+yolo_mode"),
        ({"mode": "deny"}, "anything", (), Action.DENY, "mode"),
        ({"mode": "deny", "yolo_mode": True}, "anything", (), Action.DENY, "mode"),
    ],
)
def test_precedence_table(rules: dict[str, Any], tool: str, remembered: tuple[str, ...], action: Action, rule: str) -> None:
    decision = evaluate(policy(**rules), tool, "{}", always_allowed=remembered)
    assert (decision.action, decision.rule) == (action, rule)
    assert decision.reason


ARG_RULES = [{"tool": "file_edit", "argument": "path", "matches": "/etc/*", "action": "deny"},
             {"tool": "file_*", "argument": "path", "matches": "/home/*", "action": "ask"}]


@pytest.mark.parametrize(
    ("arguments", "action", "rule"),
    [
        ('{"path": "/etc/passwd"}', Action.DENY, "argument_rules[0]"),
        ({"path": "/etc/hosts"}, Action.DENY, "argument_rules[0]"),
        ('{"path": "/home/me/x"}', Action.ASK, "argument_rules[1]"),
        ('{"path": "/tmp/x"}', Action.ALLOW, "mode"),
        ('{"other": 1}', Action.ALLOW, "mode"),
        ("{not json", Action.DENY, "argument_rules[0]"),
        ('["/etc/passwd"]', Action.DENY, "argument_rules[0]"),
    ],
)
def test_argument_rules(arguments: Any, action: Action, rule: str) -> None:
    decision = evaluate(policy(mode="allow", argument_rules=ARG_RULES), "file_edit", arguments)
    assert (decision.action, decision.rule) == (action, rule)


def test_argument_rules_hold_against_a_remembered_allow() -> None:
    rules = policy(mode="allow", argument_rules=ARG_RULES)
    remembered = {"file_edit"}
    assert evaluate(rules, "file_edit", '{"path": "/etc/x"}', always_allowed=remembered).action is Action.DENY
    assert evaluate(rules, "file_edit", '{"path": "/home/x"}', always_allowed=remembered).action is Action.ASK
    assert evaluate(rules, "file_edit", '{"path": "/tmp/x"}', always_allowed=remembered).rule == "always_allowed"
    yolo = policy(mode="allow", argument_rules=ARG_RULES, yolo_mode=True)
    assert evaluate(yolo, "file_edit", '{"path": "/home/x"}').action is Action.ALLOW  # yolo waives an ask


@pytest.mark.parametrize("path", ["//etc/passwd", "/./etc/passwd", "/tmp/../etc/passwd", "/etc//shadow"])
def test_path_spellings_do_not_slip_past_an_argument_rule(path: str) -> None:
    decision = evaluate(policy(mode="allow", argument_rules=ARG_RULES), "file_edit", {"path": path})
    assert (decision.action, decision.rule) == (Action.DENY, "argument_rules[0]")


def test_projects_override_the_default_and_add_blocks() -> None:
    policies = parse_policy({
        "default": {"mode": "prompt", "blocked_tools": ["destroy"], "allowed_tools": ["read"]},
        "projects": {"sandbox": {"mode": "allow", "blocked_tools": ["nuke"]}},
    })
    sandbox = policies.for_project("sandbox")
    assert evaluate(sandbox, "anything").action is Action.ALLOW
    assert evaluate(sandbox, "destroy").action is Action.DENY and evaluate(sandbox, "nuke").action is Action.DENY
    assert evaluate(policies.for_project("other"), "anything").action is Action.ASK
    assert policies.enforcing and not parse_policy(None).enforcing


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"default": {"mode": "maybe"}}, "policy.default.mode"),
        ({"default": {"blocked_tools": "rm"}}, "policy.default.blocked_tools"),
        ({"default": {"allowed_tools": ["ok", 3]}}, "policy.default.allowed_tools[1]"),
        ({"projects": {"atmos": {"colour": 1}}}, "policy.projects.atmos"),
        ({"default": {"argument_rules": [{"tool": "x", "argument": "p", "matches": "/*", "action": "allow"}]}},
         "policy.default.argument_rules[0].action"),
        ({"default": {"approval_timeout_s": 0}}, "policy.default.approval_timeout_s"),
        ({"default": {"approval_timeout_s": float("inf")}}, "policy.default.approval_timeout_s"),
        ({"default": {"approval_timeout_s": float("nan")}}, "policy.default.approval_timeout_s"),
        ({"default": {"approval_timeout_s": 10**9}}, "policy.default.approval_timeout_s"),
        ({"default": {"blocked_tools": [" destroy"]}}, "policy.default.blocked_tools[0]"),
        ({"projects": {"atmos": []}}, "policy.projects.atmos"),
        ({"projects": {"atmos": ""}}, "policy.projects.atmos"),
        ({"other": {}}, "policy"),
    ],
)
def test_config_errors_name_the_field_and_rule(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyConfigError) as caught:
        parse_policy(raw)
    assert where in str(caught.value)


tool_names = st.text(max_size=30)
arguments = st.one_of(st.none(), st.text(max_size=40), st.dictionaries(st.text(max_size=5), st.text(max_size=10)),
                      st.integers(), st.lists(st.integers()))
glob_lists = st.lists(st.text(alphabet="ab_*?[]!.", min_size=1, max_size=6), max_size=4)
rule_sets = st.fixed_dictionaries({
    "mode": st.sampled_from(["prompt", "allow", "deny"]),
    "allowed_tools": glob_lists, "restricted_tools": glob_lists, "blocked_tools": glob_lists,
    "yolo_mode": st.booleans(),
})


@given(rule_sets, tool_names, arguments, st.frozensets(st.text(alphabet="ab_", max_size=3)))
def test_evaluate_is_total(rules: dict[str, Any], name: str, args: Any, remembered: frozenset[str]) -> None:
    decision = evaluate(policy(**rules, argument_rules=ARG_RULES), name, args, always_allowed=remembered)
    assert decision.action in Action and decision.reason
    assert decision.rule != "internal_error"  # total by construction, not by the safety net


@given(rule_sets, st.text(alphabet="ab_*?[]!.", min_size=1, max_size=6), st.text(alphabet="ab_.", max_size=6))
def test_adding_a_block_never_allows_more(rules: dict[str, Any], extra_block: str, name: str) -> None:
    before = evaluate(policy(**rules), name)
    after = evaluate(policy(**{**rules, "blocked_tools": [*rules["blocked_tools"], extra_block]}), name)
    assert STRICTNESS[after.action] >= STRICTNESS[before.action]


def test_a_broken_input_fails_closed() -> None:
    assert evaluate(policy(), 42).action is Action.DENY  # type: ignore[arg-type]
