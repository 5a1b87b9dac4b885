"""The context pack: a project's most relevant memories and chunks for a request, within a
token budget, rendered as one delimited block of text that each dialect places in its own prompt."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from capture.knowledge import Scored
from capture.store import Store
from capture.tokens import count_tokens

QUERY_CHARS = 4000  # splitting the query into words costs time in proportion
CANDIDATES = 24  # per kind: enough to fill a budget of a few thousand tokens
ITEM_OVERHEAD_TOKENS = 4  # the bullet or the source line around each item
MEMORY_SHARE = 0.5  # of the budget; whatever memories leave goes to chunks


@dataclass(frozen=True, slots=True)
class ContextPack:
    project: str
    memories: tuple[Scored, ...]
    chunks: tuple[Scored, ...]
    text: str

    @property
    def tokens(self) -> int:
        """Counted exactly when asked (previews): choosing what fits needs only the items' counts."""
        return count_tokens(self.text)

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.memories)

    @property
    def chunk_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.chunks)


async def build_pack(store: Store, project: str, question: str, budget_tokens: int) -> ContextPack | None:
    """The pack for `question` (a dialect's query text); None when nothing relevant fits (or
    there is nothing to search for). Of a long question, its end, where the asking usually is."""
    question = question[-QUERY_CHARS:]
    if not question.strip() or budget_tokens <= 0:
        return None
    memories, chunks = await store.search_knowledge(project, question, CANDIDATES)
    room = budget_tokens - _frame_tokens(project)
    chosen_memories = _fill(memories, int(room * MEMORY_SHARE))
    room -= sum(m.token_count + ITEM_OVERHEAD_TOKENS for m in chosen_memories)
    chosen_chunks = _fill(chunks, room)
    if not chosen_memories and not chosen_chunks:
        return None
    text = render(project, chosen_memories, chosen_chunks)
    return ContextPack(project, tuple(chosen_memories), tuple(chosen_chunks), text)


def _fill(candidates: list[Scored], room: int) -> list[Scored]:
    """Best first; an item that does not fit is skipped and a smaller one may still fit."""
    chosen = []
    for item in candidates:
        cost = item.token_count + ITEM_OVERHEAD_TOKENS
        if cost <= room:
            chosen.append(item)
            room -= cost
    return chosen


@functools.lru_cache(maxsize=1024)
def _frame_tokens(project: str) -> int:
    return count_tokens(render(project, [], []))


def render(project: str, memories: list[Scored], chunks: list[Scored]) -> str:
    lines = [f'<ctxgate-context project="{project}">',
             "Context from this project's knowledge base, most relevant first. Use it when it helps."]
    if memories:
        lines.append("Memories:")
        lines += [f"- {m.content}" for m in memories]
    if chunks:
        lines.append("Documents:")
        for chunk in chunks:
            lines += [f"[{chunk.source}]", chunk.content]
    lines.append("</ctxgate-context>")
    return "\n".join(lines)
