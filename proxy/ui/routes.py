"""The operator page's routes, all under `/ui`."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from proxy.edge.access import Operator
from proxy.edge.errors import NotFound
from proxy.ui import approvals_page, audit_pages, knowledge_page, login_page
from proxy.ui.rendering import page

STATIC = Path(__file__).parent / "static"


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/ui", login_page.home)
    router.add_get("/ui/", login_page.home)
    router.add_get("/ui/login", login_page.login_form)
    router.add_post("/ui/login", login_page.log_in)
    router.add_post("/ui/logout", login_page.log_out)
    router.add_get("/ui/approvals", approvals_page.approvals)
    router.add_get("/ui/approvals/events", approvals_page.approval_events)
    router.add_get("/ui/approvals/{approval_id}", approvals_page.approval)
    router.add_post("/ui/approvals/{approval_id}/decide", approvals_page.decide)
    router.add_get("/ui/interactions", audit_pages.interactions)
    router.add_get("/ui/interactions/{interaction_id}", audit_pages.interaction)
    router.add_get("/ui/sessions", audit_pages.sessions)
    router.add_get("/ui/sessions/{session_id}", audit_pages.session)
    router.add_get("/ui/knowledge", knowledge_page.knowledge)
    router.add_static("/ui/static", STATIC, append_version=False)
    router.add_route("*", "/ui/{anything:.*}", missing)


@page
async def missing(request: web.Request, operator: Operator) -> web.Response:
    raise NotFound(f"no page {request.path}", code="page_not_found")
