"""The approvals API: see what waits for a person, and decide it."""

from __future__ import annotations

from aiohttp import web

from capture.approvals import ApprovalStatus
from proxy.appkeys import APPROVALS, STORE
from proxy.edge.bodies import read_json
from proxy.edge.access import decider, read_access
from proxy.edge.errors import BadRequest, Conflict, NotFound
from proxy.pipeline.identity import CLIENT_HEADER, MAX_NAME, own_header
from proxy.edge.wire import json_response


async def list_approvals(request: web.Request) -> web.Response:
    access = read_access(request)
    raw_status = request.query.get("status")
    try:
        status = ApprovalStatus(raw_status) if raw_status else None
    except ValueError:
        choices = ", ".join(s.value for s in ApprovalStatus)
        raise BadRequest(f"status must be one of {choices}", param="status") from None
    approvals = await request.app[STORE].list_approvals(status, projects=access.projects)
    return json_response({"object": "list", "data": [a.as_dict() for a in approvals]})


async def get_approval(request: web.Request) -> web.Response:
    access = read_access(request)
    approval = await request.app[STORE].get_approval(request.match_info["approval_id"])
    if approval is None or not access.allows(approval.project):
        raise NotFound(f"no approval with id {request.match_info['approval_id']!r}", code="approval_not_found")
    return json_response(approval.as_dict())


async def decide_approval(request: web.Request) -> web.Response:
    """`POST /approvals/{id}/approve|deny`, body optional: `{"always": true}` remembers an
    allow for that project and tool. The admin key decides any; a key with the approve scope
    its own projects'."""
    operator = decider(request)
    approval_id, verdict = request.match_info["approval_id"], request.match_info["verdict"]
    always = False
    if request.can_read_body:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("always", False), bool):
            raise BadRequest("body must be an object like {\"always\": true}", param="always")
        always = body.get("always", False)
    held = await request.app[STORE].get_approval(approval_id)
    if held is None or not operator.may_decide(held.project):
        raise NotFound(f"no approval with id {approval_id!r}", code="approval_not_found")
    # The admin may say who they are; a key is who it is, whatever its headers say.
    decided_by = (own_header(request, CLIENT_HEADER, MAX_NAME) or "api") if operator.is_admin else \
        operator.decider_name
    approval = await request.app[APPROVALS].decide(
        approval_id, approve=verdict == "approve", decided_by=decided_by, always=always
    )
    if approval is None:
        raise NotFound(f"no approval with id {approval_id!r}", code="approval_not_found")
    if not approval.is_decided_as(ApprovalStatus.APPROVED if verdict == "approve" else ApprovalStatus.DENIED,
                                  decided_by):
        raise Conflict(f"approval {approval_id!r} was already {approval.status}", code="approval_already_decided")
    return json_response(approval.as_dict())
