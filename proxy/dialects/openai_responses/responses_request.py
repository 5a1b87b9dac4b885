"""The request side of a Responses API exchange (`POST /v1/responses`: the openai SDK's
`responses.create`, the agents SDK, Codex): the body validated into the neutral request, and
the call sent upstream with the pack injected and the policy's tools screened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from capture.records import Interaction
from policy.rules import ProjectPolicy
from proxy.dialects.fields import body_and_model, invalid_type
from proxy.dialects.openai_responses.tools import declared_tool_names, screen_tools
from proxy.edge.errors import BadRequest
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import ClientRequest, Continuation, UpstreamCall

WIRE = "openai_responses"
PATH = "/responses"
# Codex's own notes in user messages (its environment, the repository's AGENTS.md): not what
# the person asked, so not what the pack is searched with.
_AGENT_NOTES = ("<environment_context>", "<user_instructions>", "# AGENTS.md instructions")
_TEXT_PARTS = ("input_text", "output_text", "text")


def parse_responses_request(body: Any, headers: Mapping[str, str]) -> ClientRequest:
    """Validate the fields the gateway relies on; everything else is the provider's to judge."""
    body, model = body_and_model(body)
    given = body.get("input")
    if not isinstance(given, (str, list)):
        raise BadRequest("'input' is required: a string or an array of input items", param="input")
    for index, item in enumerate(given if isinstance(given, list) else ()):
        if not isinstance(item, dict):
            raise invalid_type(f"input[{index}]", "an object", item)
        if _is_message(item) and not isinstance(item.get("content"), (str, list)):
            raise BadRequest(f"input[{index}].content must be a string or an array of content parts",
                             param=f"input[{index}].content")
    instructions = body.get("instructions")
    if not isinstance(instructions, (str, type(None))):
        raise invalid_type("instructions", "a string", instructions)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    tools = body.get("tools")
    if not isinstance(tools, (list, type(None))):
        raise invalid_type("tools", "an array", tools)
    items = _items(given)
    messages = [item for item in items if _is_message(item)]
    metadata = body.get("client_metadata")
    previous = body.get("previous_response_id")
    if not isinstance(previous, (str, type(None))):
        raise invalid_type("previous_response_id", "a string", previous)
    return ClientRequest(
        wire=WIRE, model=model, stream=stream, body=body,
        declared_tools=declared_tool_names(body),
        query=query_text(messages),
        session_hints=(metadata.get("session_id") if isinstance(metadata, dict) else None, body.get("prompt_cache_key")),
        conversation_start=(
            instructions or next((m.get("content") for m in messages if m.get("role") in ("system", "developer")), None),
            next((m.get("content") for m in messages if m.get("role") == "user"), None),
        ),
        continues=Continuation(previous, with_earlier_turns) if previous else None,
    )


def with_earlier_turns(call: UpstreamCall, earlier: Interaction) -> UpstreamCall:
    """`call` with the input and output of the `earlier` exchange it goes on from ahead of its
    own input, the earlier pack left out; 400 for a response the client asked not to keep."""
    if isinstance(earlier.params, dict) and earlier.params.get("store") is False:
        raise BadRequest("previous_response_id names a response made with store: false, which is not kept "
                         "to go on from", param="previous_response_id", code="previous_response_not_found")
    output = earlier.response.get("output") if isinstance(earlier.response, dict) else None
    body = {name: value for name, value in call.body.items() if name != "previous_response_id"}
    body["input"] = [*earlier_items(earlier), *(output if isinstance(output, list) else ()), *_items(call.body["input"])]
    return replace(call, body=body)


def earlier_items(record: Interaction) -> list[Any]:
    """The input items a recorded exchange sent, as the client sent them: its pack left out."""
    given = record.prompt.get("input") if isinstance(record.prompt, dict) else None
    return [_without_pack(item, record.context_pack) for item in _items(given if isinstance(given, (str, list)) else [])]


def _without_pack(item: Any, pack: str | None) -> Any:
    if pack is None or not _is_message(item) or not isinstance(item.get("content"), list):
        return item
    return {**item, "content": [part for part in item["content"] if not (isinstance(part, dict) and part.get("text") == pack)]}


def prepare_responses_call(request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                           client_api_key: str | None) -> UpstreamCall:
    body = request.body
    if policy is not None:
        body = screen_tools(body, policy)
    if pack is not None:
        body = {**body, "input": inject(_items(body["input"]), pack)}
    return UpstreamCall(wire=WIRE, path=PATH, model=request.model, stream=request.stream, body=body,
                        client_api_key=client_api_key)


def recorded_prompt(call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
    """The instructions and the input items as sent, and the parameters beside them."""
    params = {name: value for name, value in call.body.items() if name not in ("model", "input", "instructions", "stream")}
    return {"instructions": call.body.get("instructions"), "input": call.body["input"]}, params


def query_text(messages: list[dict[str, Any]]) -> str:
    """The person's own words: the text of the latest two user messages that have any,
    leaving out an agent's notes about its environment."""
    found: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        words = " ".join(text for text in _texts(message.get("content")) if not text.lstrip().startswith(_AGENT_NOTES))
        if words.strip():
            found.append(words)
            if len(found) == 2:
                break
    return " ".join(reversed(found))


def inject(items: list[Any], pack: ContextPack) -> list[Any]:
    """The pack goes at the head of the latest user message: every item before it (Codex's
    developer messages, the earlier turns) is byte for byte what the client sent, so a
    provider's prompt cache of the conversation holds. Without a user message, after the
    leading system and developer messages."""
    part = {"type": "input_text", "text": pack.text}
    at = next((i for i in range(len(items) - 1, -1, -1) if _is_message(items[i]) and items[i].get("role") == "user"),
              None)
    if at is None:
        lead = 0
        while lead < len(items) and _is_message(items[lead]) and items[lead].get("role") in ("system", "developer"):
            lead += 1
        return [*items[:lead], {"type": "message", "role": "user", "content": [part]}, *items[lead:]]
    content = items[at]["content"]
    parts = [part, {"type": "input_text", "text": content}] if isinstance(content, str) else [part, *content]
    return [*items[:at], {**items[at], "content": parts}, *items[at + 1:]]


def _items(given: Any) -> list[Any]:
    """`input` as items: a string is one user message."""
    return [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given


def _is_message(item: Any) -> bool:
    """A message item: typed `message`, or the short form with a role and no type."""
    return isinstance(item, dict) and (item.get("type") == "message" or ("type" not in item and "role" in item))


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if isinstance(part, dict) and part.get("type") in _TEXT_PARTS
            and isinstance(part.get("text"), str)] if isinstance(content, list) else []
