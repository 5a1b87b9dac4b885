"""Glob matching of tool names: whole name, case-sensitive, and nothing but `*`, `?`, `[...]` special."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policy.rules import PatternList

NAME_CHARS = "abAB_-.+()$^{}|\\/é日0"
names = st.text(alphabet=NAME_CHARS, max_size=8)
pattern_tokens = st.lists(
    st.one_of(st.sampled_from(["*", "?", "[ab]", "[!a]", "[a-c]"]), st.sampled_from(list(NAME_CHARS))), max_size=6
)


def naive_match(pattern: list[str], name: str) -> bool:
    """A reference matcher written from the definition, token by token, with backtracking."""
    if not pattern:
        return name == ""
    token, rest = pattern[0], pattern[1:]
    if token == "*":
        return any(naive_match(rest, name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    if token == "?":
        return naive_match(rest, name[1:])
    if token.startswith("[") and len(token) > 1:
        body = token[1:-1]
        negate = body.startswith("!")
        body = body[1:] if negate else body
        if len(body) == 3 and body[1] == "-":
            inside = body[0] <= name[0] <= body[2]
        else:
            inside = name[0] in body
        return inside != negate and naive_match(rest, name[1:])
    return name[0] == token and naive_match(rest, name[1:])


@given(pattern_tokens, names)
def test_agrees_with_a_naive_reference_matcher(tokens: list[str], name: str) -> None:
    pattern = "".join(tokens) or "x"
    tokens = tokens or ["x"]
    assert (PatternList.of((pattern,)).first_match(name) is not None) == naive_match(tokens, name)


@given(st.text(alphabet=NAME_CHARS + "[", min_size=1, max_size=10), names)
def test_a_literal_name_never_acts_as_a_pattern(literal: str, name: str) -> None:
    # No `*`, `?` or closed `[...]` in it: regex syntax such as `.`, `+`, `(`, `[` is literal.
    if "[" in literal and "]" in literal[literal.index("["):]:
        return
    patterns = PatternList.of((literal,))
    assert (patterns.first_match(name) is not None) == (name == literal)
    assert patterns.first_match(literal) == 0


def test_whole_name_and_case_sensitive() -> None:
    describe = PatternList.of(("atmos_describe_*",))
    assert describe.first_match("atmos_describe_component") == 0
    assert describe.first_match("Atmos_describe_component") is None
    assert describe.first_match("x_atmos_describe_component") is None
    assert PatternList.of(("file_read",)).first_match("file_read_all") is None


def test_first_match_names_the_pattern_index() -> None:
    patterns = PatternList.of(("a_*", "b_*", "b_x"))
    assert patterns.first_match("b_x") == 1
    assert patterns.first_match("c") is None
