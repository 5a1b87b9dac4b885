"""What an operator and a load balancer ask: is the gateway alive, can it take calls and record
them, and its Prometheus metrics.

`GET /livez`: 200 while the process answers (a liveness probe: restart it when this fails).
`GET /healthz` (also `/readyz`): a readiness probe.
- 200 `ok`: proxying, and every call is recorded in the store.
- 200 `degraded`: proxying, and every call is recorded durably, but not (yet) in the store:
  the store is unreachable or refuses writes and records wait in the spool. `reasons` says
  why; keep it in rotation, and mend the store.
- 503 `failing`: the store and the spool both refuse, so records are held in memory only
  (and lost at a crash), or the gateway is stopping. Take it out of rotation.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from proxy.edge.access import is_admin
from proxy.appkeys import CAPTURE_WRITER, KEYRING, METRICS, SETTINGS, STORE, TRACES, WEBHOOKS
from proxy.edge.errors import Unauthorized
from proxy.pipeline.identity import bearer_token
from proxy.edge.wire import json_response

STOPPING: web.AppKey[bool] = web.AppKey("stopping", bool)


async def livez(_: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def healthz(request: web.Request) -> web.Response:
    writer = request.app[CAPTURE_WRITER]
    is_store_up = await request.app[STORE].ping()
    reasons = []
    if request.app.get(STOPPING, False):
        reasons.append("the gateway is stopping")
    if not is_store_up:
        reasons.append("the store does not answer")
    if writer.store_error is not None:
        reasons.append(f"the store refuses writes: {writer.store_error}")
    if writer.spool_error is not None:
        reasons.append(f"the spool refuses writes: {writer.spool_error}")
    segments, spooled_bytes = writer.spool.backlog() if writer.spool is not None else (0, 0)
    if segments:
        reasons.append("records wait in the spool for the store")
    is_failing = request.app.get(STOPPING, False) or (
        writer.spool_error is not None and (writer.store_error is not None or not is_store_up)
    )
    body: dict[str, Any] = {
        "status": "failing" if is_failing else "degraded" if reasons else "ok",
        "reasons": reasons,
        "store": "ok" if is_store_up and writer.store_error is None else "unreachable" if not is_store_up
        else "refusing_writes",
        "capture_pending": writer.pending,
        "capture": {
            "pending": writer.pending,
            "spool_segments": segments,
            "spool_bytes": spooled_bytes,
            "dead_letters": writer.dead_letters_total,
            "dropped": writer.dropped_total,
        },
    }
    return json_response(body, status=503 if is_failing else 200)


async def metrics(request: web.Request) -> web.Response:
    require_metrics_access(request)
    outlets = [gauge for outlet in (request.app.get(WEBHOOKS), request.app.get(TRACES)) if outlet is not None
               for gauge in outlet.gauges()]
    text = request.app[METRICS].render(request.app[CAPTURE_WRITER], request.app[STORE], outlets)
    return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-cache"})


def require_metrics_access(request: web.Request) -> None:
    """Open when nothing else is guarded or `metrics.public` says so; else the admin key or
    `metrics.token`."""
    settings = request.app[SETTINGS]
    is_guarded = settings.admin_key is not None or not request.app[KEYRING].is_open or settings.metrics_token
    if not is_guarded or settings.is_metrics_public or is_admin(request):
        return
    given = bearer_token(request)
    if settings.metrics_token and given and hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
        return
    raise Unauthorized("/metrics needs the admin key or the metrics token as 'Authorization: Bearer <key>'",
                       code="metrics_key_required")
