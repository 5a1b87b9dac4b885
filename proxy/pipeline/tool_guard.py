"""Deciding the tool calls of an exchange: a call reaches the client only if the policy
allows it or a person approved it. Each dialect's gate reads the calls in its own wire shape
and asks the guard here."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from capture.store import Store, StoreUnavailable
from policy.evaluate import Decision, evaluate, undeclared
from policy.rules import Action, ProjectPolicy, PolicySet
from proxy.pipeline.approvals import ApprovalBook

log = structlog.get_logger("ctxgate.policy")

Keepalive = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ToolDecision:
    """The audit entry of one tool call: what the policy said, who decided, and the outcome."""

    tool: str
    call_id: str | None
    arguments: str
    policy_action: str  # what the rules said: allow, deny or ask
    rule: str
    reason: str
    decided_by: str = "policy"  # policy, human, timeout, observe_only, store_unavailable, client_gone
    approval_id: str | None = None
    is_allowed: bool = False
    wait_ms: float = 0.0
    started_ns: int = 0  # perf_counter_ns when the decision began (for its trace span)

    def refusal(self) -> str:
        """What the client reads in place of a call it will not get."""
        return f"ctxgate refused the call to {self.tool!r}: {self.reason} ({self.rule})."

    def as_record(self) -> dict[str, Any]:
        """The entry as records and the API give it."""
        return {
            "tool": self.tool, "call_id": self.call_id, "arguments": self.arguments,
            "policy_action": self.policy_action, "rule": self.rule, "reason": self.reason,
            "decided_by": self.decided_by, "approval_id": self.approval_id,
            "action": "allow" if self.is_allowed else "deny", "wait_ms": self.wait_ms,
        }


@dataclass(slots=True)
class ToolGuard:
    """Decides the tool calls of one exchange and keeps the audit entries."""

    policies: PolicySet
    book: ApprovalBook
    store: Store
    project: str
    session_id: str | None
    interaction_id: str
    declared: frozenset[str]
    asked_in: Callable[[], Any] | None = None  # what the person deciding an asked call is shown (JSON)
    decisions: list[ToolDecision] = field(default_factory=list)
    _always_allowed: frozenset[str] | None = None

    @property
    def policy(self) -> ProjectPolicy:
        return self.policies.for_project(self.project)

    async def decide(
        self, call_id: str | None, name: str, arguments: str, *, legacy: bool = False,
        keepalive: Keepalive | None = None, is_client_gone: Callable[[], bool] = lambda: False,
    ) -> bool:
        """True when the call may reach the client. Records the decision either way. A legacy
        `function_call` is never declared: requests using that API are refused."""
        started, started_ns = time.monotonic(), time.perf_counter_ns()
        if name in self.declared and not legacy:
            decision = evaluate(self.policy, name, arguments, always_allowed=await self._remembered())
        else:
            decision = undeclared(name)
        entry = ToolDecision(tool=name, call_id=call_id, arguments=arguments, policy_action=str(decision.action),
                             rule=decision.rule, reason=decision.reason, is_allowed=decision.action is Action.ALLOW,
                             started_ns=started_ns)
        try:
            if not self.policies.enforcing:
                entry.is_allowed, entry.decided_by = True, "observe_only"
            elif decision.action is Action.ASK:
                entry.is_allowed = await self._ask(decision, entry, keepalive, is_client_gone)
        except StoreUnavailable as error:  # no person can be asked without the store: fail closed
            entry.is_allowed, entry.decided_by = False, "store_unavailable"
            entry.reason = f"{decision.reason}; the store is unavailable, so no person could decide: denied"
            log.warning("tool_approval_impossible", tool=name, error=str(error), interaction_id=self.interaction_id)
        except BaseException:  # cancelled, or the client left mid-wait: still in the audit trail
            entry.is_allowed, entry.decided_by = False, "client_gone"
            raise
        finally:
            entry.wait_ms = round((time.monotonic() - started) * 1000, 3)
            self.decisions.append(entry)
        log.info("tool_allowed" if entry.is_allowed else "tool_denied", tool=name, call_id=call_id, rule=entry.rule,
                 decided_by=entry.decided_by, interaction_id=self.interaction_id)
        return entry.is_allowed

    async def _remembered(self) -> frozenset[str]:
        """The tools a person allowed always for the project, read once per exchange and only
        when calls come. With the store down, none: that can only deny or ask more, never less."""
        if self._always_allowed is None:
            try:
                self._always_allowed = await self.store.allowed_always(self.project)
            except StoreUnavailable as error:
                log.warning("tool_allowances_unreadable", error=str(error), interaction_id=self.interaction_id)
                return frozenset()
        return self._always_allowed

    async def _ask(self, decision: Decision, entry: ToolDecision, keepalive: Keepalive | None,
                   is_client_gone: Callable[[], bool]) -> bool:
        timeout_s = self.policy.approval_timeout_s
        approval = await self.book.request(
            project=self.project, session_id=self.session_id, interaction_id=self.interaction_id, tool=entry.tool,
            call_id=entry.call_id, arguments=entry.arguments, rule=decision.rule, reason=decision.reason,
            timeout_s=timeout_s, context=self.asked_in() if self.asked_in is not None else None,
        )
        entry.approval_id = approval.id  # in the audit trail even if the client leaves mid-wait
        resolution = await self.book.wait(approval, timeout_s, keepalive=keepalive, is_client_gone=is_client_gone)
        entry.decided_by = resolution.decided_by
        if not resolution.approved:
            entry.reason = (
                f"{decision.reason}; a person denied it" if resolution.decided_by == "human"
                else f"{decision.reason}; no decision ({resolution.decided_by}), so denied"
            )
        return resolution.approved

    def refuse_unreadable(self, call_id: str | None, name: str, arguments: str, why: str) -> bool:
        """For a reply call whose name cannot be read for sure: recorded and logged as a
        deny (rule `unreadable_call`) whatever the request declared, since what cannot be read
        cannot be decided. Observe-only lets it pass, as it does every call."""
        allowed = not self.policies.enforcing
        self.decisions.append(ToolDecision(
            tool=name, call_id=call_id, arguments=arguments, policy_action=str(Action.DENY), rule="unreadable_call",
            reason=f"the call {why}, so it cannot be decided", decided_by="observe_only" if allowed else "policy",
            is_allowed=allowed,
        ))
        log.info("tool_allowed" if allowed else "tool_denied", tool=name, call_id=call_id, rule="unreadable_call",
                 decided_by="observe_only" if allowed else "policy", interaction_id=self.interaction_id)
        return allowed

    def refusal_text(self, names: list[str]) -> str:
        """What the client reads in place of the calls it will not get."""
        return "\n".join(entry.refusal() for entry in self.decisions if not entry.is_allowed and entry.tool in names)
