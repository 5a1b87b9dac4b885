"""Who may read and decide through the management APIs and the operator page.

The admin key sees and decides everything; a virtual key with the `read` scope sees its own
projects, and with the `approve` scope also decides their approvals. With neither an admin key
nor virtual keys configured, the gateway runs open, as it says at start-up: anyone reads, and
nobody decides over HTTP (the very client whose calls are held could approve them itself).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from proxy.appkeys import KEYRING, SETTINGS
from proxy.config.keys import KeyRing, VirtualKey
from proxy.config.settings import Settings
from proxy.edge.errors import Forbidden, NotFound, Unauthorized
from proxy.pipeline.identity import bearer_token


@dataclass(frozen=True, slots=True)
class ReadAccess:
    """`projects` None: every project."""

    projects: frozenset[str] | None

    def allows(self, project: str | None) -> bool:
        return self.projects is None or project in self.projects

    def narrowed(self, wanted: str | None) -> frozenset[str] | None:
        """The projects a query may read when it asks for `wanted` (None: all it sees): that
        one if it may see it, else none."""
        if wanted is None:
            return self.projects
        return frozenset({wanted}) if self.allows(wanted) else frozenset()

    def check(self, project: str | None, what: str) -> None:
        """A record of another project is as good as missing: 404, not a hint that it exists."""
        if not self.allows(project):
            raise NotFound(f"no {what}", code=f"{what.split()[0]}_not_found")


@dataclass(frozen=True, slots=True)
class Operator:
    """A person at the management API or the page: what they see, and what they may decide
    (None: nothing). `principal` names them for a login: `admin:<digest prefix>`, a key's
    sha256, or `open`."""

    name: str
    principal: str
    sees: ReadAccess
    decides: ReadAccess | None
    is_admin: bool = False

    @property
    def decider_name(self) -> str:
        """As `decided_by` names them: a key by its client, never to be taken for the admin."""
        return "admin" if self.is_admin else f"key:{self.name}"

    def may_decide(self, project: str | None) -> bool:
        return self.decides is not None and self.decides.allows(project)


OPEN_PRINCIPAL = "open"


def admin_principal(admin_key: str) -> str:
    """Changes with the admin key, so a new key ends the logins made with the old one."""
    return "admin:" + hashlib.sha256(admin_key.encode()).hexdigest()[:16]


def operator_of_principal(settings: Settings, keyring: KeyRing, principal: str) -> Operator | None:
    """The operator a login names, if it still stands (the key is still configured, with a
    scope that reads)."""
    if principal == OPEN_PRINCIPAL:
        return _open_operator() if settings.admin_key is None and keyring.is_open else None
    if settings.admin_key is not None and hmac.compare_digest(principal, admin_principal(settings.admin_key)):
        return Operator("admin", principal, ReadAccess(None), ReadAccess(None), is_admin=True)
    key = keyring.by_digest(principal)
    return None if key is None else _key_operator(key)


def operator_of_key(settings: Settings, keyring: KeyRing, presented: str | None) -> Operator | None:
    """The operator a presented key (the admin key, or a virtual key that reads) makes; None
    for anything else."""
    if presented and settings.admin_key is not None and hmac.compare_digest(presented.encode(),
                                                                            settings.admin_key.encode()):
        return operator_of_principal(settings, keyring, admin_principal(settings.admin_key))
    key = keyring.find(presented)
    return None if key is None else _key_operator(key)


def _key_operator(key: VirtualKey) -> Operator | None:
    if "read" not in key.scopes:
        return None
    projects = ReadAccess(key.projects or None)
    return Operator(key.client, key.sha256, projects, projects if "approve" in key.scopes else None)


def _open_operator() -> Operator:
    return Operator("anyone", OPEN_PRINCIPAL, ReadAccess(None), None)


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


def decider(request: web.Request) -> Operator:
    """Who decides approvals over the API, and which projects': all for the admin key, its own
    for a key with the approve scope (named as its client in `decided_by`)."""
    if is_admin(request):
        return Operator("admin", "admin", ReadAccess(None), ReadAccess(None), is_admin=True)
    if is_open(request):
        raise Forbidden(DECIDING_NEEDS_A_KEY, code="admin_key_not_set")
    key = request.app[KEYRING].find(bearer_token(request))
    if key is None:
        raise Unauthorized("deciding needs the admin key, or a ctxgate key with the approve scope, as "
                           "'Authorization: Bearer <key>'", code="admin_key_required")
    if "approve" not in key.scopes:
        raise Forbidden("this key has no approve scope", code="approve_scope_required")
    projects = ReadAccess(key.projects or None)
    return Operator(key.client, key.sha256, projects, projects)


DECIDING_NEEDS_A_KEY = ("deciding approvals over HTTP needs CTXGATE_ADMIN_KEY to be set (or virtual keys with the "
                        "approve scope); or use `ctxgate approvals approve|deny ID` where the store is")


def require_admin(request: web.Request) -> None:
    if is_open(request) or is_admin(request):
        return
    raise Unauthorized("this needs the admin key as 'Authorization: Bearer <key>'", code="admin_key_required")
