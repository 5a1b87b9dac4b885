"""The request side of an OpenAI chat exchange: the client's body validated into the neutral
request, and the call sent upstream with the pack injected and the policy's tools screened."""

from __future__ import annotations

from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.openai_chat.screening import declared_tool_names, screen_request
from proxy.dialects.fields import model_and_messages
from proxy.edge.errors import BadRequest
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import ClientRequest, UpstreamCall

WIRE = "openai_chat"
Message = dict[str, Any]


def parse_chat_request(body: Any) -> ClientRequest:
    """Validate the fields the gateway relies on; everything else is the provider's to judge."""
    body, model, messages = model_and_messages(body)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}] must be an object", param=f"messages[{index}]")
        if not isinstance(message.get("role"), str):
            raise BadRequest(
                f"messages[{index}].role is required and must be a string",
                param=f"messages[{index}].role",
            )
        if not isinstance(message.get("content"), (str, list, type(None))):
            raise BadRequest(f"messages[{index}].content must be a string, an array of content parts or null",
                             param=f"messages[{index}].content", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    # litellm reads it while relaying a stream, so a wrong type would fail mid-way as a 502.
    if not isinstance(body.get("stream_options", {}), (dict, type(None))):
        raise BadRequest("'stream_options' must be an object", param="stream_options")
    metadata = body.get("metadata")
    return ClientRequest(
        wire=WIRE, model=model, stream=stream, body=body,
        declared_tools=declared_tool_names(body),
        query=query_text(messages),
        session_hints=(metadata.get("session_id") if isinstance(metadata, dict) else None,
                       body.get("litellm_session_id"), body.get("session_id")),
        conversation_start=(
            next((m.get("content") for m in messages if m.get("role") in ("system", "developer")), None),
            next((m.get("content") for m in messages if m.get("role") == "user"), None),
        ),
    )


def prepare_chat_call(request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                      client_api_key: str | None) -> UpstreamCall:
    """The client's body with the pack injected into its messages and, with a policy, the
    tools it blocks taken out of `tools`."""
    body = request.body
    if policy is not None:
        body = screen_request(body, policy)
    if pack is not None:
        body = {**body, "messages": inject(body["messages"], pack)}
    return UpstreamCall(wire=WIRE, path="/chat/completions", model=request.model, stream=request.stream, body=body,
                        client_api_key=client_api_key)


def recorded_prompt(call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
    """The messages as sent, and the parameters beside them."""
    params = {name: value for name, value in call.body.items() if name not in ("model", "messages", "stream")}
    return call.body["messages"], params


def query_text(messages: list[Message]) -> str:
    """The latest user turn, and the one before it for a little context."""
    turns = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return " ".join(turns[-2:])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text ones count
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def inject(messages: list[Message], pack: ContextPack) -> list[Message]:
    """The pack goes at the head of the latest user (or tool) message: everything before that
    message is byte for byte what the client sent, so turn N+1 shares with turn N everything up
    to turn N's latest message, and a provider's prompt cache of the conversation still holds
    although the pack changes every turn. (Right after the system prompt, a new pack each turn
    made every later message a cache miss.)"""
    at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") in ("user", "tool")), None)
    if at is None:
        return messages
    content = messages[at].get("content")
    if isinstance(content, str):
        content = f"{pack.text}\n\n{content}"
    elif isinstance(content, list):
        content = [{"type": "text", "text": pack.text}, *content]
    else:  # null: parsing let nothing else through
        content = pack.text
    return [*messages[:at], {**messages[at], "content": content}, *messages[at + 1:]]
