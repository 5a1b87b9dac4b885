"""The `notifications` section: webhooks told when a tool call is held for a person, and the
address people open the operator page at (the notifications link to it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_FORMATS = ("json", "slack")
_SECTION_KEYS = {"page_url", "webhooks"}
_WEBHOOK_KEYS = {"url", "format", "secret", "events"}
WEBHOOK_EVENTS = ("approval.requested", "approval.decided")

Resolve = Callable[[Any, str], Any]  # `os.environ/NAME` resolved, for the value at a place


class NotificationConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str = field(repr=False)  # a Slack webhook's address is its credential
    format: str = "json"
    secret: str | None = field(default=None, repr=False)  # signs each body (HMAC-SHA256)
    events: frozenset[str] = frozenset(WEBHOOK_EVENTS)


@dataclass(frozen=True, slots=True)
class NotificationSettings:
    page_url: str | None = None  # e.g. https://ctxgate.example.com; None: links are relative (/ui/...)
    webhooks: tuple[Webhook, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(value for hook in self.webhooks for value in (hook.url, hook.secret) if value)

    def approval_link(self, approval_id: str) -> str:
        return f"{(self.page_url or '').rstrip('/')}/ui/approvals/{approval_id}"


def parse_notifications(raw: Any, where: str, resolve: Resolve) -> NotificationSettings:
    if raw is None:
        return NotificationSettings()
    if not isinstance(raw, Mapping):
        raise NotificationConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - _SECTION_KEYS)
    if unknown:
        raise NotificationConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_SECTION_KEYS))})")
    page_url = raw.get("page_url")
    if page_url is not None and not _is_http_url(page_url):
        raise NotificationConfigError(f"{where}.page_url: must be an http(s) address, such as https://ctxgate.example.com")
    hooks = raw.get("webhooks") or []
    if not isinstance(hooks, list):
        raise NotificationConfigError(f"{where}.webhooks: must be a list")
    return NotificationSettings(page_url=page_url, webhooks=tuple(
        _webhook(hook, f"{where}.webhooks[{index}]", resolve) for index, hook in enumerate(hooks)))


def _webhook(raw: Any, where: str, resolve: Resolve) -> Webhook:
    if not isinstance(raw, Mapping):
        raise NotificationConfigError(f"{where}: must be a mapping with url")
    unknown = sorted(set(raw) - _WEBHOOK_KEYS)
    if unknown:
        raise NotificationConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_WEBHOOK_KEYS))})")
    url = resolve(raw.get("url"), f"{where}.url")
    if not _is_http_url(url):
        raise NotificationConfigError(f"{where}.url: required, an http(s) address (or os.environ/NAME holding one)")
    kind = raw.get("format", "json")
    if kind not in WEBHOOK_FORMATS:
        raise NotificationConfigError(f"{where}.format: must be one of {', '.join(WEBHOOK_FORMATS)}")
    secret = resolve(raw.get("secret"), f"{where}.secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise NotificationConfigError(f"{where}.secret: must be a string of at least 16 characters")
    events = raw.get("events", list(WEBHOOK_EVENTS))
    if not isinstance(events, list) or not events or not set(events) <= set(WEBHOOK_EVENTS):
        raise NotificationConfigError(f"{where}.events: a list of {', '.join(WEBHOOK_EVENTS)}")
    return Webhook(url=url, format=kind, secret=secret, events=frozenset(events))


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
