"""Scrubbing secrets out of text that leaves the gateway: log lines, and provider error text
before it is sent to a client or stored.

A known secret (configured provider keys, provider keys in the environment, the admin and
metrics keys, the caller's own token) is replaced only where it stands as a whole token, so a
short secret such as `k` does not turn `keys` into `[redacted]eys`. Text shaped like a key
(`sk-...`, `ctxg-...`, a bearer token) is replaced whatever its value, which also covers
keys the gateway cannot know in clear, such as virtual keys (it holds only their digests).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
_KEY_CHARS = r"A-Za-z0-9_\-"
# Provider key shapes (OpenAI and Anthropic `sk-`, ctxgate's `ctxg-`, Google `AIza`, AWS
# `AKIA`, GitHub `ghp_`/`github_pat_`, Slack `xox?-`), and whatever follows `Bearer`.
_KEY_SHAPES = re.compile(
    rf"(?<![{_KEY_CHARS}])(?:sk-|ctxg-|AIza|AKIA|ghp_|github_pat_|xox[abpr]-)[{_KEY_CHARS}.]{{12,}}"
    rf"|(?i:bearer)\s+[{_KEY_CHARS}.~+/=]{{8,}}"
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._known = self._pattern(self.secrets)

    def scrub(self, text: str, *, also: Iterable[str | None] = ()) -> str:
        """`text` without the known secrets, those in `also` (a request's own token), and
        anything shaped like a key."""
        extra = tuple(s for s in also if s and s not in self.secrets)
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        if extra:
            pattern = self._pattern(extra)
            assert pattern is not None
            text = pattern.sub(REDACTED, text)
        return _KEY_SHAPES.sub(REDACTED, text)

    def scrub_json(self, value: Any, *, also: Iterable[str | None] = (), depth: int = 32) -> Any:
        """`value` (parsed JSON) with every string scrubbed as `scrub` does; raises
        ValueError past `depth` levels, where a provider's error body has no business."""
        if isinstance(value, str):
            return self.scrub(value, also=also)
        if depth == 0 and isinstance(value, (dict, list)):
            raise ValueError("nested too deep to scrub")
        if isinstance(value, dict):
            return {key: self.scrub_json(item, also=also, depth=depth - 1) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(item, also=also, depth=depth - 1) for item in value]
        return value

    @staticmethod
    def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
        if not secrets:
            return None
        alternatives = "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
        return re.compile(rf"(?<![{_KEY_CHARS}])(?:{alternatives})(?![{_KEY_CHARS}])")
