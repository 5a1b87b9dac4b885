"""The audit trail as pages: interactions (filtered and paged, newest first), one interaction
in full, sessions, and one session replayed turn by turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from capture.records import LIST_LIMIT_CAP, Interaction, InteractionQuery
from proxy.appkeys import OPERATOR_PAGE, STORE
from proxy.edge.access import Operator
from proxy.edge.errors import BadRequest, NotFound
from proxy.pipeline.dialect import Turn
from proxy.ui.rendering import page, render

PAGE_SIZE = 50
FILTERS = ("project", "session_id", "client", "since", "status", "model")
STATUSES = ("ok", "upstream_error", "client_disconnected", "gateway_error")


@dataclass(frozen=True, slots=True)
class PackItem:
    kind: str  # memory or chunk
    id: str
    score: float | None


@dataclass(frozen=True, slots=True)
class Reading:
    """One interaction as the page shows it: the record, and its prompt and response turn by turn."""

    record: Interaction
    prompt_turns: list[Turn]
    response_turns: list[Turn]
    pack: list[PackItem]

    @property
    def asked(self) -> list[Turn]:
        """What this turn added to the conversation: the messages after the model's last answer."""
        last_answer = max((i for i, turn in enumerate(self.prompt_turns) if turn.role == "assistant"), default=-1)
        return [turn for turn in self.prompt_turns[last_answer + 1:] if turn.role != "system"]


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
    return render(request, operator, "interaction.html", reading=reading_of(request, record))


@page
async def sessions(request: web.Request, operator: Operator) -> web.Response:
    wanted = request.query.get("project", "").strip()
    projects = operator.sees.projects
    if wanted:
        projects = frozenset({wanted}) if operator.sees.allows(wanted) else frozenset()
    client = request.query.get("client", "").strip() or None
    found = await request.app[STORE].list_sessions(projects=projects, client=client, limit=PAGE_SIZE * 2)
    return render(request, operator, "sessions.html", sessions=found, project=wanted, client=client or "")


@page
async def session(request: web.Request, operator: Operator) -> web.Response:
    """A session turn by turn. Two projects may use one session id: `?project=` says which."""
    session_id = request.match_info["session_id"]
    wanted = request.query.get("project")
    projects = operator.sees.projects
    if wanted is not None:
        projects = frozenset({wanted}) if operator.sees.allows(wanted) else frozenset()
    found = await request.app[STORE].get_sessions(session_id, projects)
    if not found:
        raise NotFound(f"no session with id {session_id!r}", code="session_not_found")
    if len(found) > 1:
        raise BadRequest(f"session id {session_id!r} is used in projects {', '.join(s.project for s in found)}: "
                         "choose one with ?project=", param="project", code="session_ambiguous")
    turns = await request.app[STORE].session_interactions(found[0].project, session_id, LIST_LIMIT_CAP)
    return render(request, operator, "session.html", session=found[0],
                  readings=[reading_of(request, turn) for turn in turns])


def reading_of(request: web.Request, record: Interaction) -> Reading:
    dialects = request.app[OPERATOR_PAGE].dialects
    dialect = dialects.get(record.wire or "") or dialects["openai_chat"]  # records from before `wire` are chat
    prompt_turns = dialect.transcript(record.prompt)
    everything = dialect.transcript(record.prompt, record.response)
    scores: dict[str, Any] = record.context_scores if isinstance(record.context_scores, dict) else {}
    pack = [PackItem("memory", i, _score(scores.get(i))) for i in record.memories_used] + \
        [PackItem("chunk", i, _score(scores.get(i))) for i in record.chunks_used]
    return Reading(record, prompt_turns, everything[len(prompt_turns):], pack)


def _score(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
