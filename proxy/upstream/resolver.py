"""Route resolution: which provider a declared model goes to, the dialect that provider speaks,
and whether the native transport can carry it. litellm knows the providers; this asks it."""

from __future__ import annotations

import functools

import litellm

from proxy.config.settings import ModelRoute
from proxy.upstream.native import NativeRoute

# Where a route's provider speaks OpenAI chat, the native transport can carry it: OpenAI's own
# provider names, and the providers litellm itself calls OpenAI-compatible (vLLM, Groq, ...).
_NATIVE_PROVIDERS = frozenset({
    "openai", "openai_like", "custom_openai", "hosted_vllm",
    *litellm.openai_compatible_providers,  # type: ignore[attr-defined]  # a list litellm does not re-export by name
})
# Providers that serve the Responses API beside chat: OpenAI's, and what is declared as OpenAI
# with an api_base of its own (vLLM, Ollama, LM Studio and the like serve it too; a server that
# does not takes `transport: translate`, and gets the calls as chat).
_RESPONSES_PROVIDERS = frozenset({"openai"})
# Anthropic's own API, which Claude Code and the anthropic SDK speak: natively even without an
# api_base of the route's own.
_ANTHROPIC_PROVIDERS = {"anthropic": "https://api.anthropic.com"}
# litellm_params the native transport applies itself; a route with any other goes through litellm.
_NATIVE_PARAMS = frozenset({"timeout"})


def route_wire(route: ModelRoute) -> str:
    """The dialect `route`'s provider speaks as litellm calls it: Anthropic Messages for
    Anthropic's API, OpenAI chat for every other (litellm converts to and from the rest)."""
    try:
        provider = litellm.get_llm_provider(route.model, api_base=route.api_base)[1]
    except Exception:  # a name litellm cannot resolve: it will say so when called
        return "openai_chat"
    return "anthropic_messages" if provider in _ANTHROPIC_PROVIDERS else "openai_chat"


def native_route(route: ModelRoute) -> NativeRoute | None:
    """How `route` is called natively, or None for the translate transport: litellm resolves
    the provider and its name for the model; `transport:` in the route overrides. The route's
    provider speaks OpenAI chat (natively only with an api_base of the route's own: litellm's
    defaults per provider stay with it) or Anthropic Messages."""
    if route.transport == "translate":
        return None
    try:
        model, provider, _, _ = litellm.get_llm_provider(route.model, api_base=route.api_base)
    except Exception:  # a name litellm cannot resolve: it will say so when called
        return None
    wire, api_base = "openai_chat", route.api_base
    if provider in _ANTHROPIC_PROVIDERS:
        wire, api_base = "anthropic_messages", api_base or _ANTHROPIC_PROVIDERS[provider]
    if not api_base:
        return None
    is_native = route.transport == "native" or (
        (provider in _NATIVE_PROVIDERS or wire == "anthropic_messages") and set(route.extra) <= _NATIVE_PARAMS)
    if not is_native:
        return None
    timeout = route.extra.get("timeout")
    return NativeRoute(api_base=api_base.rstrip("/"), model=model, api_key=route.api_key, wire=wire,
                       speaks_responses=provider in _RESPONSES_PROVIDERS,
                       timeout_s=float(timeout) if isinstance(timeout, (int, float)) else None)


@functools.cache
def provider_of(model: str) -> str | None:
    try:
        provider: str = litellm.get_llm_provider(model)[1]
    except Exception:  # an unknown name: litellm will say so when called
        return None
    return provider
