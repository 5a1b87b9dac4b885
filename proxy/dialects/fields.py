"""The checks every dialect makes of a body before reading it: a JSON object, a model named,
and for the conversational ones, messages given."""

from __future__ import annotations

from typing import Any

from proxy.edge.errors import BadRequest


def body_and_model(body: Any) -> tuple[dict[str, Any], str]:
    """The body as an object and its `model`; BadRequest naming what is missing or of the wrong type."""
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}", code="invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    return body, model


def text_or_tokens(body: dict[str, Any], field: str) -> Any:
    """`body[field]`, which OpenAI's embeddings (`input`) and legacy completions (`prompt`) take
    as a string, strings, token ids, or arrays of token ids; BadRequest naming it otherwise."""
    value = body.get(field)
    if not _is_text_or_tokens(value):
        raise BadRequest(f"'{field}' is required: a string, an array of strings, an array of token ids, "
                         "or an array of such arrays, not empty", param=field)
    return value


def _is_text_or_tokens(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) for item in value) or all(type(item) is int for item in value):
        return True
    return all(isinstance(item, list) and item and all(type(token) is int for token in item) for item in value)


def model_and_messages(body: Any) -> tuple[dict[str, Any], str, list[Any]]:
    """The body as an object, its `model` and its `messages`; BadRequest naming the field
    that is missing or of the wrong type."""
    body, model = body_and_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", param="messages")
    return body, model, messages


def with_tools(body: dict[str, Any], kept: list[Any]) -> dict[str, Any]:
    """The body offering only the `kept` tools (OpenAI's chat and Responses APIs); with none
    left, without `tools` and the choices about them: an empty list is an error at most providers."""
    screened = {**body, "tools": kept}
    if not kept:
        del screened["tools"]
        screened.pop("tool_choice", None)
        screened.pop("parallel_tool_calls", None)
    return screened


def invalid_type(where: str, expected: str, got: Any) -> BadRequest:
    """In the words and code OpenAI itself answers a mistyped field with."""
    return BadRequest(f"Invalid type for '{where}': expected {expected}, but got {_json_type(got)} instead.",
                      param=where, code="invalid_type")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
