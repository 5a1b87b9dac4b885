"""The request side of an Anthropic Messages exchange (`POST /v1/messages`, as the anthropic SDK
and Claude Code send it): the body validated into the neutral request, and the call sent
upstream with the pack injected and the policy's tools screened."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.fields import model_and_messages
from proxy.edge.errors import BadRequest
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import ClientRequest, UpstreamCall

WIRE = "anthropic_messages"
PATH = "/v1/messages"
KEY_HEADER = ("x-api-key", "")
DEFAULT_VERSION = "2023-06-01"  # what the SDKs send; a provider refuses a call without one
# The client's headers the provider needs as they came: the API version and the betas the
# client opted into (a gateway that drops or rewrites `anthropic-beta` breaks Claude Code).
_FORWARDED = ("anthropic-version", "anthropic-beta")
# Claude Code's metadata.user_id holds the session: before 2.1 as `user_<hash>_account_<id>_session_<uuid>`,
# since as JSON text, `{"device_id": ..., "account_uuid": ..., "session_id": "<uuid>"}`.
_SESSION_IN_USER_ID = re.compile(r"_session_([0-9A-Za-z-]{8,})$")
_REMINDER = "<system-reminder>"


def parse_messages_request(body: Any, headers: Mapping[str, str]) -> ClientRequest:
    """Validate the fields the gateway relies on; everything else is the provider's to judge."""
    body, model, messages = model_and_messages(body)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{index}] must be an object with a string 'role'", param=f"messages.{index}")
        if not isinstance(message.get("content"), (str, list)):
            raise BadRequest(f"messages[{index}].content must be a string or an array of content blocks",
                             param=f"messages.{index}.content")
    system = body.get("system")
    if not isinstance(system, (str, list, type(None))):
        raise BadRequest("'system' must be a string or an array of text blocks", param="system")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    forwarded = {name: value for name in _FORWARDED if (value := headers.get(name))}
    forwarded.setdefault("anthropic-version", DEFAULT_VERSION)
    return ClientRequest(
        wire=WIRE, model=model, stream=stream, body=body,
        declared_tools=frozenset(t["name"] for t in tools or () if isinstance(t, dict) and isinstance(t.get("name"), str)),
        query=query_text(messages),
        session_hints=(_session_in(user_id),),
        conversation_start=(system, next((m.get("content") for m in messages if m.get("role") == "user"), None)),
        headers=forwarded,
    )


def _session_in(user_id: Any) -> Any:
    """The session id Claude Code puts in `metadata.user_id`, in either of its forms."""
    if not isinstance(user_id, str):
        return None
    if user_id.startswith("{"):
        try:
            fields = json.loads(user_id)
        except ValueError:
            return None
        return fields.get("session_id") if isinstance(fields, dict) else None
    found = _SESSION_IN_USER_ID.search(user_id)
    return found[1] if found else None


def prepare_messages_call(request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                          client_api_key: str | None) -> UpstreamCall:
    body = request.body
    if policy is not None:
        body = screen_tools(body, policy)
    if pack is not None:
        body = {**body, "messages": inject(body["messages"], pack)}
    return UpstreamCall(wire=WIRE, path=PATH, model=request.model, stream=request.stream, body=body,
                        client_api_key=client_api_key, headers=request.headers, key_header=KEY_HEADER)


def recorded_prompt(call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
    """The system prompt and the messages as sent, and the parameters beside them (tools too)."""
    params = {name: value for name, value in call.body.items() if name not in ("model", "messages", "system", "stream")}
    return {"system": call.body.get("system"), "messages": call.body["messages"]}, params


def screen_tools(body: dict[str, Any], policy: ProjectPolicy) -> dict[str, Any]:
    """The body with the tools the policy blocks taken out of `tools`, so the model is not
    offered them; a `tool_choice` forcing a blocked tool is a 400."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("name"), str) \
            and policy.blocked_tools.first_match(choice["name"]) is not None:
        raise BadRequest(f"tool_choice names {choice['name']!r}, which this project's policy blocks",
                         param="tool_choice", code="tool_blocked")
    tools = body.get("tools")
    if not tools:
        return body
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(f"tools[{index}] must be an object with a string 'name'", param=f"tools.{index}")
    kept = [tool for tool in tools if policy.blocked_tools.first_match(tool["name"]) is None]
    if len(kept) == len(tools):
        return body
    screened = {**body, "tools": kept}
    if not kept:
        del screened["tools"]
        if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            del screened["tool_choice"]
    return screened


def query_text(messages: list[dict[str, Any]]) -> str:
    """The person's own words: the text of the latest two user messages that have any, leaving
    out tool results and the `<system-reminder>` blocks Claude Code puts before the question."""
    found: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [
            block.get("text") for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)]
        words = " ".join(text for text in texts if text and not text.lstrip().startswith(_REMINDER))
        if words.strip():
            found.append(words)
            if len(found) == 2:
                break
    return " ".join(reversed(found))


def inject(messages: list[dict[str, Any]], pack: ContextPack) -> list[dict[str, Any]]:
    """The pack goes into the latest user message, after its tool results (which must come
    first) and before the rest: everything before that message is byte for byte what the
    client sent, so a provider's prompt cache of the conversation holds."""
    at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if at is None:
        return messages
    content = messages[at]["content"]
    block = {"type": "text", "text": pack.text}
    if isinstance(content, str):
        blocks: list[Any] = [block, {"type": "text", "text": content}]
    else:
        results = 0
        while results < len(content) and isinstance(content[results], dict) \
                and content[results].get("type") == "tool_result":
            results += 1
        blocks = [*content[:results], block, *content[results:]]
    return [*messages[:at], {**messages[at], "content": blocks}, *messages[at + 1:]]
