"""The translate transport: litellm carries the call and converts it to and from the provider's protocol.

It takes an OpenAI chat `UpstreamCall` and returns plain OpenAI wire-format data: a
`chat.completion` dict, or batches of `chat.completion.chunk` events. An Anthropic Messages call
to a route whose provider speaks OpenAI chat goes the same way, translated by litellm's
Anthropic-messages adapter there and back: an Anthropic `message`, or batches of its stream
events. Provider failures leave it as `UpstreamError` with the status the client should get.
Nothing outside sees litellm's types.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import litellm
import orjson
import pydantic
from litellm.llms.anthropic.pass_through.adapters.streaming_iterator import AnthropicStreamWrapper
from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter
from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients
from litellm.responses.litellm_completion_transformation.streaming_iterator import LiteLLMCompletionStreamingIterator
from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig
import structlog

from capture.writable import writable
from proxy.pipeline.dialect import StreamEvent, UpstreamCall
from proxy.edge.errors import UpstreamError
from proxy.edge.redaction import Redactor
from proxy.upstream.litellm_errors import upstream_error
from proxy.upstream.resolver import provider_of
from proxy.config.settings import Settings

log = structlog.get_logger("ctxgate.upstream")

# OpenAI chat parameters that litellm translates per provider, so they go as keyword
# arguments. Everything else the client sent goes in `extra_body`, verbatim: litellm would
# swallow some (`metadata`, `user`), and a client must never reach litellm's own keyword
# arguments (`api_base`, `api_key`, `mock_response`, ...) through the request body.
_TRANSLATED_PARAMS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "modalities", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "reasoning_effort", "response_format", "seed",
    "service_tier", "stop", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "web_search_options",
})
# litellm swallows these for OpenAI-style providers, so there they travel in `extra_body`;
# for other providers litellm maps them itself (Anthropic: `user` -> metadata.user_id).
_OPENAI_BODY_PARAMS = frozenset({"metadata", "user"})
_OPENAI_STYLE_PROVIDERS = frozenset({"openai", "azure", "openai_like", "custom_openai", "hosted_vllm", "text-completion-openai"})
_LITELLM_ONLY_KEYS = ("provider_specific_fields", "citations")
_WARM_UP_TOOL = {"type": "function", "function": {"name": "warm_up", "parameters": {"type": "object"}}}
# What an embeddings or legacy completions call may set through litellm, which maps them per provider.
_EMBEDDING_PARAMS = frozenset({"dimensions", "encoding_format", "user"})
_TEXT_COMPLETION_PARAMS = frozenset({
    "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
    "seed", "stop", "suffix", "temperature", "top_p", "user",
})
# Anthropic Messages parameters with an OpenAI chat counterpart, which litellm's adapter maps
# (`system` to a system message, `tools` to function tools, `stop_sequences` to `stop`, `thinking`
# to `reasoning_effort`, `metadata.user_id` to `user`, ...). The others (`top_k`,
# `context_management`, `container`, `mcp_servers`, ...) have none, and an OpenAI chat provider
# refuses a parameter it does not know: they stay behind.
_MESSAGES_PARAMS = frozenset({
    "messages", "system", "metadata", "tools", "tool_choice", "thinking", "output_format", "output_config",
    "stop_sequences", "max_tokens", "temperature", "top_p",
})


class Translate:
    """Forwards calls through `litellm.acompletion` to the route the model name maps to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redactor = Redactor(settings.secrets)
        # Its translation pieces only: litellm's own `anthropic_messages()` imports litellm's proxy
        # server (FastAPI, not installed) when it streams, sorts `anthropic-beta` and replaces the
        # User-Agent.
        self.messages_adapter = LiteLLMAnthropicMessagesAdapter()  # type: ignore[no-untyped-call]  # litellm leaves it unannotated
        litellm.suppress_debug_info = True  # it otherwise prints banners into our stdout logs
        # Counting tokens for a llama-named model would fetch a tokenizer from Hugging Face:
        # the gateway never reaches out but to its providers (tiktoken's counts stand in).
        litellm.disable_hf_tokenizer_download = True
        # Retries are the client's call, as they would be without us; litellm's OpenAI embedding
        # path reads `max_retries or DEFAULT_MAX_RETRIES`, so our 0 would become its default of 2.
        # (Its Azure paths read the constant as imported: an Azure embedding route still retries.)
        litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[attr-defined]  # a constant litellm does not re-export by name

    async def warm_up(self) -> float:
        """litellm imports most of its call path on first use (about a second on a small
        machine). Pay that at start-up, before /healthz answers, against a closed loopback port,
        rather than on a user's first request. Returns the milliseconds it took."""
        started = time.perf_counter()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        for stream in (False, True):
            try:
                await litellm.acompletion(
                    model="openai/ctxgate-warm-up",
                    api_base=f"http://127.0.0.1:{closed_port}/v1",
                    api_key="warm-up",
                    messages=[{"role": "user", "content": "warm-up"}],
                    tools=[_WARM_UP_TOOL],
                    stream=stream,
                    max_retries=0,
                    timeout=5,
                )
            except Exception:  # refused by design: only the imports on the way matter
                pass
        return (time.perf_counter() - started) * 1000

    async def aclose(self) -> None:
        """Close the HTTP clients litellm caches (they would outlive the event loop), and
        forget them, so a later app in this process does not pick up a closed one."""
        await close_litellm_async_clients()  # type: ignore[no-untyped-call]  # litellm leaves it unannotated
        litellm.in_memory_llm_clients_cache.flush_cache()  # type: ignore[no-untyped-call]  # likewise

    async def complete(self, call: UpstreamCall) -> dict[str, Any]:
        try:
            response = await litellm.acompletion(**self._arguments(call))
        except Exception as error:  # boundary: every provider failure becomes an UpstreamError
            raise self._error(error, call) from error
        return _without_made_up_usage(response.model_dump(exclude_none=True))

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        async with self._chat_stream(self._arguments(call), call) as response:
            async for chunk in response:
                if _is_made_up_finish(response):
                    raise _stream_cut()
                data = _chunk_dict(chunk, call.model)
                if "usage" in data and not _has_provider_usage(response):
                    # litellm counted it, having none from the provider: not passed on as the
                    # provider's, as on the native transport (the gateway counts it itself).
                    if not data["choices"]:
                        continue
                    del data["usage"]
                yield [StreamEvent(data=data)]

    @contextlib.asynccontextmanager
    async def _chat_stream(self, arguments: dict[str, Any], call: UpstreamCall) -> AsyncIterator[Any]:
        """litellm's stream of the chat call `arguments` make, for the body to read: what fails
        on the way leaves as UpstreamError, and however the reading ends the provider's
        connection is released (when we stop early, client gone, it would otherwise keep
        generating, and billing, until garbage collection)."""
        try:
            response = await litellm.acompletion(**arguments)
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        try:
            yield response
        except UpstreamError:
            raise
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        finally:
            await response.aclose()

    async def embed(self, call: UpstreamCall) -> dict[str, Any]:
        """An embeddings call through `litellm.aembedding`: the answer in OpenAI's shape."""
        arguments = self._carried(call, "input", _EMBEDDING_PARAMS)
        try:
            response = await litellm.aembedding(**arguments)
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        return _without_made_up_usage(response.model_dump(exclude_none=True))

    async def complete_text(self, call: UpstreamCall) -> dict[str, Any]:
        """A legacy completions call through `litellm.atext_completion`: a `text_completion`
        (never streamed: the seam refuses that, see `Upstream.transport_for`)."""
        arguments = self._carried(call, "prompt", _TEXT_COMPLETION_PARAMS)
        try:
            response = await litellm.atext_completion(**arguments, stream=False)
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        return _without_made_up_usage(response.model_dump(exclude_none=True))

    def _carried(self, call: UpstreamCall, given: str, carried: frozenset[str]) -> dict[str, Any]:
        """litellm's keyword arguments for a call that is not chat: the route's, and of the body
        `model`, the `given` text and the `carried` parameters (400 for any other: litellm's own
        arguments, such as `api_base`, must never come from a body)."""
        extra = {k: v for k, v in call.body.items() if k not in ("model", given, "stream")}
        unknown = sorted(set(extra) - carried)
        if unknown:
            raise UpstreamError(f"parameter {unknown[0]!r} is not carried to this model's provider (carried: "
                                f"{', '.join(sorted(carried))})", status=400, kind="invalid_request_error",
                                param=unknown[0], code="unsupported_parameter")
        return {**extra, **self._route_arguments(call), given: call.body[given]}

    def _route_arguments(self, call: UpstreamCall) -> dict[str, Any]:
        """litellm's keyword arguments that come from the gateway and the route, never the body:
        the provider's model, key and base, the route's own settings, no retries."""
        route = self.settings.route_for(call.model)
        arguments: dict[str, Any] = {
            "timeout": self.settings.upstream_timeout_s,
            "max_retries": 0,  # retries are the client's call, as they would be without us
        }
        if self.settings.drop_params:
            arguments["drop_params"] = True
        if route is None:
            # Not declared: litellm resolves the name itself, with the client's own key.
            arguments.update(model=self._model(call), api_key=call.client_api_key)
        else:
            arguments.update(route.extra)  # a route's own timeout etc. win over the defaults
            arguments.update(model=self._model(call), api_key=route.api_key or call.client_api_key)
            if route.api_base:
                arguments["api_base"] = route.api_base
        return arguments

    async def complete_message(self, call: UpstreamCall) -> dict[str, Any]:
        """An Anthropic Messages call to a route whose provider speaks OpenAI chat: sent as the
        chat call litellm's adapter makes of it, and the answer made an Anthropic `message`."""
        chat, tool_names = self._chat_call(call)
        try:
            response = await litellm.acompletion(**self._arguments(chat))
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        try:
            message: dict[str, Any] = dict(self.messages_adapter.translate_openai_response_to_anthropic(
                response, tool_name_mapping=tool_names))
        except Exception as error:  # boundary: litellm's adapter on an answer it could not read
            log.warning("upstream_answer_untranslatable", error_type=type(error).__name__, error=str(error))
            raise UpstreamError("upstream failed: the provider's answer could not be translated to a message",
                                status=502, code="upstream_unavailable") from error
        message["content"] = [_without_litellm_fields(block) for block in message.get("content") or ()]
        usage = getattr(response, "usage", None)
        if usage is None or _is_made_up_usage(usage.model_dump()):
            # litellm's zeros: an Anthropic client sizes its context by these counts, so it gets
            # them counted here, as litellm counts a stream's when the provider sends none.
            message["usage"] = await asyncio.to_thread(self._counted_usage, chat, message)
            call.learned.usage_counted = True
        return writable(message)

    async def stream_message(self, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        """The same, streamed: the provider's chunks made Anthropic stream events by litellm's
        `AnthropicStreamWrapper` (message_start; each block's start, deltas and stop, a new block
        for each tool call; message_delta with the stop reason and usage; message_stop), one
        event a batch."""
        chat, tool_names = self._chat_call(call)
        async with self._chat_stream(self._arguments(chat), call) as response:
            async for event in AnthropicStreamWrapper(response, model=call.model, tool_name_mapping=tool_names):
                # The wrapper ends every stream with message_stop: a cut one must not reach the
                # client as finished (the made-up finish chunk is the first sign of it).
                if _is_made_up_finish(response):
                    raise _stream_cut()
                data = _event_dict(event)
                if data.get("type") == "message_delta" and not _has_provider_usage(response):
                    call.learned.usage_counted = True  # litellm counted the usage it carries
                yield [StreamEvent(data=data)]

    async def respond(self, call: UpstreamCall) -> dict[str, Any]:
        """A Responses API call to a route whose provider speaks only OpenAI chat: sent as the
        chat call litellm's responses adapter makes of it, and the answer made a `response`."""
        chat, request = self._responses_chat_call(call)
        try:
            response = await litellm.acompletion(**chat)
        except Exception as error:  # boundary, as in complete()
            raise self._error(error, call) from error
        try:
            translated = LiteLLMCompletionResponsesConfig.transform_chat_completion_response_to_responses_api_response(
                request_input=call.body["input"], responses_api_request=request,  # type: ignore[arg-type]  # litellm's TypedDict
                chat_completion_response=response)
        except Exception as error:  # boundary: litellm's adapter on an answer it could not read
            log.warning("upstream_answer_untranslatable", error_type=type(error).__name__, error=str(error))
            raise UpstreamError("upstream failed: the provider's answer could not be translated to a response",
                                status=502, code="upstream_unavailable") from error
        data = _without_made_up_usage(translated.model_dump(exclude_none=True))
        data["id"] = call.made_response_id
        return data

    async def stream_response(self, call: UpstreamCall) -> AsyncGenerator[list[StreamEvent], None]:
        """The same, streamed: the provider's chunks made Responses API events by litellm's
        streaming iterator, one event a batch."""
        chat, request = self._responses_chat_call(call)
        async with self._chat_stream(chat, call) as response:
            events = LiteLLMCompletionStreamingIterator(
                model=call.model, litellm_custom_stream_wrapper=response, request_input=call.body["input"],
                responses_api_request=request,  # type: ignore[arg-type]  # litellm's TypedDict of these keys
                custom_llm_provider=provider_of(self._model(call)))
            try:
                async for event in events:
                    data: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)  # its types are enums
                    answer = data.get("response")
                    if isinstance(answer, dict):
                        answer["id"] = call.made_response_id
                        if data.get("type") == "response.completed":
                            # litellm completes every stream: a cut one must not reach the client as done.
                            if _is_made_up_finish(response):
                                raise _stream_cut()
                            if not _has_provider_usage(response):
                                call.learned.usage_counted = True  # litellm counted the usage it carries
                    yield [StreamEvent(data=writable(data))]
            except pydantic.ValidationError as error:  # litellm's events refused a parameter of the client's
                raise UpstreamError(f"the request could not be translated for the provider: {error}", status=400,
                                    kind="invalid_request_error", code="invalid_request") from error

    def _responses_chat_call(self, call: UpstreamCall) -> tuple[dict[str, Any], dict[str, Any]]:
        """litellm's keyword arguments for the chat call a Responses API `call` becomes, and the
        Responses parameters it was made from (what litellm echoes into the answer). A body the
        adapter cannot translate is the client's to mend: 400."""
        model = self._model(call)
        request = {name: value for name, value in call.body.items() if name not in ("model", "input", "stream")}
        try:
            chat: dict[str, Any] = LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
                model=model, input=call.body["input"],
                responses_api_request=request,  # type: ignore[arg-type]  # litellm's TypedDict of these keys
                custom_llm_provider=provider_of(model), stream=call.stream)
        except Exception as error:  # boundary: litellm's adapter on the client's data
            raise UpstreamError(f"the request could not be translated for the provider: {error}", status=400,
                                kind="invalid_request_error", code="invalid_request") from error
        chat.pop("custom_llm_provider", None)
        if isinstance(request.get("prompt_cache_key"), str) and _speaks_openai(model):
            chat["extra_body"] = {"prompt_cache_key": request["prompt_cache_key"]}
        chat.update(self._route_arguments(call), stream=call.stream, _skip_responses_api_bridge=True)
        return chat, request

    def count_message_tokens(self, call: UpstreamCall) -> int:
        """The input tokens of an Anthropic Messages call to a route whose provider speaks
        OpenAI chat, as litellm counts the chat call it becomes (system and tools included).
        Blocking and CPU-bound: call it from a thread."""
        chat, _ = self._chat_call(call)
        try:
            return int(litellm.token_counter(model=self._model(chat), messages=chat.body["messages"],
                                             tools=chat.body.get("tools")))
        except Exception as error:  # boundary: litellm's counter on the client's data
            raise UpstreamError(f"the request's tokens could not be counted: {error}", status=400,
                                kind="invalid_request_error", code="invalid_request") from error

    def _chat_call(self, call: UpstreamCall) -> tuple[UpstreamCall, dict[str, str]]:
        """An Anthropic Messages `call` as the OpenAI chat call litellm's adapter makes of it, and
        the tool names it shortened (OpenAI takes 64 characters), to be restored in the answer.
        A body the adapter cannot translate is the client's to mend: 400."""
        model = self._model(call)
        request = {name: value for name, value in call.body.items() if name in _MESSAGES_PARAMS}
        request["model"] = model
        if "tools" in request:
            # The adapter merges a tool's other keys into its input_schema in place, and litellm
            # may rewrite a schema for its provider: the body as sent is recorded unchanged.
            request["tools"] = copy.deepcopy(request["tools"])
        try:
            body, tool_names = self.messages_adapter.translate_anthropic_to_openai(
                request,  # type: ignore[arg-type]  # litellm's TypedDict of these keys
                custom_llm_provider=provider_of(model))
        except Exception as error:  # boundary: litellm's adapter on the client's data
            raise UpstreamError(f"the request could not be translated for the provider: {error}", status=400,
                                kind="invalid_request_error", code="invalid_request") from error
        chat_body: dict[str, Any] = dict(body)
        if call.stream:
            chat_body["stream_options"] = {"include_usage": True}  # else an OpenAI stream has no usage
        return replace(call, wire="openai_chat", path="/chat/completions", body=chat_body), tool_names

    def _counted_usage(self, chat: UpstreamCall, message: dict[str, Any]) -> dict[str, int]:
        """Anthropic usage counted as litellm counts: blocking and CPU-bound, call it from a thread."""
        model = self._model(chat)
        prompt = litellm.token_counter(model=model, messages=chat.body["messages"], tools=chat.body.get("tools"))
        text = _message_text(message)
        completion = litellm.token_counter(model=model, text=text) if text else 0
        return {"input_tokens": int(prompt), "output_tokens": int(completion)}

    def _model(self, call: UpstreamCall) -> str:
        """The provider's model for the client's name: the declared route's, else the name itself."""
        route = self.settings.route_for(call.model)
        return route.model if route else call.model

    def _error(self, error: Exception, call: UpstreamCall) -> UpstreamError:
        """The provider's failure as the client gets it: its status mapped, its message without
        litellm's prefixes and without any secret (a provider may echo the key it was sent)."""
        mapped = upstream_error(error)
        mapped.message = self.redactor.scrub(mapped.message, also=(call.client_api_key,))
        mapped.args = (mapped.message,)
        return mapped

    def count_tokens(self, model_name: str, prompt: Any, completion_text: str) -> tuple[int, int]:
        """(prompt, completion) tokens counted locally, for upstreams that report no usage; a
        prompt of chat messages is counted as litellm counts them. Blocking and CPU-bound:
        call it from a thread."""
        route = self.settings.route_for(model_name)
        model = route.model if route else model_name
        completion = litellm.token_counter(model=model, text=completion_text) if completion_text else 0
        return _prompt_tokens(model, prompt), int(completion)

    def _arguments(self, call: UpstreamCall) -> dict[str, Any]:
        translated = _TRANSLATED_PARAMS | (frozenset() if _speaks_openai(self._model(call)) else _OPENAI_BODY_PARAMS)
        arguments: dict[str, Any] = {}
        extra_body: dict[str, Any] = {}
        for name, value in call.body.items():
            if name not in ("model", "messages", "stream"):
                (arguments if name in translated else extra_body)[name] = value
        arguments.update(self._route_arguments(call))
        if extra_body:
            arguments["extra_body"] = extra_body
        arguments.update(messages=call.body["messages"], stream=call.stream)
        return arguments


def _stream_cut() -> UpstreamError:
    return UpstreamError("the provider's stream ended before its answer was finished", status=502,
                         code="upstream_stream_cut")


def _without_made_up_usage(data: dict[str, Any]) -> dict[str, Any]:
    """A reply litellm made into a dict, without litellm's keys and without the usage of zeros
    it puts in a reply that had none: the provider reported none, as on the native transport,
    and the gateway counts it itself (capture.writer) and says so in the record. Made writable:
    a provider may send what orjson will not write (a lone surrogate)."""
    _strip_litellm_keys(data)
    if _is_made_up_usage(data.get("usage")):
        del data["usage"]
    return writable(data)


def _prompt_tokens(model: str, prompt: Any) -> int:
    """A recorded prompt's tokens, whichever wire wrote it: chat messages, Anthropic's
    `{system, messages}`, or the text, texts or token ids of embeddings and legacy completions."""
    if isinstance(prompt, str):
        return int(litellm.token_counter(model=model, text=prompt))
    if isinstance(prompt, dict) and isinstance(prompt.get("messages"), list):
        system = prompt.get("system")
        return int(litellm.token_counter(model=model, messages=[
            *([{"role": "system", "content": system}] if system else []), *prompt["messages"]]))
    if not isinstance(prompt, list):
        return 0
    if all(isinstance(item, dict) for item in prompt):
        return int(litellm.token_counter(model=model, messages=prompt))
    return sum(int(litellm.token_counter(model=model, text=item)) if isinstance(item, str)
               else len(item) if isinstance(item, list) else 1 for item in prompt)


def _speaks_openai(model: str) -> bool:
    provider = provider_of(model)
    return provider is None or provider in _OPENAI_STYLE_PROVIDERS


def _event_dict(event: Any) -> dict[str, Any]:
    """An event of litellm's stream wrapper without litellm's own fields (a tool call's
    `provider_specific_fields`)."""
    data: dict[str, Any] = dict(event)
    if isinstance(data.get("content_block"), dict):
        data["content_block"] = _without_litellm_fields(data["content_block"])
    return data


def _without_litellm_fields(block: Any) -> Any:
    if isinstance(block, dict) and "provider_specific_fields" in block:
        return {key: value for key, value in block.items() if key != "provider_specific_fields"}
    return block


def _message_text(message: dict[str, Any]) -> str:
    """What a provider counts as an Anthropic message's output: its text, thinking and tool inputs."""
    pieces = []
    for block in message.get("content") or ():
        if isinstance(block, dict):
            pieces += [block[key] for key in ("text", "thinking") if isinstance(block.get(key), str)]
            if block.get("type") == "tool_use":
                pieces.append(block.get("name") or "")
                pieces.append(orjson.dumps(block.get("input")).decode())
    return "".join(pieces)


def _is_made_up_finish(stream: Any) -> bool:
    """litellm ends every stream with a finish chunk; when the provider sent no finish_reason
    (it cut the stream short) that chunk's `stop` is litellm's own, and must not reach the
    client as a clean end."""
    return bool(getattr(stream, "sent_last_chunk", False)) and getattr(stream, "received_finish_reason", None) is None \
        and getattr(stream, "intermittent_finish_reason", None) is None


def _is_made_up_usage(usage: Any) -> bool:
    """litellm's stand-in for a reply without usage: every count zero (a provider never counts
    a prompt as no tokens)."""
    return isinstance(usage, dict) and not any(usage.get(k) for k in ("prompt_tokens", "completion_tokens",
                                                                       "total_tokens"))


def _has_provider_usage(stream: Any) -> bool:
    """Whether the provider sent usage in this stream: litellm keeps each chunk it received,
    and otherwise makes up the usage chunk a client asked for by counting."""
    return any(getattr(chunk, "usage", None) is not None for chunk in getattr(stream, "chunks", ()))


def _chunk_dict(chunk: Any, model: str) -> dict[str, Any]:
    data: dict[str, Any] = chunk.model_dump(exclude_none=True)
    _strip_litellm_keys(data)
    data["model"] = model
    choices = data.get("choices", [])
    for choice in choices:
        choice.setdefault("finish_reason", None)
    if "usage" in data and all(not c.get("delta") and c["finish_reason"] is None for c in choices):
        # OpenAI's usage chunk has no choices; litellm adds an empty one.
        data["choices"] = []
    return writable(data)


def _strip_litellm_keys(data: dict[str, Any]) -> None:
    for key in _LITELLM_ONLY_KEYS:
        data.pop(key, None)
    for choice in data.get("choices", ()):
        choice.pop("provider_specific_fields", None)
        for part in ("message", "delta"):
            if part in choice:
                for key in _LITELLM_ONLY_KEYS:
                    choice[part].pop(key, None)
