"""The spool: a directory of its own where records wait, durably, for a store that cannot take
them, and the dead-letter file for the records no store will ever take.

Each process appends to a segment file of its own (JSON lines, flushed and fsynced), holding an
exclusive `flock` on it for as long as it may still append. A replay claims only unlocked
segments, so a process never reads a file another one is still writing. A segment is deleted
once every record in it is stored or dead-lettered; stores skip ids they already hold, so a
segment replayed twice (a crash between storing and deleting) still stores each record once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from capture.records import Interaction, now_timestamp
from capture.writable import safe_json

SEGMENT_GLOB = "spool-*.jsonl"
DEAD_LETTER_FILE = "dead-letter.jsonl"


class SpoolUnavailable(OSError):
    """The spool directory cannot be written."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    failed_at: str
    error: str
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.record.get("id"))


class Spool:
    def __init__(self, directory: Path, *, legacy_files: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.legacy_files = tuple(legacy_files)  # `<db>.spool.jsonl` of versions before the directory
        self._segment: IO[bytes] | None = None

    @property
    def dead_letter_path(self) -> Path:
        return self.directory / DEAD_LETTER_FILE

    def check_writable(self) -> None:
        """Create the directory and prove a file in it can be written and synced."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{os.getpid()}"
            with probe.open("wb") as file:
                file.write(b"ok")
                file.flush()
                os.fsync(file.fileno())
            probe.unlink()
        except OSError as error:
            raise SpoolUnavailable(f"spool directory {self.directory} is not writable: {error}") from error

    def append(self, records: Sequence[Interaction]) -> list[tuple[Interaction, str]]:
        """Write `records` durably. Returns those that cannot be written as JSON at all, with
        why: they belong in the dead-letter file, not in a spool that would fail to replay."""
        lines, unwritable = [], []
        for record in records:
            try:
                lines.append(orjson.dumps(record.as_dict()) + b"\n")
            except TypeError as error:  # orjson.JSONEncodeError: depth, surrogates, huge ints
                unwritable.append((record, f"cannot be written as JSON: {error}"))
        if lines:
            try:
                segment = self._open_segment()
                segment.write(b"".join(lines))
                segment.flush()
                os.fsync(segment.fileno())
            except OSError as error:
                self.seal()  # a half-written segment is replayed line by line; start a new one
                raise SpoolUnavailable(f"cannot write the spool in {self.directory}: {error}") from error
        return unwritable

    def seal(self) -> None:
        """Stop appending to the current segment, so a replay may claim it."""
        if self._segment is not None:
            segment, self._segment = self._segment, None
            try:
                segment.close()  # closing releases the lock
            except OSError:
                pass

    def claim(self) -> Generator[Path, None, None]:
        """Segments no process is writing, each locked while the caller replays it."""
        candidates = [p for p in self.legacy_files if p.exists()]
        if self.directory.is_dir():
            candidates += sorted(self.directory.glob(SEGMENT_GLOB))
        own = self._segment.name if self._segment is not None else None
        for path in candidates:
            if str(path) == own:
                continue
            try:
                file = path.open("rb")
            except OSError:
                continue  # claimed and deleted by another process meanwhile
            with file:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is still writing or replaying it
                if path.exists():
                    yield path

    def backlog(self) -> tuple[int, int]:
        """(segments, bytes) waiting in the spool directory, any process's."""
        sizes = []
        for path in [*self.legacy_files, *self.directory.glob(SEGMENT_GLOB)]:
            try:
                sizes.append(path.stat().st_size)
            except OSError:  # not there, or replayed and deleted meanwhile
                continue
        return len(sizes), sum(sizes)

    def dead_letter(self, record: Interaction, error: str) -> None:
        """Keep a record no store will take, with why; raises SpoolUnavailable if even that fails."""
        line = orjson.dumps({"failed_at": now_timestamp(), "error": error, "record": safe_json(record.as_dict())})
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("ab") as file:
                file.write(line + b"\n")
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise SpoolUnavailable(f"cannot write the dead-letter file {self.dead_letter_path}: {error}") from error

    def dead_letters(self) -> list[DeadLetter]:
        if not self.dead_letter_path.exists():
            return []
        found = []
        for line in self.dead_letter_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
                found.append(DeadLetter(entry["failed_at"], entry["error"], entry["record"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a crash mid-write
        return found

    def _open_segment(self) -> IO[bytes]:
        if self._segment is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"spool-{time.time_ns()}-{os.getpid()}.jsonl"
            segment = path.open("ab")
            fcntl.flock(segment.fileno(), fcntl.LOCK_EX)
            self._segment = segment
        return self._segment


def read_segment(path: Path) -> tuple[list[Interaction], int]:
    """The records of a segment, and how many lines could not be read (cut by a crash)."""
    records, unreadable = [], 0
    for line in path.read_bytes().splitlines():
        try:
            fields = orjson.loads(line)
            for name in ("memories_used", "chunks_used", "tool_decisions"):
                fields[name] = tuple(fields[name])
            records.append(Interaction(**fields))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            unreadable += int(bool(line.strip()))
    return records, unreadable
