"""OpenTelemetry traces, as an OTLP/HTTP collector in the test receives and decodes them: the
call's GenAI attributes, the context pack as a retrieval span, each tool decision, the
client's trace continued, content only when configured, and a failing collector or a full
queue costing nothing but counted spans."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from capture.approvals import ApprovalStatus
from capture.knowledge import new_memory
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, STORE, TRACES
from proxy.config.settings import ConfigError, load_settings
from proxy.config.telemetry import TelemetrySettings
from proxy.demo.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.conftest import MODEL, PROVIDER_KEY, Gateway, make_gateway, settled

CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
EDIT = ToolCall("file_edit", '{"path": "/srv/app.conf"}', id="call_edit")
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("file_edit", "file_read")]
POLICY = {"default": {"mode": "allow", "restricted_tools": ["file_edit"], "approval_timeout_s": 30}}
QUESTION = "how do we roll out the payments service"
ADMIN_KEY = "admin-key-for-traces"


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint: answers with `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.content_types.append(request.headers.get("Content-Type", ""))
        if status == 200:
            self.requests.append(ExportTraceServiceRequest.FromString(await request.read()))
            self.arrived.set()
        return web.Response(status=status)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, decoded, with its attributes as a plain mapping."""
        found = []
        for export in self.requests:
            for resource_spans in MessageToDict(export)["resourceSpans"]:
                for scope in resource_spans["scopeSpans"]:
                    for span in scope["spans"]:
                        span["attrs"] = {a["key"]: plain(a["value"]) for a in span.get("attributes", [])}
                        span["resource"] = {a["key"]: plain(a["value"]) for a in resource_spans["resource"]["attributes"]}
                        found.append(span)
        return found

    async def wait_spans(self, count: int) -> list[dict[str, Any]]:
        while len(self.spans()) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return self.spans()


def plain(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue (as MessageToDict gives it) as a Python value."""
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [plain(item) for item in inner.get("values", [])]
    if kind == "kvlistValue":
        return {item["key"]: plain(item["value"]) for item in inner.get("values", [])}
    return inner


def hex_id(encoded: str) -> str:
    """A trace or span id as MessageToDict gives it (base64) in hex."""
    import base64

    return base64.b64decode(encoded).hex()


@pytest.fixture
async def collector(aiohttp_server: Any) -> Collector:
    fake = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/v1/traces"))
    return fake


async def traced(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector,
                 **telemetry: Any) -> Gateway:
    gateway = await make_gateway(
        aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY), admin_key=ADMIN_KEY,
        telemetry=TelemetrySettings(traces_url=collector.url, headers={"x-collector-key": "collector-secret-123"},
                                    **telemetry))
    gateway.app[TRACES].gather_s = 0.02
    gateway.app[TRACES].backoff_s = 0.02
    await gateway.app[STORE].add_memory(new_memory("default", "Roll out the payments service to staging first."))
    return gateway


async def ask(gateway: Gateway, *, traceparent: str | None = None, content: str = QUESTION,
              stream: bool = True) -> Any:
    headers = {"traceparent": traceparent} if traceparent else {}
    client = gateway.client(default_headers={"X-Ctxgate-Session": "conv-42", **headers})
    options: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}], "tools": TOOLS}
    if not stream:
        return await client.chat.completions.create(**options)
    stream_ = await client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
    return [chunk async for chunk in stream_]


async def approve_when_asked(gateway: Gateway) -> None:
    await asyncio.wait_for(gateway.app[APPROVALS].wait_requested(1), 10)
    [pending] = await gateway.app[STORE].list_approvals(ApprovalStatus.PENDING)
    await gateway.app[APPROVALS].decide(pending.id, approve=True, decided_by="frank")


async def test_a_call_is_one_genai_span_with_its_pack_and_tool_decision_as_children(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector)
    upstream.push(Reply(text="Rolling out.", tool_calls=(EDIT,), cached_tokens=5))
    await asyncio.gather(ask(gateway, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), approve_when_asked(gateway))
    [stored] = await gateway.recorded()
    spans = await collector.wait_spans(3)
    assert collector.content_types == ["application/x-protobuf"]
    by_name = {span["name"]: span for span in spans}
    call, retrieval, decision = by_name[f"chat {MODEL}"], by_name["retrieval"], by_name["tool_decision file_edit"]

    # The client's trace goes on: its span is the call's parent; the pack and the decision are the call's children.
    assert {hex_id(span["traceId"]) for span in spans} == {CLIENT_TRACE}
    assert hex_id(call["parentSpanId"]) == CLIENT_SPAN
    assert hex_id(retrieval["parentSpanId"]) == hex_id(decision["parentSpanId"]) == hex_id(call["spanId"])
    assert call["kind"] == "SPAN_KIND_CLIENT" and retrieval["kind"] == decision["kind"] == "SPAN_KIND_INTERNAL"

    attrs = call["attrs"]
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.provider.name"], attrs["gen_ai.request.model"]) == (
        "chat", "openai", MODEL)
    assert attrs["gen_ai.conversation.id"] == "conv-42" == stored.session_id
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (
        stored.prompt_tokens, stored.completion_tokens)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 5 == stored.cache_read_tokens
    assert attrs["ctxgate.interaction.id"] == stored.id and attrs["http.response.status_code"] == 200
    assert int(call["endTimeUnixNano"]) - int(call["startTimeUnixNano"]) >= decision["attrs"]["ctxgate.approval.wait_ms"] * 1e6
    assert call["resource"]["service.name"] == "ctxgate"

    [memory_id] = stored.memories_used
    assert retrieval["attrs"]["gen_ai.operation.name"] == "retrieval"
    assert retrieval["attrs"]["gen_ai.data_source.id"] == "ctxgate:default"
    assert retrieval["attrs"]["gen_ai.retrieval.documents"] == [
        {"id": memory_id, "score": stored.context_scores[memory_id], "kind": "memory"}]

    assert decision["attrs"]["gen_ai.tool.name"] == "file_edit"
    assert decision["attrs"]["gen_ai.tool.call.id"] == "call_edit"
    assert (decision["attrs"]["ctxgate.tool.action"], decision["attrs"]["ctxgate.tool.decided_by"]) == ("allow", "human")
    assert decision["attrs"]["ctxgate.approval.id"] == stored.tool_decisions[0]["approval_id"]

    # No content unless configured: no prompt, no answer, no query, no arguments.
    exported = json.dumps(spans)
    for text in (QUESTION, "Rolling out", "/srv/app.conf"):
        assert text not in exported
    assert "collector-secret-123" not in exported


async def test_content_goes_on_spans_only_when_configured_and_scrubbed(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector, capture_content=True)
    upstream.push(Reply(text=f"noted {PROVIDER_KEY}"))
    await ask(gateway, content=f"{QUESTION} sk-leaked-0123456789abcdefghij", stream=False)
    [call] = [span for span in await collector.wait_spans(2) if span["name"].startswith("chat")]
    [message] = call["attrs"]["gen_ai.input.messages"]
    assert message["role"] == "user" and QUESTION in message["parts"][0]["content"]
    assert call["attrs"]["gen_ai.output.messages"][0]["parts"][0]["content"].startswith("noted")
    exported = json.dumps(collector.spans())
    assert "sk-leaked-0123456789abcdefghij" not in exported and PROVIDER_KEY not in exported
    [retrieval] = [span for span in collector.spans() if span["name"] == "retrieval"]
    assert QUESTION in retrieval["attrs"]["gen_ai.retrieval.query.text"]


async def test_a_trace_the_client_does_not_sample_gets_no_spans_and_one_without_a_parent_starts_its_own(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector)
    upstream.push(Reply(text="a"))
    await ask(gateway, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", stream=False)
    upstream.push(Reply(text="b"))
    await ask(gateway, traceparent="not-a-traceparent", stream=False)
    spans = await collector.wait_spans(2)
    await asyncio.sleep(0.1)
    [call] = [span for span in collector.spans() if span["name"].startswith("chat")]
    assert hex_id(call["traceId"]) != CLIENT_TRACE and "parentSpanId" not in call
    assert len(spans) == 2  # the call and its retrieval: nothing of the unsampled one


async def test_a_failing_collector_is_retried_and_one_that_stays_down_costs_counted_spans(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    collector.statuses = [503, 502]
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector)
    upstream.push(Reply(text="a"))
    await ask(gateway, stream=False)
    await collector.wait_spans(2)
    exporter = gateway.app[TRACES]
    assert (exporter.exported_total, exporter.dropped_total) == (2, 0)

    collector.statuses = [503, 503, 503]  # every attempt fails
    upstream.push(Reply(text="b"))
    await ask(gateway, stream=False)
    await settled(lambda: exporter.dropped_total > 0)
    assert (exporter.exported_total, exporter.dropped_total) == (2, 2)
    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(gateway.url + "/metrics",
                                           headers={"Authorization": f"Bearer {ADMIN_KEY}"})).text()
    assert "ctxgate_trace_spans_dropped_total 2" in metrics


async def test_a_full_queue_drops_spans_and_counts_them_while_calls_go_on(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector, queue_size=1)
    gateway.app[TRACES].gather_s = 5.0  # the exporter holds the first call's spans while it gathers
    for text in ("a", "b", "c", "d"):
        upstream.push(Reply(text=text))
        completion = await ask(gateway, stream=False, content="nothing in the knowledge")
        assert completion.choices[0].message.content == text
    assert gateway.app[TRACES].dropped_total == 2  # "b" waits in the queue of one; "c" and "d" had no room


def test_the_telemetry_config_and_the_standard_variables(tmp_path: Path) -> None:
    config = tmp_path / "ctxgate.yaml"
    config.write_text("telemetry:\n  otlp_endpoint: http://collector:4318/\n  headers: {api-key: os.environ/OTLP_KEY}\n")
    settings = load_settings(str(config), environ={"OTLP_KEY": "otlp-secret-value"})
    assert settings.telemetry.traces_url == "http://collector:4318/v1/traces"
    assert "otlp-secret-value" in settings.secrets and "otlp-secret-value" not in repr(settings)
    from_env = load_settings(None, environ={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://x.example/otlp/traces",
                                            "OTEL_SERVICE_NAME": "gw-eu", "OTEL_EXPORTER_OTLP_HEADERS": "a=b%3Dc"})
    assert replace(from_env.telemetry, headers={}) == TelemetrySettings(
        traces_url="https://x.example/otlp/traces", service_name="gw-eu")
    assert dict(from_env.telemetry.headers) == {"a": "b=c"}
    assert load_settings(None, environ={}).telemetry.traces_url is None
    config.write_text("telemetry: {otlp_endpoint: 'collector:4318'}\n")
    with pytest.raises(ConfigError, match="telemetry.otlp_endpoint"):
        load_settings(str(config), environ={})


@pytest.mark.parametrize(("header", "parent"), [
    (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", (CLIENT_TRACE, CLIENT_SPAN, True)),
    (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", (CLIENT_TRACE, CLIENT_SPAN, False)),
    (f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-01-what-comes-later", (CLIENT_TRACE, CLIENT_SPAN, True)),  # a later version
    (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra", None),  # version 00 has exactly four fields
    (f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01", None),  # upper case is not valid
    (f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", None),
    (f"00-{'0' * 32}-{CLIENT_SPAN}-01", None),
    (f"00-{CLIENT_TRACE}-{'0' * 16}-01", None),
    ("", None),
])
def test_traceparent_is_read_as_w3c_trace_context_says(header: str, parent: tuple[str, str, bool] | None) -> None:
    from proxy.edge.spans import parse_traceparent

    found = parse_traceparent(header)
    assert (None if found is None else (found.trace_id.hex(), found.span_id.hex(), found.is_sampled)) == parent


async def test_a_call_refused_before_it_was_sent_has_no_span(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector)
    async with aiohttp.ClientSession() as session:
        # Refused once the call is prepared, before it is sent: it goes on from a response no
        # record holds.
        refused = await session.post(gateway.url + "/v1/responses", json={
            "model": MODEL, "input": "x", "previous_response_id": "resp_ctxgate_01a00000-0000-7000-8000-000000000000"})
        assert refused.status == 400
    upstream.push(Reply(text="sent"))
    await ask(gateway, stream=False, content="nothing in the knowledge")
    await collector.wait_spans(1)
    await asyncio.sleep(0.1)
    assert [span["name"] for span in collector.spans()] == [f"chat {MODEL}"]  # the sent call's only
    assert len(upstream.received) == 1


async def test_content_on_spans_is_capped_and_a_collectors_partial_refusal_is_counted(
        aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path, collector: Collector) -> None:
    gateway = await traced(aiohttp_server, upstream, tmp_path, collector, capture_content=True)
    upstream.push(Reply(text="short"))
    await ask(gateway, stream=False, content="x " * 50_000)
    [call] = [span for span in await collector.wait_spans(1) if span["name"].startswith("chat")]
    assert len(call["attrs"]["gen_ai.input.messages"][0]["parts"][0]["content"]) == 4000

    async def partly_refusing(request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
        await request.read()
        answer = ExportTraceServiceResponse()
        answer.partial_success.rejected_spans = 1
        answer.partial_success.error_message = "span too old"
        return web.Response(body=answer.SerializeToString(), content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", partly_refusing)
    server = await aiohttp_server(app)
    exporter = gateway.app[TRACES]
    exporter.url = str(server.make_url("/v1/traces"))
    before = (exporter.exported_total, exporter.dropped_total)
    upstream.push(Reply(text="again"))
    await ask(gateway, stream=False, content="nothing in the knowledge")
    await settled(lambda: exporter.dropped_total > before[1])
    assert (exporter.exported_total - before[0], exporter.dropped_total - before[1]) == (0, 1)


def test_an_endpoint_from_the_environment_never_gets_the_files_headers(tmp_path: Path) -> None:
    config = tmp_path / "ctxgate.yaml"
    config.write_text("telemetry:\n  otlp_endpoint: https://api.vendor.example\n"
                      "  headers: {x-vendor-key: os.environ/VENDOR_KEY, X-Scope-OrgID: tenant1}\n")
    environ = {"VENDOR_KEY": "vendor-secret-value"}
    from_file = load_settings(str(config), environ=environ).telemetry
    assert from_file.traces_url == "https://api.vendor.example/v1/traces"
    assert from_file.secrets == ("vendor-secret-value",)  # "tenant1" is too short to be a secret
    local = load_settings(str(config), environ={**environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://agent:4318"})
    assert (local.telemetry.traces_url, dict(local.telemetry.headers)) == ("http://agent:4318/v1/traces", {})
    for switch in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        assert load_settings(str(config), environ={**environ, **switch}).telemetry.traces_url is None
    with pytest.raises(ConfigError, match="http/protobuf"):
        load_settings(str(config), environ={**environ, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="printable"):
        load_settings(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://agent:4318",
                                     "OTEL_EXPORTER_OTLP_HEADERS": "a=b%0D%0AX: 1"})
