"""Who is calling: client, project and session of a request, from the path, headers and body."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aiohttp import web

from proxy.chat_request import ChatRequest, Message
from proxy.settings import Settings

PROJECT_HEADER = "X-Ctxgate-Project"
SESSION_HEADER = "X-Ctxgate-Session"
CLIENT_HEADER = "X-Ctxgate-Client"


@dataclass(frozen=True, slots=True)
class Identity:
    client: str
    project: str
    session_id: str
    bearer_token: str | None = field(default=None, repr=False)


def identify(request: web.Request, chat: ChatRequest, settings: Settings) -> Identity:
    project = (
        request.match_info.get("project")
        or request.headers.get(PROJECT_HEADER)
        or settings.default_project
    )
    client = request.headers.get(CLIENT_HEADER) or short_user_agent(request.headers.get("User-Agent"))
    session_id = request.headers.get(SESSION_HEADER) or infer_session_id(project, client, chat.messages)
    return Identity(client=client, project=project, session_id=session_id, bearer_token=bearer_token(request))


def bearer_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def short_user_agent(user_agent: str | None) -> str:
    """`AsyncOpenAI/Python 2.54.0` -> `AsyncOpenAI/Python`: the product, not the build."""
    if not user_agent:
        return "unknown"
    return user_agent.split(" ", 1)[0][:64]


def infer_session_id(project: str, client: str, messages: list[Message]) -> str:
    """Every turn of a conversation resends its system prompt and first user message, so their
    fingerprint (with project and client) groups the turns with no help from the client."""
    system = next((m.get("content") for m in messages if m.get("role") in ("system", "developer")), None)
    first_user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    digest = hashlib.sha256(repr((project, client, system, first_user)).encode()).hexdigest()
    return f"s_{digest[:24]}"
