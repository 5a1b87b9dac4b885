"""The held tool calls: listed live, each shown with what led to it, and decided from the page
with the API's semantics (approve, deny, always allow this tool in this project)."""

from __future__ import annotations

import contextlib
import time

import orjson
import structlog
from aiohttp import web

from capture.approvals import Approval, ApprovalStatus
from capture.store import StoreUnavailable
from proxy.appkeys import APPROVALS, OPERATOR_PAGE, STORE
from proxy.edge.access import DECIDING_NEEDS_A_KEY, Operator
from proxy.edge.errors import BadRequest, Forbidden, NotFound
from proxy.edge.wire import SSE_KEEPALIVE, json_response
from proxy.ui.login import operator_for
from proxy.ui.rendering import page, render, wants_json
from proxy.ui.views import held_call

log = structlog.get_logger("ctxgate.ui")

PENDING_SHOWN = 100
# How often a live page reads the store when nothing was announced: decisions from the CLI or
# another worker on a SQLite file are seen no later than this.
LIVE_POLL_S = 1.0
KEEPALIVE_S = 15.0
VERDICTS = {"approve": (True, False), "deny": (False, False), "always": (True, True)}


@page
async def approvals(request: web.Request, operator: Operator) -> web.Response:
    pending = await _pending(request, operator)
    decided = request.query.get("decided")
    just_decided = await request.app[STORE].get_approval(decided) if decided else None
    if just_decided is not None and not operator.sees.allows(just_decided.project):
        just_decided = None
    return render(request, operator, "approvals.html", approvals=[held_call(a) for a in pending],
                  just_decided=just_decided,
                  deciding_note=_deciding_note(operator))


@page
async def approval(request: web.Request, operator: Operator) -> web.Response:
    """One approval, pending or decided: where a notification links to."""
    approval_id = request.match_info["approval_id"]
    found = await request.app[STORE].get_approval(approval_id)
    if found is None or not operator.sees.allows(found.project):
        raise NotFound(f"no approval with id {approval_id!r}", code="approval_not_found")
    return render(request, operator, "approval.html", held=held_call(found), deciding_note=_deciding_note(operator))


@page
async def decide(request: web.Request, operator: Operator) -> web.StreamResponse:
    """`verdict` approve, deny or always (approve, and remember for the project and tool)."""
    approval_id = request.match_info["approval_id"]
    form = await request.post()
    verdict = form.get("verdict")
    if not isinstance(verdict, str) or verdict not in VERDICTS:
        raise BadRequest("verdict must be approve, deny or always", param="verdict")
    held = await request.app[STORE].get_approval(approval_id)
    if held is None or not operator.sees.allows(held.project):
        raise NotFound(f"no approval with id {approval_id!r}", code="approval_not_found")
    if not operator.may_decide(held.project):
        raise Forbidden(_deciding_note(operator) or "this login may not decide approvals", code="approve_scope_required")
    approve, always = VERDICTS[verdict]
    decided_by = f"ui:{operator.decider_name}"
    now = await request.app[APPROVALS].decide(approval_id, approve=approve, decided_by=decided_by, always=always)
    if now is None:  # cleaned away since it was read (retention deletes decided approvals)
        raise NotFound(f"no approval with id {approval_id!r}", code="approval_not_found")
    is_ours = now.is_decided_as(ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED, decided_by)
    log.info("approval_decided_on_page", approval_id=approval_id, verdict=verdict, operator=operator.name,
             is_ours=is_ours)
    if wants_json(request):
        return json_response({"approval": now.as_dict(), "is_ours": is_ours}, status=200 if is_ours else 409)
    raise web.HTTPSeeOther(f"/ui/approvals?decided={approval_id}")


@page
async def approval_events(request: web.Request, operator: Operator) -> web.StreamResponse:
    """Server-sent events for the live list: an `approvals` event with the list as HTML each
    time it changes (and, for the ones gone from it, how they were decided); a `trouble` event
    while the store cannot be read. The stream ends when the login does (its time, or its key
    leaving the config), and on anything unexpected, which the browser answers by reconnecting."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    book, store, templates = request.app[APPROVALS], request.app[STORE], request.app[OPERATOR_PAGE]
    shown: list[str] = []
    last_html: str | None = None
    last_sent = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while not book.is_closing and not _is_gone(request):
            try:
                if await operator_for(request) != operator:  # logged out, out of time, or its key gone
                    return response
                pending = await _pending(request, operator)
                gone = [a for a in [await store.get_approval(i) for i in shown if i not in {p.id for p in pending}]
                        if a is not None]
                html = templates.html("_pending.html", approvals=[held_call(a) for a in pending], operator=operator)
            except StoreUnavailable as error:
                await response.write(_event("trouble", {"message": f"the store is unavailable: {error}"}))
                last_html = None  # the list is sent again once the store answers, which clears this
                await book.changed(LIVE_POLL_S * 5)
                continue
            except Exception:  # boundary: the browser reconnects to a fresh stream
                log.exception("approval_events_failed")
                return response
            if html != last_html or gone:
                await response.write(_event("approvals", {
                    "count": len(pending), "pending": html,
                    "decided": [_decided_note(a) for a in gone],
                }))
                last_html, shown, last_sent = html, [a.id for a in pending], time.monotonic()
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                await response.write(SSE_KEEPALIVE)
                last_sent = time.monotonic()
            await book.changed(LIVE_POLL_S)
    return response


async def _pending(request: web.Request, operator: Operator) -> list[Approval]:
    return await request.app[STORE].list_approvals(ApprovalStatus.PENDING, limit=PENDING_SHOWN,
                                                   projects=operator.sees.projects)


def _deciding_note(operator: Operator) -> str | None:
    """Why this login cannot decide, if it cannot."""
    if operator.decides is not None:
        return None
    if operator.principal == "open":
        return DECIDING_NEEDS_A_KEY
    return "this key reads only: deciding needs the admin key, or a key with the approve scope"


def _decided_note(approval: Approval) -> dict[str, str | None]:
    return {"id": approval.id, "tool": approval.tool, "project": approval.project,
            "status": str(approval.status), "decided_by": approval.decided_by}


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _is_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()
