"""Argument rules: every spelling of a denied path is denied, and arguments read two ways are."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.evaluate import evaluate
from policy.rules import Action, parse_policy

RULES = parse_policy({"default": {"mode": "allow", "argument_rules": [
    {"tool": "file_edit", "argument": "path", "matches": "/etc/*", "action": "deny"},
    {"tool": "file_*", "argument": "path", "matches": "/home/*", "action": "ask"},
]}}).default


def decide(arguments: Any, tool: str = "file_edit") -> tuple[Action, str]:
    decision = evaluate(RULES, tool, arguments)
    return decision.action, decision.rule


DENIED = (Action.DENY, "argument_rules[0]")


@pytest.mark.parametrize("path", [
    "etc/passwd", " /etc/passwd", "/etc/passwd\n", "\t etc/passwd ", "./etc/passwd", "../../../etc/passwd",
    "/proc/self/root/etc/passwd", "/proc/1234/root/etc/passwd", "/proc/thread-self/root/etc/passwd",
    "/proc/self/task/7/root/etc/passwd", "/proc/self/cwd/../../etc/passwd", "/proc/self/root/../etc/passwd",
    "/proc/self/root/proc/self/root/etc/passwd", "/proc/self/../self/root/etc/passwd", "//proc//self/./root//etc/passwd",
    "/etc/passwd/", "/etc/x/../passwd", "/usr/../../etc/passwd", "\\etc\\passwd", "file:///etc/passwd",
    "~/../../../etc/passwd", "~root/../etc/passwd", "/etc/passwd\x00.txt",
])
def test_a_denied_path_in_any_spelling_is_denied(path: str) -> None:
    assert decide({"path": path}) == DENIED
    assert decide(json.dumps({"path": path})) == DENIED


@pytest.mark.parametrize("value", [
    ["/tmp/x", "/etc/passwd"], [["/tmp/x"], [" etc/passwd"]], {"to": "/etc/passwd"}, {"/etc/passwd": True},
    [{"paths": ["/tmp/y", "/etc/shadow"]}],
])
def test_lists_and_objects_are_checked_element_by_element(value: Any) -> None:
    assert decide(json.dumps({"path": value})) == DENIED


@pytest.mark.parametrize("key", ["Path", "PATH", " path", "path ", "ｐａｔｈ"])
def test_an_argument_key_spelled_another_way_is_the_same_argument(key: str) -> None:
    assert decide(json.dumps({key: "/etc/passwd"})) == DENIED
    assert decide(json.dumps({"path": "/tmp/x", key: "/etc/passwd"})) == DENIED


@pytest.mark.parametrize("arguments", [
    '{"path": "/tmp/x", "path": "/etc/passwd"}',
    '{"path": "/etc/passwd", "path": "/tmp/x"}',
    '{"path": "/tmp/x", "other": 1, "other": 2}',
    '{"path": {"to": "/tmp/x", "to": "/etc/passwd"}}',
])
def test_a_key_given_twice_is_denied(arguments: str) -> None:
    action, rule = decide(arguments)
    assert (action, rule) == DENIED
    assert "more than once" in evaluate(RULES, "file_edit", arguments).reason


@pytest.mark.parametrize("arguments", ["{not json", '{"path": "/tmp/x"', '"{\\"path\\": \\"/etc/passwd\\"}"', "[1]", 42,
                                       "[" * 100_000])
def test_unreadable_arguments_are_denied(arguments: Any) -> None:
    assert decide(arguments) == DENIED


def test_duplicate_keys_pass_where_no_argument_rule_applies() -> None:
    assert decide('{"path": "/tmp/x", "path": "/etc/passwd"}', tool="shell")[0] is Action.ALLOW


@pytest.mark.parametrize("path", [
    "/tmp/x", "tmp/etc/passwd", "/tmp/etc/passwd", "/var/etc", "/etcetera/x", "/proc/self/environ", "/proc/x/root/etc",
    "~/notes", "",
])
def test_paths_outside_the_rule_pass(path: str) -> None:
    # The positive control: normalising must not turn every path into a denial.
    assert decide({"path": path}) == (Action.ALLOW, "mode")


def test_an_ask_rule_sees_the_same_spellings() -> None:
    assert decide({"path": "home/me/.ssh/id_rsa"}) == (Action.ASK, "argument_rules[1]")
    assert decide({"PATH": ["/tmp/x", "/proc/self/root/home/me"]}) == (Action.ASK, "argument_rules[1]")
    assert decide({"path": ["/home/me", "/etc/passwd"]}) == DENIED  # deny beats ask, whatever the order


# Equivalent spellings of /etc/passwd, built segment by segment.
separators = st.lists(st.sampled_from(["/", "//", "/./", "/tmp/../", "/x/../", "/a b/../", "/.../../"]),
                      min_size=1, max_size=3).map("".join)
prefixes = st.sampled_from(["/", "//", "/./", "", "./", "../../", "/proc/self/root/", "/proc/4242/root/",
                            "/proc/thread-self/root/", "/proc/self/root/../", "~/../../../"])
spaces = st.sampled_from(["", " ", "\t", "\n", "  \r\n"])


@st.composite
def spellings(draw: st.DrawFn, segments: tuple[str, ...] = ("etc", "passwd")) -> str:
    path = draw(prefixes) + segments[0]
    for segment in segments[1:]:
        path += draw(separators) + segment
    path += draw(st.sampled_from(["", "/", "/."]))
    return draw(spaces) + path + draw(spaces)


def key_spellings() -> st.SearchStrategy[str]:
    return st.tuples(*(st.sampled_from([c, c.upper()]) for c in "path")).map("".join)


def wrapped(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value alone, or somewhere in (nested) lists beside harmless paths."""
    return st.recursive(value, lambda inner: st.tuples(st.lists(st.just("/tmp/ok"), max_size=2), inner).map(
        lambda pair: [*pair[0], pair[1]]), max_leaves=3)


@given(wrapped(spellings()), key_spellings(), st.booleans())
def test_equivalent_spellings_of_a_denied_path_are_never_allowed(value: Any, key: str, as_text: bool) -> None:
    arguments = {key: value, "content": "x"}
    action, rule = decide(json.dumps(arguments) if as_text else arguments)
    assert (action, rule) == DENIED, (arguments, action, rule)


@given(wrapped(spellings(("tmp", "passwd"))), key_spellings())
def test_equivalent_spellings_of_an_allowed_path_are_allowed(value: Any, key: str) -> None:
    assert decide({key: value}) == (Action.ALLOW, "mode")


def test_a_value_that_contains_itself_is_still_decided() -> None:
    looped: list[Any] = ["/tmp/x"]
    looped.append(looped)
    assert decide({"path": looped}) == (Action.ALLOW, "mode")
    looped.append("/etc/passwd")
    assert decide({"path": looped}) == DENIED
