"""The login form, and logging out."""

from __future__ import annotations

from aiohttp import web

from proxy.appkeys import KEYRING, OPERATOR_PAGE, SETTINGS
from proxy.edge.access import is_open, operator_of_key
from proxy.ui.login import COOKIE, clear_login, set_login
from proxy.ui.rendering import ensure_same_origin, render

HOME = "/ui/approvals"


async def login_form(request: web.Request) -> web.Response:
    if is_open(request):
        raise web.HTTPSeeOther(_next(request.query.get("next")))
    return render(request, None, "login.html", next=_next(request.query.get("next")), failed=False)


async def log_in(request: web.Request) -> web.Response:
    """The key is checked here, once; the browser keeps a signed login, never the key."""
    ensure_same_origin(request)
    form = await request.post()
    key, next_path = form.get("key"), _next(form.get("next"))
    operator = operator_of_key(request.app[SETTINGS], request.app[KEYRING], key.strip()) \
        if isinstance(key, str) else None
    if operator is None:
        return render(request, None, "login.html", status=401, next=next_path, failed=True)
    response = web.HTTPSeeOther(next_path)
    set_login(response, request, await request.app[OPERATOR_PAGE].logins.cookie_for(operator.principal))
    raise response


async def log_out(request: web.Request) -> web.Response:
    """The login ends for every copy of its cookie, on every replica."""
    ensure_same_origin(request)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        await request.app[OPERATOR_PAGE].logins.end(cookie)
    response = web.HTTPSeeOther("/ui/login")
    clear_login(response)
    raise response


async def home(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(HOME)


def _next(value: object) -> str:
    """Only a page of this gateway's own (`//host` would leave it)."""
    if isinstance(value, str) and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME
