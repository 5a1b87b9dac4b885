"""JSON that orjson, and so every store and the wire, can always write.

orjson refuses what Python's own json lets in: text with lone surrogates (aiohttp hands a
header's undecodable bytes over as such, and a provider's JSON may escape one), integers past
64 bits, and nesting past 254 levels. Values from outside that reach a record or a response
are made writable here rather than left to fail there.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson

_SAFE_DEPTH = 64  # deeper parts are kept as JSON text
T = TypeVar("T")


def writable(value: T) -> T:
    """`value` itself when orjson can write it (the usual case, one fast check), else
    `safe_json(value)`, which keeps the shape of a dict or list."""
    try:
        orjson.dumps(value)
    except TypeError:
        made: T = safe_json(value)
        return made
    return value


def safe_json(value: Any, depth: int = 0) -> Any:
    """`value` in a form orjson can always write: text that is not UTF-8 with its bytes
    escaped, integers past 64 bits as text, parts nested past `_SAFE_DEPTH` as JSON text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return escape_undecodable(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= _SAFE_DEPTH and isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, default=repr)
        except (RecursionError, ValueError):
            return "<nested too deeply to keep>"
    if isinstance(value, dict):
        return {safe_json(str(key), depth + 1): safe_json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_json(item, depth + 1) for item in value]
    return repr(value)


def escape_undecodable(text: str) -> str:
    """Text with the bytes that were not UTF-8 (aiohttp keeps them as lone surrogates) written
    as `\\xNN` escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that stand for no byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")
