"""Calls per minute counted in this process: a token bucket per key. The store of a single
process counts here; a shared store counts in the database, and here only while it is away."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


class LocalRates:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, bucket: str, per_minute: int) -> int | None:
        """None when the call may go now (and it is counted); else seconds to wait."""
        held = self._buckets.get(bucket)
        if held is None or held.capacity != per_minute:  # new, or its limit changed with the config
            held = self._buckets[bucket] = _Bucket(capacity=per_minute)
        return held.take()

    @staticmethod
    def wait_s(tokens: float, per_minute: int) -> int:
        """Whole seconds until a bucket holding `tokens` holds one."""
        return max(1, math.ceil((1.0 - tokens) / (per_minute / 60.0)))


@dataclass(slots=True)
class _Bucket:
    """`capacity` calls per minute, refilled continuously."""

    capacity: int
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)

    def take(self) -> int | None:
        now = time.monotonic()
        rate = self.capacity / 60.0
        self.tokens = min(float(self.capacity), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return LocalRates.wait_s(self.tokens, self.capacity)
