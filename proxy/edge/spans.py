"""An exchange as OpenTelemetry spans, after the GenAI semantic conventions: one span for the
call (`chat gpt-4o`), a `retrieval` child for its context pack (the memory and chunk ids with
their scores in `gen_ai.retrieval.documents`), and a child for each tool decision. A client's
W3C `traceparent` makes the call span its child.

Content (the conversation, the pack's query, tool arguments) is put on spans only when the
telemetry config says so, and then scrubbed of secrets like everything that leaves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from proxy.edge.redaction import Redactor
from proxy.pipeline.dialect import Dialect, Turn
from proxy.pipeline.exchange import Exchange, Outcome

# The operation each dialect's calls are, in the conventions' names.
OPERATIONS = {"openai_chat": "chat", "anthropic_messages": "chat", "openai_responses": "chat",
              "openai_completions": "text_completion", "openai_embeddings": "embeddings"}
# litellm's provider names where the conventions name the provider otherwise.
PROVIDERS = {"azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
             "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini", "mistral": "mistral_ai", "xai": "x_ai",
             "watsonx": "ibm.watsonx.ai"}
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class Parent:
    trace_id: bytes
    span_id: bytes
    is_sampled: bool


def parse_traceparent(value: str | None) -> Parent | None:
    """The client's span, from a W3C `traceparent` (version 00); None when absent or invalid."""
    match = _TRACEPARENT.match(value.strip().lower()) if value else None
    if match is None or match[1] == _INVALID_TRACE or match[2] == _INVALID_SPAN:
        return None
    return Parent(bytes.fromhex(match[1]), bytes.fromhex(match[2]), bool(int(match[3], 16) & 1))


@dataclass(frozen=True, slots=True)
class Finished:
    """An exchange at its end, as queued for export: the times are Unix nanoseconds."""

    exchange: Exchange
    parent: Parent | None
    start_ns: int
    end_ns: int
    http_status: int
    provider: str | None

    def at(self, perf_ns: int) -> int:
        """A `perf_counter_ns` moment of the exchange in Unix nanoseconds."""
        return self.start_ns + (perf_ns - self.exchange.started_ns)


class SpanBuilder:
    def __init__(self, dialects: Mapping[str, Dialect], redactor: Redactor, *, capture_content: bool,
                 new_id: Callable[[int], bytes] = os.urandom) -> None:
        self.dialects = dialects
        self.redactor = redactor
        self.capture_content = capture_content
        self.new_id = new_id

    def spans(self, finished: Finished) -> list[Span]:
        exchange = finished.exchange
        trace_id = finished.parent.trace_id if finished.parent else self.new_id(16)
        call = self._call_span(finished, trace_id)
        spans = [call]
        if exchange.pack is not None and exchange.pack_ns is not None:
            spans.append(self._retrieval_span(finished, trace_id, call.span_id))
        for decision in exchange.tool_decisions:
            started = finished.at(decision.started_ns) if decision.started_ns else finished.start_ns
            attributes = {
                "gen_ai.tool.name": decision.tool, "gen_ai.tool.call.id": decision.call_id,
                "ctxgate.tool.action": "allow" if decision.is_allowed else "deny",
                "ctxgate.tool.policy_action": decision.policy_action, "ctxgate.tool.rule": decision.rule,
                "ctxgate.tool.decided_by": decision.decided_by, "ctxgate.approval.id": decision.approval_id,
                "ctxgate.approval.wait_ms": decision.wait_ms if decision.approval_id else None,
            }
            if self.capture_content:
                attributes["gen_ai.tool.call.arguments"] = self.redactor.scrub(decision.arguments)
            spans.append(self._span(trace_id, call.span_id, f"tool_decision {decision.tool}", Span.SPAN_KIND_INTERNAL,
                                    started, started + int(decision.wait_ms * 1e6), attributes))
        return spans

    def _call_span(self, finished: Finished, trace_id: bytes) -> Span:
        exchange = finished.exchange
        operation = OPERATIONS.get(exchange.wire, exchange.wire)
        model = exchange.request.model if exchange.request else None
        identity, usage = exchange.identity, exchange.usage
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDERS.get(finished.provider or "", finished.provider),
            "gen_ai.request.model": model,
            "gen_ai.conversation.id": identity.session_id if identity else None,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_tokens,
            "http.response.status_code": finished.http_status,
            "ctxgate.interaction.id": exchange.id,
            "ctxgate.project": identity.project if identity else None,
            "ctxgate.client": identity.client if identity else None,
            "ctxgate.wire": exchange.wire,
            "ctxgate.transport": exchange.transport,
            "ctxgate.stream": exchange.request.stream if exchange.request else None,
            "ctxgate.outcome": str(exchange.outcome) if exchange.outcome else None,
            "ctxgate.ttft_ms": exchange.ttft_ms,
        }
        is_failed = exchange.outcome not in (Outcome.OK, None) or finished.http_status >= 500
        if is_failed:
            attributes["error.type"] = str(exchange.outcome or finished.http_status)
        if self.capture_content:
            attributes.update(self._messages(exchange))
        span = self._span(trace_id, finished.parent.span_id if finished.parent else b"",
                          f"{operation} {model}" if model else operation, Span.SPAN_KIND_CLIENT,
                          finished.start_ns, finished.end_ns, attributes)
        if is_failed:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = self.redactor.scrub(exchange.error or "")
        return span

    def _retrieval_span(self, finished: Finished, trace_id: bytes, parent_id: bytes) -> Span:
        exchange = finished.exchange
        pack, (started, ended) = exchange.pack, exchange.pack_ns or (0, 0)
        assert pack is not None
        documents = [{"id": item.id, "score": item.score, "kind": kind}
                     for kind, items in (("memory", pack.memories), ("chunk", pack.chunks)) for item in items]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": f"ctxgate:{pack.project}",
            "gen_ai.retrieval.documents": documents,
        }
        if self.capture_content and exchange.request is not None:
            attributes["gen_ai.retrieval.query.text"] = self.redactor.scrub(exchange.request.query)
        return self._span(trace_id, parent_id, "retrieval", Span.SPAN_KIND_INTERNAL, finished.at(started),
                          finished.at(ended), attributes)

    def _messages(self, exchange: Exchange) -> dict[str, Any]:
        dialect = self.dialects.get(exchange.wire)
        if dialect is None:
            return {}
        asked = dialect.transcript(exchange.prompt)
        answered = dialect.transcript(exchange.prompt, exchange.response)[len(asked):]
        return {"gen_ai.input.messages": self._as_messages(asked),
                "gen_ai.output.messages": self._as_messages(answered)}

    def _as_messages(self, turns: list[Turn]) -> list[dict[str, Any]]:
        return [{"role": turn.role, "parts": [{"type": "text", "content": self.redactor.scrub(turn.text)}]}
                for turn in turns]

    def _span(self, trace_id: bytes, parent_id: bytes, name: str, kind: Any, start_ns: int, end_ns: int,
              attributes: Mapping[str, Any]) -> Span:
        return Span(trace_id=trace_id, span_id=self.new_id(8), parent_span_id=parent_id, name=name, kind=kind,
                    start_time_unix_nano=start_ns, end_time_unix_nano=max(start_ns, end_ns),
                    attributes=[KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()
                                if value is not None])


def any_value(value: Any) -> AnyValue:
    """A value as OTLP carries it; a list or mapping in structured form (arrays, key-value lists)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=str(k), value=any_value(v))
                                                          for k, v in value.items() if v is not None]))
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue(string_value=str(value))
