"""One request, one typed object: everything known about a proxied exchange, in any dialect,
ending in one outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from capture.records import Interaction, new_interaction_id, now_timestamp
from proxy.pipeline.context import ContextPack
from proxy.pipeline.dialect import ClientRequest, Dialect, UpstreamCall, Usage
from proxy.pipeline.identity import Identity
from proxy.pipeline.tool_guard import ToolDecision


RECENT_TURNS = 6  # of the conversation, shown to the person deciding a tool call
TURN_CHARS = 2000
PACK_ITEM_CHARS = 400


class Outcome(StrEnum):
    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    GATEWAY_ERROR = "gateway_error"  # a failure of ours; the client got an error in its route's shape


class Stage(StrEnum):
    """The timed steps of the pipeline, as named in logs and `Server-Timing`."""

    CONTEXT = "context"
    UPSTREAM = "upstream"
    POLICY = "policy"
    CAPTURE = "capture"


@dataclass(slots=True)
class Exchange:
    id: str = field(default_factory=new_interaction_id)
    created_at: str = field(default_factory=now_timestamp)
    started_ns: int = field(default_factory=time.perf_counter_ns)
    wire: str = ""  # the dialect the client spoke
    request: ClientRequest | None = None
    identity: Identity | None = None
    call: UpstreamCall | None = None
    prompt: Any = None  # as sent upstream, in the dialect's shape; with `params`, what is recorded
    params: dict[str, Any] = field(default_factory=dict)
    transport: str | None = None  # native | translate: how the call was carried
    pack: ContextPack | None = None
    pack_ns: tuple[int, int] | None = None  # when the pack was searched for: perf_counter_ns at start and end
    response: Any = None
    outcome: Outcome | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    ttft_ms: float | None = None
    latency_ms: float | None = None
    tool_decisions: list[ToolDecision] = field(default_factory=list)
    stage_ms: dict[Stage, float] = field(default_factory=dict)

    def elapsed_ms(self) -> float:
        return (time.perf_counter_ns() - self.started_ns) / 1e6

    def time_stage(self, stage: Stage, since_ns: int) -> int:
        """Add the time since `since_ns` to `stage`; returns now, to chain stages."""
        now = time.perf_counter_ns()
        self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + (now - since_ns) / 1e6
        return now

    def finish(self, outcome: Outcome, *, error: str | None = None) -> None:
        self.outcome = outcome
        self.error = error
        self.latency_ms = round(self.elapsed_ms(), 3)

    def headers(self) -> dict[str, str]:
        headers = {"X-Ctxgate-Interaction-Id": self.id}
        if self.identity is not None:
            headers["X-Ctxgate-Session"] = self.identity.session_id
        headers["X-Ctxgate-Context-Memories"] = str(len(self.pack.memories) if self.pack else 0)
        headers["X-Ctxgate-Context-Chunks"] = str(len(self.pack.chunks) if self.pack else 0)
        return headers

    def server_timing(self) -> str:
        """The stages done so far, as a `Server-Timing` header value."""
        return ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in self.stage_ms.items())

    def to_interaction(self) -> Interaction:
        assert self.request is not None and self.identity is not None and self.call is not None
        return Interaction(
            id=self.id,
            created_at=self.created_at,
            project=self.identity.project,
            session_id=self.identity.session_id,
            client=self.identity.client,
            model=self.request.model,
            prompt=self.prompt,
            params=self.params or None,
            response=self.response,
            memories_used=self.pack.memory_ids if self.pack else (),
            chunks_used=self.pack.chunk_ids if self.pack else (),
            context_pack=self.pack.text if self.pack else None,
            tool_decisions=tuple(decision.as_record() for decision in self.tool_decisions),
            status=str(self.outcome or Outcome.CLIENT_DISCONNECTED),
            error=self.error,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            wire=self.wire,
            # A record without a prompt count is counted locally by the capture writer, which
            # then says so; until then the source is the provider's only if it gave a count.
            usage_source=None if not self.usage.is_reported else
            "counted" if self.call.learned.usage_counted else "provider",
            cache_read_tokens=self.usage.cache_read_tokens,
            cache_creation_tokens=self.usage.cache_creation_tokens,
            agent_id=self.identity.agent_id,
            parent_agent_id=self.identity.parent_agent_id,
            context_scores={item.id: round(item.score, 6) for item in (*self.pack.memories, *self.pack.chunks)}
            if self.pack else None,
        )

    def asked_in(self, dialect: Dialect) -> dict[str, Any]:
        """What the person deciding one of this exchange's tool calls is shown: who asked, the
        last turns of the conversation as sent, and the context pack it was given."""
        turns = dialect.transcript(self.prompt)[-RECENT_TURNS:]
        pack = self.pack
        return {
            "client": self.identity.client if self.identity else None,
            "model": self.request.model if self.request else None,
            "turns": [{"role": turn.role, "text": turn.text[-TURN_CHARS:]} for turn in turns],
            "pack": [] if pack is None else [
                *({"kind": "memory", "id": m.id, "score": round(m.score, 6), "text": m.content[:PACK_ITEM_CHARS]}
                  for m in pack.memories),
                *({"kind": "chunk", "id": c.id, "score": round(c.score, 6), "source": c.source,
                   "text": c.content[:PACK_ITEM_CHARS]} for c in pack.chunks),
            ],
        }

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.call is not None:  # forwarded, so recorded: otherwise there is no such record
            fields["interaction_id"] = self.id
        if self.wire:
            fields["wire"] = self.wire
        if self.request is not None:
            fields.update(model=self.request.model, stream=self.request.stream)
        if self.transport is not None:
            fields["transport"] = self.transport
        if self.identity is not None:
            fields.update(
                client=self.identity.client, project=self.identity.project, session_id=self.identity.session_id
            )
            if self.identity.agent_id is not None:
                fields["agent_id"] = self.identity.agent_id
        if self.outcome is not None:
            fields["outcome"] = str(self.outcome)
        fields.update(
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            ttft_ms=self.ttft_ms,
            tool_calls_denied=sum(1 for d in self.tool_decisions if not d.is_allowed),
            stage_ms={str(stage): round(ms, 3) for stage, ms in self.stage_ms.items()},
        )
        return fields

