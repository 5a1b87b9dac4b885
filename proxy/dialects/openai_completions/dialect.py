"""OpenAI's legacy completions (`POST /v1/completions`: the openai SDK's `completions.create`,
`llm`'s completion models, code-completion clients) as a dialect of the pipeline. No context
pack: a raw prompt is the client's own format (a template, a fill-in-the-middle prefix) and a
block put into it would change what it asks. No tools to decide."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from capture.writable import writable
from policy.rules import ProjectPolicy
from proxy.dialects.fields import body_and_model, text_or_tokens
from proxy.dialects.model_stamp import ModelStamp
from proxy.dialects.openai_usage import usage_of
from proxy.edge.errors import BadRequest, GatewayError, UpstreamError
from proxy.edge.wire import SSE_DONE, error_envelope, sse_frame
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import Turn, text_of_any, ClientRequest, StreamEvent, UpstreamCall, Usage
from proxy.pipeline.tool_guard import Keepalive, ToolGuard

WIRE = "openai_completions"
PATH = "/completions"


class OpenAICompletions:
    wire = WIRE

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest:
        body, model = body_and_model(body)
        text_or_tokens(body, "prompt")
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        if not isinstance(body.get("stream_options", {}), (dict, type(None))):
            raise BadRequest("'stream_options' must be an object", param="stream_options")
        return ClientRequest(wire=WIRE, model=model, stream=stream, body=body, declared_tools=frozenset(), query="")

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        return UpstreamCall(wire=WIRE, path=PATH, model=request.model, stream=request.stream, body=request.body,
                            client_api_key=client_api_key)

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        return call.body["prompt"], {k: v for k, v in call.body.items() if k not in ("model", "prompt", "stream")}

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        if not isinstance(reply.get("choices"), list):
            raise UpstreamError("upstream failed: the provider's answer is not a text completion",
                                status=502, code="upstream_unavailable")
        reply["model"] = call.model
        return reply

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        return reply  # a text completion calls no tools

    def recorded_reply(self, reply: dict[str, Any]) -> Any:
        return {"choices": [{"index": c.get("index"), "text": c.get("text"), "finish_reason": c.get("finish_reason")}
                            for c in reply["choices"] if isinstance(c, dict)]}

    def usage(self, reply: dict[str, Any]) -> Usage:
        return usage_of(reply.get("usage"))

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> CompletionStreamRelay:
        return CompletionStreamRelay(call.model)

    def completion_text(self, recorded_reply: Any) -> str:
        choices = recorded_reply.get("choices") if isinstance(recorded_reply, dict) else None
        return "".join(c["text"] for c in choices or () if isinstance(c, dict) and isinstance(c.get("text"), str))

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        turns = [Turn("user", text_of_any(recorded_prompt))] if recorded_prompt else []
        text = self.completion_text(recorded_reply)
        return [*turns, Turn("assistant", text)] if text else turns

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error_envelope(error.message, error.kind, param=error.param, code=error.code)


class CompletionStreamRelay:
    """Every chunk relayed as the provider's bytes where it can be (the client's model name
    stamped in); each choice's text assembled for the record, with the usage chunk's counts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._stamp = ModelStamp(model)
        self._sent: list[dict[str, Any]] = []
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, Any] = {}
        self._usage: Any = None

    async def feed(self, events: list[StreamEvent]) -> bytes:
        frames: list[bytes] = []
        for event in events:
            frame = self._stamp.restamped(event.raw, event.data.get("model")) if event.raw is not None else None
            if frame is not None:
                frames += (frame, b"\n\n")
                self._sent.append(event.data)
            else:
                chunk = writable(event.data)
                chunk["model"] = self.model
                frames.append(sse_frame(chunk))
                self._sent.append(chunk)
        return b"".join(frames)

    async def finish(self) -> bytes:
        """`[DONE]`; UpstreamError when no choice was finished: the provider cut the stream
        (every chunk relayed is committed by now: the pipeline commits after each write)."""
        if not self._finish:
            raise UpstreamError("the provider's stream ended before its answer was finished", status=502,
                                code="upstream_stream_cut")
        return SSE_DONE

    def commit(self) -> None:
        for chunk in self._sent:
            if isinstance(chunk.get("usage"), dict):
                self._usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                given = choice.get("index")
                index = given if isinstance(given, int) else 0
                if isinstance(choice.get("text"), str):
                    self._texts.setdefault(index, []).append(choice["text"])
                if choice.get("finish_reason"):
                    self._finish[index] = choice["finish_reason"]
        self._sent.clear()

    def error_frame(self, error: GatewayError) -> bytes:
        return sse_frame(error_envelope(error.message, error.kind, code=error.code))

    def reply(self) -> Any:
        indexes = sorted(set(self._texts) | set(self._finish))
        return {"choices": [{"index": i, "text": "".join(self._texts.get(i, ())), "finish_reason": self._finish.get(i)}
                            for i in indexes]}

    def usage(self) -> Usage:
        return usage_of(self._usage)
