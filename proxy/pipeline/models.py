"""`GET /v1/models` and `GET /v1/models/{model}`: the declared models the caller's key may use,
in the shape of the dialect that asked (the one whose marker header the request carries, else
the default one), errors likewise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from proxy.appkeys import KEYRING, SETTINGS
from proxy.edge.errors import ERROR_BODY, GatewayError, NotFound
from proxy.edge.wire import json_response
from proxy.pipeline.identity import caller_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ModelShapes(Protocol):
    """A dialect's way of listing models."""

    def model_list(self, names: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]: ...

    def model_object(self, name: str) -> dict[str, Any]: ...

    def error_body(self, error: GatewayError) -> dict[str, Any]: ...


def model_handlers(default: ModelShapes, by_header: Mapping[str, ModelShapes]) -> tuple[Handler, Handler]:
    """(list, get) for the models routes: in the shape of the dialect whose header in
    `by_header` the request carries, else `default`'s."""

    def shapes_for(request: web.Request) -> ModelShapes:
        shapes = next((s for header, s in by_header.items() if header in request.headers), default)
        request[ERROR_BODY] = shapes.error_body
        return shapes

    async def list_models(request: web.Request) -> web.StreamResponse:
        shapes = shapes_for(request)
        return json_response(shapes.model_list(_usable_models(request), request.query))

    async def get_model(request: web.Request) -> web.StreamResponse:
        shapes, name = shapes_for(request), request.match_info["model"]
        if name not in _usable_models(request):
            raise NotFound(f"model {name!r} is not available through this gateway", param="model",
                           code="model_not_found")
        return json_response(shapes.model_object(name))

    return list_models, get_model


def _usable_models(request: web.Request) -> list[str]:
    """Declared model names in config order, those outside the caller's key left out; 401
    without a valid key when keys are configured."""
    key = caller_key(request, request.app[KEYRING])
    return list(dict.fromkeys(route.model_name for route in request.app[SETTINGS].models
                              if key is None or key.allows_model(route.model_name)))
