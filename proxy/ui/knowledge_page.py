"""A project's knowledge as a page: its memories and sources, and the pack a question gets."""

from __future__ import annotations

from aiohttp import web

from proxy.appkeys import SETTINGS, STORE
from proxy.edge.access import Operator
from proxy.edge.errors import NotFound
from proxy.pipeline.context import build_pack
from proxy.ui.rendering import page, render

MEMORIES_SHOWN = 200


@page
async def knowledge(request: web.Request, operator: Operator) -> web.Response:
    settings = request.app[SETTINGS]
    known = sorted({settings.default_project, *settings.policy.projects, *(operator.sees.projects or ())})
    visible = [project for project in known if operator.sees.allows(project)]
    project = request.query.get("project", "").strip() or (
        settings.default_project if operator.sees.allows(settings.default_project) else (visible or [""])[0])
    if not operator.sees.allows(project):
        raise NotFound(f"no project {project!r}", code="project_not_found")
    store = request.app[STORE]
    question = request.query.get("q", "").strip()
    budget = settings.context_for(project).budget_tokens
    pack = await build_pack(store, project, question, budget) if question else None
    return render(
        request, operator, "knowledge.html", project=project, projects=visible, question=question, pack=pack,
        budget=budget, memories=await store.list_memories(project, limit=MEMORIES_SHOWN),
        sources=sorted(await store.source_hashes(project)),
    )
