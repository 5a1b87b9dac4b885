"""Enforcing the tool policy on an exchange: the request's `tools`, and the calls in the reply.

A call reaches the client only if the policy allows it or a person approved it. Streamed
replies pass text through as it comes; each tool call is held until complete, decided, and
then sent whole, renumbered, or not at all.
"""

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
from proxy.dialects.openai_chat.assembly import TOOL_CALL_SHAPES
from proxy.edge.errors import BadRequest, UpstreamError

log = structlog.get_logger("ctxgate.policy")

Keepalive = Callable[[], Awaitable[None]]


# The shapes in which a `tools[]` entry, or a `tool_choice` naming one, gives a tool's name:
# {"type": "function", "function": {"name"}}, {"type": "custom", "custom": {"name"}}, and the
# flat {"type": "function", "name"} of the Responses API, which some clients send to chat.
# Every one is read whatever `type` says: which a provider honours is not ours to guess.
_NAME_HOLDERS = ("function", "custom")


def declared_tool_names(params: dict[str, Any]) -> frozenset[str]:
    """Every name the request's `tools` give, in any shape. Never raises: without a policy
    the request is not screened, and a malformed entry just declares nothing."""
    tools = params.get("tools")
    return frozenset(name for tool in (tools if isinstance(tools, list) else ()) for name in _tool_names(tool))


def screen_request(params: dict[str, Any], policy: ProjectPolicy) -> dict[str, Any]:
    """The parameters with blocked tools taken out of `tools`, so the model is not offered
    them; a `tool_choice` that names a blocked tool is refused, and so is the legacy
    `functions` API, whose calls would bypass the policy. A tool entry whose name cannot be
    read (a `function` that is not an object, a name that is not a string) is a 400 naming
    the field: what cannot be read cannot be screened."""
    for legacy in ("functions", "function_call"):
        if legacy in params:
            raise BadRequest(f"'{legacy}' (the legacy functions API) is not accepted where a tool policy applies; "
                             "declare 'tools' instead", param=legacy, code="legacy_functions_refused")
    _refuse_blocked_choice(params.get("tool_choice"), policy)
    tools = params.get("tools")
    if tools is None:
        return params
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    for index, entry in enumerate(tools):
        _check_tool_shape(entry, f"tools[{index}]")
    kept = [t for t in tools if not _is_blocked(t, policy)]
    if len(kept) == len(tools):
        return params
    screened = {**params, "tools": kept}
    if not kept:  # an empty tools list is an error at most providers
        del screened["tools"]
        screened.pop("tool_choice", None)
        screened.pop("parallel_tool_calls", None)
    return screened


def _refuse_blocked_choice(choice: Any, policy: ProjectPolicy) -> None:
    """400 when `tool_choice` names a blocked tool: forcing one in any shape, or listing one
    under `allowed_tools` (chat nests the list in `allowed_tools`, Responses puts it flat)."""
    if not isinstance(choice, dict):
        return  # "none", "auto", "required": no name in them
    entries: list[tuple[Any, str]] = [(choice, "tool_choice")]
    allowed = choice.get("allowed_tools")
    if allowed is not None and not isinstance(allowed, dict):
        raise _invalid_type("tool_choice.allowed_tools", "an object", allowed)
    for holder, where in ((allowed, "tool_choice.allowed_tools.tools"), (choice, "tool_choice.tools")):
        listed = holder.get("tools") if isinstance(holder, dict) else None
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise _invalid_type(where, "an array", listed)
        entries += [(entry, f"{where}[{index}]") for index, entry in enumerate(listed)]
    for entry, where in entries:
        _check_tool_shape(entry, where)
        for name in _tool_names(entry):
            if policy.blocked_tools.first_match(name) is not None:
                raise BadRequest(f"{where} names {name!r}, which this project's policy blocks",
                                 param=where, code="tool_blocked")


def _check_tool_shape(entry: Any, where: str) -> None:
    """400 naming the first part of a tool entry that is not what the API says it is."""
    if not isinstance(entry, dict):
        raise _invalid_type(where, "an object", entry)
    holders = [(entry, where)]
    for key in _NAME_HOLDERS:
        if key in entry:
            if not isinstance(entry[key], dict):
                raise _invalid_type(f"{where}.{key}", "an object", entry[key])
            holders.append((entry[key], f"{where}.{key}"))
    for holder, at in holders:
        if "name" in holder and not isinstance(holder["name"], str):
            raise _invalid_type(f"{at}.name", "a string", holder["name"])


def _invalid_type(where: str, expected: str, got: Any) -> BadRequest:
    """In the words and code OpenAI itself answers a mistyped field with."""
    return BadRequest(f"Invalid type for '{where}': expected {expected}, but got {_json_type(got)} instead.",
                      param=where, code="invalid_type")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _tool_names(entry: Any) -> list[str]:
    """The names a tool entry gives, in any of the shapes; parts of the wrong type give none."""
    if not isinstance(entry, dict):
        return []
    holders = [entry, *(entry.get(key) for key in _NAME_HOLDERS)]
    return [h["name"] for h in holders if isinstance(h, dict) and isinstance(h.get("name"), str)]


def _is_blocked(tool: Any, policy: ProjectPolicy) -> bool:
    """True when any name the entry gives is blocked: a provider might read any of them."""
    return any(policy.blocked_tools.first_match(name) is not None for name in _tool_names(tool))


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
    decisions: list[dict[str, Any]] = field(default_factory=list)
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
        started = time.monotonic()
        if name in self.declared and not legacy:
            decision = evaluate(self.policy, name, arguments, always_allowed=await self._remembered())
        else:
            decision = undeclared(name)
        entry: dict[str, Any] = {
            "tool": name, "call_id": call_id, "arguments": arguments, "policy_action": str(decision.action),
            "rule": decision.rule, "reason": decision.reason, "decided_by": "policy", "approval_id": None,
        }
        allowed = decision.action is Action.ALLOW
        try:
            if not self.policies.enforcing:
                allowed, entry["decided_by"] = True, "observe_only"
            elif decision.action is Action.ASK:
                allowed = await self._ask(decision, entry, call_id, name, arguments, keepalive, is_client_gone)
        except StoreUnavailable as error:  # no person can be asked without the store: fail closed
            allowed, entry["decided_by"] = False, "store_unavailable"
            entry["reason"] = f"{decision.reason}; the store is unavailable, so no person could decide: denied"
            log.warning("tool_approval_impossible", tool=name, error=str(error), interaction_id=self.interaction_id)
        except BaseException:  # cancelled, or the client left mid-wait: still in the audit trail
            allowed, entry["decided_by"] = False, "client_gone"
            raise
        finally:
            entry["action"] = "allow" if allowed else "deny"
            entry["wait_ms"] = round((time.monotonic() - started) * 1000, 3)
            self.decisions.append(entry)
        log.info("tool_allowed" if allowed else "tool_denied", tool=name, call_id=call_id, rule=entry["rule"],
                 decided_by=entry["decided_by"], interaction_id=self.interaction_id)
        return allowed

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

    async def _ask(
        self, decision: Decision, entry: dict[str, Any], call_id: str | None, name: str, arguments: str,
        keepalive: Keepalive | None, is_client_gone: Callable[[], bool],
    ) -> bool:
        timeout_s = self.policy.approval_timeout_s
        approval = await self.book.request(
            project=self.project, session_id=self.session_id, interaction_id=self.interaction_id, tool=name,
            call_id=call_id, arguments=arguments, rule=decision.rule, reason=decision.reason, timeout_s=timeout_s,
        )
        resolution = await self.book.wait(approval, timeout_s, keepalive=keepalive, is_client_gone=is_client_gone)
        entry.update(approval_id=approval.id, decided_by=resolution.decided_by)
        if not resolution.approved:
            entry["reason"] = (
                f"{decision.reason}; a person denied it" if resolution.decided_by == "human"
                else f"{decision.reason}; no decision ({resolution.decided_by}), so denied"
            )
        return resolution.approved

    def refuse_unreadable(self, call_id: str | None, name: str, arguments: str, why: str) -> bool:
        """For a reply call whose name cannot be read for sure: recorded and logged as a
        deny (rule `unreadable_call`) whatever the request declared, since what cannot be read
        cannot be decided. Observe-only lets it pass, as it does every call."""
        allowed = not self.policies.enforcing
        self.decisions.append({
            "tool": name, "call_id": call_id, "arguments": arguments, "policy_action": str(Action.DENY),
            "rule": "unreadable_call", "reason": f"the call {why}, so it cannot be decided",
            "decided_by": "observe_only" if allowed else "policy", "approval_id": None,
            "action": "allow" if allowed else "deny", "wait_ms": 0.0,
        })
        log.info("tool_allowed" if allowed else "tool_denied", tool=name, call_id=call_id, rule="unreadable_call",
                 decided_by="observe_only" if allowed else "policy", interaction_id=self.interaction_id)
        return allowed

    def refusal_text(self, names: list[str]) -> str:
        """What the client reads in place of the calls it will not get."""
        lines = []
        for entry in self.decisions:
            if entry["action"] == "deny" and entry["tool"] in names:
                lines.append(f"ctxgate refused the call to {entry['tool']!r}: {entry['reason']} ({entry['rule']}).")
        return "\n".join(lines)


async def enforce_completion(
    completion: dict[str, Any], guard: ToolGuard, is_client_gone: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """A non-streamed reply with every tool call decided, function and custom calls alike:
    the allowed ones stay as they came; when none does, the message says which calls were
    refused and why, with `finish_reason: stop`."""
    for choice in completion.get("choices", ()):
        message = choice.get("message") or {}
        legacy = message.get("function_call")
        if legacy and guard.policies.enforcing:  # never declared (requests using it are refused)
            reading = _read_whole({"function": legacy})
            if not await _decide(guard, None, reading, legacy=True, is_client_gone=is_client_gone):
                del message["function_call"]
                message["content"] = guard.refusal_text([reading.name])
                choice["finish_reason"] = "stop"
        calls = message.get("tool_calls")
        if not calls:
            continue
        kept, refused = [], []
        for call in calls:
            reading = _read_whole(call)
            call_id = call.get("id") if isinstance(call, dict) else None
            if await _decide(guard, call_id, reading, is_client_gone=is_client_gone):
                kept.append(call)
            else:
                refused.append(reading.name)
        if kept:
            message["tool_calls"] = kept
            choice["finish_reason"] = "tool_calls"
            continue
        del message["tool_calls"]
        refusal = guard.refusal_text(refused)
        message["content"] = f"{message['content']}\n\n{refusal}" if message.get("content") else refusal
        choice["finish_reason"] = "stop"
    return completion


@dataclass(frozen=True, slots=True)
class _Reading:
    """What a call is decided by: its shape (`function` or `custom`), its name, and its
    arguments or input; or, in `unreadable`, why it cannot be decided (then `name` and
    `text` are what could be read, for the record)."""

    shape: str
    name: str
    text: str
    unreadable: str | None = None


@dataclass(slots=True)
class _Parts:
    name: str = ""
    fragments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _HeldCall:
    index: int | None
    legacy: bool = False
    id: str | None = None
    types: list[Any] = field(default_factory=list)  # each `type` its deltas gave, in order
    shapes: dict[str, _Parts] = field(default_factory=dict)  # `function` / `custom`: what each gave
    malformed: str | None = None  # why a part of it cannot be read, once one cannot

    def reading(self) -> _Reading:
        """A call is read in one shape only: one holder giving a name, and a `type`, if any,
        naming that holder. A call in two shapes is not decided by either: a client may act
        on the other one. A holder that gives nothing (`{"arguments": ""}`) does not count."""
        given = [shape for shape, parts in self.shapes.items() if parts.name or parts.fragments]
        shape = given[0] if given else "function"
        parts = self.shapes.get(shape) or _Parts()
        name = parts.name or next((p.name for p in self.shapes.values() if p.name), "")
        text = "".join(parts.fragments)
        why = self.malformed
        if why is None and len(given) > 1:
            why = f"comes in two shapes at once ({' and '.join(map(repr, given))})"
        if why is None and not parts.name:
            why = "gives no name in any shape"
        if why is None and any(kind != shape for kind in self.types):
            why = f"says type {next(k for k in self.types if k != shape)!r} but holds {shape!r}"
        return _Reading(shape, name, text, why)

    def whole(self, index: int) -> dict[str, Any]:
        """The call as one delta, numbered `index`, in the shape it came in. An unreadable
        one (sent only when observe-only) goes in every shape it gave, as it gave them."""
        reading = self.reading()
        shapes = [reading.shape] if reading.unreadable is None else (list(self.shapes) or [reading.shape])
        kind = self.types[0] if self.types else reading.shape
        delta: dict[str, Any] = {"index": index, "id": self.id, "type": kind}
        for shape in shapes:
            parts = self.shapes.get(shape) or _Parts()
            delta[shape] = {"name": parts.name, TOOL_CALL_SHAPES[shape]: "".join(parts.fragments)}
        return delta


def _read_whole(call: Any) -> _Reading:
    """A complete (non-streamed) call, read as its deltas would be."""
    held = _HeldCall(index=None)
    if isinstance(call, dict):
        _merge(held, call)
    else:
        held.malformed = "is not an object"
    return held.reading()


async def _decide(
    guard: ToolGuard, call_id: str | None, reading: _Reading, *, legacy: bool = False,
    keepalive: Keepalive | None = None, is_client_gone: Callable[[], bool] = lambda: False,
) -> bool:
    if reading.unreadable is not None:
        return guard.refuse_unreadable(call_id, reading.name, reading.text, reading.unreadable)
    return await guard.decide(call_id, reading.name, reading.text, legacy=legacy, keepalive=keepalive,
                              is_client_gone=is_client_gone)


@dataclass(slots=True)
class _ChoiceState:
    held: list[_HeldCall] = field(default_factory=list)
    sent_calls: int = 0
    refused: list[str] = field(default_factory=list)
    has_content: bool = False
    is_finished: bool = False  # the provider sent this choice's finish_reason


class StreamToolGate:
    """Streamed chunks in, chunks for the client out. Text passes at once; tool-call deltas
    (function or custom) are held, and the calls are decided one by one when the choice
    finishes (or the stream ends), then sent whole, in their shape, and renumbered. The
    client never sees a fragment of a refused call.

    Deciding at the finish, not when the next index starts, is deliberate: providers may
    interleave the deltas of parallel calls, and a call released early could be cut short."""

    def __init__(self, guard: ToolGuard, keepalive: Keepalive, is_client_gone: Callable[[], bool]) -> None:
        self.guard = guard
        self.keepalive = keepalive
        self.is_client_gone = is_client_gone
        self._choices: dict[int, _ChoiceState] = {}
        self._template: dict[str, Any] = {}

    async def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._template = chunk
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices", ()):
            index = choice.get("index", 0)
            state = self._choices.setdefault(index, _ChoiceState())
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state.has_content = True
            for call_delta in delta.pop("tool_calls", None) or ():
                _hold(state, call_delta)
            if self.guard.policies.enforcing and delta.get("function_call"):
                if not (state.held and state.held[-1].legacy):
                    state.held.append(_HeldCall(index=None, legacy=True))
                _merge(state.held[-1], {"function": delta.pop("function_call")})
            if choice.get("finish_reason"):
                state.is_finished = True
                out += await self._settle(index, state)
                if state.sent_calls:
                    choice["finish_reason"] = "tool_calls"
                elif state.refused:
                    out.append(self._refusal(index, state))
                    choice["finish_reason"] = "stop"
        if _says_something(chunk):
            out.append(chunk)
        return out

    async def finish(self) -> list[dict[str, Any]]:
        """At the end of the upstream stream. One in which no choice finished was cut short:
        UpstreamError, and nothing held is released (its arguments may be incomplete).
        Otherwise a choice left unfinished (litellm drops the finish_reason of every choice
        past the first) has its held calls decided now, and is finished."""
        if not any(state.is_finished for state in self._choices.values()):
            raise UpstreamError("the provider's stream ended before its answer was finished",
                                status=502, code="upstream_stream_cut")
        out: list[dict[str, Any]] = []
        for index, state in self._choices.items():
            if state.is_finished:
                continue
            out += await self._settle(index, state)
            if not state.sent_calls and state.refused:
                out.append(self._refusal(index, state))
            finished = _chunk_like(self._template, index, {})
            finished["choices"][0]["finish_reason"] = "tool_calls" if state.sent_calls else "stop"
            out.append(finished)
        return out

    async def _settle(self, choice_index: int, state: _ChoiceState) -> list[dict[str, Any]]:
        out = []
        held, state.held = state.held, []
        for call in held:
            reading = call.reading()
            if await _decide(self.guard, call.id, reading, legacy=call.legacy, keepalive=self.keepalive,
                             is_client_gone=self.is_client_gone):
                out.append(_chunk_like(self._template, choice_index, {"tool_calls": [call.whole(state.sent_calls)]}))
                state.sent_calls += 1
            else:
                state.refused.append(reading.name)
        return out

    def _refusal(self, choice_index: int, state: _ChoiceState) -> dict[str, Any]:
        refusal = self.guard.refusal_text(state.refused)
        return _chunk_like(self._template, choice_index, {"content": f"\n\n{refusal}" if state.has_content else refusal})


def _hold(state: _ChoiceState, delta: Any) -> None:
    """Add a tool-call delta to the call it continues: the one with its index, or the last
    one when it has none; a different `id` always starts a new call."""
    if not isinstance(delta, dict):
        state.held.append(_HeldCall(index=None, malformed="is not an object"))
        return
    index, call_id = delta.get("index"), delta.get("id")
    target = None
    if index is not None:
        target = next((c for c in reversed(state.held) if c.index == index), None)
    elif state.held:
        target = state.held[-1]
    if target is not None and call_id and target.id and call_id != target.id:
        target = None
    if target is None:
        target = _HeldCall(index=index)
        state.held.append(target)
    _merge(target, delta)


def _merge(call: _HeldCall, delta: dict[str, Any]) -> None:
    """One delta (or a whole call) into the held call: its id and type, and for each shape
    it holds, the name (set once: some providers repeat it in every delta) and the next
    fragment of the arguments or input. A part of the wrong type makes the call unreadable."""
    if delta.get("id") and not call.id:
        call.id = delta["id"]
    if delta.get("type") and delta["type"] not in call.types:
        call.types.append(delta["type"])
    for shape, text_key in TOOL_CALL_SHAPES.items():
        holder = delta.get(shape)
        if holder is None:
            continue
        if not isinstance(holder, dict):
            call.malformed = call.malformed or f"has a {shape!r} that is not an object"
            continue
        parts = call.shapes.setdefault(shape, _Parts())
        name, text = holder.get("name"), holder.get(text_key)
        if name is not None and not isinstance(name, str):
            call.malformed = call.malformed or f"has a {shape}.name that is not a string"
        elif name and not parts.name:
            parts.name = name
        if text is not None and not isinstance(text, str):
            call.malformed = call.malformed or f"has a {shape}.{text_key} that is not a string"
        elif text:
            parts.fragments.append(text)


def _chunk_like(template: dict[str, Any], choice_index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": template.get("id"), "object": "chat.completion.chunk", "created": template.get("created"),
        "model": template.get("model"),
        "choices": [{"index": choice_index, "delta": delta, "finish_reason": None}],
    }


def _says_something(chunk: dict[str, Any]) -> bool:
    """False for a chunk left empty once its tool-call deltas were taken out."""
    if chunk.get("usage") or not chunk.get("choices"):
        return True
    return any(choice.get("delta") or choice.get("finish_reason") for choice in chunk["choices"])
