"""The processes a benchmark run compares, each started as `python -m bench.servers KIND PORT ...`.

- upstream: the fake provider (zero delay), answering every call with the same reply, or, when
  a request's messages say `(stream of N deltas)`, with a text of exactly N content deltas; in
  OpenAI chat at `/v1/chat/completions`, in Anthropic Messages at `/v1/messages` and in the
  Responses API at `/v1/responses`;
- passthrough: a minimal aiohttp byte relay of both paths, the floor for any Python proxy;
- bare_litellm: an aiohttp handler that only awaits `litellm.acompletion`, the floor for
  anything that forwards through litellm's default path.
ctxgate itself runs as `ctxgate serve`.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any  # noqa: E402

import orjson  # noqa: E402
from aiohttp import ClientSession, web  # noqa: E402

from proxy.demo.fake_anthropic import FakeAnthropic  # noqa: E402
from proxy.demo.fake_upstream import FakeUpstream, Reply  # noqa: E402

# About what a short chat answer looks like: ~60 tokens, streamed in ~25 chunks.
REPLY_TEXT = (
    "The production VPC uses 10.0.0.0/16, split into three private and three public subnets "
    "across availability zones; NAT gateways sit in the public ones. Peering goes to shared."
)
REPLY_FRAGMENT = 8
# The streams whose length the bench sets: N content deltas of DELTA_CHARS characters, about a
# token each, as providers send them (between the role chunk and the finish chunk).
STREAM_DELTAS = (10, 200)
DELTA_CHARS = 4
_DELTAS_ASKED = re.compile(rb"\(stream of (\d+) deltas\)")
# What the passthrough relays besides the body: the caller's key either way, and Anthropic's
# version and beta headers, as the gateway forwards them.
_RELAYED_HEADERS = ("Content-Type", "Authorization", "x-api-key", "anthropic-version", "anthropic-beta")


def stream_marker(deltas: int) -> str:
    """What a request's user message says to get a stream of exactly `deltas` content deltas."""
    return f"(stream of {deltas} deltas)"


def delta_text(deltas: int) -> str:
    """A text that splits into exactly `deltas` pieces of DELTA_CHARS characters."""
    size = deltas * DELTA_CHARS
    return (REPLY_TEXT * (size // len(REPLY_TEXT) + 1))[:size]


def upstream_app() -> web.Application:
    default = FakeUpstream(keep_received=False, default_reply=Reply(text=REPLY_TEXT, fragment=REPLY_FRAGMENT))
    sized = {n: FakeUpstream(keep_received=False, default_reply=Reply(text=delta_text(n), fragment=DELTA_CHARS))
             for n in STREAM_DELTAS}

    async def chat(request: web.Request) -> web.StreamResponse:
        # The marker is found in the raw bytes (aiohttp keeps them for the fake's own read), so
        # the same upstream serves every target and length; its CPU is not a target's.
        asked = _DELTAS_ASKED.search(await request.read())
        fake = sized.get(int(asked[1]), default) if asked else default
        return await fake._chat(request)  # noqa: SLF001 - the fake's handler, reused as it is

    # Anthropic Messages and the Responses API: the same texts, as deltas of the same sizes (Anthropic:
    # message_start, ping, the block's start, N deltas, its stop, message_delta, message_stop;
    # Responses: created, in_progress, the item and its part added, N deltas, 4 done events, completed).
    replies: dict[int | None, Reply] = {n: Reply(text=delta_text(n), fragment=DELTA_CHARS) for n in STREAM_DELTAS}
    replies[None] = Reply(text=REPLY_TEXT, fragment=REPLY_FRAGMENT)

    def reply_for(body: dict[str, Any]) -> Reply:
        asked = _DELTAS_ASKED.search(orjson.dumps(body.get("messages") or body.get("input")))
        return replies.get(int(asked[1]) if asked else None, replies[None])

    anthropic = FakeAnthropic(keep_received=False, respond=reply_for)
    responses = FakeUpstream(keep_received=False, respond=reply_for)

    async def traces(request: web.Request) -> web.Response:
        """An OTLP/HTTP collector that takes every export (an empty ExportTraceServiceResponse)."""
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/messages", anthropic._messages)  # noqa: SLF001 - the fake's handler, reused as it is
    app.router.add_post("/v1/responses", responses._responses)  # noqa: SLF001 - likewise
    return app


def passthrough_app(upstream_base: str) -> web.Application:
    async def session_ctx(app: web.Application) -> Any:
        app["session"] = ClientSession()
        yield
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: request.headers[name] for name in _RELAYED_HEADERS if name in request.headers}
        url = upstream_base + request.path.removeprefix("/v1")  # upstream_base ends in /v1
        async with request.app["session"].post(url, data=body, headers=headers) as up:
            response = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await response.prepare(request)
            async for piece in up.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", relay)
    app.router.add_post("/v1/messages", relay)
    app.router.add_post("/v1/responses", relay)
    return app


def bare_litellm_app(upstream_base: str) -> web.Application:
    import litellm

    litellm.suppress_debug_info = True

    async def handle(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        body.pop("model")
        result = await litellm.acompletion(model="openai/fake-model", api_base=upstream_base, api_key="sk-bench", **body)
        if not body.get("stream"):
            return web.Response(body=result.model_dump_json(), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in result:
            await response.write(b"data: " + chunk.model_dump_json().encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    return app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "upstream":
        app = upstream_app()
    elif kind == "passthrough":
        app = passthrough_app(sys.argv[3])
    elif kind == "bare_litellm":
        app = bare_litellm_app(sys.argv[3])
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
