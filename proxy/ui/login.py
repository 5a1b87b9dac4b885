"""Logging in to the page: with the admin key, or a virtual key with the read scope.

The key is checked once, at login; the browser then holds a cookie naming who logged in (the
admin key's digest prefix, or the virtual key's sha256, both already in the config), until
when, signed with a secret the store keeps for every replica. The key itself is never stored.
A login ends at its time, at logout, or when its key leaves the config (or the admin key
changes). A bearer key on the request also works, as for the API.
"""

from __future__ import annotations

from aiohttp import web

from proxy.appkeys import KEYRING, OPERATOR_PAGE, SETTINGS
from proxy.edge.access import OPEN_PRINCIPAL, Operator, is_open, operator_of_key, operator_of_principal
from proxy.pipeline.identity import bearer_token
from proxy.ui.logins import LOGIN_S

COOKIE = "ctxgate_operator"


async def operator_for(request: web.Request) -> Operator | None:
    """The operator of this request: everyone on an open gateway, else by a bearer key, else by
    the login cookie; None when there is none that stands."""
    settings, keyring = request.app[SETTINGS], request.app[KEYRING]
    if is_open(request):
        return operator_of_principal(settings, keyring, OPEN_PRINCIPAL)
    token = bearer_token(request)
    if token is not None:
        return operator_of_key(settings, keyring, token)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    principal = await request.app[OPERATOR_PAGE].logins.principal_of(cookie)
    return None if principal is None else operator_of_principal(settings, keyring, principal)


def set_login(response: web.StreamResponse, request: web.Request, cookie: str) -> None:
    # Lax, not Strict: a link from a notification (Slack, mail) must open the page logged in.
    # What could act on it, a post, is refused unless it comes from the page itself.
    response.set_cookie(COOKIE, cookie, max_age=LOGIN_S, path="/ui", httponly=True, samesite="Lax",
                        secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https")


def clear_login(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/ui")
