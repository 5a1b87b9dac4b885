"""What the gateway offers upstream under a policy: blocked tools in every shape the API
accepts are taken out, and a request whose tools cannot be read is a 400, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from policy.rules import parse_policy
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, Gateway, make_gateway

POLICY = {"default": {"mode": "deny", "allowed_tools": ["file_read"], "blocked_tools": ["atmos_terraform_*"]}}
PARAMETERS = {"type": "object", "properties": {}}


def nested(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": PARAMETERS}}


def custom(name: str) -> dict[str, Any]:
    return {"type": "custom", "custom": {"name": name}}


def flat(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": PARAMETERS}


SHAPES = {"nested": nested, "custom": custom, "flat": flat}


@pytest.fixture
async def guarded(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    return await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY))


async def create(gateway: Gateway, tools: Any, **options: Any) -> Any:
    return await gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "do it"}], tools=tools, **options)


def offered_names(gateway: Gateway) -> list[list[str]]:
    """Each tool sent upstream, as the names it gives in whichever shape it came."""
    tools = gateway.upstream.received[-1].body.get("tools") or []
    return [[holder["name"] for holder in (t, t.get("function"), t.get("custom")) if isinstance(holder, dict) and "name" in holder]
            for t in tools]


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_blocked_tool_is_not_offered_upstream_in_any_shape(guarded: Gateway, shape: str) -> None:
    make = SHAPES[shape]
    await create(guarded, [make("file_read"), make("atmos_terraform_destroy"), make("notes")])
    assert offered_names(guarded) == [["file_read"], ["notes"]]
    assert guarded.upstream.received[-1].body["tools"][0] == make("file_read")  # the shape kept as sent


async def test_a_tool_giving_two_names_is_not_offered_when_either_is_blocked(guarded: Gateway) -> None:
    two_faced = {**nested("file_read"), "name": "atmos_terraform_destroy"}
    await create(guarded, [two_faced, flat("notes")])
    assert offered_names(guarded) == [["notes"]]


async def test_when_every_tool_is_blocked_no_tools_are_sent(guarded: Gateway) -> None:
    await create(guarded, [custom("atmos_terraform_apply"), flat("atmos_terraform_destroy")], tool_choice="required")
    assert "tools" not in guarded.upstream.received[-1].body
    assert "tool_choice" not in guarded.upstream.received[-1].body


@pytest.mark.parametrize("choice", [
    {"type": "function", "function": {"name": "atmos_terraform_destroy"}},
    {"type": "custom", "custom": {"name": "atmos_terraform_destroy"}},
    {"type": "function", "name": "atmos_terraform_destroy"},
    {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [nested("file_read"), custom("atmos_terraform_destroy")]}},
    {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "atmos_terraform_destroy"}]},
])
async def test_tool_choice_naming_a_blocked_tool_in_any_shape_is_400(guarded: Gateway, choice: dict[str, Any]) -> None:
    tools = [nested("file_read"), custom("atmos_terraform_destroy")]
    with pytest.raises(openai.BadRequestError) as caught:
        await create(guarded, tools, tool_choice=choice)
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "tool_blocked"  # type: ignore[index]
    assert "atmos_terraform_destroy" in caught.value.message
    assert guarded.upstream.received == []


@pytest.mark.parametrize(("tools", "choice", "param"), [
    ([{"type": "function", "function": "file_read"}], None, "tools[0].function"),
    ([nested("file_read"), {"type": "function", "function": ["atmos_terraform_destroy"]}], None, "tools[1].function"),
    ([{"type": "custom", "custom": "atmos_terraform_destroy"}], None, "tools[0].custom"),
    ([{"type": "function", "function": {"name": 7}}], None, "tools[0].function.name"),
    ([{"type": "function", "name": ["atmos_terraform_destroy"]}], None, "tools[0].name"),
    (["atmos_terraform_destroy"], None, "tools[0]"),
    ({"type": "function", "function": {"name": "file_read"}}, None, "tools"),
    ([nested("file_read")], {"type": "function", "function": "atmos_terraform_destroy"}, "tool_choice.function"),
    ([nested("file_read")], {"type": "allowed_tools", "allowed_tools": ["file_read"]}, "tool_choice.allowed_tools"),
    ([nested("file_read")], {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": 1}]}},
     "tool_choice.allowed_tools.tools[0].function"),
])
async def test_tools_that_cannot_be_read_are_a_400_naming_the_field(
    guarded: Gateway, tools: Any, choice: Any, param: str
) -> None:
    options = {} if choice is None else {"tool_choice": choice}
    with pytest.raises(openai.BadRequestError) as caught:
        await create(guarded, tools, **options)
    assert caught.value.status_code == 400
    assert caught.value.body == {  # the OpenAI error shape, with the field named
        "message": caught.value.body["message"], "type": "invalid_request_error", "param": param,  # type: ignore[index]
        "code": "invalid_type",
    }
    assert f"'{param}'" in caught.value.message
    assert guarded.upstream.received == []


@pytest.mark.parametrize("shape", ["custom", "flat"])
async def test_a_call_to_a_tool_declared_in_another_shape_is_not_undeclared(guarded: Gateway, shape: str) -> None:
    guarded.upstream.push(Reply(tool_calls=(ToolCall("file_read", '{"path": "README.md"}', id="c1"),)))
    completion = await create(guarded, [SHAPES[shape]("file_read")])
    [call] = completion.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("file_read", '{"path": "README.md"}')
    [stored] = await guarded.recorded()
    assert (stored.tool_decisions[0]["action"], stored.tool_decisions[0]["rule"]) == ("allow", "allowed_tools[0]")


async def test_without_a_policy_unreadable_tools_go_upstream_as_sent(gateway: Gateway) -> None:
    tools = [{"type": "function", "function": "file_read"}, {"type": "custom", "custom": {"name": 7}}, flat("notes")]
    completion = await create(gateway, tools)
    assert completion.choices[0].finish_reason == "stop"
    assert gateway.upstream.received[-1].body["tools"] == tools  # not the gateway's to judge
