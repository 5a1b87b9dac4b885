"""The capture API: record, list and read interactions over HTTP."""

from __future__ import annotations

from aiohttp import web

from capture.records import InteractionQuery, interaction_from_payload
from proxy.edge.access import read_access, require_admin
from proxy.appkeys import STORE
from proxy.edge.bodies import read_json
from proxy.edge.errors import BadRequest, NotFound
from proxy.edge.wire import json_response


async def record_interaction(request: web.Request) -> web.Response:
    """Recorded synchronously (not through the writer): the caller is told it is stored."""
    require_admin(request)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_body")
    interaction = interaction_from_payload(payload)
    await request.app[STORE].insert_interactions([interaction])
    return json_response(interaction.as_dict(), status=201)


async def list_interactions(request: web.Request) -> web.Response:
    access = read_access(request)
    q = request.query
    query = InteractionQuery.build(
        project=q.get("project"),
        session_id=q.get("session_id"),
        client=q.get("client"),
        since=q.get("since"),
        limit=q.get("limit"),
        projects=access.projects,
        status=q.get("status"),
        model=q.get("model"),
        before=q.get("before"),
    )
    found = await request.app[STORE].list_interactions(query)
    return json_response({"object": "list", "data": [i.summary() for i in found]})


async def get_interaction(request: web.Request) -> web.Response:
    access = read_access(request)
    interaction_id = request.match_info["interaction_id"]
    interaction = await request.app[STORE].get_interaction(interaction_id)
    if interaction is None:
        raise NotFound(f"no interaction with id {interaction_id!r}", code="interaction_not_found")
    access.check(interaction.project, f"interaction with id {interaction_id!r}")
    return json_response(interaction.as_dict())
