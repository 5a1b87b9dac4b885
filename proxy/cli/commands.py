"""The `ctxgate` command. Commands that only read the store never import litellm."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import orjson

from capture.approvals import Approval, ApprovalStatus
from capture.ingest import IngestReport, ingest, read_document, walk
from capture.knowledge import Memory, new_memory
from capture.records import (
    CleanupResult,
    Interaction,
    InteractionQuery,
    InvalidRecord,
    Session,
    format_timestamp,
    parse_age,
)
from capture.spool import Spool
from capture.backends import open_store, sqlite_path
from capture.store import Store, StoreUnavailable
from proxy.cli.tables import format_table, table
from proxy.config.settings import (
    ConfigError,
    ConfigSource,
    StoreChoice,
    current_user,
    find_config,
    find_store,
    load_settings,
    spool_dir_in,
    spool_directory,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        sys.stdout.flush()  # here, so that a reader gone away is a BrokenPipeError caught below
        return result
    except (ConfigError, InvalidRecord, StoreUnavailable) as error:
        print(f"ctxgate: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, (ConfigError, InvalidRecord)) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left early (`| head`): what it did not read was not wanted. Point stdout at
        # /dev/null, or the interpreter's own flush at exit fails again, with a traceback; exit
        # as a process killed by SIGPIPE would, like the other tools in a pipeline.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


_CONFIG_HELP = "YAML config file (default: $CTXGATE_CONFIG, else ./ctxgate.yaml if there is one)"
_JSON_LINES = "JSON Lines (one object per line) instead of a table"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctxgate", description="An OpenAI-compatible LLM gateway.",
        epilog="With --json, list commands print JSON Lines (one object per line), show commands one object.",
    )
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=_CONFIG_HELP)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--db", help="store URL: a path, sqlite:///path (default: $CTXGATE_DB or ./ctxgate.db)")
    serve.add_argument("--log-format", choices=("json", "console"), help="log line format (default json)")
    serve.add_argument("--workers", type=int, help="processes serving the port (default: $CTXGATE_WORKERS, "
                                                    "else the config's server.workers, else the CPUs it may use)")
    # How `serve --workers N` starts each of its workers (proxy/edge/workers.py); not for people.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
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
    listing.add_argument("--json", action="store_true", help=_JSON_LINES)
    _store_options(listing)
    listing.set_defaults(run=_interactions_list)
    show = which.add_parser("show", help="one interaction, in full")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="one JSON object, on one line")
    _store_options(show)
    show.set_defaults(run=_interactions_show)
    sessions = commands.add_parser("sessions", help="conversations as recorded")
    which = sessions.add_subparsers(title="sessions commands")
    listing = which.add_parser("list", help="most recently active first")
    listing.add_argument("--project")
    listing.add_argument("--client")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help=_JSON_LINES)
    _store_options(listing)
    listing.set_defaults(run=_sessions_list)
    show = which.add_parser("show", help="a session turn by turn")
    show.add_argument("id")
    show.add_argument("--project", help="when the id is used in several projects")
    show.add_argument("--json", action="store_true", help="the session and its turns as one JSON object, on one line")
    _store_options(show)
    show.set_defaults(run=_sessions_show)
    clean = which.add_parser("clean", help="delete sessions (and their interactions, approvals) older than an age")
    clean.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 2w")
    _store_options(clean)
    clean.set_defaults(run=_sessions_clean)

    memories = commands.add_parser("memories", help="a project's memories")
    which = memories.add_subparsers(title="memories commands")
    add = which.add_parser("add", help="remember something for a project")
    add.add_argument("content")
    add.add_argument("--project", required=True)
    add.add_argument("--type", default="note", help="e.g. decision, fact, preference (default note)")
    add.add_argument("--confidence", type=float, default=1.0, help="0 to 1 (default 1)")
    _store_options(add)
    add.set_defaults(run=_memories_add)
    listing = which.add_parser("list", help="newest first")
    listing.add_argument("--project")
    listing.add_argument("--json", action="store_true", help=_JSON_LINES)
    _store_options(listing)
    listing.set_defaults(run=_memories_list)
    remove = which.add_parser("rm", help="forget a memory")
    remove.add_argument("id")
    _store_options(remove)
    remove.set_defaults(run=_memories_rm)

    ingest = commands.add_parser("ingest", help="documents (Markdown, text, source) -> chunks for a project")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--project", required=True)
    _store_options(ingest)
    ingest.set_defaults(run=_ingest)

    context = commands.add_parser("context", help="preview the context pack a question would get")
    context.add_argument("question")
    context.add_argument("--project", required=True)
    context.add_argument("--budget", type=int, default=1500, help="tokens (default 1500)")
    _store_options(context)
    context.set_defaults(run=_context)

    keys = commands.add_parser("keys", help="virtual keys")
    which = keys.add_subparsers(title="keys commands")
    new = which.add_parser("new", help="print a fresh key, and the config entry that admits it")
    new.add_argument("--client", required=True, help="the name this key's calls are recorded under")
    new.add_argument("--project", action="append", default=[], help="a project it may use (repeat; none: any)")
    new.add_argument("--model", action="append", default=[], help="a model glob it may use (repeat; none: any)")
    new.add_argument("--rpm", type=int, help="requests per minute")
    new.add_argument("--read", action="store_true", help="may also read its projects' records through the APIs")
    new.add_argument("--approve", action="store_true",
                     help="a person's key that reads and decides its projects' held tool calls (API and /ui) "
                          "and calls no model")
    new.set_defaults(run=_keys_new)

    capture = commands.add_parser("capture", help="the capture spool and the records no store would take")
    which = capture.add_subparsers(title="capture commands")
    letters = which.add_parser("dead-letters", help="records the store rejected, kept with why (oldest first)")
    letters.add_argument("--spool-dir", help="default: the config's store.spool_dir, else beside the store (<db>.spool)")
    letters.add_argument("--json", action="store_true", help="JSON Lines: the whole record with its error, one per line")
    _store_options(letters)
    letters.set_defaults(run=_dead_letters)

    approvals = commands.add_parser("approvals", help="tool calls waiting for a person")
    which = approvals.add_subparsers(title="approvals commands")
    listing = which.add_parser("list", help="pending approvals, oldest first")
    listing.add_argument("--status", default="pending", choices=[s.value for s in ApprovalStatus] + ["all"])
    listing.add_argument("--json", action="store_true", help=_JSON_LINES)
    _store_options(listing)
    listing.set_defaults(run=_approvals_list)
    for verdict in ("approve", "deny"):
        decide = which.add_parser(verdict, help=f"{verdict} a pending tool call")
        decide.add_argument("id")
        if verdict == "approve":
            decide.add_argument("--always", action="store_true", help="allow this tool for the project from now on")
        decide.add_argument("--by", default=None, help="who decides (default: $USER)")
        _store_options(decide)
        decide.set_defaults(run=_approvals_decide, verdict=verdict)

    policy = commands.add_parser("policy", help="the tool-call policy")
    which = policy.add_subparsers(title="policy commands")
    check = which.add_parser("check", help="the decision for a tool call, and the rule that made it")
    check.add_argument("tool")
    check.add_argument("--project", help="default: the config's default_project")
    check.add_argument("--args", default="{}", help="the call's arguments, as JSON")
    check.add_argument("--config", help=_CONFIG_HELP)
    check.add_argument("--db", help="also count remembered 'allow always' decisions in this store")
    check.set_defaults(run=_policy_check)
    return parser


def _sessions_list(args: argparse.Namespace) -> int:
    projects = frozenset({args.project}) if args.project else None
    found: list[Session] = asyncio.run(_with_store(
        _store(args),
        lambda store: store.list_sessions(projects=projects, client=args.client, limit=min(args.limit, 500)),
    ))
    if args.json:
        for session in found:
            sys.stdout.write(orjson.dumps(session.as_dict()).decode() + "\n")
        return 0
    print(table(found, ("id", "project", "client", "first_at", "last_at", "interaction_count",
                         "prompt_tokens", "completion_tokens"), "no sessions"))
    return 0


def _sessions_show(args: argparse.Namespace) -> int:
    projects = frozenset({args.project}) if args.project else None

    async def read(store: Store) -> tuple[list[Session], list[Interaction]]:
        found = await store.get_sessions(args.id, projects)
        turns = await store.session_interactions(found[0].project, args.id) if len(found) == 1 else []
        return found, turns

    found, turns = asyncio.run(_with_store(_store(args), read))
    if not found:
        print(f"ctxgate: error: no session with id {args.id!r}", file=sys.stderr)
        return 1
    if len(found) > 1:
        print(f"ctxgate: error: session {args.id!r} is used in projects "
              f"{', '.join(s.project for s in found)}: pass --project", file=sys.stderr)
        return 2
    session = found[0]
    if args.json:
        print(orjson.dumps({**session.as_dict(), "turns": [t.as_dict() for t in turns]}).decode())
        return 0
    print(f"session {session.id}  project={session.project}  client={session.client}  "
          f"{session.first_at} .. {session.last_at}  {session.interaction_count} turns")
    for number, turn in enumerate(turns, 1):
        asked = _last_user_text(turn.prompt)
        answered = turn.response.get("content") if isinstance(turn.response, dict) else turn.response
        agent = f"  agent={turn.agent_id} (started by {turn.parent_agent_id or 'the main agent'})" if turn.agent_id else ""
        print(f"\n[{number}] {turn.created_at}  {turn.model}  {turn.status}  id={turn.id}{agent}")
        print(f"  user: {_readable(asked)}")
        print(f"  assistant: {_readable(answered)}")
        for decision in turn.tool_decisions:
            print(f"  tool {decision.get('tool')}: {decision.get('action')} ({decision.get('rule')})")
    return 0


def _last_user_text(prompt: Any) -> Any:
    """The latest user turn of a prompt: OpenAI's messages, or Anthropic's `{system, messages}`."""
    if isinstance(prompt, dict) and isinstance(prompt.get("messages"), list):
        prompt = prompt["messages"]
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return message.get("content")
    return prompt


# Left out of a turn as shown: the pack we injected, and the notes Claude Code adds to the
# person's words (about 6.7 KB on a first turn); `interactions show` has both whole.
_PACK = re.compile(r"<ctxgate-context\b.*?</ctxgate-context>\s*|<system-reminder>.*?</system-reminder>\s*", re.S)


def _readable(content: Any) -> str:
    """Content as a person reads it: text parts and blocks joined, tool calls and results in
    brackets, the pack and Claude Code's reminders left out."""
    if isinstance(content, str):
        return _PACK.sub("", content)
    if not isinstance(content, list):
        return "" if content is None else str(content)
    pieces = []
    for part in content:
        if not isinstance(part, dict):
            pieces.append(str(part))
        elif isinstance(part.get("text"), str):
            pieces.append(_PACK.sub("", part["text"]))
        elif part.get("type") == "tool_use":
            pieces.append(f"[tool_use {part.get('name')} {orjson.dumps(part.get('input')).decode()}]")
        elif part.get("type") == "tool_result":
            pieces.append(f"[tool_result {_readable(part.get('content'))}]")
        elif part.get("type") in ("thinking", "redacted_thinking"):
            pieces.append("[thinking]")
        else:
            pieces.append(f"[{part.get('type')}]")
    return " ".join(piece for piece in pieces if piece.strip())


def _sessions_clean(args: argparse.Namespace) -> int:
    cutoff = format_timestamp(datetime.now(UTC) - parse_age(args.older_than))
    result: CleanupResult = asyncio.run(
        _with_store(_store(args), lambda store: store.delete_older_than(cutoff))
    )
    print(f"deleted {result.sessions} sessions, {result.interactions} interactions and "
          f"{result.approvals} approvals older than {cutoff} UTC")
    return 0


def _memories_add(args: argparse.Namespace) -> int:
    memory = new_memory(args.project, args.content, type=args.type, confidence=args.confidence)
    asyncio.run(_with_store(_store(args), lambda store: store.add_memory(memory), create=True))
    print(memory.id)
    return 0


def _memories_list(args: argparse.Namespace) -> int:
    found: list[Memory] = asyncio.run(
        _with_store(_store(args), lambda store: store.list_memories(args.project, limit=500)))
    if args.json:
        for memory in found:
            sys.stdout.write(orjson.dumps(memory.as_dict()).decode() + "\n")
        return 0
    print(table(found, ("id", "project", "type", "confidence", "status", "use_count", "content"), "no memories"))
    return 0


def _memories_rm(args: argparse.Namespace) -> int:
    if not asyncio.run(_with_store(_store(args), lambda store: store.delete_memory(args.id))):
        print(f"ctxgate: error: no memory with id {args.id!r}", file=sys.stderr)
        return 1
    print(f"forgot {args.id}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    files = list(walk(args.paths))
    started = time.monotonic()

    def show_progress(report: IngestReport) -> None:
        if report.documents % 25 == 0 or report.documents == len(files):
            rate = report.text_bytes / 1e6 / max(time.monotonic() - started, 1e-3)
            done = report.documents * 30 // len(files)
            print(f"\r[{'#' * done}{'.' * (30 - done)}] {report.documents}/{len(files)} files, {rate:.1f} MB/s",
                  end="\n" if report.documents == len(files) else "", file=sys.stderr, flush=True)

    report: IngestReport = asyncio.run(_with_store(_store(args), lambda store: ingest(
        store, args.project, (read_document(path, root) for path, root in files),
        show_progress if len(files) > 20 and sys.stderr.isatty() else lambda _: None), create=True))
    print(f"{report.ingested} ingested ({report.chunks} chunks), {report.unchanged} unchanged, "
          f"{report.skipped} skipped (empty, binary or unreadable)")
    return 0


def _context(args: argparse.Namespace) -> int:
    from proxy.pipeline.context import build_pack

    pack = asyncio.run(_with_store(_store(args), lambda store: build_pack(
        store, args.project, args.question, args.budget)))
    if pack is None:
        print("nothing in this project matches")
        return 0
    for memory in pack.memories:
        print(f"memory {memory.id}  score={memory.score:.3f}  {memory.content}")
    for chunk in pack.chunks:
        print(f"chunk  {chunk.id}  score={chunk.score:.3f}  {chunk.source}")
    print(f"\n{pack.tokens} tokens of {args.budget}:\n{pack.text}")
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from proxy.config.keys import digest, new_key

    key = new_key()
    entry: dict[str, Any] = {"sha256": digest(key), "client": args.client}
    if args.project:
        entry["projects"] = args.project
    if args.model:
        entry["models"] = args.model
    if args.rpm:
        entry["rpm"] = args.rpm
    if args.approve:  # a person's key: one that calls models could approve its own held calls
        entry["scopes"] = ["read", "approve"]
    elif args.read:
        entry["scopes"] = ["proxy", "read"]
    print(f"key (shown once, give it to {args.client}): {key}")
    print("add under `keys:` in the config:")
    print(f"  - {orjson.dumps(entry).decode()}")
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    store = _store(args)
    directory = spool_directory(store.url, args.spool_dir or spool_dir_in(_config(args)))
    if directory is None:
        print(f"ctxgate: error: the store {store.url} has no spool directory", file=sys.stderr)
        return 1
    if not directory.is_dir():
        print(f"ctxgate: error: no spool directory at {directory.absolute()}; nothing was created", file=sys.stderr)
        return 1
    letters = Spool(directory).dead_letters()
    segments, size = Spool(directory).backlog()
    if args.json:
        for letter in letters:
            sys.stdout.write(orjson.dumps({"failed_at": letter.failed_at, "error": letter.error,
                                           "record": letter.record}).decode() + "\n")
        return 0
    print(f"spool {directory.absolute()}: {segments} segment(s) waiting for the store ({size} bytes)")
    if not letters:
        print("no dead letters")
        return 0
    for letter in letters:
        record = letter.record
        print(f"{letter.id}  {letter.failed_at}  project={record.get('project')}  session={record.get('session_id')}  "
              f"{letter.error}")
    return 0


def _approvals_list(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else ApprovalStatus(args.status)
    found: list[Approval] = asyncio.run(
        _with_store(_store(args), lambda store: store.list_approvals(status))
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
        _with_store(_store(args),
                    lambda store: store.decide_approval(args.id, status, decided_by, always=always))
    )
    if approval is None:
        print(f"ctxgate: error: no approval with id {args.id!r}", file=sys.stderr)
        return 1
    if not approval.is_decided_as(status, decided_by):
        print(f"ctxgate: error: approval {args.id} was already {approval.status}", file=sys.stderr)
        return 1
    remembered = " (allowed always for this project)" if approval.always else ""
    print(f"{approval.status} {approval.tool} for project {approval.project}{remembered}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from policy.evaluate import evaluate

    config = _config(args)
    settings = load_settings(config)
    project = args.project or settings.default_project
    try:
        arguments = orjson.loads(args.args)
    except orjson.JSONDecodeError:
        raise InvalidRecord("args", f"--args must be JSON, got {args.args!r}") from None
    remembered: frozenset[str] = frozenset()
    if args.db:
        remembered = asyncio.run(
            _with_store(StoreChoice(args.db, "--db"), lambda store: store.allowed_always(project)))
    decision = evaluate(settings.policy.for_project(project), args.tool, arguments, always_allowed=remembered)
    mode = "" if settings.policy.enforcing else "  (no policy configured: observe-only, nothing is blocked)"
    print(f"{decision.action}  rule={decision.rule}  project={project}{mode}")
    print(f"  {decision.reason}")
    print(f"  config: {config.describe()}")
    return 0


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="store URL: a path, sqlite:///path "
                                     "(default: $CTXGATE_DB, else the config's store.url, else ./ctxgate.db)")
    parser.add_argument("--config", help=_CONFIG_HELP + "; only its store.url is used here")


def _config(args: argparse.Namespace) -> ConfigSource:
    """The config every command uses, found in the one order `find_config` defines."""
    return find_config(args.config, directory=Path.cwd())


def _store(args: argparse.Namespace) -> StoreChoice:
    """The store a command works on; said on stderr when the config chose it, the one case
    the command line does not show."""
    choice = find_store(args.db, _config(args))
    if choice.chosen_by.startswith("store.url"):
        print(f"ctxgate: store {choice.url} ({choice.chosen_by})", file=sys.stderr)
    return choice


def _serve(args: argparse.Namespace) -> int:
    config = _config(args)
    settings = load_settings(config, host=args.host, port=args.port, db=args.db, log_format=args.log_format,
                             workers=args.workers)
    from proxy.edge.server import WorkerLink, listen, reserve, serve
    from proxy.edge.workers import supervise, worker_count

    link = WorkerLink(args.worker_index, args.worker_fd) if args.worker_fd is not None else None
    count = 1 if link is not None else worker_count(settings)
    try:
        # Before the app is built and warmed up: a port in use is then one line, at once.
        if count > 1:
            sockets = reserve(settings.host, settings.port)
        else:
            sockets = listen(settings.host, settings.port, is_shared=link is not None)
    except OSError as error:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        reason = (error.strerror or str(error)).lower()
        print(f"ctxgate: error: cannot listen on {host}:{settings.port}: {reason}", file=sys.stderr)
        return 1
    if count > 1:
        return supervise(settings, config, sockets, count)
    serve(settings, sockets, config, link)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo.demo import run_demo

    return run_demo()


async def _with_store(choice: StoreChoice, work: Any, *, create: bool = False) -> Any:
    """Run `work` on the chosen store. Unless `create` (commands that write on purpose), a
    store that is not there is an error, and nothing is made: an empty store made on the spot
    would answer "nothing here" about the wrong place."""
    path = sqlite_path(choice.url)
    if not create and path is not None and path != ":memory:" and not Path(path).is_file():
        raise StoreUnavailable(
            f"no store at {Path(path).absolute()} (looked at it because of {choice.chosen_by}); "
            "nothing was created: pass --db, set CTXGATE_DB, or run where the store is"
        )
    store: Store = open_store(choice.url)
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
        _with_store(_store(args), lambda store: store.list_interactions(query))
    )
    if args.json:
        for interaction in found:
            sys.stdout.write(orjson.dumps(interaction.summary()).decode() + "\n")
        return 0
    print(format_table(found))
    return 0




def _interactions_show(args: argparse.Namespace) -> int:
    interaction: Interaction | None = asyncio.run(
        _with_store(_store(args), lambda store: store.get_interaction(args.id))
    )
    if interaction is None:
        print(f"ctxgate: error: no interaction with id {args.id!r}", file=sys.stderr)
        return 1
    option = 0 if args.json else orjson.OPT_INDENT_2
    print(orjson.dumps(interaction.as_dict(), option=option).decode())
    return 0











if __name__ == "__main__":
    sys.exit(main())
