"""Approval records: a tool call waiting for a person's decision, and how it was decided."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"  # timed out, the client left, or the gateway stopped: all deny


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    created_at: str
    expires_at: str
    project: str
    tool: str
    status: ApprovalStatus = ApprovalStatus.PENDING
    session_id: str | None = None
    interaction_id: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    rule: str | None = None
    reason: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    always: bool = False
    # What the person deciding is shown (JSON, made by the gateway when it asks): the client,
    # the last turns of the conversation and the context pack the call came from.
    context: Any = None

    def is_decided_as(self, status: ApprovalStatus, decided_by: str) -> bool:
        """Whether it now stands as `status` by `decided_by`: false when someone else (or the
        clock) had already decided it."""
        return self.status is status and self.decided_by == decided_by

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}
