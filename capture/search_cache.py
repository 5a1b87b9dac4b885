"""Recent context searches, reused while what they could find stays the same: the part of a
search every backend shares.

Each store keeps a knowledge version, a number that changes whenever memories or chunks
change, whichever process changed them. A result is filed under the version it was found at
and reused only while the version stands. Reading the version is itself a query, so a read is
trusted for `KNOWLEDGE_VERSION_TTL_S`: knowledge written through this process is seen at once
(its writes forget the read), written by another process (a worker, a replica, the CLI),
within that time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from capture.knowledge import Scored

RECENT_SEARCHES = 128  # results kept for reuse: each holds up to 2 x limit memories and chunks
KNOWLEDGE_VERSION_TTL_S = 0.5

Asked = tuple[str, str, int, int]  # project, text, limit, the match budget: all the results depend on
Found = tuple[tuple[Scored, ...], tuple[Scored, ...]]


class SearchCache:
    """An agent's tool loop asks again and again with the same latest user turn: its searches
    are answered from here, most without a round trip to the store."""

    def __init__(self, size: int = RECENT_SEARCHES) -> None:
        self._size = size
        self._found: OrderedDict[Asked, tuple[int, Found]] = OrderedDict()
        self._lock = threading.Lock()  # a backend's reader threads share it
        self._version_read: tuple[int, float] | None = None  # (version, monotonic time read)
        self.writes = 0  # knowledge writes through this process: a read begun before one is stale

    def fresh_version(self) -> int | None:
        """The version last read, while it stands; None once it is older than the TTL or forgotten."""
        read = self._version_read
        if read is None or time.monotonic() - read[1] >= KNOWLEDGE_VERSION_TTL_S:
            return None
        return read[0]

    def saw_version(self, version: int, writes_before: int | None = None) -> None:
        """`writes_before`: `writes` when the read began, if it awaited: a write since makes it
        stale, and it is not kept."""
        if writes_before is None or writes_before == self.writes:
            self._version_read = (version, time.monotonic())

    def forget_version(self) -> None:
        """Knowledge changed through this process: the next search reads the version again."""
        self._version_read = None
        self.writes += 1

    def get(self, asked: Asked, version: int) -> Found | None:
        with self._lock:
            entry = self._found.get(asked)
            if entry is None or entry[0] != version:
                return None
            self._found.move_to_end(asked)
            return entry[1]

    def put(self, asked: Asked, version: int, found: Found) -> None:
        with self._lock:
            self._found[asked] = (version, found)
            self._found.move_to_end(asked)
            while len(self._found) > self._size:
                self._found.popitem(last=False)
