"""The audit trail as pages: interactions (filtered and paged, newest first), one interaction
in full, sessions, and one session replayed turn by turn."""

from __future__ import annotations

from aiohttp import web

from capture.records import LIST_LIMIT_CAP, InteractionQuery
from proxy.appkeys import OPERATOR_PAGE, STORE
from proxy.edge.access import Operator
from proxy.admin.sessions_api import one_session
from proxy.edge.errors import NotFound
from proxy.ui.rendering import page, render
from proxy.ui.views import reading_of

PAGE_SIZE = 50
FILTERS = ("project", "session_id", "client", "since", "status", "model")
STATUSES = ("ok", "upstream_error", "client_disconnected", "gateway_error")


@page
async def interactions(request: web.Request, operator: Operator) -> web.Response:
    filters = {name: request.query.get(name, "").strip() for name in FILTERS}
    query = InteractionQuery.build(**filters, before=request.query.get("before"), limit=PAGE_SIZE,
                                   projects=operator.sees.projects)
    found = await request.app[STORE].list_interactions(query)
    next_before = found[-1].id if len(found) == PAGE_SIZE else None
    return render(request, operator, "interactions.html", interactions=found, filters=filters, statuses=STATUSES,
                  next_before=next_before, is_paged=bool(request.query.get("before")))


@page
async def interaction(request: web.Request, operator: Operator) -> web.Response:
    interaction_id = request.match_info["interaction_id"]
    record = await request.app[STORE].get_interaction(interaction_id)
    if record is None or not operator.sees.allows(record.project):
        raise NotFound(f"no interaction with id {interaction_id!r}", code="interaction_not_found")
    return render(request, operator, "interaction.html",
                  reading=reading_of(record, request.app[OPERATOR_PAGE].dialects))


@page
async def sessions(request: web.Request, operator: Operator) -> web.Response:
    wanted = request.query.get("project", "").strip()
    projects = operator.sees.narrowed(wanted or None)
    client = request.query.get("client", "").strip() or None
    found = await request.app[STORE].list_sessions(projects=projects, client=client, limit=PAGE_SIZE * 2)
    return render(request, operator, "sessions.html", sessions=found, project=wanted, client=client or "")


@page
async def session(request: web.Request, operator: Operator) -> web.Response:
    """A session turn by turn. Two projects may use one session id: `?project=` says which."""
    session_id = request.match_info["session_id"]
    found = await one_session(request.app[STORE], session_id, operator.sees.narrowed(request.query.get("project")))
    turns = await request.app[STORE].session_interactions(found.project, session_id, LIST_LIMIT_CAP)
    return render(request, operator, "session.html", session=found,
                  readings=[reading_of(turn, request.app[OPERATOR_PAGE].dialects) for turn in turns])
