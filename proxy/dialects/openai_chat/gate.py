"""The tool gate on OpenAI chat replies: every tool call decided by the guard, in a whole
completion and in a stream. Streamed replies pass text through as it comes; each tool call is
held until complete, decided, and then sent whole, renumbered, or not at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.dialects.openai_chat.assembly import TOOL_CALL_SHAPES
from proxy.edge.errors import UpstreamError
from proxy.pipeline.tool_guard import Keepalive, ToolGuard


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

    def passes_intact(self, chunk: dict[str, Any]) -> bool:
        """True for a chunk `feed` would send on as it came (most of a stream: text deltas, a
        usage chunk), so its bytes can be relayed untouched: no tool-call or function-call
        delta, no finish. Notes the text it carries, as `feed` would."""
        choices = chunk.get("choices")
        if choices is None:
            return True
        if not isinstance(choices, list):
            return False
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason"):
                return False
            delta = choice.get("delta")
            if not delta:
                continue
            if not isinstance(delta, dict) or "tool_calls" in delta or "function_call" in delta:
                return False
            if delta.get("content"):
                self._choices.setdefault(choice.get("index", 0), _ChoiceState()).has_content = True
        return True

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
