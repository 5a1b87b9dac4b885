"""The `ctxgate` command. Commands that only read the store never import litellm."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from capture.approvals import Approval, ApprovalStatus
from capture.records import Interaction, InteractionQuery, InvalidRecord
from capture.store import Store, StoreUnavailable, open_store
from proxy.settings import ConfigError, current_user, load_settings, store_url_from


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        return result
    except (ConfigError, InvalidRecord, StoreUnavailable) as error:
        print(f"ctxgate: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, (ConfigError, InvalidRecord)) else 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctxgate", description="An OpenAI-compatible LLM gateway.")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $CTXGATE_CONFIG)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--db", help="store URL: a path, sqlite:///path (default: $CTXGATE_DB or ./ctxgate.db)")
    serve.add_argument("--log-format", choices=("json", "console"), help="log line format (default json)")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="run the whole product offline against a built-in fake upstream")
    demo.set_defaults(run=_demo)

    interactions = commands.add_parser("interactions", help="read the recorded interactions")
    which = interactions.add_subparsers(title="interactions commands")
    listing = which.add_parser("list", help="newest first")
    for name in ("project", "session", "client"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--since", help="inclusive cutoff, 'YYYY-MM-DD HH:MM:SS' UTC or ISO 8601")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (cap 500)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.add_argument("--db", help="store URL (default: $CTXGATE_DB or ./ctxgate.db)")
    listing.set_defaults(run=_interactions_list)
    show = which.add_parser("show", help="one interaction, in full")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="compact JSON on one line")
    show.add_argument("--db", help="store URL (default: $CTXGATE_DB or ./ctxgate.db)")
    show.set_defaults(run=_interactions_show)
    approvals = commands.add_parser("approvals", help="tool calls waiting for a person")
    which = approvals.add_subparsers(title="approvals commands")
    listing = which.add_parser("list", help="pending approvals, oldest first")
    listing.add_argument("--status", default="pending", choices=[s.value for s in ApprovalStatus] + ["all"])
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.add_argument("--db", help="store URL (default: $CTXGATE_DB or ./ctxgate.db)")
    listing.set_defaults(run=_approvals_list)
    for verdict in ("approve", "deny"):
        decide = which.add_parser(verdict, help=f"{verdict} a pending tool call")
        decide.add_argument("id")
        if verdict == "approve":
            decide.add_argument("--always", action="store_true", help="allow this tool for the project from now on")
        decide.add_argument("--by", default=None, help="who decides (default: $USER)")
        decide.add_argument("--db", help="store URL (default: $CTXGATE_DB or ./ctxgate.db)")
        decide.set_defaults(run=_approvals_decide, verdict=verdict)

    policy = commands.add_parser("policy", help="the tool-call policy")
    which = policy.add_subparsers(title="policy commands")
    check = which.add_parser("check", help="the decision for a tool call, and the rule that made it")
    check.add_argument("tool")
    check.add_argument("--project", help="default: the config's default_project")
    check.add_argument("--args", default="{}", help="the call's arguments, as JSON")
    check.add_argument("--config", help="YAML config file (default: $CTXGATE_CONFIG)")
    check.add_argument("--db", help="also count remembered 'allow always' decisions in this store")
    check.set_defaults(run=_policy_check)
    return parser


def _approvals_list(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else ApprovalStatus(args.status)
    found: list[Approval] = asyncio.run(
        _with_store(store_url_from(args.db), lambda store: store.list_approvals(status))
    )
    if args.json:
        for approval in found:
            sys.stdout.write(orjson.dumps(approval.as_dict()).decode() + "\n")
        return 0
    if not found:
        print(f"no {args.status} approvals")
        return 0
    for approval in found:
        print(f"{approval.id}  {approval.created_at}  expires {approval.expires_at}  {approval.status:<8}  "
              f"project={approval.project}  tool={approval.tool}  args={approval.arguments}  ({approval.reason})")
    return 0


def _approvals_decide(args: argparse.Namespace) -> int:
    approve = args.verdict == "approve"
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
    decided_by = args.by or current_user()
    always = getattr(args, "always", False)
    approval: Approval | None = asyncio.run(
        _with_store(store_url_from(args.db),
                    lambda store: store.decide_approval(args.id, status, decided_by, always=always))
    )
    if approval is None:
        print(f"ctxgate: error: no approval with id {args.id!r}", file=sys.stderr)
        return 1
    if approval.status is not status or approval.decided_by != decided_by:
        print(f"ctxgate: error: approval {args.id} was already {approval.status}", file=sys.stderr)
        return 1
    remembered = " (allowed always for this project)" if approval.always else ""
    print(f"{approval.status} {approval.tool} for project {approval.project}{remembered}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from policy.evaluate import evaluate

    settings = load_settings(args.config)
    project = args.project or settings.default_project
    try:
        arguments = orjson.loads(args.args)
    except orjson.JSONDecodeError:
        raise InvalidRecord("args", f"--args must be JSON, got {args.args!r}") from None
    remembered: frozenset[str] = frozenset()
    if args.db:
        remembered = asyncio.run(_with_store(args.db, lambda store: store.allowed_always(project)))
    decision = evaluate(settings.policy.for_project(project), args.tool, arguments, always_allowed=remembered)
    mode = "" if settings.policy.enforcing else "  (no policy configured: observe-only, nothing is blocked)"
    print(f"{decision.action}  rule={decision.rule}  project={project}{mode}")
    print(f"  {decision.reason}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, host=args.host, port=args.port, db=args.db, log_format=args.log_format)
    from proxy.server import (
        serve,  # imports litellm: only the commands that proxy pay for it
    )

    serve(settings)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo()


async def _with_store(url: str, work: Any) -> Any:
    store: Store = open_store(url)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def _interactions_list(args: argparse.Namespace) -> int:
    query = InteractionQuery.build(
        project=args.project, session_id=args.session, client=args.client, since=args.since, limit=args.limit
    )
    found: list[Interaction] = asyncio.run(
        _with_store(store_url_from(args.db), lambda store: store.list_interactions(query))
    )
    if args.json:
        for interaction in found:
            sys.stdout.write(orjson.dumps(interaction.summary()).decode() + "\n")
        return 0
    print(format_table(found))
    return 0


def _interactions_show(args: argparse.Namespace) -> int:
    interaction: Interaction | None = asyncio.run(
        _with_store(store_url_from(args.db), lambda store: store.get_interaction(args.id))
    )
    if interaction is None:
        print(f"ctxgate: error: no interaction with id {args.id!r}", file=sys.stderr)
        return 1
    option = 0 if args.json else orjson.OPT_INDENT_2
    print(orjson.dumps(interaction.as_dict(), option=option).decode())
    return 0


_TABLE_COLUMNS = ("id", "created_at", "project", "session_id", "client", "model", "status",
                  "prompt_tokens", "completion_tokens", "latency_ms")


def format_table(interactions: Sequence[Interaction]) -> str:
    if not interactions:
        return "no interactions"
    rows = [[_cell(getattr(i, c)) for c in _TABLE_COLUMNS] for i in interactions]
    widths = [max(len(c), *(len(r[n]) for r in rows)) for n, c in enumerate(_TABLE_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_TABLE_COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
