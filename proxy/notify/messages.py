"""What a webhook is sent when a tool call is held, and when it is decided: a generic JSON
event, or a Slack message.

Both carry what a person needs to decide whether to go and look (tool, arguments, project,
client, session, the rule that asked, the deadline) and the link to the approval on the page;
neither carries the conversation or the context pack, which stay behind the page's login.
Every text passes the redactor first.
"""

from __future__ import annotations

from typing import Any

from capture.approvals import Approval, ApprovalStatus
from proxy.edge.redaction import Redactor

EVENT_APPROVAL_REQUESTED = "approval.requested"
EVENT_APPROVAL_DECIDED = "approval.decided"
ARGUMENTS_CHARS = 1500  # escaped for Slack, up to five times as long: a section holds 3,000


def approval_event(approval: Approval, *, delivery_id: str, link: str | None, redactor: Redactor) -> dict[str, Any]:
    """`approval.requested` for a pending approval, `approval.decided` (with its status, who
    and when) for a decided one."""
    context = approval.context if isinstance(approval.context, dict) else {}
    is_pending = approval.status is ApprovalStatus.PENDING
    decision = {} if is_pending else {"status": str(approval.status), "decided_by": approval.decided_by,
                                      "decided_at": approval.decided_at, "always": approval.always}
    return {
        "type": EVENT_APPROVAL_REQUESTED if is_pending else EVENT_APPROVAL_DECIDED,
        "id": delivery_id,
        "approval": {
            "id": approval.id,
            "project": approval.project,
            "tool": approval.tool,
            "arguments": _arguments(approval, redactor),
            "client": context.get("client"),
            "model": context.get("model"),
            "session_id": approval.session_id,
            "interaction_id": approval.interaction_id,
            "rule": approval.rule,
            "reason": approval.reason,
            "created_at": approval.created_at,
            "expires_at": approval.expires_at,
            **decision,
        },
        "url": link,
    }


def slack_message(approval: Approval, *, link: str | None, redactor: Redactor) -> dict[str, Any]:
    """Incoming-webhook JSON: `text` for notifications and old clients, blocks for the rest."""
    context = approval.context if isinstance(approval.context, dict) else {}
    if approval.status is not ApprovalStatus.PENDING:
        how = "allowed from now on" if approval.always else str(approval.status)
        said = (f"ctxgate: the call to `{_plain(approval.tool)}` in {_plain(approval.project)} was {how} "
                f"by {_plain(approval.decided_by)}")
        return {"text": said + (f" {link}" if link else ""),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": said}}]}
    # The model wrote the arguments: escaped, they can neither mention a channel nor make a link.
    arguments = _plain(_arguments(approval, redactor))[:2900].replace("```", "'''")
    who = f" from {_plain(context['client'])}" if context.get("client") else ""
    headline = f"ctxgate holds a call to `{_plain(approval.tool)}` in {_plain(approval.project)}{who}: it fails closed at {approval.expires_at} UTC"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{arguments}```"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _plain(
            f"{approval.rule}: {approval.reason} · session {approval.session_id or '-'}")}]},
    ]
    if link and link.startswith("http"):
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open to decide"}, "url": link,
             "style": "primary"}]})
    return {"text": f"{headline}" + (f" {link}" if link else ""), "blocks": blocks}


def _arguments(approval: Approval, redactor: Redactor) -> str:
    """Scrubbed, then cut: a secret across the cut is gone whole, not halved."""
    text = redactor.scrub((approval.arguments or "")[:ARGUMENTS_CHARS + 1024])
    return text if len(text) <= ARGUMENTS_CHARS else text[:ARGUMENTS_CHARS] + "…"


def _plain(text: Any) -> str:
    """Text that Slack shows as written: its control characters escaped (&, <, >)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
