"""What every page shares: the templates (escaped, and scrubbed of secrets), the logins, the
dialects that read records, and the filters the templates use."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe
import orjson

from capture.records import TIMESTAMP_FORMAT
from proxy.edge.redaction import Redactor
from proxy.pipeline.dialect import Dialect
from proxy.ui.logins import Logins


class OperatorPage:
    """What every page shares: the templates, the logins, and the dialects that read records."""

    def __init__(self, logins: Logins, dialects: Mapping[str, Dialect], secrets: tuple[str, ...]) -> None:
        self.logins = logins
        self.dialects = dialects
        redactor = Redactor(secrets)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("proxy.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            # Every value a template prints passes here first: no secret the gateway knows, and
            # nothing shaped like a key, reaches the page, whatever a prompt or a tool carried.
            finalize=lambda value: _scrubbed(redactor, value),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(pretty=pretty_json, seconds_left=seconds_left, iso=iso_utc, score=score,
                                      path_part=path_part)
        self.templates.globals.update(query_with=query_with)

    def html(self, template: str, **values: Any) -> str:
        return self.templates.get_template(template).render(**values)


def _scrubbed(redactor: Redactor, value: Any) -> Any:
    """Text without secrets; text a filter already escaped (Markup) stays marked so, since the
    scrub only puts `[redacted]` in, which needs no escaping. A structure is printed as its
    JSON, scrubbed too."""
    if isinstance(value, markupsafe.Markup):
        return markupsafe.Markup(redactor.scrub(str(value)))
    if isinstance(value, str):
        return redactor.scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redactor.scrub(pretty_json(value))


def path_part(value: Any) -> str:
    """A value as one segment of a path: `/` escaped too (a session id may hold one)."""
    return quote(str(value), safe="")


def pretty_json(value: Any) -> str:
    """A JSON value, or text holding one (tool arguments), indented for reading; other text as is."""
    if isinstance(value, str):
        text = value
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return repr(value)


def score(value: float | None) -> str:
    """A relevance score in four significant digits: BM25 scores span many orders of magnitude."""
    return "—" if value is None else f"{value:.4g}"


def _moment(timestamp: str) -> datetime | None:
    try:
        return datetime.strptime(timestamp, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def seconds_left(timestamp: str) -> int:
    moment = _moment(timestamp)
    return 0 if moment is None else max(0, int((moment - datetime.now(UTC)).total_seconds()))


def iso_utc(timestamp: str) -> str:
    """A stored time as ISO 8601 with its zone, for the script's countdown and <time>."""
    moment = _moment(timestamp)
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def query_with(query: Mapping[str, str], **changes: str | None) -> str:
    """The query string with `changes` applied (None or '' removes a parameter)."""
    merged = {**query, **changes}
    return urlencode({key: value for key, value in merged.items() if value})
