"""The tools of a Responses API call, by the names the policy decides them by: the request's
`tools` (function and custom tools by their `name`, a `namespace` tool by the names of the
tools it holds, a built-in tool by its `type`), screened against the policy, and the output
items the client runs (function, custom, shell, patch and computer calls)."""

from __future__ import annotations

import json
from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.fields import invalid_type, with_tools
from proxy.edge.errors import BadRequest

_NAMED = ("function", "custom")
NAMESPACE = "namespace"
# Output items the client itself carries out, and the built-in tool each comes from; the
# provider runs the other built-in tools (web search, file search, code interpreter, ...), so
# screening the request is what keeps a blocked one from running.
_BUILT_IN_CALLS = {"local_shell_call": "local_shell", "shell_call": "shell", "apply_patch_call": "apply_patch",
                   "computer_call": "computer_use_preview"}
CLIENT_CALLS = frozenset({"function_call", "custom_tool_call", *_BUILT_IN_CALLS})
# Call items the provider itself carries out (screening the request decides those).
_PROVIDER_CALLS = frozenset({"web_search_call", "file_search_call", "code_interpreter_call",
                             "image_generation_call", "mcp_call"})


def is_client_call(item: Any) -> bool:
    """An output item the client would carry out: the known kinds, and any other `*_call` item
    not run at the provider (a kind newer than this gateway is decided, not let through)."""
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    return kind in CLIENT_CALLS or (isinstance(kind, str) and kind.endswith("_call") and kind not in _PROVIDER_CALLS)


def tool_names(entry: Any) -> list[str]:
    """The names a `tools[]` entry offers the model; none for an entry of the wrong shape."""
    if not isinstance(entry, dict):
        return []
    kind = entry.get("type")
    if kind in _NAMED:
        return [entry["name"]] if isinstance(entry.get("name"), str) else []
    if kind == NAMESPACE:
        nested = entry.get("tools")
        return [name for tool in (nested if isinstance(nested, list) else ()) for name in tool_names(tool)]
    return [kind] if isinstance(kind, str) else []


def declared_tool_names(body: dict[str, Any]) -> frozenset[str]:
    tools = body.get("tools")
    return frozenset(name for entry in (tools if isinstance(tools, list) else ()) for name in tool_names(entry))


def screen_tools(body: dict[str, Any], policy: ProjectPolicy) -> dict[str, Any]:
    """The body with the tools the policy blocks taken out of `tools` (out of a namespace, and
    the namespace with them when none is left); a `tool_choice` naming a blocked tool is a 400."""
    _refuse_blocked_choice(body.get("tool_choice"), policy)
    tools = body.get("tools")
    if tools is None:
        return body
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    kept = [entry for entry in (_screened(entry, f"tools[{index}]", policy) for index, entry in enumerate(tools))
            if entry is not None]
    if kept == tools:
        return body
    return with_tools(body, kept)


def _screened(entry: Any, where: str, policy: ProjectPolicy) -> Any:
    """`entry` as offered under the policy: itself, a namespace with fewer tools, or None."""
    _check_shape(entry, where)
    if entry.get("type") != NAMESPACE:
        return None if any(_is_blocked(name, policy) for name in tool_names(entry)) else entry
    nested = entry.get("tools")
    if not isinstance(nested, list):
        raise invalid_type(f"{where}.tools", "an array", nested)
    kept = [tool for tool in (_screened(tool, f"{where}.tools[{index}]", policy) for index, tool in enumerate(nested))
            if tool is not None]
    if not kept:
        return None
    return entry if kept == nested else {**entry, "tools": kept}


def _refuse_blocked_choice(choice: Any, policy: ProjectPolicy) -> None:
    """400 when `tool_choice` forces a blocked tool, or lists one among its `allowed_tools`."""
    if not isinstance(choice, dict):
        return  # "none", "auto", "required"
    entries: list[tuple[Any, str]] = [(choice, "tool_choice")]
    if choice.get("type") == "allowed_tools":
        listed = choice.get("tools")
        if not isinstance(listed, list):
            raise invalid_type("tool_choice.tools", "an array", listed)
        entries = [(entry, f"tool_choice.tools[{index}]") for index, entry in enumerate(listed)]
    for entry, where in entries:
        _check_shape(entry, where)
        for name in tool_names(entry):
            if _is_blocked(name, policy):
                raise BadRequest(f"{where} names {name!r}, which this project's policy blocks",
                                 param=where, code="tool_blocked")


def _check_shape(entry: Any, where: str) -> None:
    """400 naming the part of a tool entry that cannot be read: what cannot be read cannot be screened."""
    if not isinstance(entry, dict):
        raise invalid_type(where, "an object", entry)
    if not isinstance(entry.get("type"), str):
        raise invalid_type(f"{where}.type", "a string", entry.get("type"))
    if entry["type"] in _NAMED and not isinstance(entry.get("name"), str):
        raise invalid_type(f"{where}.name", "a string", entry.get("name"))


def _is_blocked(name: str, policy: ProjectPolicy) -> bool:
    return policy.blocked_tools.first_match(name) is not None


def call_of(item: dict[str, Any], declared: frozenset[str]) -> tuple[Any, Any, str]:
    """(call id, tool name, arguments as text) of an output item the client runs: a function's
    arguments, a custom tool's input, a built-in call's action (or patch operation) as JSON."""
    kind = item.get("type")
    if kind == "function_call":
        return item.get("call_id"), item.get("name"), _text(item.get("arguments"))
    if kind == "custom_tool_call":
        return item.get("call_id"), item.get("name"), _text(item.get("input"))
    name = _BUILT_IN_CALLS.get(str(kind), str(kind).removesuffix("_call"))
    if kind == "computer_call" and "computer" in declared:  # the tool's GA name
        name = "computer"
    action = item.get("operation", item.get("action"))
    return item.get("call_id"), name, json.dumps(action, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
