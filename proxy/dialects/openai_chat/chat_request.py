"""The request side of a chat exchange: the client's body, validated, and the call sent upstream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.edge.errors import BadRequest

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated `POST /v1/chat/completions` body. `params` is everything but model,
    messages and stream, passed upstream exactly as the client sent it."""

    model: str
    messages: list[Message]
    stream: bool
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What goes to the provider: the messages as finally sent (context included) and the
    client's parameters. `model` is the client's name for it; the seam resolves the route."""

    model: str
    messages: list[Message]
    stream: bool
    params: dict[str, Any]
    client_api_key: str | None = field(default=None, repr=False)


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate the fields the gateway relies on; everything else is the provider's to judge."""
    if not isinstance(body, dict):
        raise BadRequest(
            f"request body must be a JSON object, got {type(body).__name__}", code="invalid_body"
        )
    params = dict(body)
    model = params.pop("model", None)
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    messages = params.pop("messages", None)
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}] must be an object", param=f"messages[{index}]")
        if not isinstance(message.get("role"), str):
            raise BadRequest(
                f"messages[{index}].role is required and must be a string",
                param=f"messages[{index}].role",
            )
    stream = params.pop("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    # litellm reads it while relaying a stream, so a wrong type would fail mid-way as a 502.
    if not isinstance(params.get("stream_options", {}), (dict, type(None))):
        raise BadRequest("'stream_options' must be an object", param="stream_options")
    return ChatRequest(model=model, messages=messages, stream=stream, params=params)
