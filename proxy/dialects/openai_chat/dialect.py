"""OpenAI chat completions (`POST /v1/chat/completions`) as a dialect of the pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.openai_chat import chat_request, models
from proxy.dialects.openai_chat.assembly import completion_text
from proxy.dialects.openai_chat.gate import StreamToolGate, enforce_completion
from proxy.dialects.openai_chat.relay import ChatStreamRelay
from proxy.dialects.openai_usage import usage_of
from proxy.edge.errors import GatewayError, UpstreamError
from proxy.edge.wire import error_envelope
from proxy.pipeline.context import ContextPack
from proxy.dialects.openai_chat.transcript import transcript
from proxy.pipeline.dialect import Turn, ClientRequest, UpstreamCall, Usage
from proxy.pipeline.tool_guard import Keepalive, ToolGuard


class OpenAIChat:
    wire = chat_request.WIRE

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest:
        return chat_request.parse_chat_request(body)

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        return chat_request.prepare_chat_call(request, pack, policy, client_api_key)

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        return chat_request.recorded_prompt(call)

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        if not isinstance(reply.get("choices"), list):
            raise UpstreamError("upstream failed: the provider's answer is not a chat completion",
                                status=502, code="upstream_unavailable")
        reply["model"] = call.model
        return reply

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        return await enforce_completion(reply, guard, is_client_gone=is_client_gone)

    def recorded_reply(self, reply: dict[str, Any]) -> Any:
        """The assistant message; a list of them when the client asked for several choices."""
        messages = [choice.get("message") for choice in reply.get("choices", ())]
        return messages[0] if len(messages) == 1 else messages

    def usage(self, reply: dict[str, Any]) -> Usage:
        return usage_of(reply.get("usage"))

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> ChatStreamRelay:
        return ChatStreamRelay(call.model, StreamToolGate(guard, keepalive=keepalive, is_client_gone=is_client_gone))

    def completion_text(self, recorded_reply: Any) -> str:
        return completion_text(recorded_reply)

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        return transcript(recorded_prompt, recorded_reply)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error_envelope(error.message, error.kind, param=error.param, code=error.code)

    def model_list(self, names: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
        return models.model_list(names, query)

    def model_object(self, name: str) -> dict[str, Any]:
        return models.model_object(name)
