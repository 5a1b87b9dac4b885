"""The Responses API (`POST /v1/responses`: the openai SDK's `responses.create`, the agents
SDK's default model, Codex) as a dialect of the pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policy.rules import ProjectPolicy
from capture.records import Interaction
from proxy.dialects.openai_responses import responses_request, stored
from proxy.dialects.openai_responses.assembly import completion_text, recorded_reply, usage_of
from proxy.dialects.openai_responses.gate import ResponsesStreamGate, enforce_response
from proxy.dialects.openai_responses.relay import ResponsesStreamRelay
from proxy.edge.errors import GatewayError, UpstreamError
from proxy.edge.wire import error_envelope
from proxy.pipeline.context import ContextPack
from proxy.dialects.openai_responses.transcript import transcript
from proxy.pipeline.dialect import Turn, ClientRequest, UpstreamCall, Usage
from proxy.pipeline.tool_guard import Keepalive, ToolGuard


class OpenAIResponses:
    wire = responses_request.WIRE

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest:
        return responses_request.parse_responses_request(body, headers)

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        return responses_request.prepare_responses_call(request, pack, policy, client_api_key)

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        return responses_request.recorded_prompt(call)

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        if reply.get("object") != "response" or not isinstance(reply.get("output"), list):
            raise UpstreamError("upstream failed: the provider's answer is not a response",
                                status=502, code="upstream_unavailable")
        reply["model"] = call.model
        return reply

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        return await enforce_response(reply, guard, is_client_gone)

    def recorded_reply(self, reply: dict[str, Any]) -> Any:
        return recorded_reply(reply)

    def usage(self, reply: dict[str, Any]) -> Usage:
        return usage_of(reply.get("usage"))

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> ResponsesStreamRelay:
        return ResponsesStreamRelay(call.model, ResponsesStreamGate(guard, keepalive, is_client_gone))

    def completion_text(self, recorded_reply: Any) -> str:
        return completion_text(recorded_reply)

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        return transcript(recorded_prompt, recorded_reply)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error_envelope(error.message, error.kind, param=error.param, code=error.code)

    def is_kept(self, record: Interaction) -> bool:
        return stored.is_kept(record)

    def stored_response(self, record: Interaction) -> dict[str, Any]:
        return stored.stored_response(record)

    def input_items(self, record: Interaction, order: str, limit: int, after: str | None) -> dict[str, Any]:
        return stored.input_items(record, order, limit, after)
