"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from capture.store import Store
    from capture.writer import CaptureWriter
    from proxy.pipeline.approvals import ApprovalBook
    from proxy.pipeline.exchange import Exchange
    from proxy.config.keys import KeyRing
    from proxy.edge.metrics import Metrics
    from proxy.config.settings import Settings
    from proxy.upstream.seam import Upstream
    from proxy.ui.site import OperatorPage
    from proxy.notify.webhooks import WebhookSender
    from proxy.edge.traces import TraceExporter

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[Store] = web.AppKey("store")
CAPTURE_WRITER: web.AppKey[CaptureWriter] = web.AppKey("capture_writer")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
APPROVALS: web.AppKey[ApprovalBook] = web.AppKey("approvals")
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring")
OPERATOR_PAGE: web.AppKey[OperatorPage] = web.AppKey("operator_page")
WEBHOOKS: web.AppKey[WebhookSender] = web.AppKey("webhooks")  # only with webhooks configured
TRACES: web.AppKey[TraceExporter] = web.AppKey("traces")  # only with an OTLP endpoint configured

# Request-scoped: the exchange a chat request builds, read by the canonical log line.
EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("exchange")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
