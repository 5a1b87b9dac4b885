"""The upstream seam: one call in, the provider's answer out, by the transport its route takes.

`native` where the route's provider speaks the client's dialect (see `translate.native_route`):
the body goes out as ctxgate holds it, the answer is read with orjson and a stream's frames
keep their bytes. `translate` everywhere else: litellm converts to and from the provider's
protocol (OpenAI chat calls, and Anthropic Messages calls to a route that speaks OpenAI chat).
Both hand the pipeline the same values and raise the same UpstreamError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from proxy.config.settings import Settings
from proxy.pipeline.dialect import StreamEvent, UpstreamCall
from proxy.edge.redaction import Redactor
from proxy.edge.errors import BadRequest
from proxy.upstream.native import NativeRoute, NativeTransport
from proxy.upstream.resolver import native_route, provider_of, route_wire
from proxy.upstream.translate import Translate

OPENAI_CHAT = "openai_chat"
OPENAI_EMBEDDINGS = "openai_embeddings"
OPENAI_COMPLETIONS = "openai_completions"
OPENAI_RESPONSES = "openai_responses"
ANTHROPIC_MESSAGES = "anthropic_messages"
# The wire a route must speak to carry a call natively: a provider that speaks OpenAI chat
# serves the rest of OpenAI's API beside it.
_ROUTE_WIRE = {OPENAI_EMBEDDINGS: OPENAI_CHAT, OPENAI_COMPLETIONS: OPENAI_CHAT, OPENAI_RESPONSES: OPENAI_CHAT}


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.translate = Translate(settings)
        self.native = NativeTransport(Redactor(settings.secrets), settings.upstream_timeout_s)
        self._native_routes = {route.model_name: native_route(route) for route in settings.models}
        self._wires = {route.model_name: route_wire(route) for route in settings.models}
        self._routes = {route.model_name: route.model for route in settings.models}

    def transport_for(self, call: UpstreamCall) -> str:
        """native | translate; BadRequest, before anything is sent, for a call no transport
        carries: litellm translates OpenAI chat, and Anthropic Messages to a route whose
        provider speaks OpenAI chat (an Anthropic route not carried natively has neither)."""
        if self._native(call) is not None:
            return "native"
        if call.wire == OPENAI_COMPLETIONS and call.stream:
            # litellm's text-completion stream hides whether the provider finished it and
            # whether the usage at its end is the provider's or litellm's count.
            raise BadRequest(f"model {call.model!r}: a streamed legacy completion is carried only to a provider "
                             "that speaks OpenAI's API natively; ask without stream, or use chat completions",
                             param="stream", code="stream_not_carried")
        if call.wire in (OPENAI_CHAT, OPENAI_EMBEDDINGS, OPENAI_COMPLETIONS, OPENAI_RESPONSES) \
                or self._is_translated_message(call):
            return "translate"
        raise BadRequest(f"model {call.model!r} has no route whose provider speaks this API ({call.wire}); "
                         "declare one (for Anthropic Messages: an anthropic/... model, or a model whose provider "
                         "speaks OpenAI chat)", param="model", code="no_native_route")

    async def warm_up(self) -> float:
        await self.native.start()
        return await self.translate.warm_up()

    async def aclose(self) -> None:
        await self.native.aclose()
        await self.translate.aclose()

    async def complete(self, call: UpstreamCall) -> dict[str, Any]:
        route = self._native(call)
        if route is not None:
            return await self.native.complete(route, call)
        if self._is_translated_message(call):
            return await self.translate.complete_message(call)
        if call.wire == OPENAI_EMBEDDINGS:
            return await self.translate.embed(call)
        if call.wire == OPENAI_COMPLETIONS:
            return await self.translate.complete_text(call)
        if call.wire == OPENAI_RESPONSES:
            return await self.translate.respond(call)
        return await self.translate.complete(call)

    def stream(self, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        """The provider's events, in batches as they arrive (each batch non-empty)."""
        route = self._native(call)
        if route is not None:
            return self.native.stream(route, call)
        if self._is_translated_message(call):
            return self.translate.stream_message(call)
        if call.wire == OPENAI_RESPONSES:
            return self.translate.stream_response(call)
        return self.translate.stream(call)

    async def count_message_tokens(self, call: UpstreamCall) -> dict[str, Any]:
        """Anthropic's `count_tokens` for a Messages call (`call.path` its count_tokens
        endpoint): the provider's own answer on a native route, else `{"input_tokens": N}`
        counted locally by litellm. Call `transport_for` first."""
        route = self._native(call)
        if route is not None:
            return await self.native.complete(route, call)
        return {"input_tokens": await asyncio.to_thread(self.translate.count_message_tokens, call)}

    async def fetch_stored(self, model: str, method: str, path: str, client_api_key: str | None) -> dict[str, Any] | None:
        """A stored response's endpoint (`path`: `/responses/{id}` or under it) asked of the
        provider that `model`'s route carries natively, with the key a call to it would carry;
        None when that route no longer serves the Responses API natively."""
        route = self._native_routes.get(model)
        if route is None or not route.speaks_responses:
            return None
        call = UpstreamCall(wire=OPENAI_RESPONSES, path=path, model=model, stream=False, body={},
                            client_api_key=client_api_key)
        return await self.native.fetch(route, call, method)

    def count_tokens(self, model_name: str, prompt: Any, completion_text: str) -> tuple[int, int]:
        return self.translate.count_tokens(model_name, prompt, completion_text)

    def provider_name(self, model_name: str) -> str | None:
        """litellm's name of the provider a client's model name goes to (`openai`, `anthropic`)."""
        return provider_of(self._routes.get(model_name, model_name))

    def _native(self, call: UpstreamCall) -> NativeRoute | None:
        if call.model not in self._native_routes and call.wire == ANTHROPIC_MESSAGES:
            # Undeclared, with the client's own key: Anthropic's API, as the client would call it.
            return _ANTHROPIC
        route = self._native_routes.get(call.model)
        if route is None or route.wire != _ROUTE_WIRE.get(call.wire, call.wire):
            return None
        return route if call.wire != OPENAI_RESPONSES or route.speaks_responses else None

    def _is_translated_message(self, call: UpstreamCall) -> bool:
        """An Anthropic Messages call that litellm translates to its route's OpenAI chat."""
        return call.wire == ANTHROPIC_MESSAGES and self._wires.get(call.model) == OPENAI_CHAT


_ANTHROPIC = NativeRoute(api_base="https://api.anthropic.com", model="", wire=ANTHROPIC_MESSAGES)
