"""The upstream seam: one call in, the provider's answer out, by the transport its route takes.

`native` where the route's provider speaks the client's dialect (see `translate.native_route`):
the body goes out as ctxgate holds it, the answer is read with orjson and a stream's frames
keep their bytes. `translate` everywhere else: litellm converts to and from the provider's
protocol. Both hand the pipeline the same values and raise the same UpstreamError.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from proxy.config.settings import Settings
from proxy.pipeline.dialect import StreamEvent, UpstreamCall
from proxy.edge.redaction import Redactor
from proxy.edge.errors import BadRequest
from proxy.upstream.native import NativeRoute, NativeTransport
from proxy.upstream.translate import Translate, native_route


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.translate = Translate(settings)
        self.native = NativeTransport(Redactor(settings.secrets), settings.upstream_timeout_s)
        self._native_routes = {route.model_name: native_route(route) for route in settings.models}

    def transport_for(self, call: UpstreamCall) -> str:
        """native | translate; BadRequest, before anything is sent, for a call no transport
        carries yet: litellm translates OpenAI chat only (for now)."""
        if self._native(call) is not None:
            return "native"
        if call.wire != "openai_chat":
            raise BadRequest(f"model {call.model!r} has no route whose provider speaks this API ({call.wire}); "
                             "declare one (for Anthropic Messages: an anthropic/... model)", param="model",
                             code="no_native_route")
        return "translate"

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
        return await self.translate.complete(call)

    def stream(self, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        """The provider's events, in batches as they arrive (each batch non-empty)."""
        route = self._native(call)
        if route is not None:
            return self.native.stream(route, call)
        return self.translate.stream(call)

    def count_tokens(self, model_name: str, prompt: Any, completion_text: str) -> tuple[int, int]:
        return self.translate.count_tokens(model_name, prompt, completion_text)

    def _native(self, call: UpstreamCall) -> NativeRoute | None:
        if call.model not in self._native_routes and call.wire == "anthropic_messages":
            # Undeclared, with the client's own key: Anthropic's API, as the client would call it.
            return _ANTHROPIC
        route = self._native_routes.get(call.model)
        return route if route is not None and route.wire == call.wire else None


_ANTHROPIC = NativeRoute(api_base="https://api.anthropic.com", model="", wire="anthropic_messages")
