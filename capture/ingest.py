"""Documents to chunks: Markdown, plain text and source files, split along headings and
paragraphs into pieces of a few hundred tokens with a small overlap."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from capture.knowledge import Chunk, Source
from capture.store import Store
from capture.tokens import count_tokens

TARGET_TOKENS = 300
OVERLAP_TOKENS = 40
MAX_FILE_BYTES = 5 * 1024 * 1024
BATCH_BYTES = 1024 * 1024  # of document text per store transaction
_HEADING = re.compile(r"^#{1,6} ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Document:
    path: str
    text: str
    content_hash: str

    @classmethod
    def of(cls, path: str, text: str) -> Document:
        return cls(path, text, hashlib.sha256(text.encode()).hexdigest())


@dataclass(slots=True)
class IngestReport:
    documents: int = 0  # seen so far, whatever became of them
    text_bytes: int = 0
    ingested: int = 0
    unchanged: int = 0
    skipped: int = 0  # empty, binary or unreadable
    chunks: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ingested": self.ingested, "unchanged": self.unchanged, "skipped": self.skipped, "chunks": self.chunks}


async def ingest(store: Store, project: str, documents: Iterable[Document | None],
                 progress: Callable[[IngestReport], None] = lambda _: None) -> IngestReport:
    """Chunk and store documents (None stands for one that could not be read). A document whose
    hash the store already holds is not even chunked. Chunking runs on a worker thread while the
    batch before is being written, so both cores work; each batch is one transaction."""
    report = IngestReport()
    known = await store.source_hashes(project)
    batch: list[Source] = []
    batch_bytes = 0
    writing: asyncio.Task[list[Source]] | None = None

    async def written() -> None:
        if writing is not None:
            replaced = await writing
            report.ingested += len(replaced)
            report.chunks += sum(len(source.chunks) for source in replaced)

    try:
        for document in documents:
            report.documents += 1
            if document is None:
                report.skipped += 1
            elif known.get(document.path) == document.content_hash:
                report.unchanged += 1
            else:
                chunks = await asyncio.to_thread(chunk_document, project, document)
                batch.append(Source(document.path, document.content_hash, tuple(chunks)))
                size = len(document.text.encode())
                batch_bytes += size
                report.text_bytes += size
                if batch_bytes >= BATCH_BYTES:
                    await written()
                    writing = asyncio.create_task(store.replace_sources(project, batch))
                    batch, batch_bytes = [], 0
            progress(report)
        await written()
        writing = asyncio.create_task(store.replace_sources(project, batch)) if batch else None
        await written()
    finally:
        if writing is not None and not writing.done():
            writing.cancel()  # its transaction still completes or rolls back on the store's thread
    stored = report.ingested + report.unchanged + report.skipped
    report.unchanged += report.documents - stored  # stored with this content since `known` was read
    return report


def read_document(path: Path, root: Path) -> Document | None:
    """None for what is no text to search: empty or only blanks, binary, undecodable, too
    large or unreadable."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw[:8192]:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return None
    return Document.of(str(path.relative_to(root)) if path.is_relative_to(root) else str(path), text)


def walk(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, root it is named relative to). In a directory, hidden files and directories
    (`.git` among them) are skipped, and so is what its `.gitignore` files ignore, as git
    reads them: each file's patterns relative to its own directory, a deeper file over a
    shallower one, the last matching line of a file deciding, and nothing inside an ignored
    directory coming back. Those of the directories above it, up to the repository's top
    (the one holding `.git`), count too. A file named on its own is always taken."""
    for given in paths:
        if given.is_file():
            yield given, given.parent
        elif given.is_dir():
            yield from ((path, given) for path in _tree(given))


def _tree(root: Path) -> Iterator[Path]:
    """The files under `root` that `walk` takes, named under `root` as given: a directory's own
    files, then its subdirectories', each in sorted order. Ignore rules are matched in resolved
    paths, each against the path below its own directory."""
    resolved = root.resolve()
    rules = _ignore_rules_above(resolved)  # (directory, spec) of `here` and its parents, shallowest first

    def is_ignored(path: Path, is_dir: bool) -> bool:
        for base, spec in reversed(rules):  # the deepest file that has a say decides
            verdict = spec.check_file(path.relative_to(base).as_posix() + ("/" if is_dir else "")).include
            if verdict is not None:
                return verdict
        return False

    depth: dict[Path, int] = {}
    for directory, subdirectories, files in os.walk(root):  # top-down, one subtree after another
        here = Path(directory)
        real = resolved / here.relative_to(root)
        del rules[depth.get(here, len(rules)):]  # those read in the subtree walked before
        own = _ignore_file(here)
        if own is not None:
            rules.append((real, own))
        subdirectories[:] = sorted(
            name for name in subdirectories
            if not name.startswith(".") and not is_ignored(real / name, is_dir=True)
        )
        for name in subdirectories:
            depth[here / name] = len(rules)
        for name in sorted(files):
            if not name.startswith(".") and not is_ignored(real / name, is_dir=False) and (here / name).is_file():
                yield here / name


def _ignore_rules_above(root: Path) -> list[tuple[Path, GitIgnoreSpec]]:
    """The `.gitignore` files of the directories above `root` (resolved), up to the top of
    its repository, shallowest first; none when `root` is the top or in no repository."""
    candidates = [root, *root.parents]
    top = next((index for index, directory in enumerate(candidates) if (directory / ".git").exists()), 0)
    rules = []
    for directory in reversed(candidates[1:top + 1]):
        spec = _ignore_file(directory)
        if spec is not None:
            rules.append((directory, spec))
    return rules


def _ignore_file(directory: Path) -> GitIgnoreSpec | None:
    try:
        lines = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return GitIgnoreSpec.from_lines(lines)


def chunk_document(project: str, document: Document) -> list[Chunk]:
    chunks = []
    for ordinal, (piece, tokens) in enumerate(_pieces(document.text)):
        identity = f"{project}\0{document.path}\0{document.content_hash}\0{ordinal}"
        chunk_id = "ch_" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        chunks.append(Chunk(chunk_id, project, document.path, ordinal, piece, tokens))
    return chunks


def _sections(text: str) -> list[str]:
    """Split before each Markdown heading, then into paragraphs."""
    starts = [m.start() for m in _HEADING.finditer(text)]
    bounds = [0, *[s for s in starts if s > 0], len(text)]
    paragraphs: list[str] = []
    for begin, end in zip(bounds, bounds[1:]):
        paragraphs += [p.strip() for p in re.split(r"\n\s*\n", text[begin:end]) if p.strip()]
    return paragraphs


def _pieces(text: str) -> list[tuple[str, int]]:
    """Paragraphs packed into pieces of about TARGET_TOKENS, with their token counts; a piece
    repeats the last paragraph of the one before it when that is short (OVERLAP_TOKENS), so a
    fact cut at a boundary is whole in one of them. A new heading always starts a new piece.
    Each paragraph is counted once; a piece counts its paragraphs plus one per separator."""
    paragraphs = _sections(text)
    counts = [count_tokens(p) for p in paragraphs]
    pieces: list[tuple[str, int]] = []
    current: list[tuple[str, int]] = []

    def size() -> int:
        return sum(n for _, n in current) + max(0, len(current) - 1)

    for paragraph, tokens in zip(paragraphs, counts):
        starts_section = paragraph.startswith("#")
        if current and (size() + tokens > TARGET_TOKENS or starts_section):
            pieces.append(("\n\n".join(p for p, _ in current), size()))
            tail = current[-1]
            current = [tail] if tail[1] <= OVERLAP_TOKENS and not starts_section else []
        current.append((paragraph, tokens))
    if current:
        pieces.append(("\n\n".join(p for p, _ in current), size()))
    return pieces
