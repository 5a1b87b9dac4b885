"""Records as the pages show them, read defensively: a record posted through the capture API,
or an approval from before its context was kept, may hold any shape, and a page must still
render it (what cannot be read shows as missing, never as an error)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capture.approvals import Approval
from capture.records import Interaction
from proxy.pipeline.dialect import Dialect, Turn


@dataclass(frozen=True, slots=True)
class PackItem:
    kind: str  # memory or chunk
    id: str
    score: float | None
    source: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class HeldCall:
    """An approval with what its person is shown."""

    approval: Approval
    client: str | None
    model: str | None
    turns: list[Turn]
    pack: list[PackItem]


@dataclass(frozen=True, slots=True)
class DecisionRow:
    tool: str
    action: str
    policy_action: str
    rule: str
    reason: str
    decided_by: str
    approval_id: str | None
    wait_ms: float | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One interaction: the record, and its prompt and response turn by turn."""

    record: Interaction
    prompt_turns: list[Turn]
    response_turns: list[Turn]
    pack: list[PackItem]
    decisions: list[DecisionRow]

    @property
    def asked(self) -> list[Turn]:
        """What this turn added to the conversation: the messages after the model's last answer."""
        last_answer = max((i for i, turn in enumerate(self.prompt_turns) if turn.role == "assistant"), default=-1)
        return [turn for turn in self.prompt_turns[last_answer + 1:] if turn.role != "system"]


def held_call(approval: Approval) -> HeldCall:
    context = approval.context if isinstance(approval.context, Mapping) else {}
    turns = [Turn(_text(turn.get("role")) or "?", _text(turn.get("text")) or "")
             for turn in _list(context.get("turns")) if isinstance(turn, Mapping)]
    pack = [PackItem(_text(item.get("kind")) or "?", _text(item.get("id")) or "?", _number(item.get("score")),
                     _text(item.get("source")), _text(item.get("text")))
            for item in _list(context.get("pack")) if isinstance(item, Mapping)]
    return HeldCall(approval, _text(context.get("client")), _text(context.get("model")), turns, pack)


def reading_of(record: Interaction, dialects: Mapping[str, Dialect]) -> Reading:
    dialect = dialects.get(record.wire or "") or dialects["openai_chat"]  # records from before `wire` are chat
    prompt_turns = dialect.transcript(record.prompt)
    everything = dialect.transcript(record.prompt, record.response)
    scores: Mapping[str, Any] = record.context_scores if isinstance(record.context_scores, Mapping) else {}
    pack = [PackItem("memory", i, _number(scores.get(i))) for i in record.memories_used] + \
        [PackItem("chunk", i, _number(scores.get(i))) for i in record.chunks_used]
    decisions = [_decision(entry) for entry in record.tool_decisions]
    return Reading(record, prompt_turns, everything[len(prompt_turns):], pack, decisions)


def _decision(entry: Any) -> DecisionRow:
    given: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"tool": entry}
    return DecisionRow(
        tool=_text(given.get("tool")) or "?", action=_text(given.get("action")) or "?",
        policy_action=_text(given.get("policy_action")) or "", rule=_text(given.get("rule")) or "",
        reason=_text(given.get("reason")) or "", decided_by=_text(given.get("decided_by")) or "",
        approval_id=_text(given.get("approval_id")), wait_ms=_number(given.get("wait_ms")),
        arguments=_text(given.get("arguments")) or "")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """Text as given; a number or structure as its text; None for nothing."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
