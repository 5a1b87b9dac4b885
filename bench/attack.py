"""An attack run: a real `ctxgate serve` against thousands of bad inputs, upstream, client and
store faults, SIGTERM and SIGKILL and a soak; then what an operator checks afterwards.

    python -m bench.attack [--quick] [--out FILE] [--soak-s N]

Every input goes to 127.0.0.1: the fake provider runs in this process, and the gateway's
environment points every HTTP proxy at a closed loopback port, so nothing leaves the host. The
store faults mount a tmpfs (root only); where mounting is refused the scenario is skipped and
says so. Everything started here is stopped here, and every mount is undone.

Figures: inputs tried by route family; answers with status >= 500 that are the gateway's own
(502/504 standing for a scripted provider fault, 503 `store_unavailable` during a store fault and
a 503 /healthz while failing are not); stack traces in the gateway's log; secrets seen in any
answer, log line or store file; and per scenario the chat calls answered (an
`X-Ctxgate-Interaction-Id` came back), stored (the `interactions` table, read after the gateway
stopped), lost and duplicated, with /healthz after it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from proxy.demo.fake_upstream import Reply, ToolCall, stream_chunks
from proxy.config.keys import digest, new_key

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-attack"
PROVIDER_KEY = "sk-attack-provider-" + os.urandom(10).hex()
ADMIN_KEY = "adm-attack-" + os.urandom(12).hex()
CLIENT_KEY = "sk-attack-client-" + os.urandom(10).hex()
VIRTUAL_KEY = new_key()  # proxy + read, project atmos
LIMITED_KEY = new_key()  # rpm 3, no read scope
OTHER_KEY = new_key()  # two projects, models other-*
SECRETS = {"provider_key": PROVIDER_KEY, "admin_key": ADMIN_KEY, "client_key": CLIENT_KEY,
           "virtual_key": VIRTUAL_KEY, "limited_key": LIMITED_KEY, "other_key": OTHER_KEY}

# Statuses that are not HTTP answers.
CLOSED, TIMED_OUT, LEFT, REFUSED = 0, -1, -2, -3
UPSTREAM_FAULTS = {"E500", "E503", "CLOSE", "RESET", "BADJSON", "EMPTY", "HTML", "TIMEOUT", "USAGESTR", "BADSSE",
                   "NODONE"}  # the markers a 502 or 504 correctly stands for
MARK = re.compile(rb"ATK_([A-Z0-9]+)")
POLICY = {
    "default": {
        "mode": "allow",
        "allowed_tools": ["ls", "file_read"],
        "restricted_tools": ["file_edit"],
        "blocked_tools": ["shell_exec", "danger_*"],
        "argument_rules": [{"tool": "file_read", "argument": "path", "matches": "/etc/*", "action": "deny"},
                           {"tool": "file_write", "argument": "path", "matches": "/srv/*", "action": "ask"}],
        "approval_timeout_s": 2,
    },
    "projects": {"sandbox": {"mode": "deny"}},
}
TOOL_NAMES = ("ls", "file_read", "file_edit", "file_write", "shell_exec", "danger_zone")


def deep_list(n: int) -> str:
    return "[" * n + "]" * n


def deep_obj(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


# Raw JSON fragments put in place of one field at a time.
VALUES: list[tuple[str, str]] = [
    ("null", "null"), ("true", "true"), ("false", "false"), ("zero", "0"), ("minus_one", "-1"),
    ("int_2^63", str(2**63)), ("int_2^64", str(2**64)), ("int_-2^63-1", str(-(2**63) - 1)),
    ("float_1e308", "1e308"), ("float_-1e308", "-1e308"), ("float_1e309", "1e309"), ("float_5e-324", "5e-324"),
    ("float_-0.0", "-0.0"), ("str_empty", '""'), ("str_nul", '"a\\u0000b"'),
    ("str_controls", '"\\u0001\\u001b[31m\\u007f\\r\\n"'), ("str_lone_high_surrogate", '"\\ud800"'),
    ("str_lone_low_surrogate", '"x\\udfffy"'), ("str_bidi", '"\\u202egpj.exe"'), ("str_100k", json.dumps("A" * 100_000)),
    ("str_number", '"12"'), ("str_path", '"../../etc/passwd"'), ("list_empty", "[]"), ("list_null", "[null]"),
    ("list_mixed", '[1, "a", {}, []]'), ("obj_empty", "{}"), ("obj_nested", '{"a": {"b": [1, {"c": null}]}}'),
    ("deep_list_100", deep_list(100)), ("deep_list_129", deep_list(129)), ("deep_list_300", deep_list(300)),
    ("deep_list_1100", deep_list(1100)), ("deep_obj_200", deep_obj(200)), ("bare_NaN", "NaN"),
    ("bare_Infinity", "Infinity"),
]
DATES = ["0001-01-01", "0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00-05:00", "9999-12-31T23:59:59-05:00",
         "9999-12-31T23:59:59+14:00", "9999-12-31 23:59:59", "0999-05-01", "2024-02-30", "2024-13-01T00:00:00Z",
         "2024-01-01T24:00:00", "2024-01-01T00:00:00+99:00", "1700000000", "now", "2024-01-01T00:00:00.123456789Z",
         "+002024-01-01", "2024-W01-1"]
QUERY_VALUES = ["", "%00", "%FF", "%ED%A0%80", "%C0%AF", "x" * 10_000, "-1", "0", "9223372036854775808",
                "18446744073709551616", "1e308", "NaN", "inf", "1.5", "0x10", "%205", "%D9%A3", "'%20OR%201=1--",
                "%22%20OR%20*", "NEAR(a%20b)", "%2A", "a%0Ab", "%E2%80%AE"] + [quote(d, safe="") for d in DATES]
IDS = ["01900000-0000-7000-8000-000000000000", "0", "-1", "%00", "%FF", "%ED%A0%80", "%2e%2e", "%2F", "x" * 10_000,
       "'%20OR%201=1", "*", "%25", "s_" + "0" * 24, "%20", "a%0Ab", "%D9%A1", "..%2F..%2Fetc%2Fpasswd",
       "9223372036854775808"]
HEADER_VALUES: list[tuple[str, bytes]] = [
    ("non_utf8", b"s\xff\xfe"), ("overlong_utf8", b"a\xc0\xafb"), ("surrogate_utf8", b"\xed\xa0\x80"),
    ("latin1", b"caf\xe9"), ("controls", b"\x01\x1b[31m\x7f"), ("tab", b"a\tb"), ("empty", b""),
    ("long_8000", b"x" * 8000), ("long_9000", b"x" * 9000), ("path", b"../../etc/passwd"),
    ("bidi", b"\xe2\x80\xaeexe"), ("pct_nul", b"%00"), ("comma", b"a, b"), ("json", b'{"event":"forged"}'),
]
HEADER_NAMES = [b"X-Ctxgate-Session", b"X-Ctxgate-Client", b"X-Ctxgate-Project", b"X-Ctxgate-Context", b"session-id",
                b"X-Claude-Code-Session-Id", b"User-Agent", b"Authorization", b"Helicone-Session-Id", b"X-Request-Id"]
TOOL_REPLIES: list[list[tuple[str, str]]] = [
    [("ls", "{}")], [("file_read", '{"path": "/tmp/x"}')], [("file_read", '{"path": "/etc/passwd"}')],
    [("file_read", '{"path": "/tmp/x", "path": "/etc/passwd"}')], [("file_read", "not json")], [("file_read", "[]")],
    [("file_read", '{"Path": "//etc/./x/../passwd"}')], [("file_read", '{"path": "/tmp/a\\u0000/etc/passwd"}')],
    [("file_read", '{"path": "\\ud800/etc/passwd"}')], [("file_read", '{"path": ' + deep_list(1100) + "}")],
    [("file_read", '{"path": 18446744073709551616}')], [("shell_exec", '{"cmd": "rm -rf /"}')],
    [("danger_zone", "{}")], [("file_edit", '{"path": "/srv/a"}')], [("file_write", '{"path": "/srv/b"}')],
    [("undeclared_tool", "{}")], [("", "{}")], [("Shell_exec", "{}")], [("ls", "")],
    [("ls", "{}"), ("file_read", '{"path": "/etc/shadow"}'), ("file_edit", '{"path": "/srv/c"}')],
    [("ls", "{}")] * 60,
]


@dataclass(slots=True)
class Attempt:
    family: str  # the route family the figures are grouped by
    route: str  # method and route template, for the 5xx table
    label: str  # what was tried
    method: str = "GET"
    path: str = "/"  # already percent-encoded
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    raw: bytes | None = None  # the whole request as bytes, sent over a raw socket
    is_upstream_fault: bool = False
    leave: str | None = None  # mid_body, mid_stream, while_waiting
    timeout_s: float = 20.0


@dataclass(slots=True)
class Outcome:
    attempt: Attempt
    scenario: str
    status: int
    excerpt: str
    interaction_id: str | None
    secrets: list[str]
    stream_error: str | None = None  # an `error` event inside a 200 stream
    record_id: str | None = None  # POST /interactions 201
    latency_ms: float = 0.0


# --- the fake provider -------------------------------------------------------------------------


class AttackUpstream:
    """The provider: answers by a marker (`ATK_<KIND>`) anywhere in the request body."""

    def __init__(self) -> None:
        self.calls = 0
        self.kinds: Counter[str] = Counter()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.calls += 1
        found = MARK.search(raw)
        kind = found.group(1).decode() if found else "OK"
        self.kinds[kind] += 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        try:
            return await self._answer(request, kind, body, body.get("stream") is True)
        except (ConnectionResetError, ConnectionError):
            return web.Response()  # the gateway hung up: nobody left to answer

    async def _answer(self, request: web.Request, kind: str, body: dict[str, Any], stream: bool) -> web.StreamResponse:
        statuses = {"E500": 500, "E503": 503, "E429": 429, "E400": 400, "E403": 403, "E404": 404}
        if kind in statuses:
            headers = {"Retry-After": "1"} if kind == "E429" else None
            return web.json_response({"error": {"message": f"scripted {kind}", "type": "fake", "param": None,
                                                "code": None}}, status=statuses[kind], headers=headers)
        if kind == "E401":  # as some providers do: the key it was sent, in the message
            sent = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {sent[7:]}. You sent '{sent}'.",
                                                "type": "invalid_request_error", "param": "api_key",
                                                "code": "invalid_api_key"}}, status=401)
        if kind == "CLOSE":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if kind == "TIMEOUT":
            await asyncio.sleep(6)  # the gateway's upstream.timeout_s is 3
        if kind == "SLOW":
            await asyncio.sleep(1.5)
        if kind == "BADJSON":
            return web.Response(body=b'{"id": "x", "choices": [', content_type="application/json")
        if kind == "EMPTY":
            return web.Response(body=b"", content_type="application/json")
        if kind == "HTML":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        reply = Reply(text="Fine: the answer is 42, as always, for every question.", fragment=6,
                      usage=kind != "NOUSAGE")
        if kind.startswith("TOOL"):
            calls = TOOL_REPLIES[int(kind[4:])]
            reply = Reply(tool_calls=tuple(ToolCall(n, a, id=f"call_{i}") for i, (n, a) in enumerate(calls)), fragment=7)
        elif kind == "HUGE":
            reply = Reply(text="lorem ipsum " * 150_000, fragment=8192)
        elif kind == "WEIRD":
            reply = Reply(text="nul\x00 esc\x1b[31m bidi\u202e emoji\U0001F600 sep\u2028 @@SURROGATE@@", fragment=4096)
        elif kind == "RESET":
            reply.reset_after_chunks = 3
        elif kind == "SLOWSTREAM":
            reply.chunk_interval_s = 0.1
        usage = {"USAGEBIG": {"prompt_tokens": 2**63, "completion_tokens": 3, "total_tokens": 2**63 + 3},
                 "USAGEU64": {"prompt_tokens": 2**64 - 1, "completion_tokens": 2**64 - 1, "total_tokens": 2**65},
                 "USAGENEG": {"prompt_tokens": -4, "completion_tokens": -1, "total_tokens": -5},
                 "USAGEFLOAT": {"prompt_tokens": 1e308, "completion_tokens": 1.5, "total_tokens": 1e308},
                 "USAGESTR": {"prompt_tokens": "many", "completion_tokens": None, "total_tokens": "x"}}.get(kind)
        chunks = stream_chunks({**body, "stream_options": {"include_usage": True}}, reply)
        if usage is not None:
            chunks[-1]["usage"] = usage
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
            completion = {"id": "chatcmpl-atk", "object": "chat.completion", "created": int(time.time()),
                          "model": "fake-model", "choices": [{"index": 0, "message": message,
                                                              "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
                          "usage": usage or {"prompt_tokens": 9, "completion_tokens": 11, "total_tokens": 20}}
            if kind == "NOUSAGE":
                del completion["usage"]
            return web.Response(body=_json(completion), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if kind == "BADSSE":
            for frame in (b"data: {not json\n\n", b"event: weird\ndata: \xff\xfe\n\n", b"data: 12\n\n", b"data: [DONE]\n\n"):
                await response.write(frame)
            return response
        for n, chunk in enumerate(chunks):
            if n == reply.reset_after_chunks:
                assert request.transport is not None
                request.transport.abort()  # a provider that crashed mid-stream
                return response
            await response.write(b"data: " + _json(chunk) + b"\n\n")
            if reply.chunk_interval_s:
                await asyncio.sleep(reply.chunk_interval_s)
        if kind == "NODONE":
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(b"data: [DONE]\n\n")
        return response


def _json(value: Any) -> bytes:
    """JSON with numbers past 64 bits and a lone surrogate escape where `@@SURROGATE@@` is."""
    return json.dumps(value).replace("@@SURROGATE@@", "\\\\ud800\\ud800").encode()


# --- the inputs --------------------------------------------------------------------------------


PLACEHOLDER = "@@VALUE@@"


def with_value(base: dict[str, Any], path: tuple[Any, ...], fragment: str) -> bytes:
    doc = copy.deepcopy(base)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = PLACEHOLDER
    return json.dumps(doc).replace(f'"{PLACEHOLDER}"', fragment, 1).encode()


def chat_doc(stream: bool, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": text}], "stream": stream, **extra}


def tools_for(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in names]


def json_headers(key: str | None = ADMIN_KEY) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def chat_attempt(family: str, label: str, body: bytes, *, stream: bool, prefix: str = "", fault: bool = False,
                 headers: dict[str, str] | None = None, leave: str | None = None, timeout_s: float = 20.0) -> Attempt:
    route = ("POST /p/{project}" if prefix else "POST ") + "/v1/chat/completions" + (" stream" if stream else "")
    return Attempt(family, route.replace("POST  ", "POST "), label, "POST", prefix + "/v1/chat/completions",
                   headers if headers is not None else json_headers(CLIENT_KEY), body, is_upstream_fault=fault,
                   leave=leave, timeout_s=timeout_s)


def raw_request(method: bytes, path: bytes, headers: Iterable[bytes], body: bytes = b"", *,
                length: bytes | None = None, version: bytes = b"HTTP/1.1") -> bytes:
    head = method + b" " + path + b" " + version + b"\r\nHost: 127.0.0.1\r\n" + b"".join(h + b"\r\n" for h in headers)
    if length is None:
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    elif length:
        head += b"Content-Length: " + length + b"\r\n"
    return head + b"Connection: close\r\n\r\n" + body


def thin(items: list[Any], keep_every: int) -> list[Any]:
    return items[::keep_every] if keep_every > 1 else items


def chat_field_inputs(every: int) -> list[Attempt]:
    fields: list[tuple[Any, ...]] = [
        ("model",), ("messages",), ("messages", 0), ("messages", 1, "role"), ("messages", 1, "content"),
        ("messages", 1, "name"), ("tools",), ("tool_choice",), ("stream",), ("stream_options",), ("temperature",),
        ("top_p",), ("n",), ("max_tokens",), ("max_completion_tokens",), ("stop",), ("seed",), ("logit_bias",),
        ("user",), ("metadata",), ("response_format",), ("parallel_tool_calls",), ("functions",), ("function_call",),
        ("x_unknown_field",),
    ]
    out = []
    for stream in (False, True):
        for path in fields:
            for label, fragment in thin(VALUES, every):
                name = ".".join(str(p) for p in path)
                out.append(chat_attempt("chat_stream" if stream else "chat", f"{name}={label}",
                                        with_value(chat_doc(stream, f"field {name}"), path, fragment), stream=stream))
    return out


def malformed_bodies() -> list[tuple[str, bytes]]:
    valid = orjson.dumps(chat_doc(False))
    return [
        ("empty", b""), ("space", b" "), ("null", b"null"), ("list", b"[]"), ("string", b'"x"'), ("number", b"1"),
        ("truncated", valid[:20]), ("trailing_garbage", valid + b"garbage"), ("two_documents", valid + valid),
        ("bom", b"\xef\xbb\xbf" + valid), ("utf16", valid.decode().encode("utf-16")),
        ("non_utf8_in_string", valid.replace(b"hello", b"hel\xff\xfelo")), ("overlong_utf8", valid.replace(b"hello", b"\xc0\xaf")),
        ("surrogate_utf8", valid.replace(b"hello", b"\xed\xa0\x80")), ("nul_raw", valid.replace(b"hello", b"hel\x00lo")),
        ("ctrl_raw", valid.replace(b"hello", b"hel\x01lo")), ("single_quotes", b"{'model': 'x'}"),
        ("nan_token", valid[:-1] + b', "temperature": NaN}'), ("comment", b"{/* c */}"),
        ("duplicate_keys", valid[:-1] + b', "model": "other-model"}'), ("deep_array_5000", deep_list(5000).encode()),
        ("deep_object_1100", deep_obj(1100).encode()), ("over_max_body_2MB", b'{"x": "' + b"a" * 2_000_000 + b'"}'),
        ("many_keys_50k", orjson.dumps({f"k{i}": i for i in range(50_000)})),
        ("long_number_5000_digits", b'{"n": 1' + b"0" * 5000 + b"}"), ("float_overflow", b'{"n": 1e99999}'),
    ]


def malformed_inputs(every: int) -> list[Attempt]:
    targets = [("chat", "POST /v1/chat/completions", "/v1/chat/completions", CLIENT_KEY),
               ("interactions_post", "POST /interactions", "/interactions", ADMIN_KEY),
               ("memories_post", "POST /memories", "/memories", ADMIN_KEY),
               ("ingest", "POST /ingest", "/ingest", ADMIN_KEY),
               ("approvals_decide", "POST /approvals/{id}/approve", "/approvals/01900000-0000-7000-8000-000000000000/approve",
                ADMIN_KEY),
               ("chat_project_prefix", "POST /p/{project}/v1/chat/completions", "/p/atmos/v1/chat/completions", CLIENT_KEY)]
    out = []
    for family, route, path, key in targets:
        for label, body in thin(malformed_bodies(), every):
            out.append(Attempt(family, route, f"body:{label}", "POST", path, json_headers(key), body))
        valid = orjson.dumps(chat_doc(False) if "chat" in family else {"prompt": "p", "project": "p", "content": "c",
                                                                         "documents": []})
        types = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
                 "application/json; charset=latin-1", "application/json; charset=utf-16", "application/json\x7f"]
        for content_type in types:
            headers = {**json_headers(key), "Content-Type": content_type}
            out.append(Attempt(family, route, f"content_type:{content_type!r}", "POST", path, headers, valid))
        encodings = [("gzip_not_gzip", "gzip", valid), ("gzip_valid", "gzip", gzip.compress(valid)),
                     ("deflate_garbage", "deflate", b"\x00\x01garbage"), ("deflate_valid", "deflate", zlib.compress(valid)),
                     ("br_garbage", "br", b"garbage"), ("zstd", "zstd", b"garbage"), ("unknown", "x-unknown", valid),
                     ("gzip_twice_label", "gzip, gzip", gzip.compress(valid)), ("identity", "identity", valid)]
        for label, encoding, body in encodings:
            out.append(Attempt(family, route, f"content_encoding:{label}", "POST", path,
                               {**json_headers(key), "Content-Encoding": encoding}, body))
    return out


def gzip_bomb_inputs() -> list[Attempt]:
    """200 MB of zeros, about 200 KB on the wire: the body limit must count what it inflates to."""
    bomb = gzip.compress(b"0" * 200_000_000, compresslevel=6)
    return [Attempt(family, route, "content_encoding:gzip_bomb_200MB", "POST", path,
                    {**json_headers(key), "Content-Encoding": "gzip"}, bomb, timeout_s=60)
            for family, route, path, key in [("chat", "POST /v1/chat/completions", "/v1/chat/completions", CLIENT_KEY),
                                             ("interactions_post", "POST /interactions", "/interactions", ADMIN_KEY)]]


def raw_header_inputs(every: int) -> list[Attempt]:
    chat = orjson.dumps(chat_doc(False, "raw header"))
    targets = [("POST /v1/chat/completions", b"POST", b"/v1/chat/completions", chat, CLIENT_KEY),
               ("GET /interactions", b"GET", b"/interactions?limit=1", b"", ADMIN_KEY),
               ("POST /p/{project}/v1/chat/completions", b"POST", b"/p/atmos/v1/chat/completions", chat, CLIENT_KEY)]
    out = []
    for route, method, path, body, key in targets:
        for name in HEADER_NAMES:
            for label, value in thin(HEADER_VALUES, every):
                headers = [b"Content-Type: application/json", name + b": " + value]
                if name.lower() != b"authorization":
                    headers.append(b"Authorization: Bearer " + key.encode())
                out.append(Attempt("headers_raw", route, f"{name.decode()}:{label}",
                                   raw=raw_request(method, path, headers, body)))
    return out


def framing_inputs() -> list[Attempt]:
    chat = orjson.dumps(chat_doc(False, "framing"))
    auth = b"Authorization: Bearer " + ADMIN_KEY.encode()
    ct = b"Content-Type: application/json"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chat), chat)
    cases: list[tuple[str, bytes]] = [
        ("content_length_too_big", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, length=b"100000")),
        ("content_length_negative", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, length=b"-1")),
        ("content_length_text", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, length=b"abc")),
        ("content_length_plus", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, length=b"+%d" % len(chat))),
        ("content_length_huge", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, length=b"9" * 25)),
        ("content_length_twice_differing", raw_request(b"POST", b"/v1/chat/completions",
                                                       [ct, b"Content-Length: 5"], chat)),
        ("content_length_and_chunked", raw_request(b"POST", b"/v1/chat/completions",
                                                   [ct, b"Transfer-Encoding: chunked"], chunked)),
        ("chunked_valid", raw_request(b"POST", b"/v1/chat/completions", [ct, b"Transfer-Encoding: chunked"], chunked,
                                      length=b"")),
        ("chunked_bad_size", raw_request(b"POST", b"/v1/chat/completions", [ct, b"Transfer-Encoding: chunked"],
                                         b"zz\r\nabc\r\n0\r\n\r\n", length=b"")),
        ("chunked_size_huge", raw_request(b"POST", b"/v1/chat/completions", [ct, b"Transfer-Encoding: chunked"],
                                          b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n", length=b"")),
        ("transfer_encoding_gzip_chunked", raw_request(b"POST", b"/v1/chat/completions",
                                                       [ct, b"Transfer-Encoding: gzip, chunked"], chunked, length=b"")),
        ("transfer_encoding_unknown", raw_request(b"POST", b"/v1/chat/completions", [ct, b"Transfer-Encoding: xyz"],
                                                  chat, length=b"")),
        ("http_1_0", raw_request(b"POST", b"/v1/chat/completions", [ct], chat, version=b"HTTP/1.0")),
        ("http_9_9", raw_request(b"GET", b"/healthz", [], version=b"HTTP/9.9")),
        ("http_version_garbage", raw_request(b"GET", b"/healthz", [], version=b"HTTX/1.1")),
        ("method_garbage", raw_request(b"G\x01T", b"/healthz", [])),
        ("method_lowercase", raw_request(b"get", b"/healthz", [])),
        ("method_long", raw_request(b"X" * 10_000, b"/healthz", [])),
        ("absolute_uri", raw_request(b"GET", b"http://evil.example/healthz", [])),
        ("path_nul_pct", raw_request(b"GET", b"/interactions/%00", [auth])),
        ("path_raw_non_utf8", raw_request(b"GET", b"/interactions/\xff\xfe", [auth])),
        ("path_raw_nul", raw_request(b"GET", b"/interactions/a\x00b", [auth])),
        ("path_raw_space", raw_request(b"GET", b"/interactions/a b", [auth])),
        ("path_long_10k", raw_request(b"GET", b"/interactions/" + b"x" * 10_000, [auth])),
        ("path_long_100k", raw_request(b"GET", b"/interactions/" + b"x" * 100_000, [auth])),
        ("query_long_100k", raw_request(b"GET", b"/interactions?project=" + b"x" * 100_000, [auth])),
        ("path_dot_segments", raw_request(b"GET", b"/v1/../interactions", [auth])),
        ("path_no_slash", raw_request(b"GET", b"healthz", [])),
        ("path_star", raw_request(b"OPTIONS", b"*", [])),
        ("header_no_colon", raw_request(b"GET", b"/healthz", [b"NoColonHere"])),
        ("header_space_before_colon", raw_request(b"GET", b"/healthz", [b"X-Ctxgate-Project : a"])),
        ("header_obs_fold", raw_request(b"GET", b"/healthz", [b"X-Ctxgate-Project: a", b" folded"])),
        ("header_line_16k", raw_request(b"GET", b"/healthz", [b"X-Pad: " + b"x" * 16_000])),
        ("header_line_100k", raw_request(b"GET", b"/healthz", [b"X-Pad: " + b"x" * 100_000])),
        ("header_name_100k", raw_request(b"GET", b"/healthz", [b"X" * 100_000 + b": a"])),
        ("headers_200", raw_request(b"GET", b"/healthz", [b"X-H%d: v" % i for i in range(200)])),
        ("headers_2000", raw_request(b"GET", b"/healthz", [b"X-H%d: v" % i for i in range(2000)])),
        ("headers_total_1MB", raw_request(b"GET", b"/healthz", [b"X-H%d: %s" % (i, b"v" * 7000) for i in range(150)])),
        ("header_nul_value", raw_request(b"GET", b"/interactions", [auth, b"X-Ctxgate-Project: a\x00b"])),
        ("header_cr_value", raw_request(b"GET", b"/interactions", [auth, b"X-Ctxgate-Project: a\rb"])),
        ("bare_lf_lines", b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n"),
        ("no_host", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("two_hosts", raw_request(b"GET", b"/healthz", [b"Host: other"])),
        ("two_authorizations", raw_request(b"GET", b"/interactions", [auth, b"Authorization: Bearer wrong"])),
        ("smuggle_cl_te", raw_request(b"POST", b"/v1/chat/completions", [ct, b"Transfer-Encoding: chunked"],
                                      b"0\r\n\r\nGET /interactions HTTP/1.1\r\nHost: x\r\n\r\n", length=b"6")),
        ("garbage_only", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)),  # a TLS hello
        ("empty_request_line", b"\r\n\r\n"),
        ("pipelined_two", raw_request(b"GET", b"/healthz", []).replace(b"Connection: close\r\n", b"")
         + raw_request(b"GET", b"/livez", [])),
    ]
    return [Attempt("framing_raw", "raw " + label.split("_")[0], label, raw=data) for label, data in cases]


def query_inputs(every: int) -> list[Attempt]:
    routes = {"/interactions": ["project", "session_id", "client", "since", "limit", "model", "status", "offset"],
              "/sessions": ["project", "client", "limit", "since"],
              "/memories": ["project", "limit", "status", "type"],
              "/approvals": ["status", "limit"],
              "/context": ["project", "q", "limit", "budget_tokens"]}
    families = {"/interactions": "interactions_get", "/sessions": "sessions", "/memories": "memories_get",
                "/approvals": "approvals", "/context": "context"}
    out = []
    for path, params in routes.items():
        for param in params:
            for value in thin(QUERY_VALUES, every):
                base = "q=hello&" if path == "/context" and param != "q" else ""
                out.append(Attempt(families[path], f"GET {path}", f"{param}={value[:40]}", "GET",
                                   f"{path}?{base}{param}={value}", json_headers()))
        out.append(Attempt(families[path], f"GET {path}", "repeated_params", "GET",
                           f"{path}?limit=1&limit=2&project=a&project=b&q=x&q=y", json_headers()))
        out.append(Attempt(families[path], f"GET {path}", "limit_huge", "GET", f"{path}?limit=10000000&q=x",
                           json_headers()))
    return out


def id_inputs(every: int) -> list[Attempt]:
    routes = [("interactions_id", "GET", "/interactions/{}"), ("sessions_id", "GET", "/sessions/{}"),
              ("approvals_id", "GET", "/approvals/{}"), ("approvals_decide", "POST", "/approvals/{}/approve"),
              ("approvals_decide", "POST", "/approvals/{}/deny"), ("memories_delete", "DELETE", "/memories/{}")]
    return [Attempt(family, f"{method} {template.format('{id}')}", f"id={value[:40]}", method, template.format(value),
                    json_headers(), b"{}" if method == "POST" else None)
            for family, method, template in routes for value in thin(IDS, max(1, every // 2))]


def record_inputs(every: int) -> list[Attempt]:
    out = []
    specs = [("interactions_post", "/interactions", {"prompt": "attack record"},
              ["prompt", "response", "project", "session_id", "client", "model", "params", "created_at", "prompt_tokens",
               "completion_tokens", "latency_ms", "ttft_ms", "status", "error", "tool_decisions", "memories_used",
               "chunks_used", "id", "context_pack", "x_unknown"]),
             ("memories_post", "/memories", {"project": "atmos", "content": "attack memory"},
              ["project", "content", "type", "confidence", "status", "x_unknown"]),
             ("ingest", "/ingest", {"project": "atmos", "documents": [{"path": "a.md", "text": "# A\n\nattack text"}]},
              ["project", "documents", ("documents", 0), ("documents", 0, "path"), ("documents", 0, "text")])]
    for family, path, base, fields in specs:
        for name in fields:
            where = name if isinstance(name, tuple) else (name,)
            label_name = ".".join(str(p) for p in where)
            values = thin(VALUES, every) + ([(f"date:{d}", json.dumps(d)) for d in DATES] if name == "created_at" else [])
            for label, fragment in values:
                out.append(Attempt(family, f"POST {path}", f"{label_name}={label}", "POST", path, json_headers(),
                                   with_value(base, where, fragment)))
    for label, fragment in thin(VALUES, every):
        body = f'{{"always": {fragment}}}'.encode()
        out.append(Attempt("approvals_decide", "POST /approvals/{id}/approve", f"always={label}", "POST",
                           "/approvals/01900000-0000-7000-8000-000000000000/approve", json_headers(), body))
    return out


def method_and_auth_inputs() -> list[Attempt]:
    paths = ["/healthz", "/livez", "/metrics", "/openapi.json", "/v1/chat/completions", "/v1/models", "/interactions",
             "/sessions", "/approvals", "/memories", "/ingest", "/context"]
    out = [Attempt("methods", f"{m} {p}", f"method={m}", m, p, json_headers(), b"{}" if m != "HEAD" else None)
           for p in paths for m in ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FOO")]
    basic = base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()
    auths = [None, "Bearer", "Bearer ", "Bearer wrong", f"bearer {ADMIN_KEY}", f"Bearer {ADMIN_KEY} ",
             f"Bearer  {ADMIN_KEY}", f"Basic {basic}", ADMIN_KEY, f"Bearer {ADMIN_KEY}x", f"Bearer {ADMIN_KEY[:-1]}",
             "Bearer " + "x" * 10_000, f"Bearer {CLIENT_KEY}"]
    guarded = [("GET", "/interactions", None), ("GET", "/sessions", None), ("GET", "/memories", None),
               ("POST", "/memories", b'{"project": "atmos", "content": "by auth probe"}'), ("GET", "/approvals", None),
               ("GET", "/metrics", None), ("GET", "/context?q=x", None), ("POST", "/ingest", b'{"project": "p", "documents": []}'),
               ("POST", "/interactions", b'{"prompt": "auth probe"}'), ("GET", "/openapi.json", None),
               ("GET", "/healthz", None), ("POST", "/approvals/01900000-0000-7000-8000-000000000000/deny", b"{}")]
    for method, path, body in guarded:
        for n, auth in enumerate(auths):
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            label = "auth=" + ("none" if auth is None else f"variant{n}")
            out.append(Attempt("auth", f"{method} {path.split('?')[0]}", label, method, path, headers, body))
    return out


def project_prefix_inputs() -> list[Attempt]:
    projects = ["%00", "%FF", "..", "%2e%2e", "x" * 10_000, "%F0%9F%92%A9", "a%2Fb", "sandbox", "%20space", "%0A",
                "%ED%A0%80", "default", "atmos"]
    out = []
    for stream in (False, True):
        for project in projects:
            body = orjson.dumps(chat_doc(stream, "prefix"))
            out.append(chat_attempt("chat_project_prefix", f"project={project[:30]}", body, stream=stream,
                                    prefix=f"/p/{project}"))
    out += [Attempt("chat_project_prefix", "GET /p/{project}/v1/models", f"models project={p[:30]}", "GET",
                    f"/p/{p}/v1/models", json_headers(CLIENT_KEY)) for p in projects]
    return out


def policy_inputs(every: int) -> list[Attempt]:
    declared = tools_for(*TOOL_NAMES)
    shapes: list[tuple[str, Any]] = [
        ("function_string", [{"type": "function", "function": "shell_exec"}]),
        ("function_list", [{"type": "function", "function": ["shell_exec"]}]),
        ("function_null", [{"type": "function", "function": None}]),
        ("function_no_name", [{"type": "function", "function": {}}]),
        ("name_int", [{"type": "function", "function": {"name": 1}}]),
        ("name_null", [{"type": "function", "function": {"name": None}}]),
        ("name_list", [{"type": "function", "function": {"name": ["shell_exec"]}}]),
        ("name_obj", [{"type": "function", "function": {"name": {"x": 1}}}]),
        ("name_empty", [{"type": "function", "function": {"name": ""}}]),
        ("name_nul", [{"type": "function", "function": {"name": "shell_exec\u0000"}}]),
        ("name_long", [{"type": "function", "function": {"name": "n" * 100_000}}]),
        ("custom_blocked", [{"type": "custom", "custom": {"name": "shell_exec"}}]),
        ("custom_not_object", [{"type": "custom", "custom": "shell_exec"}]),
        ("flat_blocked", [{"type": "function", "name": "shell_exec"}]),
        ("flat_allowed", [{"type": "function", "name": "ls"}]),
        ("shapes_disagree", [{"type": "function", "name": "ls", "function": {"name": "shell_exec"}}]),
        ("type_missing", [{"function": {"name": "shell_exec"}}]),
        ("type_int", [{"type": 1, "function": {"name": "shell_exec"}}]),
        ("type_unknown", [{"type": "web_search", "name": "shell_exec"}]),
        ("tools_object", {"shell_exec": {}}),
        ("tool_string", ["shell_exec"]),
        ("tool_null", [None]),
        ("glob_blocked", tools_for("danger_zone")),
        ("lookalike_case", tools_for("Shell_exec")),
        ("lookalike_fullwidth", tools_for("\uff53hell_exec")),
        ("lookalike_trailing_space", tools_for("shell_exec ")),
        ("tools_2000", tools_for(*(f"tool_{i}" for i in range(2000)))),
        ("duplicate_names", tools_for("ls", "ls", "shell_exec", "shell_exec")),
    ]
    choices: list[tuple[str, Any]] = [
        ("auto", "auto"), ("none", "none"), ("required", "required"), ("empty", ""), ("int", 1), ("null", None),
        ("list", []), ("object_empty", {}),
        ("forced_blocked", {"type": "function", "function": {"name": "shell_exec"}}),
        ("forced_blocked_flat", {"type": "function", "name": "shell_exec"}),
        ("forced_function_string", {"type": "function", "function": "shell_exec"}),
        ("forced_name_int", {"type": "function", "function": {"name": 1}}),
        ("allowed_tools_blocked", {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "shell_exec"}}]}}),
        ("allowed_tools_flat_blocked", {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
            {"type": "function", "name": "danger_zone"}]}}),
        ("allowed_tools_not_object", {"type": "allowed_tools", "allowed_tools": "shell_exec"}),
        ("allowed_tools_tools_null", {"type": "allowed_tools", "allowed_tools": {"tools": None}}),
        ("custom_blocked", {"type": "custom", "custom": {"name": "shell_exec"}}),
        ("forced_allowed", {"type": "function", "function": {"name": "ls"}}),
        ("forced_undeclared", {"type": "function", "function": {"name": "nothing_like_it"}}),
    ]
    legacy: list[tuple[str, dict[str, Any]]] = [
        ("functions", {"functions": [{"name": "shell_exec"}]}), ("function_call_name", {"function_call": {"name": "ls"}}),
        ("function_call_auto", {"function_call": "auto"}), ("functions_empty", {"functions": []}),
    ]
    out = []
    for stream in (False, True):
        for label, tools in shapes:
            body = orjson.dumps(chat_doc(stream, f"tools {label}", tools=tools))
            out.append(chat_attempt("chat_policy", f"tools:{label}", body, stream=stream))
        for label, choice in choices:
            body = orjson.dumps(chat_doc(stream, f"choice {label}", tools=declared, tool_choice=choice))
            out.append(chat_attempt("chat_policy", f"tool_choice:{label}", body, stream=stream))
        for label, extra in legacy:
            out.append(chat_attempt("chat_policy", f"legacy:{label}", orjson.dumps(chat_doc(stream, "legacy", **extra)),
                                    stream=stream))
        for n in range(len(TOOL_REPLIES)):
            for project in ("default", "sandbox"):
                body = orjson.dumps(chat_doc(stream, f"ATK_TOOL{n} please", tools=declared))
                headers = {**json_headers(CLIENT_KEY), "X-Ctxgate-Project": project}
                out.append(chat_attempt("chat_policy", f"upstream_tool_calls:{n}:{project}", body, stream=stream,
                                        headers=headers))
    return thin(out, max(1, every // 2))


def fault_inputs(repeat: int) -> list[Attempt]:
    kinds = ["E500", "E503", "E429", "E400", "E401", "E403", "E404", "CLOSE", "RESET", "SLOW", "SLOWSTREAM", "TIMEOUT",
             "BADJSON", "EMPTY", "HTML", "USAGEBIG", "USAGEU64", "USAGENEG", "USAGEFLOAT", "USAGESTR", "NOUSAGE", "HUGE",
             "WEIRD", "BADSSE", "NODONE"]
    out = []
    for _ in range(repeat):
        for stream in (False, True):
            for kind in kinds:
                body = orjson.dumps(chat_doc(stream, f"ATK_{kind} please"))
                out.append(chat_attempt("chat_upstream_fault", kind, body, stream=stream, fault=kind in UPSTREAM_FAULTS))
            body = orjson.dumps({**chat_doc(stream, "ATK_E401 please"), "model": "openai/undeclared-model"})
            out.append(chat_attempt("chat_upstream_fault", "E401_undeclared_model_client_key", body, stream=stream))
    return out


def leaving_inputs(count: int) -> list[Attempt]:
    out = []
    chat = orjson.dumps(chat_doc(False, "left mid body"))
    for n in range(count):
        half = chat[: len(chat) // 2]
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(chat))
        out.append(Attempt("client_leaves", "POST /v1/chat/completions", "mid_body", raw=head + half, leave="mid_body"))
        rec = b'{"prompt": "left mid body"}'
        head = b"POST /interactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 500\r\n\r\n" % (
            ADMIN_KEY.encode())
        out.append(Attempt("client_leaves", "POST /interactions", "mid_body", raw=head + rec, leave="mid_body"))
        body = orjson.dumps(chat_doc(True, f"ATK_SLOWSTREAM leave {n}"))
        out.append(chat_attempt("client_leaves", "mid_stream", body, stream=True, leave="mid_stream"))
        body = orjson.dumps(chat_doc(False, f"ATK_SLOW leave {n}"))
        out.append(chat_attempt("client_leaves", "while_waiting", body, stream=False, leave="while_waiting",
                                timeout_s=0.4))
        body = orjson.dumps(chat_doc(True, f"ATK_SLOW leave {n}"))
        out.append(chat_attempt("client_leaves", "while_waiting_stream", body, stream=True, leave="while_waiting",
                                timeout_s=0.4))
    return out


def health_inputs() -> list[Attempt]:
    paths = ["/healthz", "/readyz", "/livez", "/metrics", "/openapi.json", "/healthz?verbose=%FF", "/metrics?x=%00",
             "/openapi.json?" + "a=b&" * 2000, "/healthz/", "/HEALTHZ", "/healthz%00", "//healthz", "/./healthz",
             "/metrics/../interactions"]
    return [Attempt("health_metrics_openapi", f"GET {p.split('?')[0][:20]}", p[:40], "GET", p, json_headers())
            for p in paths]


def all_inputs(quick: bool) -> list[Attempt]:
    every = 3 if quick else 1
    inputs = (chat_field_inputs(every) + malformed_inputs(every) + raw_header_inputs(every) + framing_inputs()
              + query_inputs(every) + id_inputs(every) + record_inputs(every) + method_and_auth_inputs()
              + project_prefix_inputs() + policy_inputs(every) + fault_inputs(1 if quick else 3)
              + leaving_inputs(4 if quick else 12) + health_inputs())
    if not quick:
        inputs += gzip_bomb_inputs()
    return inputs


def key_inputs() -> list[Attempt]:
    """For the run with virtual keys."""
    out = []
    auths = [("none", None), ("scheme_only", "Bearer"), ("wrong", "Bearer ctxg-" + "w" * 43),
             ("virtual", f"Bearer {VIRTUAL_KEY}"), ("virtual_lowercase_scheme", f"bearer {VIRTUAL_KEY}"),
             ("virtual_trailing_space", f"Bearer {VIRTUAL_KEY} "), ("virtual_truncated", f"Bearer {VIRTUAL_KEY[:-1]}"),
             ("virtual_upper", f"Bearer {VIRTUAL_KEY.upper()}"), ("virtual_twice", f"Bearer {VIRTUAL_KEY},{VIRTUAL_KEY}"),
             ("admin_key", f"Bearer {ADMIN_KEY}"), ("provider_key", f"Bearer {PROVIDER_KEY}"),
             ("other_key_no_project", f"Bearer {OTHER_KEY}"), ("huge", "Bearer " + "x" * 20_000)]
    for stream in (False, True):
        for label, auth in auths:
            headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
            body = orjson.dumps(chat_doc(stream, "keys"))
            out.append(chat_attempt("keys_chat", f"auth:{label}", body, stream=stream, headers=headers))
        for label, project, model in [("project_outside", "elsewhere", MODEL), ("model_undeclared", "atmos", "gpt-4o"),
                                      ("model_outside", "atmos", "other-model"), ("project_in", "atmos", MODEL)]:
            body = orjson.dumps({**chat_doc(stream, "keys"), "model": model})
            headers = {**json_headers(VIRTUAL_KEY), "X-Ctxgate-Project": project}
            out.append(chat_attempt("keys_chat", label, body, stream=stream, headers=headers))
        for kind in ("E401", "E500", "E429", "RESET"):
            body = orjson.dumps(chat_doc(stream, f"ATK_{kind} with a virtual key"))
            out.append(chat_attempt("keys_chat", f"upstream:{kind}", body, stream=stream, headers=json_headers(VIRTUAL_KEY),
                                    fault=kind in UPSTREAM_FAULTS))
        body = orjson.dumps(chat_doc(stream, "other key"))
        out.append(chat_attempt("keys_chat", "other_key_p1_model_outside", body, stream=stream,
                                headers={**json_headers(OTHER_KEY), "X-Ctxgate-Project": "p1"}))
    for n in range(8):  # rpm 3
        out.append(chat_attempt("keys_chat", f"rpm_burst:{n}", orjson.dumps(chat_doc(False, "burst")), stream=False,
                                headers=json_headers(LIMITED_KEY)))
    raw_chat = orjson.dumps(chat_doc(False, "raw key"))
    for label, value in HEADER_VALUES[:6]:
        out.append(Attempt("keys_chat", "POST /v1/chat/completions", f"raw_authorization:{label}",
                           raw=raw_request(b"POST", b"/v1/chat/completions",
                                           [b"Content-Type: application/json", b"Authorization: Bearer ctxg-" + value],
                                           raw_chat)))
    management = [("GET", "/interactions"), ("GET", "/sessions"), ("GET", "/approvals"), ("GET", "/memories"),
                  ("GET", "/metrics"), ("GET", "/context?q=x&project=elsewhere"), ("GET", "/interactions?project=elsewhere"),
                  ("POST", "/approvals/01900000-0000-7000-8000-000000000000/approve"), ("POST", "/memories"),
                  ("POST", "/interactions")]
    for method, path in management:
        for label, key in [("virtual_read", VIRTUAL_KEY), ("limited_no_read", LIMITED_KEY), ("admin", ADMIN_KEY),
                           ("none", None)]:
            body = b'{"project": "atmos", "content": "k", "prompt": "k"}' if method == "POST" else None
            out.append(Attempt("keys_management", f"{method} {path.split('?')[0]}", label, method, path,
                               json_headers(key), body))
    return out


# --- sending -----------------------------------------------------------------------------------


def find_secrets(data: bytes) -> list[str]:
    return [name for name, value in SECRETS.items() if value.encode() in data]


def _stream_error(body: bytes) -> str | None:
    for line in body.split(b"\n"):
        if line.startswith(b"data: {") and b'"error"' in line[:20]:
            return line[6:300].decode(errors="replace")
    return None


async def send(session: aiohttp.ClientSession, base: str, attempt: Attempt, scenario: str) -> Outcome:
    started = time.perf_counter()
    if attempt.raw is not None:
        status, data = await _send_raw(base, attempt)
        head, _, body = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^x-ctxgate-interaction-id:\s*(\S+)", head)
        outcome = Outcome(attempt, scenario, status, data[:400].decode(errors="replace"),
                          found.group(1).decode() if found else None, find_secrets(data), _stream_error(body))
    else:
        outcome = await _send_http(session, base, attempt, scenario)
    outcome.latency_ms = (time.perf_counter() - started) * 1000
    return outcome


async def _send_raw(base: str, attempt: Attempt) -> tuple[int, bytes]:
    url = URL(base)
    assert attempt.raw is not None
    try:
        reader, writer = await asyncio.open_connection(url.host, url.port)
    except OSError:
        return REFUSED, b""
    try:
        try:
            writer.write(attempt.raw)
            await writer.drain()
        except OSError:
            pass  # the gateway answered and closed before all of it was sent; read what it said
        if attempt.leave == "mid_body":
            await asyncio.sleep(0.05)
            return LEFT, b""
        chunks = []
        try:
            async with asyncio.timeout(attempt.timeout_s):
                while piece := await reader.read(65536):
                    chunks.append(piece)
        except TimeoutError:
            if not chunks:
                return TIMED_OUT, b""
        except OSError:
            pass
        data = b"".join(chunks)
        if not data:
            return CLOSED, b""
        try:
            return int(data.split(b" ", 2)[1]), data
        except (IndexError, ValueError):
            return CLOSED, data
    finally:
        writer.close()


async def _send_http(session: aiohttp.ClientSession, base: str, attempt: Attempt, scenario: str) -> Outcome:
    url = URL(base + attempt.path, encoded=True)
    try:
        async with session.request(attempt.method, url, data=attempt.body, headers=attempt.headers,
                                   timeout=aiohttp.ClientTimeout(total=attempt.timeout_s), allow_redirects=False,
                                   skip_auto_headers=("Content-Type",)) as response:
            iid = response.headers.get("X-Ctxgate-Interaction-Id")
            head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            if attempt.leave == "mid_stream":
                first = await response.content.readany()
                response.close()
                return Outcome(attempt, scenario, response.status, first[:300].decode(errors="replace"), iid,
                               find_secrets(first + head.encode()))
            body = await response.read()
            record_id = None
            if attempt.path == "/interactions" and attempt.method == "POST" and response.status == 201:
                record_id = orjson.loads(body).get("id")
            return Outcome(attempt, scenario, response.status, body[:300].decode(errors="replace"), iid,
                           find_secrets(body + head.encode()), _stream_error(body) if response.status == 200 else None,
                           record_id)
    except ValueError:  # aiohttp will not send a control character in a header: send the bytes as they are
        headers = [f"{k}: {v}".encode() for k, v in attempt.headers.items()]
        attempt.raw = raw_request(attempt.method.encode(), attempt.path.encode(), headers, attempt.body or b"")
        return await send(session, base, attempt, scenario)
    except TimeoutError:
        return Outcome(attempt, scenario, LEFT if attempt.leave == "while_waiting" else TIMED_OUT, "", None, [])
    except aiohttp.ClientConnectorError as error:
        return Outcome(attempt, scenario, REFUSED, str(error)[:200], None, [])
    except (aiohttp.ClientError, OSError) as error:
        return Outcome(attempt, scenario, CLOSED, f"{type(error).__name__}: {error}"[:300], None, [])


async def send_all(base: str, attempts: list[Attempt], scenario: str, concurrency: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    queue = list(reversed(attempts))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        async def worker() -> None:
            while queue:
                outcomes.append(await send(session, base, queue.pop(), scenario))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


# --- the gateway process -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_command() -> list[str]:
    script = ROOT / ".venv" / "bin" / "ctxgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy.cli.commands"]


def config_text(upstream_base: str, db: Path, spool: Path, *, with_keys: bool = False) -> str:
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "max_body_mb": 1, "shutdown_timeout_s": 10, "header_timeout_s": 5,
                   "body_timeout_s": 5},
        "store": {"url": str(db), "spool_dir": str(spool)},
        "model_list": [{"model_name": MODEL, "litellm_params": {"model": "openai/fake-model", "api_base": upstream_base,
                                                                "api_key": "os.environ/ATTACK_PROVIDER_KEY"}}],
        "default_project": "default",
        "upstream": {"timeout_s": 3},
        "policy": POLICY,
        "logging": {"level": "info", "format": "json"},
    }
    if with_keys:
        doc["keys"] = [
            {"sha256": digest(VIRTUAL_KEY), "client": "alice", "projects": ["atmos"], "models": ["gpt-attack*"],
             "rpm": 100_000, "scopes": ["proxy", "read"]},
            {"sha256": digest(LIMITED_KEY), "client": "bob", "rpm": 3},
            {"sha256": digest(OTHER_KEY), "client": "carol", "projects": ["p1", "p2"], "models": ["other-*"]},
        ]
    return json.dumps(doc, indent=1)  # JSON is YAML


STARTED: list[Gateway] = []  # every gateway this run made, so that each is stopped whatever happens


class Gateway:
    """One `ctxgate serve` process (restartable on the same config and store)."""

    def __init__(self, name: str, workdir: Path, config: str, upstream_base: str) -> None:
        self.name = name
        self.workdir = workdir
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(config)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self.process: asyncio.subprocess.Process | None = None
        self._files: list[IO[bytes]] = []
        STARTED.append(self)
        drop = ("CTXGATE_CONFIG", "CTXGATE_DB", "CTXGATE_PORT", "CTXGATE_HOST")
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.endswith("_API_KEY")}
        dead = "http://127.0.0.1:9"  # nothing listens: a call meant for the internet fails at once
        self.env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "ATTACK_PROVIDER_KEY": PROVIDER_KEY,
                         "CTXGATE_ADMIN_KEY": ADMIN_KEY, "OPENAI_BASE_URL": upstream_base,
                         "OPENAI_API_BASE": upstream_base, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
                         "http_proxy": dead, "https_proxy": dead, "ALL_PROXY": dead,
                         "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})

    async def start(self, timeout_s: float = 120) -> float:
        n = len(self.logs) // 2
        out, err = self.workdir / f"{self.name}-{n}.log", self.workdir / f"{self.name}-{n}.stderr"
        self.logs += [out, err]
        self._files = [out.open("wb"), err.open("wb")]
        started = time.monotonic()
        # One worker: the memory (`rss_mb`) read is this process's, and the runs stay comparable.
        self.process = await asyncio.create_subprocess_exec(
            *gateway_command(), "serve", "--config", str(self.config_path), "--port", str(self.port), "--workers", "1",
            cwd=self.workdir, env=self.env, stdout=self._files[0], stderr=self._files[1])
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout_s:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name}: gateway exited with {self.process.returncode}; see {err}")
                try:
                    async with session.get(self.base + "/livez", timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            return time.monotonic() - started
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: gateway not answering after {timeout_s}s")

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout_s: float = 90) -> int:
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
            code = 1000 + code  # did not stop by itself
        for file in self._files:
            file.close()
        return code

    async def stop(self, timeout_s: float = 90) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.send_signal(signal.SIGTERM)
        return await self.wait(timeout_s)

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def healthz(self) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    self.base + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as response:
                return {"status": response.status, "body": orjson.loads(await response.read())}
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as error:
            return {"status": None, "body": f"{type(error).__name__}: {error}"}


def stored_ids(db: Path) -> Counter[str]:
    if not db.exists():
        return Counter()
    connection = sqlite3.connect(db)
    try:
        return Counter(row[0] for row in connection.execute("SELECT id FROM interactions"))
    finally:
        connection.close()


def spool_state(spool: Path) -> dict[str, Any]:
    dead = spool / "dead-letter.jsonl"
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
    return {"segments_left": len(list(spool.glob("spool-*.jsonl"))) if spool.is_dir() else 0,
            "dead_letters": len(letters),
            "dead_letter_ids": [str(letter["record"].get("id")) for letter in letters],
            "dead_letter_errors": dict(Counter(str(letter["error"])[:120] for letter in letters))}


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Scenario:
    name: str
    gateway: Gateway | None = None
    db: Path | None = None
    spool: Path | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def count(self) -> None:
        """Every call answered with an interaction id is in the store exactly once."""
        assert self.db is not None and self.spool is not None
        stored = stored_ids(self.db)
        answered = {o.interaction_id for o in self.outcomes if o.interaction_id}
        posted = {o.record_id for o in self.outcomes if o.record_id}
        self.figures.update({
            "answered": len(answered),
            "stored_of_answered": len(answered & set(stored)),
            "lost": len(answered - set(stored)),
            "lost_ids": sorted(answered - set(stored))[:10],
            "duplicated": sum(1 for i in answered if stored[i] > 1),
            "stored_total": sum(stored.values()),
            "stored_not_answered": len(set(stored) - answered - posted),
            "posted_records": len(posted),
            "posted_records_lost": len(posted - set(stored)),
            **spool_state(self.spool),
        })
        dead = set(self.figures.pop("dead_letter_ids"))
        self.figures["lost_dead_lettered"] = len((answered - set(stored)) & dead)
        self.figures["lost_vanished"] = len(answered - set(stored) - dead)


async def load(gateway: Gateway, scenario: Scenario, stop: asyncio.Event, *, workers: int = 8,
               prompt_bytes: int = 0, marker_every: int = 4) -> None:
    """Good calls, plain and streamed, some slow, until `stop`; connection refusals just wait."""
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1
            n = counter
            stream = n % 2 == 0
            marker = ("ATK_SLOWSTREAM " if stream else "ATK_SLOW ") if n % marker_every == 0 else ""
            text = f"{marker}load {scenario.name} {n} " + "pad " * (prompt_bytes // 4)
            attempt = chat_attempt("load", f"load:{'stream' if stream else 'plain'}", orjson.dumps(chat_doc(stream, text)),
                                   stream=stream, timeout_s=30)
            outcome = await send(session, gateway.base, attempt, scenario.name)
            scenario.outcomes.append(outcome)
            if outcome.status == REFUSED:
                await asyncio.sleep(0.1)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers, force_close=True)) as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))


async def approver(base: str, scenario: Scenario, stop: asyncio.Event) -> None:
    """A person deciding held calls, with bodies of every shape."""
    bodies = [b"", b"{}", b'{"always": false}', b'{"always": "yes"}', b"null", b"[", b'{"always": 18446744073709551616}',
              b'{"always": true}']
    seen: set[str] = set()
    n = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as session:
        while not stop.is_set():
            await asyncio.sleep(0.25)
            try:
                async with session.get(base + "/approvals?status=pending") as response:
                    pending = (orjson.loads(await response.read())).get("data", [])
            except (aiohttp.ClientError, orjson.JSONDecodeError, AttributeError):
                continue
            for item in pending:
                if item.get("id") in seen:
                    continue
                seen.add(item["id"])
                n += 1
                verdict = "approve" if n % 2 else "deny"
                body = bodies[n % len(bodies)]
                attempt = Attempt("approvals_live", f"POST /approvals/{{id}}/{verdict}", f"live {verdict} body={body[:20]!r}",
                                  "POST", f"/approvals/{item['id']}/{verdict}", json_headers(), body)
                scenario.outcomes.append(await send(session, base, attempt, scenario.name))


async def soak(gateway: Gateway, scenario: Scenario, seconds: float, sample: list[Attempt]) -> dict[str, Any]:
    """Sustained mixed load: good calls, faults, bad inputs and reads; memory and latency over time."""
    stop = asyncio.Event()
    rss: list[float] = [gateway.rss_mb()]
    health: list[Any] = []
    began = len(scenario.outcomes)
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1
            n = counter
            if n % 10 < 4:
                attempt = chat_attempt("soak", "soak:plain", orjson.dumps(chat_doc(False, f"soak {n}")), stream=False)
            elif n % 10 < 7:
                attempt = chat_attempt("soak", "soak:stream", orjson.dumps(chat_doc(True, f"soak {n}")), stream=True)
            elif n % 10 == 7:
                kind = ["E500", "E429", "RESET", "SLOWSTREAM", "TOOL2", "TOOL13", "CLOSE"][n % 7]
                attempt = chat_attempt("soak", f"soak:{kind}", orjson.dumps(chat_doc(n % 3 == 0, f"ATK_{kind} soak",
                                                                                      tools=tools_for(*TOOL_NAMES))),
                                       stream=n % 3 == 0, fault=kind in UPSTREAM_FAULTS)
            elif n % 10 == 8:
                attempt = copy.copy(sample[n % len(sample)])
                attempt.family = "soak"
            else:
                path = ["/interactions?limit=500", "/sessions?limit=200", "/metrics", "/context?q=answer", "/approvals"][n % 5]
                attempt = Attempt("soak", f"GET {path.split('?')[0]}", "soak:read", "GET", path, json_headers())
            scenario.outcomes.append(await send(session, gateway.base, attempt, scenario.name))

    async def sampler() -> None:
        while not stop.is_set():
            await asyncio.sleep(10)
            rss.append(gateway.rss_mb())
            h = await gateway.healthz()
            health.append(h["body"].get("capture_pending") if isinstance(h["body"], dict) else h)

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8, force_close=True)) as session:
        tasks = [asyncio.ensure_future(worker(session)) for _ in range(6)] + [asyncio.ensure_future(sampler())]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    done = scenario.outcomes[began:]
    good = sorted(o.latency_ms for o in done if o.attempt.label in ("soak:plain", "soak:stream") and o.status == 200)
    return {"seconds": round(elapsed), "requests": len(done), "rps": round(len(done) / elapsed, 1),
            "good_calls_ok": len(good),
            "good_calls_not_200": sum(1 for o in done if o.attempt.label in ("soak:plain", "soak:stream")
                                      and o.status != 200),
            "good_p50_ms": round(good[len(good) // 2], 1) if good else None,
            "good_p99_ms": round(good[int(len(good) * 0.99)], 1) if good else None,
            "rss_mb_start": round(rss[0], 1), "rss_mb_end": round(rss[-1], 1), "rss_mb_max": round(max(rss), 1),
            "capture_pending_samples": health}


async def run_main(upstream: AttackUpstream, workdir: Path, args: argparse.Namespace) -> Scenario:
    scenario = Scenario("main", db=workdir / "main.db", spool=workdir / "main-spool")
    gateway = Gateway("main", workdir, config_text(upstream.base_url, scenario.db, scenario.spool), upstream.base_url)
    scenario.gateway = gateway
    scenario.figures["startup_s"] = round(await gateway.start(), 1)
    inputs = all_inputs(args.quick)
    stop = asyncio.Event()
    deciding = asyncio.ensure_future(approver(gateway.base, scenario, stop))
    began = time.monotonic()
    scenario.outcomes += await send_all(gateway.base, inputs, "main", args.concurrency)
    stop.set()
    await deciding
    scenario.figures["attack_s"] = round(time.monotonic() - began, 1)
    scenario.figures["alive_after_attack"] = gateway.process is not None and gateway.process.returncode is None
    after = await send_all(gateway.base, [chat_attempt("check", "good call after the attack",
                                                       orjson.dumps(chat_doc(False, "after")), stream=False)], "main", 1)
    scenario.outcomes += after
    scenario.figures["good_call_after_attack"] = after[0].status
    cheap = [a for a in inputs if a.family in ("chat", "interactions_get", "headers_raw", "chat_policy")
             and (a.body is None or len(a.body) < 20_000) and not a.leave]
    scenario.figures["soak"] = await soak(gateway, scenario, args.soak_s, cheap)
    scenario.figures["healthz_after"] = await gateway.healthz()
    scenario.figures["exit_code"] = await gateway.stop()
    scenario.count()
    return scenario


async def run_keys(upstream: AttackUpstream, workdir: Path, args: argparse.Namespace) -> Scenario:
    scenario = Scenario("keys", db=workdir / "keys.db", spool=workdir / "keys-spool")
    gateway = Gateway("keys", workdir, config_text(upstream.base_url, scenario.db, scenario.spool, with_keys=True),
                      upstream.base_url)
    scenario.gateway = gateway
    await gateway.start()
    scenario.outcomes += await send_all(gateway.base, key_inputs(), "keys", args.concurrency)
    scenario.figures["healthz_after"] = await gateway.healthz()
    scenario.figures["exit_code"] = await gateway.stop()
    scenario.count()
    return scenario


async def run_signal(upstream: AttackUpstream, workdir: Path, sig: int, load_s: float) -> Scenario:
    name = "sigterm_during_load" if sig == signal.SIGTERM else "sigkill_during_load"
    scenario = Scenario(name, db=workdir / f"{name}.db", spool=workdir / f"{name}-spool")
    gateway = Gateway(name, workdir, config_text(upstream.base_url, scenario.db, scenario.spool), upstream.base_url)
    scenario.gateway = gateway
    await gateway.start()
    stop = asyncio.Event()
    loading = asyncio.ensure_future(load(gateway, scenario, stop, workers=10))
    await asyncio.sleep(load_s)
    scenario.figures["healthz_before_signal"] = await gateway.healthz()
    scenario.figures["answered_before_signal"] = len({o.interaction_id for o in scenario.outcomes if o.interaction_id})
    signalled = time.monotonic()
    gateway.send_signal(sig)
    scenario.figures["exit_code"] = await gateway.wait()
    scenario.figures["exit_s"] = round(time.monotonic() - signalled, 1)
    await asyncio.sleep(0.5)
    stop.set()
    await loading
    scenario.figures["in_flight_cut"] = sum(1 for o in scenario.outcomes if o.status in (CLOSED, TIMED_OUT))
    scenario.figures["refused_after_signal"] = sum(1 for o in scenario.outcomes if o.status == REFUSED)
    if sig == signal.SIGKILL:  # what the next start brings back from the spool
        scenario.figures["stored_right_after_kill"] = sum(stored_ids(scenario.db).values())
    await gateway.start()
    scenario.figures["healthz_after_restart"] = await gateway.healthz()
    scenario.figures["restart_exit_code"] = await gateway.stop()
    scenario.count()
    return scenario


def _tree_state() -> dict[str, Any]:
    """The commit and the uncommitted product files (with their content hashes): what ran."""
    status = _run("git", "-C", str(ROOT), "status", "--short", "--", "proxy", "capture", "policy").stdout.split("\n")[:-1]
    hashes = _run("git", "-C", str(ROOT), "hash-object", *[line[3:] for line in status if line[:2] != " D"]).stdout
    return {"commit": _run("git", "-C", str(ROOT), "rev-parse", "HEAD").stdout.strip(), "uncommitted": status,
            "hashes": hashes.split()}


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


def fill(directory: Path) -> int:
    """Write zeros until the file system is full; returns bytes written."""
    written = 0
    with (directory / "fill").open("wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
                written += 65536
        except OSError:
            pass
    return written


async def run_store_fault(upstream: AttackUpstream, workdir: Path, kind: str, mounts: list[Path]) -> Scenario:
    """The store's file system full (`disk_full`) or read-only (`read_only`) during load, the
    spool elsewhere; SIGTERM; mend it; restart; every answered call stored once."""
    name = f"store_{kind}"
    mount = workdir / f"mnt-{kind}"
    mount.mkdir()
    scenario = Scenario(name, db=mount / "gw.db", spool=workdir / f"{name}-spool")
    done = _run("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount))
    if done.returncode != 0:
        scenario.skipped = f"mount -t tmpfs refused: {done.stderr.strip()}"
        return scenario
    mounts.append(mount)
    gateway = Gateway(name, workdir, config_text(upstream.base_url, scenario.db, scenario.spool), upstream.base_url)
    scenario.gateway = gateway
    try:
        await gateway.start()
        stop = asyncio.Event()
        loading = asyncio.ensure_future(load(gateway, scenario, stop, workers=6, prompt_bytes=4000, marker_every=8))
        await asyncio.sleep(2)
        if kind == "disk_full":
            scenario.figures["filled_bytes"] = fill(mount)
        else:
            done = _run("mount", "-o", "remount,ro", str(mount))
            if done.returncode != 0:
                scenario.skipped = (f"mount -o remount,ro refused while the gateway holds the store open: "
                                    f"{done.stderr.strip().splitlines()[0]}")
        await asyncio.sleep(8 if scenario.skipped is None else 1)
        scenario.figures["healthz_during_fault"] = await gateway.healthz()
        probes = [Attempt("store_fault_probe", "POST /memories", "memory while the store refuses", "POST", "/memories",
                          json_headers(), b'{"project": "atmos", "content": "during the fault"}'),
                  Attempt("store_fault_probe", "POST /interactions", "record while the store refuses", "POST",
                          "/interactions", json_headers(), b'{"prompt": "during the fault"}'),
                  Attempt("store_fault_probe", "GET /interactions", "list while the store refuses", "GET",
                          "/interactions?limit=5", json_headers())]
        scenario.outcomes += await send_all(gateway.base, probes, name, 1)
        gateway.send_signal(signal.SIGTERM)
        scenario.figures["exit_code"] = await gateway.wait()
        stop.set()
        await loading
        scenario.figures["spool_after_stop"] = spool_state(scenario.spool)
        scenario.figures["stored_before_mend"] = sum(stored_ids(scenario.db).values())
        if kind == "disk_full":
            (mount / "fill").unlink()
        elif scenario.skipped is None:
            _run("mount", "-o", "remount,rw", str(mount))
        await gateway.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = await gateway.healthz()
            body = health["body"]
            if isinstance(body, dict) and body.get("status") == "ok" and not body["capture"]["spool_segments"]:
                break
            await asyncio.sleep(0.5)
        scenario.figures["healthz_after_restart"] = health
        scenario.figures["restart_exit_code"] = await gateway.stop()
        scenario.count()
    finally:
        if gateway.process is not None and gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()
    return scenario


# --- what the operator checks -------------------------------------------------------------------


LOAD_FAMILIES = {"load", "soak", "check", "store_fault_probe"}  # good calls and probes, not bad inputs


def is_expected_5xx(outcome: Outcome) -> str | None:
    """Why a status >= 500 is not the gateway failing, or None when it is."""
    body = outcome.excerpt
    if outcome.status in (502, 504) and outcome.attempt.is_upstream_fault:
        return "scripted upstream fault"
    if outcome.status == 503 and "store_unavailable" in body and outcome.scenario.startswith("store_"):
        return "store fault"
    if outcome.status == 503 and outcome.attempt.path.startswith(("/healthz", "/readyz")) and '"failing"' in body:
        return "healthz failing"
    return None


def analyse_outcomes(outcomes: list[Outcome]) -> dict[str, Any]:
    by_family: Counter[str] = Counter()
    load_requests: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    gateway_5xx: dict[str, dict[str, Any]] = {}
    expected: Counter[str] = Counter()
    no_answer: dict[str, dict[str, Any]] = {}
    stream_errors: dict[str, dict[str, Any]] = {}
    secrets: list[dict[str, Any]] = []
    for o in outcomes:
        a = o.attempt
        if a.family in LOAD_FAMILIES:
            load_requests[a.family] += 1
        else:
            by_family[a.family] += 1
        statuses[a.family][str(o.status)] += 1
        if o.status >= 500:
            why = is_expected_5xx(o)
            if why:
                expected[why] += 1
            else:
                key = f"{a.family}: {a.route} -> {o.status}"
                entry = gateway_5xx.setdefault(key, {"count": 0, "labels": Counter(), "example": {
                    "label": a.label, "scenario": o.scenario, "answer": o.excerpt[:300]}})
                entry["count"] += 1
                entry["labels"][a.label] += 1
        if o.status in (CLOSED, TIMED_OUT) and not a.leave:
            key = f"{o.scenario}/{a.family} {'timed out' if o.status == TIMED_OUT else 'closed without an answer'}"
            entry = no_answer.setdefault(key, {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < 3:
                entry["examples"].append({"label": a.label, "route": a.route, "detail": o.excerpt[:200]})
        if o.stream_error and '"internal_error"' in o.stream_error:
            entry = stream_errors.setdefault(a.route, {"count": 0, "example": {"label": a.label, "event": o.stream_error}})
            entry["count"] += 1
            entry.setdefault("labels", Counter())[a.label] += 1
        if o.secrets:
            secrets.append({"secrets": o.secrets, "route": a.route, "label": a.label, "status": o.status,
                            "excerpt": o.excerpt[:300]})
    return {"inputs": sum(by_family.values()), "by_family": dict(sorted(by_family.items())),
            "load_requests": dict(load_requests),
            "statuses": {k: dict(v) for k, v in sorted(statuses.items())}, "gateway_5xx": gateway_5xx,
            "gateway_5xx_total": sum(e["count"] for e in gateway_5xx.values()), "expected_5xx": dict(expected),
            "no_answer": no_answer, "internal_errors_in_200_streams": stream_errors, "secrets_in_answers": secrets[:20],
            "secrets_in_answers_total": len(secrets)}


def analyse_logs(paths: list[Path]) -> dict[str, Any]:
    tracebacks: dict[str, dict[str, Any]] = {}
    errors: Counter[str] = Counter()
    non_json: list[str] = []
    secrets: list[dict[str, Any]] = []
    logged_5xx: Counter[str] = Counter()
    lines = 0
    pending_traceback = False
    unrendered: Counter[str] = Counter()
    unrendered_examples: dict[str, str] = {}
    for path in paths:
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            lines += 1
            found = find_secrets(raw)
            if found:
                secrets.append({"file": path.name, "secrets": found, "line": raw[:300].decode(errors="replace")})
            try:
                record = orjson.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError
            except (orjson.JSONDecodeError, ValueError):
                if raw.startswith(b"Message: {"):  # a line the logging module could not render, on stderr
                    event = re.search(rb"'event': '([^']*)'", raw)
                    unrendered[event.group(1).decode() if event else "?"] += 1
                    unrendered_examples.setdefault(event.group(1).decode() if event else "?",
                                                   raw[:400].decode(errors="replace"))
                if path.suffix == ".log" and len(non_json) < 2000:
                    non_json.append(raw[:200].decode(errors="replace"))
                if raw.startswith(b"Traceback"):
                    pending_traceback = True
                elif pending_traceback and raw[:1] not in (b" ", b"") and b"Error" in raw.split(b":")[0]:
                    pending_traceback = False
                    key = f"(stderr, not JSON) {raw[:90].decode(errors='replace')}"
                    entry = tracebacks.setdefault(key, {"count": 0, "excerpt": raw[:300].decode(errors="replace")})
                    entry["count"] += 1
                continue
            event = str(record.get("event"))[:80]
            if record.get("level") in ("error", "critical"):
                errors[event] += 1
            if record.get("event") == "request_completed" and isinstance(record.get("status"), int) and record["status"] >= 500:
                logged_5xx[f"{record.get('path', '?')[:60]} {record['status']}"] += 1
            if "exception" in record or b"Traceback" in raw:
                entry = tracebacks.setdefault(event, {"count": 0, "excerpt": ""})
                entry["count"] += 1
                if not entry["excerpt"]:
                    text = str(record.get("exception", ""))
                    entry["excerpt"] = (text[-600:] if text else raw[:600].decode(errors="replace"))
    return {"lines": lines, "stack_traces_total": sum(e["count"] for e in tracebacks.values()),
            "stack_traces": tracebacks, "error_events": dict(errors), "non_json_lines": len(non_json),
            "non_json_examples": non_json[:5], "secrets_in_logs": secrets[:20], "secrets_in_logs_total": len(secrets),
            "logged_5xx": dict(logged_5xx), "log_lines_not_rendered": dict(unrendered),
            "log_lines_not_rendered_examples": unrendered_examples}


def secrets_in_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    found = []
    for path in paths:
        if path.is_file():
            hits = find_secrets(path.read_bytes())
            if hits:
                found.append({"file": str(path), "secrets": hits})
    return found


def print_table(report: dict[str, Any]) -> None:
    o, logs = report["outcomes"], report["logs"]
    print("\n== attack run", report["mode"], f"({report['duration_s']} s) against {report['commit'][:10]}"
          + (" (product code changed during the run!)" if report["product_changed_during_run"] else ""))
    print(f"bad inputs tried: {o['inputs']}  (plus good load and probes: {o['load_requests']})")
    for family, count in o["by_family"].items():
        print(f"  {family:<24} {count:>5}  statuses {o['statuses'][family]}")
    print(f"5xx from the gateway itself: {o['gateway_5xx_total']}  (not counted: {o['expected_5xx']})")
    for key, entry in o["gateway_5xx"].items():
        print(f"  {key}: {entry['count']}  e.g. {entry['example']['label']!r}: {entry['example']['answer'][:160]!r}")
    print(f"internal errors inside 200 streams: {sum(e['count'] for e in o['internal_errors_in_200_streams'].values())}")
    print(f"no answer (closed / timed out, client stayed): {sum(e['count'] for e in o['no_answer'].values())}")
    for key, entry in o["no_answer"].items():
        print(f"  {key}: {entry['count']}  e.g. {entry['examples'][0]}")
    print(f"stack traces in the gateway's logs: {logs['stack_traces_total']} (log lines: {logs['lines']}, "
          f"not JSON: {logs['non_json_lines']})")
    for event, entry in logs["stack_traces"].items():
        print(f"  {event}: {entry['count']}  {entry['excerpt'][-200:]!r}")
    print(f"error-level log events: {logs['error_events']}")
    print(f"log lines the gateway could not write (stderr 'Logging error'), by event: {logs['log_lines_not_rendered']}")
    print(f"secrets seen: in answers {o['secrets_in_answers_total']}, in logs {logs['secrets_in_logs_total']}, "
          f"in store/spool files {len(report['secrets_in_files'])}")
    print(f"\n{'scenario':<24}{'answered':>9}{'stored':>8}{'lost':>6}{'dup':>5}{'spool left':>11}{'dead':>6}  healthz after")
    for name, figures in report["scenarios"].items():
        if "skipped" in figures:
            print(f"{name:<24} skipped: {figures['skipped']}")
        if "answered" not in figures:
            continue
        health = figures.get("healthz_after") or figures.get("healthz_after_restart") or {}
        body = health.get("body")
        state = f"{health.get('status')} {body.get('status')} {body.get('reasons')}" if isinstance(body, dict) else str(health)
        print(f"{name:<24}{figures['answered']:>9}{figures['stored_of_answered']:>8}{figures['lost']:>6}"
              f"{figures['duplicated']:>5}{figures['segments_left']:>11}{figures['dead_letters']:>6}  {state[:90]}")
    for name, figures in report["scenarios"].items():
        if "healthz_during_fault" in figures:
            print(f"{name} healthz during the fault: {figures['healthz_during_fault']}")
        if figures.get("dead_letter_errors"):
            print(f"{name} dead letters: {figures['dead_letter_errors']}")
    soak_figures = report["scenarios"].get("main", {}).get("soak")
    if soak_figures:
        print(f"\nsoak: {soak_figures}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ctxgate-attack-"))
    print(f"work directory (logs, stores): {workdir}", flush=True)
    tree_before = _tree_state()
    upstream = AttackUpstream()
    await upstream.start()
    mounts: list[Path] = []
    scenarios: list[Scenario] = []
    began = time.monotonic()
    steps: list[Callable[[], Awaitable[Scenario]]] = [
        lambda: run_main(upstream, workdir, args),
        lambda: run_keys(upstream, workdir, args),
        lambda: run_signal(upstream, workdir, signal.SIGTERM, 3 if args.quick else 6),
        lambda: run_signal(upstream, workdir, signal.SIGKILL, 3 if args.quick else 6),
        lambda: run_store_fault(upstream, workdir, "disk_full", mounts),
        lambda: run_store_fault(upstream, workdir, "read_only", mounts),
    ]
    try:
        for step in steps:
            step_began = time.monotonic()
            try:
                scenario = await step()
            except Exception as error:  # boundary: one broken scenario must not hide the others' figures
                scenario = Scenario(f"step_{len(scenarios)}_failed", skipped=f"{type(error).__name__}: {error}")
            scenario.figures["step_s"] = round(time.monotonic() - step_began, 1)
            scenarios.append(scenario)
            print(f"{scenario.name}: {len(scenario.outcomes)} requests, {scenario.figures.get('step_s')} s"
                  + (f" (skipped: {scenario.skipped})" if scenario.skipped else ""), flush=True)
    finally:
        for gateway in STARTED:
            if gateway.process is not None and gateway.process.returncode is None:
                gateway.process.kill()
                await gateway.process.wait()
        await upstream.stop()
        for mount in mounts:
            _run("mount", "-o", "remount,rw", str(mount))
            secrets_files = list(mount.glob("*"))
            for scenario in scenarios:
                if scenario.db is not None and scenario.db.parent == mount:
                    scenario.figures["secrets_in_store_files"] = secrets_in_files(secrets_files)
            done = _run("umount", str(mount))
            if done.returncode != 0:
                print(f"could not unmount {mount}: {done.stderr.strip()}", file=sys.stderr)
    outcomes = [o for s in scenarios for o in s.outcomes]
    log_paths = [p for s in scenarios if s.gateway for p in s.gateway.logs]
    store_files = [p for s in scenarios if s.db and s.db.parent == workdir
                   for p in [s.db, Path(f"{s.db}-wal")] + list(s.spool.glob("*") if s.spool and s.spool.is_dir() else [])]
    report = {
        "mode": "quick" if args.quick else "default",
        "commit": tree_before["commit"],
        "uncommitted_product_changes": tree_before["uncommitted"],
        "product_changed_during_run": _tree_state() != tree_before,
        "duration_s": round(time.monotonic() - began),
        "workdir": str(workdir),
        "upstream_calls": upstream.calls,
        "outcomes": analyse_outcomes(outcomes),
        "logs": analyse_logs(log_paths),
        "secrets_in_files": secrets_in_files(store_files) + [
            hit for s in scenarios for hit in s.figures.get("secrets_in_store_files", [])],
        "scenarios": {s.name: {**s.figures, **({"skipped": s.skipped} if s.skipped else {}), "notes": s.notes}
                      for s in scenarios},
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller set, a few minutes")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here (default: in the work directory)")
    parser.add_argument("--soak-s", type=float, help="length of the soak (default 300 s, quick 20 s)")
    parser.add_argument("--concurrency", type=int, default=12)
    args = parser.parse_args()
    if args.soak_s is None:
        args.soak_s = 20.0 if args.quick else 300.0
    report = asyncio.run(main_async(args))
    out = args.out or Path(report["workdir"]) / "attack.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    print(f"\nfigures: {out}")


if __name__ == "__main__":
    main()
