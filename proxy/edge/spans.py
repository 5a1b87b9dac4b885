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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from proxy.edge.redaction import Redactor
from proxy.pipeline.dialect import Dialect, Turn, Usage
from proxy.pipeline.exchange import Exchange, Outcome

# The operation each dialect's calls are, in the conventions' names.
OPERATIONS = {"openai_chat": "chat", "anthropic_messages": "chat", "openai_responses": "chat",
              "openai_completions": "text_completion", "openai_embeddings": "embeddings"}
# litellm's provider names where the conventions name the provider otherwise.
PROVIDERS = {"text-completion-openai": "openai", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
             "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini", "mistral": "mistral_ai", "xai": "x_ai",
             "watsonx": "ibm.watsonx.ai"}
# Version 00 exactly; a later version may add fields after these (W3C Trace Context, level 1).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class Parent:
    trace_id: bytes
    span_id: bytes
    is_sampled: bool


def parse_traceparent(value: str | None) -> Parent | None:
    """The client's span, from a W3C `traceparent`; None when absent or invalid (upper-case hex
    included, as the spec says). Of a version after 00, the fields 00 defines are read."""
    value = (value or "").strip()
    match = _TRACEPARENT.match(value)
    if match is None or match[1] == "ff" or match[2] == _INVALID_TRACE or match[3] == _INVALID_SPAN:
        return None
    if len(value) != 55 and (match[1] == "00" or value[55:56] != "-"):
        return None
    return Parent(bytes.fromhex(match[2]), bytes.fromhex(match[3]), bool(int(match[4], 16) & 1))


@dataclass(frozen=True, slots=True)
class Content:
    """What a call said, kept for its spans only when content is exported: references to the
    exchange's own values, not copies."""

    prompt: Any
    response: Any
    query: str


@dataclass(frozen=True, slots=True)
class Decision:
    tool: str
    call_id: str | None
    action: str
    policy_action: str
    rule: str
    decided_by: str
    approval_id: str | None
    wait_ms: float
    start_ns: int  # Unix
    arguments: str | None  # only when content is exported


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished call as queued for export: what its spans say, copied out of the exchange so
    that the queue holds no prompt, response or pack text unless content is exported. Times are
    Unix nanoseconds."""

    interaction_id: str
    wire: str
    model: str | None
    stream: bool | None
    project: str | None
    client: str | None
    session_id: str | None
    transport: str | None
    outcome: str | None
    error: str | None
    usage: Usage
    ttft_ms: float | None
    http_status: int
    provider: str | None
    parent: Parent | None
    start_ns: int
    end_ns: int
    retrieval: tuple[int, int] | None  # when the pack was searched for, if one was given
    pack_project: str | None
    documents: tuple[tuple[str, float, str], ...]  # (id, score, memory | chunk)
    decisions: tuple[Decision, ...]
    content: Content | None

    @property
    def span_count(self) -> int:
        return 1 + (self.retrieval is not None) + len(self.decisions)


def finished_call(exchange: Exchange, *, parent: Parent | None, http_status: int, provider: str | None,
                  with_content: bool) -> Finished:
    """The snapshot of `exchange` at its end (called on the request's path: copies, no encoding)."""
    end_ns, now_perf = time.time_ns(), time.perf_counter_ns()

    def unix(perf_ns: int) -> int:
        return end_ns - (now_perf - perf_ns)

    request, identity, pack = exchange.request, exchange.identity, exchange.pack
    return Finished(
        interaction_id=exchange.id, wire=exchange.wire, model=request.model if request else None,
        stream=request.stream if request else None, project=identity.project if identity else None,
        client=identity.client if identity else None, session_id=identity.session_id if identity else None,
        transport=exchange.transport, outcome=str(exchange.outcome) if exchange.outcome else None,
        error=exchange.error, usage=exchange.usage, ttft_ms=exchange.ttft_ms, http_status=http_status,
        provider=provider, parent=parent, start_ns=unix(exchange.started_ns), end_ns=end_ns,
        retrieval=(unix(exchange.pack_ns[0]), unix(exchange.pack_ns[1]))
        if pack is not None and exchange.pack_ns is not None else None,
        pack_project=pack.project if pack else None,
        documents=tuple((item.id, item.score, kind) for kind, items in
                        (("memory", pack.memories), ("chunk", pack.chunks)) for item in items) if pack else (),
        decisions=tuple(Decision(
            d.tool, d.call_id, "allow" if d.is_allowed else "deny", d.policy_action, d.rule, d.decided_by,
            d.approval_id, d.wait_ms, unix(d.started_ns) if d.started_ns else unix(exchange.started_ns),
            d.arguments if with_content else None) for d in exchange.tool_decisions),
        content=Content(exchange.prompt, exchange.response, request.query if request else "")
        if with_content else None,
    )


# Content on spans is capped: a coding agent's conversation runs to hundreds of kilobytes, and a
# collector refuses a body of many megabytes.
TURNS_EXPORTED = 32  # the last ones
TEXT_CHARS = 4000  # of each message, argument list and query


class SpanBuilder:
    def __init__(self, dialects: Mapping[str, Dialect], redactor: Redactor,
                 new_id: Callable[[int], bytes] = os.urandom) -> None:
        self.dialects = dialects
        self.redactor = redactor
        self.new_id = new_id

    def spans(self, finished: Finished) -> list[Span]:
        trace_id = finished.parent.trace_id if finished.parent else self.new_id(16)
        call = self._call_span(finished, trace_id)
        spans = [call]
        if finished.retrieval is not None:
            spans.append(self._retrieval_span(finished, trace_id, call.span_id))
        for decision in finished.decisions:
            attributes = {
                "gen_ai.tool.name": decision.tool, "gen_ai.tool.call.id": decision.call_id,
                "ctxgate.tool.action": decision.action, "ctxgate.tool.policy_action": decision.policy_action,
                "ctxgate.tool.rule": decision.rule, "ctxgate.tool.decided_by": decision.decided_by,
                "ctxgate.approval.id": decision.approval_id,
                "ctxgate.approval.wait_ms": decision.wait_ms if decision.approval_id else None,
                "gen_ai.tool.call.arguments": self._text(decision.arguments),
            }
            spans.append(self._span(trace_id, call.span_id, f"tool_decision {decision.tool}", Span.SPAN_KIND_INTERNAL,
                                    decision.start_ns, decision.start_ns + int(decision.wait_ms * 1e6), attributes))
        return spans

    def _call_span(self, finished: Finished, trace_id: bytes) -> Span:
        operation = OPERATIONS.get(finished.wire, finished.wire)
        usage = finished.usage
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDERS.get(finished.provider or "", finished.provider),
            "gen_ai.request.model": finished.model,
            "gen_ai.conversation.id": finished.session_id,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_tokens,
            "http.response.status_code": finished.http_status,
            "ctxgate.interaction.id": finished.interaction_id,
            "ctxgate.project": finished.project,
            "ctxgate.client": finished.client,
            "ctxgate.wire": finished.wire,
            "ctxgate.transport": finished.transport,
            "ctxgate.stream": finished.stream,
            "ctxgate.outcome": finished.outcome,
            "ctxgate.ttft_ms": finished.ttft_ms,
        }
        is_failed = finished.outcome not in (str(Outcome.OK), None) or finished.http_status >= 500
        if is_failed:
            attributes["error.type"] = finished.outcome or str(finished.http_status)
        if finished.content is not None:
            attributes.update(self._messages(finished.wire, finished.content))
        span = self._span(trace_id, finished.parent.span_id if finished.parent else b"",
                          f"{operation} {finished.model}" if finished.model else operation, Span.SPAN_KIND_CLIENT,
                          finished.start_ns, finished.end_ns, attributes)
        if is_failed:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = self.redactor.scrub(finished.error or "")
        return span

    def _retrieval_span(self, finished: Finished, trace_id: bytes, parent_id: bytes) -> Span:
        assert finished.retrieval is not None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": f"ctxgate:{finished.pack_project}",
            "gen_ai.retrieval.documents": [{"id": item_id, "score": score, "kind": kind}
                                           for item_id, score, kind in finished.documents],
            "gen_ai.retrieval.query.text": self._text(finished.content.query) if finished.content else None,
        }
        return self._span(trace_id, parent_id, "retrieval", Span.SPAN_KIND_INTERNAL, *finished.retrieval, attributes)

    def _messages(self, wire: str, content: Content) -> dict[str, Any]:
        dialect = self.dialects.get(wire)
        if dialect is None:
            return {}
        asked = dialect.transcript(content.prompt)
        answered = dialect.transcript(content.prompt, content.response)[len(asked):]
        system = [turn for turn in asked if turn.role == "system"]
        return {
            "gen_ai.system_instructions": [{"type": "text", "content": self._text(turn.text)} for turn in system]
            or None,
            "gen_ai.input.messages": self._as_messages([t for t in asked if t.role != "system"][-TURNS_EXPORTED:]),
            "gen_ai.output.messages": self._as_messages(answered[-TURNS_EXPORTED:]),
        }

    def _as_messages(self, turns: list[Turn]) -> list[dict[str, Any]]:
        return [{"role": turn.role, "parts": [{"type": "text", "content": self._text(turn.text)}]} for turn in turns]

    def _text(self, text: str | None) -> str | None:
        """Scrubbed, then cut: a secret across the cut is gone whole, not halved."""
        if text is None:
            return None
        return self.redactor.scrub(text[:TEXT_CHARS + 1024])[:TEXT_CHARS]

    def _span(self, trace_id: bytes, parent_id: bytes, name: str, kind: Any, start_ns: int, end_ns: int,
              attributes: Mapping[str, Any]) -> Span:
        span = Span(trace_id=trace_id, span_id=self.new_id(8), parent_span_id=parent_id, name=name, kind=kind,
                    start_time_unix_nano=start_ns, end_time_unix_nano=max(start_ns, end_ns))
        put_attributes(span.attributes, attributes)
        return span


# Filled in place (`add()`, then the field): building each nested message by keyword and
# copying it in costs twice the CPU, and every call exported pays it.
def put_attributes(target: Any, attributes: Mapping[str, Any]) -> None:
    """`attributes` (None values left out) added to a repeated KeyValue field."""
    add = target.add
    for key, value in attributes.items():
        if value is not None:
            put_value(add(key=str(key)).value, value)


def put_value(target: AnyValue, value: Any) -> None:
    """A value as OTLP carries it; a list or mapping in structured form (arrays, key-value lists)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, Mapping):
        put_attributes(target.kvlist_value.values, value)
    elif isinstance(value, (list, tuple)):
        items = target.array_value.values
        target.array_value.SetInParent()  # an empty list is still an array, not an unset value
        for item in value:
            put_value(items.add(), item)
    else:
        target.string_value = str(value)
