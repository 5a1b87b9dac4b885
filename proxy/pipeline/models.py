"""`GET /v1/models` and `GET /v1/models/{model}`: the declared models the caller's key may use,
in the shape of the dialect that asked (an Anthropic client sends `anthropic-version`; anything
else gets OpenAI's), errors likewise."""

from __future__ import annotations

from aiohttp import web

from proxy.appkeys import KEYRING, SETTINGS
from proxy.dialects.anthropic_messages import models as anthropic_models
from proxy.dialects.anthropic_messages.dialect import AnthropicMessages
from proxy.dialects.openai_chat import models as openai_models
from proxy.edge.errors import ERROR_BODY, NotFound
from proxy.edge.wire import json_response
from proxy.pipeline.identity import caller_key

_ANTHROPIC = AnthropicMessages()


async def list_models(request: web.Request) -> web.Response:
    if _asks_in_anthropics_shape(request):
        return json_response(anthropic_models.model_page(_usable_models(request), request.query))
    return json_response(openai_models.model_list(_usable_models(request)))


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    anthropic = _asks_in_anthropics_shape(request)
    if name not in _usable_models(request):
        raise NotFound(f"model {name!r} is not available through this gateway", param="model",
                       code="model_not_found")
    return json_response(anthropic_models.model_object(name) if anthropic else openai_models.model_object(name))


def _asks_in_anthropics_shape(request: web.Request) -> bool:
    if "anthropic-version" not in request.headers:
        return False
    request[ERROR_BODY] = _ANTHROPIC.error_body
    return True


def _usable_models(request: web.Request) -> list[str]:
    """Declared model names in config order, those outside the caller's key left out; 401
    without a valid key when keys are configured."""
    key = caller_key(request, request.app[KEYRING])
    return list(dict.fromkeys(route.model_name for route in request.app[SETTINGS].models
                              if key is None or key.allows_model(route.model_name)))
