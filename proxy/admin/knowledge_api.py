"""The knowledge API: memories, document ingestion, and a preview of the context pack."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from capture.ingest import Document, ingest
from capture.knowledge import new_memory
from proxy.edge.access import read_access, require_admin
from proxy.appkeys import SETTINGS, STORE
from proxy.edge.bodies import read_json
from proxy.pipeline.context import build_pack
from proxy.edge.errors import BadRequest, NotFound
from proxy.edge.wire import json_response


async def add_memory(request: web.Request) -> web.Response:
    require_admin(request)
    body = await _object(request)
    memory = new_memory(body.get("project") or request.app[SETTINGS].default_project, body.get("content"),
                        type=body.get("type", "note"), confidence=body.get("confidence", 1.0),
                        status=body.get("status", "active"))
    await request.app[STORE].add_memory(memory)
    return json_response(memory.as_dict(), status=201)


async def list_memories(request: web.Request) -> web.Response:
    access = read_access(request)
    project = request.query.get("project")
    if project is not None and not access.allows(project):
        return json_response({"object": "list", "data": []})
    found = await request.app[STORE].list_memories(project, limit=500)
    return json_response({"object": "list", "data": [m.as_dict() for m in found if access.allows(m.project)]})


async def delete_memory(request: web.Request) -> web.Response:
    require_admin(request)
    memory_id = request.match_info["memory_id"]
    if not await request.app[STORE].delete_memory(memory_id):
        raise NotFound(f"no memory with id {memory_id!r}", code="memory_not_found")
    return web.Response(status=204)


async def ingest_documents(request: web.Request) -> web.Response:
    """`{"project": P, "documents": [{"path": ..., "text": ...}]}`: unchanged documents are left
    alone; a changed one has its chunks replaced in one transaction."""
    require_admin(request)
    body = await _object(request)
    project = body.get("project") or request.app[SETTINGS].default_project
    if not isinstance(project, str):
        raise BadRequest("project must be a string", param="project")
    documents = body.get("documents")
    if not isinstance(documents, list) or not all(
        isinstance(d, dict) and isinstance(d.get("path"), str) and isinstance(d.get("text"), str) for d in documents
    ):
        raise BadRequest("documents must be a list of {\"path\": str, \"text\": str}", param="documents")
    report = await ingest(request.app[STORE], project, (Document.of(d["path"], d["text"]) for d in documents))
    return json_response({"project": project, **report.as_dict()})


async def preview_context(request: web.Request) -> web.Response:
    """`GET /context?project=P&q=...`: the pack that would be injected, with the scores."""
    access = read_access(request)
    project = request.query.get("project") or request.app[SETTINGS].default_project
    if not access.allows(project):
        raise NotFound(f"no project {project!r}", code="project_not_found")
    question = request.query.get("q", "")
    budget = request.app[SETTINGS].context_for(project).budget_tokens
    pack = await build_pack(request.app[STORE], project, question, budget)
    if pack is None:
        return json_response({"project": project, "query": question, "memories": [], "chunks": [], "text": None,
                              "tokens": 0, "budget_tokens": budget})
    return json_response({
        "project": project, "query": question, "budget_tokens": budget, "tokens": pack.tokens, "text": pack.text,
        "memories": [{"id": m.id, "score": round(m.score, 6), "content": m.content} for m in pack.memories],
        "chunks": [{"id": c.id, "score": round(c.score, 6), "source": c.source, "content": c.content}
                   for c in pack.chunks],
    })


async def _object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_body")
    return body
