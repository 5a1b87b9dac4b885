"""Pages as HTML: rendering a template, and the guard every page handler goes through (login,
same-origin posts, errors as a page)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from capture.records import InvalidRecord
from capture.store import RecordRejected, StoreUnavailable
from proxy.appkeys import OPERATOR_PAGE
from proxy.edge.access import Operator
from proxy.edge.errors import Forbidden, GatewayError, as_gateway_error
from proxy.ui.login import operator_for

PageHandler = Callable[[web.Request, Operator], Awaitable[web.StreamResponse]]


def render(request: web.Request, operator: Operator | None, template: str, *, status: int = 200,
           **values: Any) -> web.Response:
    text = request.app[OPERATOR_PAGE].html(template, operator=operator, path=request.path, **values)
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


# The page loads nothing from elsewhere and is never framed by another site.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page handler behind a login (else a redirect to the login page), its posts from this
    origin only, and its errors rendered as a page with their status."""
    async def handle(request: web.Request) -> web.StreamResponse:
        operator: Operator | None = None
        try:
            operator = await operator_for(request)
            if operator is None:
                raise web.HTTPSeeOther(f"/ui/login?{urlencode({'next': request.path_qs})}")
            if request.method == "POST":
                ensure_same_origin(request)
            return await handler(request, operator)
        except (GatewayError, StoreUnavailable, InvalidRecord, RecordRejected) as error:
            mapped = as_gateway_error(error)
            assert mapped is not None
            if wants_json(request):  # the page's script shows the message where the person clicked
                return mapped.response()
            return render(request, operator, "error.html", status=mapped.status, error=mapped)
    return handle


def ensure_same_origin(request: web.Request) -> None:
    """Refuse a post another site's page made: the browser says where it came from in
    Sec-Fetch-Site (trusted as it is, so a proxy rewriting Host changes nothing); an older one
    in Origin, which must then name this host ("null", an opaque origin, is another site)."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None:
        is_ours = site in ("same-origin", "none")
    else:
        is_ours = origin is None or (origin != "null" and urlsplit(origin).netloc == request.host)
    if not is_ours:
        raise Forbidden("this form can only be sent from the gateway's own page", code="cross_site_post")


def wants_json(request: web.Request) -> bool:
    """The page's script asked (it decides without a reload); a plain form post gets a redirect."""
    return request.headers.get("X-Requested-With") == "ctxgate-ui"
