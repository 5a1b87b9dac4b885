"""Who may read and decide through the management APIs (interactions, sessions, approvals).

The admin key sees everything; a virtual key with the `read` scope sees its own projects.
With neither an admin key nor virtual keys configured, the gateway runs open, as it says at
start-up.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from proxy.appkeys import KEYRING, SETTINGS
from proxy.edge.errors import Forbidden, NotFound, Unauthorized
from proxy.pipeline.identity import bearer_token


@dataclass(frozen=True, slots=True)
class ReadAccess:
    """`projects` None: every project."""

    projects: frozenset[str] | None

    def allows(self, project: str | None) -> bool:
        return self.projects is None or project in self.projects

    def check(self, project: str | None, what: str) -> None:
        """A record of another project is as good as missing: 404, not a hint that it exists."""
        if not self.allows(project):
            raise NotFound(f"no {what}", code=f"{what.split()[0]}_not_found")


def is_admin(request: web.Request) -> bool:
    admin_key = request.app[SETTINGS].admin_key
    given = bearer_token(request)
    return admin_key is not None and given is not None and hmac.compare_digest(given.encode(), admin_key.encode())


def is_open(request: web.Request) -> bool:
    return request.app[SETTINGS].admin_key is None and request.app[KEYRING].is_open


def read_access(request: web.Request) -> ReadAccess:
    if is_open(request) or is_admin(request):
        return ReadAccess(None)
    key = request.app[KEYRING].find(bearer_token(request))
    if key is None:
        raise Unauthorized("this API needs the admin key, or a ctxgate key with the read scope",
                           code="admin_key_required")
    if "read" not in key.scopes:
        raise Forbidden("this key has no read scope", code="read_scope_required")
    return ReadAccess(key.projects or None)


def require_admin(request: web.Request) -> None:
    if is_open(request) or is_admin(request):
        return
    raise Unauthorized("this needs the admin key as 'Authorization: Bearer <key>'", code="admin_key_required")
