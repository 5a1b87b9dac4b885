"""Who is calling: client, project and session of a request, and the key that let it in.

Session id, in order: `X-Ctxgate-Session`; the session headers agents already send; a session
id in the body; else inferred from (project, client, system prompt, first user message), which
every turn of a conversation resends and two conversations rarely share.

Header values are recorded and echoed, so they are read by one rule: ctxgate's own headers
(and the `/p/{project}` prefix) must be printable UTF-8 text of at most 256 characters, or the
call is refused with 400 naming them; another agent's session header that is not is ignored;
a User-Agent has its undecodable bytes replaced.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from capture.store import Store
from proxy.pipeline.dialect import ClientRequest
from proxy.edge.errors import BadRequest, Forbidden, TooManyRequests, Unauthorized
from proxy.config.keys import KeyRing, VirtualKey
from proxy.config.settings import Settings

PROJECT_HEADER = "X-Ctxgate-Project"
SESSION_HEADER = "X-Ctxgate-Session"
CLIENT_HEADER = "X-Ctxgate-Client"

# What agents and gateways send today: Claude Code; Codex (hyphen, then older underscore
# spelling); OpenCode; OpenRouter and others; LiteLLM; Helicone.
AGENT_SESSION_HEADERS = (
    "X-Claude-Code-Session-Id", "session-id", "session_id", "x-opencode-session", "X-Session-Id",
    "x-session-affinity", "x-litellm-session-id", "Helicone-Session-Id",
)
# The sub-agent within a session that made a call, and the agent that started it (Claude Code).
AGENT_ID_HEADER = "X-Claude-Code-Agent-Id"
PARENT_AGENT_ID_HEADER = "X-Claude-Code-Parent-Agent-Id"
MAX_SESSION_ID = 256
MAX_NAME = 256  # of a project or client name


@dataclass(frozen=True, slots=True)
class Identity:
    client: str
    project: str
    session_id: str
    key: VirtualKey | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None
    bearer_token: str | None = field(default=None, repr=False)  # a provider key: only with no keys configured


def caller_key(request: web.Request, keyring: KeyRing) -> VirtualKey | None:
    """The caller's key; None when no keys are configured. 401 without a valid proxy key."""
    if keyring.is_open:
        return None
    key = keyring.find(caller_token(request))
    if key is None or "proxy" not in key.scopes:
        raise Unauthorized("a valid ctxgate key is required: 'Authorization: Bearer ctxg-...' "
                           "(or 'x-api-key: ctxg-...', as the Anthropic SDK sends it)", code="invalid_api_key")
    return key


def identify(request: web.Request, asked: ClientRequest, settings: Settings, keyring: KeyRing) -> Identity:
    """Raises 401 without a valid key (when keys are configured), 403 for a project or model
    outside the key's scope."""
    bearer = caller_token(request)
    key = caller_key(request, keyring)
    project = project_of(request, key, settings)
    if key is not None:
        if not key.allows_model(asked.model):
            raise Forbidden(f"this key may not use model {asked.model!r}", code="model_not_allowed")
    client = own_header(request, CLIENT_HEADER, MAX_NAME) or (
        key.client if key else short_user_agent(request.headers.get("User-Agent")))
    session_id = session_from(request, asked) or infer_session_id(project, client, asked.conversation_start)
    return Identity(client=client, project=project, session_id=session_id, key=key,
                    agent_id=_agent_header(request, AGENT_ID_HEADER),
                    parent_agent_id=_agent_header(request, PARENT_AGENT_ID_HEADER),
                    bearer_token=None if key else bearer)


def project_of(request: web.Request, key: VirtualKey | None, settings: Settings) -> str:
    """The project a request names (the /p/{project} prefix, the header), else the key's, else
    the default; 403 for one outside the key's projects."""
    project = (
        _checked(request.match_info.get("project"), "the /p/{project} prefix", MAX_NAME)
        or own_header(request, PROJECT_HEADER, MAX_NAME)
        or (key.default_project if key else None)
        or settings.default_project
    )
    if key is not None and not key.allows_project(project):
        raise Forbidden(f"this key may not use project {project!r}; it may use "
                        f"{', '.join(sorted(key.projects))} (name one with the /p/{{project}}/v1 prefix "
                        f"or the {PROJECT_HEADER} header)", code="project_not_allowed")
    return project


def session_from(request: web.Request, asked: ClientRequest) -> str | None:
    own = own_header(request, SESSION_HEADER, None)
    if own:
        return own[:MAX_SESSION_ID]
    for header in AGENT_SESSION_HEADERS:
        value = request.headers.get(header, "").strip()
        if value and _is_text(value):
            return value[:MAX_SESSION_ID]
    for candidate in asked.session_hints:
        # Echoed in a response header: a control character there would cut the response.
        if isinstance(candidate, str) and candidate.strip() and candidate.isascii() and candidate.isprintable():
            return candidate.strip()[:MAX_SESSION_ID]
    return None


def _agent_header(request: web.Request, name: str) -> str | None:
    """Another agent's header: ignored unless it is printable text, cut at MAX_SESSION_ID."""
    value = request.headers.get(name, "").strip()
    return value[:MAX_SESSION_ID] if value and _is_text(value) else None


def own_header(request: web.Request, name: str, max_length: int | None) -> str | None:
    """One of ctxgate's headers, stripped; 400 when it is not printable UTF-8 text (aiohttp
    hands undecodable bytes over as lone surrogates) or is longer than `max_length`."""
    return _checked(request.headers.get(name, "").strip(), f"header {name}", max_length)


def _checked(value: str | None, where: str, max_length: int | None) -> str | None:
    if not value:
        return None
    if not _is_text(value):
        raise BadRequest(f"{where} must be printable UTF-8 text", param=where, code="invalid_header")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"{where} must be at most {max_length} characters", param=where, code="invalid_header")
    return value


def _is_text(value: str) -> bool:
    # A lone surrogate is a byte that was not UTF-8; isprintable() is False for surrogates.
    return value.isprintable()


def bearer_token(request: web.Request) -> str | None:
    """The bearer token, if the Authorization header holds one made of printable ASCII (no
    key is anything else, and the others could not be sent on to a provider either)."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not (token.isascii() and token.isprintable()):
        return None
    return token


def caller_token(request: web.Request) -> str | None:
    """The key a proxied call comes with: the bearer token, else `x-api-key` (the Anthropic
    SDK's header, and Claude Code's for ANTHROPIC_API_KEY), under the same rule."""
    token = bearer_token(request)
    if token is not None:
        return token
    given = request.headers.get("x-api-key", "").strip()
    return given if given and given.isascii() and given.isprintable() else None


_OPENAI_SDK = re.compile(r"^(?:Async)?OpenAI/(Python|JS) v?(\d+)")


def short_user_agent(user_agent: str | None) -> str:
    """`AsyncOpenAI/Python 2.54.0` -> `openai-python/2.x`; otherwise the first product token."""
    if not user_agent:
        return "unknown"
    if not user_agent.isprintable():
        user_agent = "".join(c if c.isprintable() else "\ufffd" for c in user_agent)
    sdk = _OPENAI_SDK.match(user_agent)
    if sdk:
        return f"openai-{sdk.group(1).lower()}/{sdk.group(2)}.x"
    return user_agent.split(" ", 1)[0][:64]


def infer_session_id(project: str, client: str, conversation_start: tuple[Any, Any]) -> str:
    """Every turn of a conversation resends its system prompt and first user message, so their
    fingerprint (with project and client) groups the turns with no help from the client."""
    system, first_user = conversation_start
    digest = hashlib.sha256(repr((project, client, system, first_user)).encode()).hexdigest()
    return f"s_{digest[:24]}"


async def hold_to_rate(store: Store, key: VirtualKey | None) -> None:
    """429 over the key's calls per minute, as the store counts them: across every replica on a
    shared store."""
    if key is None or key.rpm is None:
        return
    retry_after = await store.take_rate_token(key.sha256, key.rpm)
    if retry_after is not None:
        raise TooManyRequests(f"rate limit of {key.rpm} requests per minute reached for this key",
                              retry_after_s=retry_after, code="rate_limited")
