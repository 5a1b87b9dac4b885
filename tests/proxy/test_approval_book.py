"""The approval book on its own: a question outlives the client that asked it, for the call it
re-sends, and an answer given while nobody waited is taken once."""

from __future__ import annotations

from typing import Any

from capture.approvals import ApprovalStatus
from capture.store import Store
from proxy.pipeline.approvals import ApprovalBook

CALL: dict[str, Any] = {"project": "p", "session_id": "s", "tool": "Bash", "call_id": "toolu_1",
                        "arguments": '{"command": "git push"}', "rule": "restricted_tools[0]", "reason": "asked"}


async def ask_and_leave(book: ApprovalBook, interaction_id: str) -> str:
    approval = await book.request(**CALL, interaction_id=interaction_id, timeout_s=30)
    resolution = await book.wait(approval, 30, is_client_gone=lambda: True)
    assert (resolution.approved, resolution.decided_by) == (False, "client_gone")
    return approval.id


async def test_an_answer_given_while_nobody_waited_goes_to_the_call_sent_again_once(any_store: Store) -> None:
    book = ApprovalBook(any_store)
    first = await ask_and_leave(book, "i1")
    assert (await any_store.get_approval(first)).status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    await book.decide(first, approve=True, decided_by="alice")  # the client is between two re-sends

    again = await book.request(**CALL, interaction_id="i2", timeout_s=30)
    assert again.id == first and book.requested_total == 1  # the person is not asked twice
    resolution = await book.wait(again, 30)
    assert (resolution.approved, resolution.decided_by) == (True, "human")

    later = await book.request(**CALL, interaction_id="i3", timeout_s=30)  # the same call once more
    assert later.id != first and book.requested_total == 2  # an answer is taken once
    book.close()


async def test_a_deny_given_while_nobody_waited_refuses_the_call_sent_again(any_store: Store) -> None:
    book = ApprovalBook(any_store)
    first = await ask_and_leave(book, "i1")
    await book.decide(first, approve=False, decided_by="alice")
    again = await book.request(**CALL, interaction_id="i2", timeout_s=30)
    resolution = await book.wait(again, 30)
    assert (again.id, resolution.approved, resolution.decided_by) == (first, False, "human")
    book.close()


async def test_another_sessions_same_call_is_asked_anew(any_store: Store) -> None:
    book = ApprovalBook(any_store)
    first = await ask_and_leave(book, "i1")
    other = await book.request(**{**CALL, "session_id": "other"}, interaction_id="i2", timeout_s=30)
    assert other.id != first and book.requested_total == 2
    book.close()
