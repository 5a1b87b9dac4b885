"""Screening an OpenAI chat request's tools against the project's policy: blocked tools taken
out of `tools`, a `tool_choice` naming one refused, and the legacy functions API refused."""

from __future__ import annotations

from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.fields import invalid_type, with_tools
from proxy.edge.errors import BadRequest


# The shapes in which a `tools[]` entry, or a `tool_choice` naming one, gives a tool's name:
# {"type": "function", "function": {"name"}}, {"type": "custom", "custom": {"name"}}, and the
# flat {"type": "function", "name"} of the Responses API, which some clients send to chat.
# Every one is read whatever `type` says: which a provider honours is not ours to guess.
_NAME_HOLDERS = ("function", "custom")


def declared_tool_names(params: dict[str, Any]) -> frozenset[str]:
    """Every name the request's `tools` give, in any shape. Never raises: without a policy
    the request is not screened, and a malformed entry just declares nothing."""
    tools = params.get("tools")
    return frozenset(name for tool in (tools if isinstance(tools, list) else ()) for name in _tool_names(tool))


def screen_request(params: dict[str, Any], policy: ProjectPolicy) -> dict[str, Any]:
    """The parameters with blocked tools taken out of `tools`, so the model is not offered
    them; a `tool_choice` that names a blocked tool is refused, and so is the legacy
    `functions` API, whose calls would bypass the policy. A tool entry whose name cannot be
    read (a `function` that is not an object, a name that is not a string) is a 400 naming
    the field: what cannot be read cannot be screened."""
    for legacy in ("functions", "function_call"):
        if legacy in params:
            raise BadRequest(f"'{legacy}' (the legacy functions API) is not accepted where a tool policy applies; "
                             "declare 'tools' instead", param=legacy, code="legacy_functions_refused")
    _refuse_blocked_choice(params.get("tool_choice"), policy)
    tools = params.get("tools")
    if tools is None:
        return params
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    for index, entry in enumerate(tools):
        _check_tool_shape(entry, f"tools[{index}]")
    kept = [t for t in tools if not _is_blocked(t, policy)]
    if len(kept) == len(tools):
        return params
    return with_tools(params, kept)


def _refuse_blocked_choice(choice: Any, policy: ProjectPolicy) -> None:
    """400 when `tool_choice` names a blocked tool: forcing one in any shape, or listing one
    under `allowed_tools` (chat nests the list in `allowed_tools`, Responses puts it flat)."""
    if not isinstance(choice, dict):
        return  # "none", "auto", "required": no name in them
    entries: list[tuple[Any, str]] = [(choice, "tool_choice")]
    allowed = choice.get("allowed_tools")
    if allowed is not None and not isinstance(allowed, dict):
        raise invalid_type("tool_choice.allowed_tools", "an object", allowed)
    for holder, where in ((allowed, "tool_choice.allowed_tools.tools"), (choice, "tool_choice.tools")):
        listed = holder.get("tools") if isinstance(holder, dict) else None
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise invalid_type(where, "an array", listed)
        entries += [(entry, f"{where}[{index}]") for index, entry in enumerate(listed)]
    for entry, where in entries:
        _check_tool_shape(entry, where)
        for name in _tool_names(entry):
            if policy.blocked_tools.first_match(name) is not None:
                raise BadRequest(f"{where} names {name!r}, which this project's policy blocks",
                                 param=where, code="tool_blocked")


def _check_tool_shape(entry: Any, where: str) -> None:
    """400 naming the first part of a tool entry that is not what the API says it is."""
    if not isinstance(entry, dict):
        raise invalid_type(where, "an object", entry)
    holders = [(entry, where)]
    for key in _NAME_HOLDERS:
        if key in entry:
            if not isinstance(entry[key], dict):
                raise invalid_type(f"{where}.{key}", "an object", entry[key])
            holders.append((entry[key], f"{where}.{key}"))
    for holder, at in holders:
        if "name" in holder and not isinstance(holder["name"], str):
            raise invalid_type(f"{at}.name", "a string", holder["name"])


def _tool_names(entry: Any) -> list[str]:
    """The names a tool entry gives, in any of the shapes; parts of the wrong type give none."""
    if not isinstance(entry, dict):
        return []
    holders = [entry, *(entry.get(key) for key in _NAME_HOLDERS)]
    return [h["name"] for h in holders if isinstance(h, dict) and isinstance(h.get("name"), str)]


def _is_blocked(tool: Any, policy: ProjectPolicy) -> bool:
    """True when any name the entry gives is blocked: a provider might read any of them."""
    return any(policy.blocked_tools.first_match(name) is not None for name in _tool_names(tool))
