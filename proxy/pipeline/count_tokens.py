"""`POST /v1/messages/count_tokens`: how many input tokens a Messages request would take (Claude
Code asks before its turns). The body is read and checked as the dialect reads a call (model,
messages), the caller as for a call (key, project, model, rate), and the policy's blocked tools
are taken out as they would be; then the provider counts on a native route, and litellm counts
the chat call it would make on a translated one. No model is called, so nothing is recorded;
the request log has its line as for any request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from proxy.appkeys import KEYRING, SETTINGS, STORE, UPSTREAM
from proxy.edge.bodies import read_json
from proxy.edge.errors import ERROR_BODY
from proxy.edge.wire import json_response
from proxy.pipeline.dialect import Dialect
from proxy.pipeline.handler import ensure_model_reachable
from proxy.pipeline.identity import hold_to_rate, identify

PATH = "/v1/messages/count_tokens"  # the provider's endpoint, under a route's api_base


def count_tokens_handler(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route handler for `dialect`'s count_tokens endpoint (Anthropic Messages')."""
    async def handle(request: web.Request) -> web.StreamResponse:
        return await count_tokens(request, dialect)
    return handle


async def count_tokens(request: web.Request, dialect: Dialect) -> web.Response:
    """parse -> identify -> prepare (tools screened, no context pack) -> count. Errors in the
    dialect's shape."""
    app, settings = request.app, request.app[SETTINGS]
    request[ERROR_BODY] = dialect.error_body
    asked = dialect.parse(await read_json(request), request.headers)
    identity = identify(request, asked, settings, app[KEYRING])
    ensure_model_reachable(asked, identity, settings)
    await hold_to_rate(app[STORE], identity.key)  # a call refused before is not counted
    policy = settings.policy.for_project(identity.project) if settings.policy.enforcing else None
    call = replace(dialect.prepare(asked, None, policy, identity.bearer_token), path=PATH)
    app[UPSTREAM].transport_for(call)  # a model no transport carries is refused as for a call
    return json_response(await app[UPSTREAM].count_message_tokens(call))
