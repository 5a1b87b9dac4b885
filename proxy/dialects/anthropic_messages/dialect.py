"""Anthropic Messages (`POST /v1/messages`: the anthropic SDK, Claude Code) as a dialect of the
pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.anthropic_messages import messages_request, models
from proxy.dialects.anthropic_messages.assembly import completion_text, recorded_reply, usage_of
from proxy.dialects.anthropic_messages.gate import MessagesStreamGate, enforce_message
from proxy.dialects.anthropic_messages.relay import MessagesStreamRelay
from proxy.edge.errors import GatewayError, UpstreamError
from proxy.pipeline.context import ContextPack
from proxy.dialects.anthropic_messages.transcript import transcript
from proxy.pipeline.dialect import Turn, ClientRequest, UpstreamCall, Usage
from proxy.pipeline.tool_guard import Keepalive, ToolGuard

# Anthropic's error types by status; the provider's own type is kept where its status is.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 409: "invalid_request_error",
                413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
                503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


class AnthropicMessages:
    wire = messages_request.WIRE
    marker_header = "anthropic-version"  # every Anthropic client sends it: how a GET says who asks

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest:
        return messages_request.parse_messages_request(body, headers)

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        return messages_request.prepare_messages_call(request, pack, policy, client_api_key)

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        return messages_request.recorded_prompt(call)

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        if reply.get("type") != "message" or not isinstance(reply.get("content"), list):
            raise UpstreamError("upstream failed: the provider's answer is not a message",
                                status=502, code="upstream_unavailable")
        reply["model"] = call.model
        return reply

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        return await enforce_message(reply, guard, is_client_gone)

    def recorded_reply(self, reply: dict[str, Any]) -> Any:
        return recorded_reply(reply)

    def usage(self, reply: dict[str, Any]) -> Usage:
        return usage_of(reply.get("usage"))

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> MessagesStreamRelay:
        return MessagesStreamRelay(call.model, MessagesStreamGate(guard, keepalive, is_client_gone), self.error_body)

    def completion_text(self, recorded_reply: Any) -> str:
        return completion_text(recorded_reply)

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        return transcript(recorded_prompt, recorded_reply)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """`{"type": "error", "error": {"type", "message"}}`, as Anthropic answers: the
        provider's own body where it is in that shape (Claude Code shows its message and
        `request_id`), else ours."""
        provided = error.provider_body if isinstance(error, UpstreamError) else None
        if provided is not None and _is_error_body(provided):
            return provided
        kind = error.provider_type if isinstance(error, UpstreamError) and error.provider_type else \
            _ERROR_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}

    def model_list(self, names: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
        return models.model_page(names, query)

    def model_object(self, name: str) -> dict[str, Any]:
        return models.model_object(name)


def _is_error_body(body: dict[str, Any]) -> bool:
    inner = body.get("error")
    return (body.get("type") == "error" and isinstance(inner, dict)
            and isinstance(inner.get("type"), str) and isinstance(inner.get("message"), str))
