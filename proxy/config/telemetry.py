"""The `telemetry` section: OpenTelemetry traces exported over OTLP/HTTP (protobuf).

Off unless an endpoint is given, in the file or by the standard variables, which override the
file: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (with
`/v1/traces` added); an endpoint from the environment takes its headers from there too
(`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`), never the file's, which
belong to the file's collector. `OTEL_SERVICE_NAME` names the service; `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none` turn export off; a protocol other than http/protobuf is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

TRACES_PATH = "/v1/traces"
_KEYS = {"otlp_endpoint", "headers", "service_name", "capture_content", "queue_size"}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
SECRET_MIN_CHARS = 8  # a header value shorter is a tenant name or the like, too short to scrub safely

Resolve = Callable[[Any, str], Any]


class TelemetryConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    traces_url: str | None = None  # the full OTLP/HTTP traces address; None: no export
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # often a vendor's key
    service_name: str = "ctxgate"
    capture_content: bool = False  # prompts, answers, tool arguments and the pack's query on spans
    queue_size: int = 4096  # spans waiting for export; past it, new spans are dropped and counted

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(value for value in self.headers.values() if len(value) >= SECRET_MIN_CHARS)


def parse_telemetry(raw: Any, where: str, resolve: Resolve, env: Mapping[str, str]) -> TelemetrySettings:
    if raw is not None and not isinstance(raw, Mapping):
        raise TelemetryConfigError(f"{where}: must be a mapping")
    raw = raw or {}
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise TelemetryConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    url = _traces_url(raw.get("otlp_endpoint"), f"{where}.otlp_endpoint")
    headers_raw = raw.get("headers") or {}
    if not isinstance(headers_raw, Mapping):
        raise TelemetryConfigError(f"{where}.headers: must be a mapping of header names to values")
    headers = {str(name): resolve(value, f"{where}.headers.{name}") for name, value in headers_raw.items()}
    headers_from = f"{where}.headers"
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            url = _checked_url(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
                               "environment: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        else:
            url = _traces_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "environment: OTEL_EXPORTER_OTLP_ENDPOINT")
        headers, headers_from = {}, "environment: OTEL_EXPORTER_OTLP_HEADERS"
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        if env.get(name):
            headers.update(_env_headers(env[name]))
            headers_from = f"environment: {name}"
    _check_headers(headers, headers_from)
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name)
        if protocol and url is not None:
            if protocol != "http/protobuf":
                raise TelemetryConfigError(f"environment: {name}={protocol}: ctxgate exports traces over OTLP/HTTP "
                                           "with protobuf only: set http/protobuf (and the collector's HTTP port, "
                                           "4318), or unset it")
            break
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        url = None
    service = env.get("OTEL_SERVICE_NAME") or raw.get("service_name", "ctxgate")
    capture = raw.get("capture_content", False)
    queue_size = raw.get("queue_size", 4096)
    if not isinstance(service, str) or not service:
        raise TelemetryConfigError(f"{where}.service_name: must be a non-empty string")
    if not isinstance(capture, bool):
        raise TelemetryConfigError(f"{where}.capture_content: must be true or false")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise TelemetryConfigError(f"{where}.queue_size: must be a positive whole number of spans")
    return TelemetrySettings(traces_url=url, headers=headers, service_name=service, capture_content=capture,
                             queue_size=queue_size)


def _traces_url(base: Any, where: str) -> str | None:
    """A collector's base address, with the traces path added as the OTLP exporters add it."""
    if base is None:
        return None
    return _checked_url(str(base).rstrip("/") + TRACES_PATH, where)


def _checked_url(url: Any, where: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise TelemetryConfigError(f"{where}: must be an http(s) address, such as http://otel-collector:4318")
    return str(url)


def _check_headers(headers: Mapping[str, Any], where: str) -> None:
    """Names as HTTP allows them, values of printable Latin-1: what an HTTP client can send."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise TelemetryConfigError(f"{where}: {name!r} is not a header name")
        if not isinstance(value, str) or not all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in value):
            raise TelemetryConfigError(f"{where}: the value of {name!r} must be printable text (no line breaks)")


def _env_headers(text: str) -> dict[str, str]:
    """`name=value,name2=value2`, values percent-encoded (the OTLP exporters' form)."""
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {unquote(name).strip(): unquote(value).strip() for name, value in pairs}
