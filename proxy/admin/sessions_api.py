"""The sessions API: conversations as recorded, and each replayed turn by turn."""

from __future__ import annotations

from aiohttp import web

from capture.records import LIST_LIMIT_CAP, InteractionQuery, Session
from capture.store import Store
from proxy.edge.access import read_access
from proxy.appkeys import STORE
from proxy.edge.errors import BadRequest, NotFound
from proxy.edge.wire import json_response


async def list_sessions(request: web.Request) -> web.Response:
    access = read_access(request)
    limit = InteractionQuery.build(limit=request.query.get("limit")).limit
    projects = access.narrowed(request.query.get("project") or None)
    sessions = await request.app[STORE].list_sessions(projects=projects, client=request.query.get("client"), limit=limit)
    return json_response({"object": "list", "data": [s.as_dict() for s in sessions]})


async def get_session(request: web.Request) -> web.Response:
    """The session and its turns, oldest first, in full (at most 500). Session ids come from
    clients, so two projects may share one: then `?project=` says which."""
    access = read_access(request)
    session_id = request.match_info["session_id"]
    session = await one_session(request.app[STORE], session_id, access.narrowed(request.query.get("project")))
    turns = await request.app[STORE].session_interactions(session.project, session_id, LIST_LIMIT_CAP)
    return json_response({**session.as_dict(), "turns": [t.as_dict() for t in turns]})


async def one_session(store: Store, session_id: str, projects: frozenset[str] | None) -> Session:
    """The session with this id in `projects` (None: any); NotFound when there is none, and
    BadRequest when two projects use the id (`?project=` says which)."""
    found = await store.get_sessions(session_id, projects)
    if not found:
        raise NotFound(f"no session with id {session_id!r}", code="session_not_found")
    if len(found) > 1:
        raise BadRequest(f"session id {session_id!r} is used in projects {', '.join(s.project for s in found)}: "
                         "pass ?project=", param="project", code="session_ambiguous")
    return found[0]
