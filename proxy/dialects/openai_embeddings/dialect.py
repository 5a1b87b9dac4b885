"""OpenAI embeddings (`POST /v1/embeddings`: the openai SDK, litellm, LangChain, `llm`) as a
dialect of the pipeline: no context pack (the input is what gets embedded, not a question),
no tools, never streamed. The record keeps the input and the usage, not the vectors: each
embedding is recorded as its dimensions."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from policy.rules import ProjectPolicy
from proxy.dialects.fields import body_and_model, text_or_tokens
from proxy.dialects.openai_usage import usage_of
from proxy.edge.errors import BadRequest, GatewayError, UpstreamError
from proxy.edge.wire import error_envelope
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import Turn, text_of_any, ClientRequest, StreamRelay, UpstreamCall, Usage
from proxy.pipeline.tool_guard import Keepalive, ToolGuard

WIRE = "openai_embeddings"
PATH = "/embeddings"


class OpenAIEmbeddings:
    wire = WIRE

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest:
        body, model = body_and_model(body)
        text_or_tokens(body, "input")
        if body.get("stream"):
            raise BadRequest("embeddings are not streamed", param="stream")
        return ClientRequest(wire=WIRE, model=model, stream=False, body=body, declared_tools=frozenset(), query="")

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        return UpstreamCall(wire=WIRE, path=PATH, model=request.model, stream=False, body=request.body,
                            client_api_key=client_api_key)

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        return call.body["input"], {k: v for k, v in call.body.items() if k not in ("model", "input")}

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        if not isinstance(reply.get("data"), list):
            raise UpstreamError("upstream failed: the provider's answer is not a list of embeddings",
                                status=502, code="upstream_unavailable")
        reply["model"] = call.model
        return reply

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        return reply  # an embedding calls no tools

    def recorded_reply(self, reply: dict[str, Any]) -> Any:
        return {"object": "list", "data": [
            {"index": item.get("index"), "dimensions": _dimensions(item.get("embedding"))}
            for item in reply["data"] if isinstance(item, dict)]}

    def usage(self, reply: dict[str, Any]) -> Usage:
        usage = usage_of(reply.get("usage"))
        return Usage(usage.prompt_tokens, 0) if usage.prompt_tokens is not None else usage

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> StreamRelay:
        raise AssertionError("parse refuses a streamed embeddings call")

    def completion_text(self, recorded_reply: Any) -> str:
        return ""

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        return [Turn("user", text_of_any(recorded_prompt))] if recorded_prompt else []

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error_envelope(error.message, error.kind, param=error.param, code=error.code)


def _dimensions(embedding: Any) -> int | None:
    """A vector's length; of a base64 one (`encoding_format: base64`, the openai SDK's default),
    its float32 count."""
    if isinstance(embedding, list):
        return len(embedding)
    if isinstance(embedding, str):
        try:
            return len(base64.b64decode(embedding, validate=True)) // 4
        except (binascii.Error, ValueError):
            return None
    return None
