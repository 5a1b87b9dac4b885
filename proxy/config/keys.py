"""Virtual keys: who may call, for which projects and models, how often, and what they may read.

Only the sha256 of a key is configured. With no keys configured the gateway runs open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy.rules import PatternList

KEY_PREFIX = "ctxg-"
SCOPES = frozenset({"proxy", "read", "approve"})  # approve: decide its projects' held tool calls


class KeyConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class VirtualKey:
    sha256: str = field(repr=False)
    client: str
    projects: frozenset[str] = frozenset()  # empty: any project
    models: PatternList = PatternList()  # empty: any declared model
    rpm: int | None = None
    scopes: frozenset[str] = frozenset({"proxy"})

    @property
    def default_project(self) -> str | None:
        return min(self.projects) if len(self.projects) == 1 else None

    def allows_project(self, project: str) -> bool:
        return not self.projects or project in self.projects

    def allows_model(self, model: str) -> bool:
        return not self.models.patterns or self.models.first_match(model) is not None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_keys(raw: Any, where: str) -> tuple[VirtualKey, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise KeyConfigError(f"{where}: must be a list of keys")
    return tuple(_parse_key(entry, f"{where}[{index}]") for index, entry in enumerate(raw))


_KEY_FIELDS = {"sha256", "client", "projects", "models", "rpm", "scopes"}


def _parse_key(entry: Any, where: str) -> VirtualKey:
    if not isinstance(entry, Mapping):
        raise KeyConfigError(f"{where}: must be a mapping with sha256 and client")
    unknown = sorted(set(entry) - _KEY_FIELDS)
    if unknown:
        raise KeyConfigError(f"{where}: unknown key {unknown[0]!r} (a key is configured by its sha256, never itself)")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise KeyConfigError(f"{where}.sha256: must be the 64 hex digits `ctxgate keys new` printed")
    client = entry.get("client")
    if not isinstance(client, str) or not client:
        raise KeyConfigError(f"{where}.client: required, the name this key's calls are recorded under")
    lists = {}
    for name in ("projects", "models", "scopes"):
        value = entry.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise KeyConfigError(f"{where}.{name}: must be a list of strings")
        lists[name] = value
    if set(lists["scopes"]) - SCOPES:
        raise KeyConfigError(f"{where}.scopes: each must be one of {', '.join(sorted(SCOPES))}")
    if {"approve"} <= set(lists["scopes"]) and ("proxy" in lists["scopes"] or not lists["scopes"]):
        raise KeyConfigError(f"{where}.scopes: a key that calls models (proxy) cannot also approve: its holder could "
                             "approve their own held calls; give the person who decides a key of their own "
                             "(scopes: [read, approve])")
    rpm = entry.get("rpm")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm <= 0):
        raise KeyConfigError(f"{where}.rpm: must be a positive whole number of requests per minute")
    return VirtualKey(
        sha256=sha.lower(), client=client, projects=frozenset(lists["projects"]),
        models=PatternList.of(tuple(lists["models"])), rpm=rpm,
        scopes=frozenset(lists["scopes"] or ["proxy"]),
    )


class KeyRing:
    """Looks keys up by their digest, in constant time per configured key."""

    def __init__(self, keys: tuple[VirtualKey, ...]) -> None:
        self.keys = keys

    @property
    def is_open(self) -> bool:
        return not self.keys

    def by_digest(self, sha256: str) -> VirtualKey | None:
        """The key with this digest (a login made with it names it so)."""
        found = None
        for key in self.keys:
            if hmac.compare_digest(sha256.encode(), key.sha256.encode()):
                found = key
        return found

    def find(self, presented: str | None) -> VirtualKey | None:
        if not presented:
            return None
        presented_digest = digest(presented).encode()
        found = None
        for key in self.keys:  # no early exit: timing says nothing about which key matched
            if hmac.compare_digest(presented_digest, key.sha256.encode()):
                found = key
        return found
