"""The seam between the protocol-neutral pipeline and a client's wire protocol.

A dialect (OpenAI chat, and later Anthropic Messages and the Responses API) turns its body
into a `ClientRequest`, the pack and the policy into the `UpstreamCall`, and the provider's
answer back into its own wire shape with every tool call decided. The pipeline sees only the
values below; nothing outside a dialect reads its JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from capture.records import MAX_COUNT, Interaction
from policy.rules import ProjectPolicy
from proxy.edge.errors import GatewayError
from proxy.pipeline.context import ContextPack
from proxy.pipeline.tool_guard import Keepalive, ToolGuard


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What the pipeline needs of a client's call, read once by its dialect."""

    wire: str  # the dialect's name, as records give it
    model: str  # the client's name for the model
    stream: bool
    body: dict[str, Any]  # as the client sent it
    declared_tools: frozenset[str]  # every tool name the request offers the model
    query: str  # the text the context pack is searched with
    session_hints: tuple[Any, ...] = ()  # session ids the body may carry; the first usable one wins
    conversation_start: tuple[Any, Any] = (None, None)  # (system prompt, first user turn): what every turn resends
    headers: Mapping[str, str] = field(default_factory=dict)  # the client's headers the provider gets as they came
    continues: Continuation | None = None  # the earlier response this call goes on from


@dataclass(frozen=True, slots=True)
class Continuation:
    """A call that goes on from an earlier response by its id (the Responses API's
    `previous_response_id`). A provider that stores responses resolves it; where the gateway made
    the response itself (translated), `rebuild` puts the earlier turns, read from its record,
    into the call."""

    response_id: str
    rebuild: Callable[[UpstreamCall, Interaction], UpstreamCall]


@dataclass(slots=True)
class Learned:
    """What the transport learns of a call on its way back that the answer does not say."""

    usage_counted: bool = False  # the answer's usage is the gateway's count: the provider sent none


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What goes to the provider: the body as finally sent (pack injected, blocked tools taken
    out), with `model` the client's name; the upstream seam resolves the route."""

    wire: str
    path: str  # the provider's endpoint under a route's api_base, e.g. `/chat/completions`
    model: str
    stream: bool
    body: dict[str, Any]
    client_api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)  # sent to the provider as they are
    key_header: tuple[str, str] = ("Authorization", "Bearer ")  # how the provider takes its key: (name, prefix)
    interaction_id: str = ""  # the exchange's: what names a response the gateway makes itself
    learned: Learned = field(default_factory=Learned, compare=False, repr=False)  # set by the transport

    @property
    def made_response_id(self) -> str:
        """The id of a response the gateway makes itself (translating), which names its record."""
        return MADE_RESPONSE_PREFIX + self.interaction_id


MADE_RESPONSE_PREFIX = "resp_ctxgate_"


def interaction_of_made_response(response_id: str) -> str | None:
    """The interaction whose record holds a response the gateway made; None for another id."""
    return response_id.removeprefix(MADE_RESPONSE_PREFIX) if response_id.startswith(MADE_RESPONSE_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them; None where it gave none a count can be."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None

    @classmethod
    def of(cls, prompt: Any = None, completion: Any = None, cache_read: Any = None,
           cache_creation: Any = None) -> Usage:
        """Only counts are kept: a string, a negative number or one past 64 bits is left for
        the writer to count locally."""
        return cls(_count(prompt), _count(completion), _count(cache_read), _count(cache_creation))

    @property
    def is_reported(self) -> bool:
        """The provider gave a prompt or completion count (cache counts alone are not usage)."""
        return self.prompt_tokens is not None or self.completion_tokens is not None


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation as a person reads it: who, and what they said or did
    (a tool call reads `name(arguments)`)."""

    role: str  # system, user, assistant, tool
    text: str


def text_of_parts(content: Any) -> str:
    """A message's text: a string, or the text of each of its parts (blocks), a line each."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def role_of(message: dict[str, Any]) -> str:
    role = message.get("role")
    return role if isinstance(role, str) else "assistant"


def text_of_any(value: Any) -> str:
    """A value a turn holds that is not text (a tool's input or result), as text."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


@dataclass(slots=True)  # not frozen: one is made per streamed chunk, and a frozen __init__ costs twice
class StreamEvent:
    """One server-sent event from the provider: decoded, and, from the native transport, the
    frame as it came, so a frame the gate lets through untouched is relayed as those bytes."""

    data: dict[str, Any]
    raw: bytes | None = None  # the frame as sent (its `event:` line included), without the blank line ending it
    name: str | None = None  # the SSE `event:` field


class StreamRelay(Protocol):
    """One streamed reply: events in, frames for the client out, tool calls held and decided.
    `commit()` after the frames were written: only what reached the client is recorded."""

    async def feed(self, events: list[StreamEvent]) -> bytes: ...

    async def finish(self) -> bytes:
        """The frames that close a stream the provider ended; UpstreamError for one it cut short."""
        ...

    def commit(self) -> None: ...

    def error_frame(self, error: GatewayError) -> bytes: ...

    def reply(self) -> Any:
        """What was streamed to the client, assembled as the dialect records a reply."""
        ...

    def usage(self) -> Usage: ...


class Dialect(Protocol):
    wire: str

    def parse(self, body: Any, headers: Mapping[str, str]) -> ClientRequest: ...

    def prepare(self, request: ClientRequest, pack: ContextPack | None, policy: ProjectPolicy | None,
                client_api_key: str | None) -> UpstreamCall:
        """The call as sent: the pack injected, and, with a policy enforcing, the tools it blocks
        taken out (BadRequest for what cannot be screened)."""
        ...

    def recorded_prompt(self, call: UpstreamCall) -> tuple[Any, dict[str, Any]]:
        """(prompt, params) of the record: the prompt as sent, and every other parameter."""
        ...

    def read_reply(self, reply: dict[str, Any], call: UpstreamCall) -> dict[str, Any]:
        """The provider's whole reply, with the client's model name; UpstreamError (502) when
        it is not the kind of answer the dialect expects."""
        ...

    async def gate_reply(self, reply: dict[str, Any], guard: ToolGuard,
                         is_client_gone: Callable[[], bool]) -> dict[str, Any]:
        """The reply as the client gets it: every tool call decided."""
        ...

    def recorded_reply(self, reply: dict[str, Any]) -> Any: ...

    def usage(self, reply: dict[str, Any]) -> Usage: ...

    def stream_relay(self, call: UpstreamCall, guard: ToolGuard, keepalive: Keepalive,
                     is_client_gone: Callable[[], bool]) -> StreamRelay: ...

    def completion_text(self, recorded_reply: Any) -> str:
        """The generated text of a recorded reply, as a provider counts completion tokens."""
        ...

    def transcript(self, recorded_prompt: Any, recorded_reply: Any = None) -> list[Turn]:
        """A recorded prompt (and reply), turn by turn, for a person to read. Total: what it
        cannot read is left out, never raised."""
        ...

    def error_body(self, error: GatewayError) -> dict[str, Any]: ...


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None
