"""`GET /openapi.json`: the management API and the chat endpoint's errors, as OpenAPI 3.1.

The document is built once, at import, from plain dicts (no I/O), and describes what the
handlers really answer: tests/proxy/test_openapi.py runs schemathesis against the gateway and
fails when a route is missing here or a response does not match its schema. Response objects
allow properties beyond those listed (the contract may grow); request bodies are as strict as
the handlers that read them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from capture.approvals import ApprovalStatus
from capture.knowledge import MemoryStatus
from capture.records import LIST_LIMIT_CAP, LIST_LIMIT_DEFAULT, USAGE_SOURCES
from proxy.edge.wire import json_response

Schema = dict[str, Any]

_TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
_NOT_BLANK = r"\S"
_MAX_COUNT = 2**63 - 1  # the largest integer a store column holds (tokens, milliseconds)
_ERROR_MEANINGS = {
    400: "Bad input: the message says what, `param` names the field.",
    401: "No valid admin key (or read-scoped key, or ctxgate key) where one is configured.",
    403: "The key lacks the scope, project or model; or the action is not allowed at all.",
    404: "No such record, or one of a project the key may not see; or no such route.",
    408: "The request body did not arrive within `server.body_timeout_s`.",
    409: "The record was already decided otherwise.",
    413: "The request body is larger than `server.max_body_mb`.",
    422: "The provider refused the request as unprocessable.",
    429: "The key's requests-per-minute limit is reached (see `Retry-After`), or the provider's.",
    502: "The provider failed or could not be reached.",
    503: "The store is unavailable (see `Retry-After`).",
    504: "The provider timed out.",
    529: "The provider is overloaded (Anthropic's status, passed on): back off and retry.",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **constraints: Any) -> Schema:
    return {"type": [kind, "null"], **constraints}


def _object(properties: dict[str, Schema], *, required: tuple[str, ...] | None = None, **extra: Any) -> Schema:
    """An object schema; by default every listed property is required (a response's shape)."""
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), **extra}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in sorted(set(statuses))}


def _error_response(status: int, meaning: str) -> Schema:
    response = _json(_ref("Error"), meaning)
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response


def _list_of(item: str) -> Schema:
    return _object({"object": {"const": "list"}, "data": {"type": "array", "items": _ref(item)}})


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _operation(summary: str, responses: dict[str, Any], *, tag: str, parameters: list[Schema] | None = None,
               body: Schema | None = None, body_required: bool = True, public: bool = False) -> Schema:
    operation: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    return operation


# A cutoff or record time: the stored form, ISO 8601 (naive taken as UTC), or a bare date.
_MOMENT: Schema = {"anyOf": [
    {"type": "string", "pattern": _TIMESTAMP_PATTERN},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "date"},
]}
_LIMIT = _query("limit", {"type": "integer", "minimum": 0},
                f"How many, newest first: default {LIST_LIMIT_DEFAULT}, more than {LIST_LIMIT_CAP} "
                f"counts as {LIST_LIMIT_CAP}.")
_PROJECT = _query("project", {"type": "string"}, "Only this project.")
_CLIENT = _query("client", {"type": "string"}, "Only this client.")


def _schemas() -> dict[str, Schema]:
    text_or_null = _nullable("string")
    number_or_null = _nullable("number")
    count_or_null = _nullable("number", minimum=0, maximum=_MAX_COUNT)
    integer_count_or_null = _nullable("integer", minimum=0, maximum=_MAX_COUNT)
    usage_source: Schema = {
        "enum": [*USAGE_SOURCES, None],
        "description": "Where `prompt_tokens` and `completion_tokens` came from: `provider` (its reported usage) "
                       "or `counted` (by the gateway, when the provider reported none); null when not known "
                       "(records from before it was kept, counting that failed, or as a client recorded).",
    }
    cache_counts: dict[str, Schema] = {
        "cache_read_tokens": {**integer_count_or_null,
                              "description": "Prompt tokens the provider served from its cache, as it reported."},
        "cache_creation_tokens": {**integer_count_or_null,
                                  "description": "Prompt tokens the provider wrote to its cache, as it reported."},
    }
    agent_ids: dict[str, Schema] = {
        "agent_id": {**text_or_null, "description": "The sub-agent within the session that made the call "
                                                    "(Claude Code's `x-claude-code-agent-id`); null for the main agent."},
        "parent_agent_id": {**text_or_null, "description": "The agent that started that sub-agent."},
    }
    interaction_fields: dict[str, Schema] = {
        "id": {"type": "string", "format": "uuid", "description": "A UUIDv7: ids sort like their records."},
        "created_at": _ref("Timestamp"),
        "project": text_or_null,
        "session_id": text_or_null,
        "client": text_or_null,
        "model": text_or_null,
        "status": {"type": "string", "description": "`ok`, `upstream_error`, `client_disconnected`, `gateway_error`, "
                                                   "or what a client recorded."},
        "wire": {**text_or_null, "description": "The dialect prompt and response are written in (`openai_chat`); "
                                                 "null for records from before it was kept, or as a client recorded."},
        "error": text_or_null,
        "memories_used": {"type": "array", "items": {"type": "string"}},
        "chunks_used": {"type": "array", "items": {"type": "string"}},
        "prompt_tokens": number_or_null,
        "completion_tokens": number_or_null,
        "usage_source": usage_source,
        **cache_counts,
        "latency_ms": number_or_null,
        "ttft_ms": number_or_null,
        **agent_ids,
    }
    heavy_fields: dict[str, Schema] = {
        "prompt": {"type": ["string", "array", "object"],
                   "description": "The messages as actually sent upstream, context included."},
        "params": {"description": "Every other request parameter, as sent."},
        "response": {"description": "The full assistant message (tool calls included), or null."},
        "context_pack": text_or_null,
        "tool_decisions": {"type": "array",
                           "description": "The gateway's are objects; a client-recorded list is kept as given."},
        "context_scores": {"type": ["object", "null"], "additionalProperties": {"type": "number"},
                           "description": "The pack's score of each memory and chunk used, by id."},
    }
    record_input: dict[str, Schema] = {
        "prompt": {"oneOf": [
            {"type": "string", "pattern": _NOT_BLANK},
            {"type": "array", "minItems": 1},
            {"type": "object", "minProperties": 1},
        ], "description": "Text, or the messages it stands for; not blank."},
        "response": {"description": "Text or the assistant message."},
        "params": {},
        "created_at": {**_MOMENT, "description": "Defaults to now; stored as 'YYYY-MM-DD HH:MM:SS' UTC."},
        **{name: text_or_null for name in ("project", "session_id", "client", "model", "status", "error",
                                          "context_pack", "wire", "agent_id", "parent_agent_id")},
        **{name: count_or_null for name in ("prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms")},
        "usage_source": usage_source,
        **cache_counts,
        **{name: _nullable("array", items={"type": ["string", "integer"]}) for name in ("memories_used",
                                                                                       "chunks_used")},
        "tool_decisions": _nullable("array"),
        "context_scores": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
    }
    return {
        "Timestamp": {"type": "string", "pattern": _TIMESTAMP_PATTERN,
                      "description": "'YYYY-MM-DD HH:MM:SS' UTC, the same string in the store and the API."},
        "Error": _object({"error": _object({
            "message": {"type": "string"},
            "type": {"type": "string", "description": "e.g. `invalid_request_error`, `authentication_error`."},
            "param": text_or_null,
            "code": text_or_null,
        })}),
        "InteractionInput": _object(record_input, required=("prompt",), additionalProperties=False),
        "Interaction": _object({**interaction_fields, **heavy_fields}),
        "InteractionSummary": _object({**interaction_fields, "tool_decision_count": {"type": "integer",
                                                                                    "minimum": 0}}),
        "Session": _object({
            "project": {"type": "string", "description": "'' for records without a project."},
            "id": {"type": "string"},
            "client": text_or_null,
            "first_at": _ref("Timestamp"),
            "last_at": _ref("Timestamp"),
            "interaction_count": {"type": "integer", "minimum": 0},
            "prompt_tokens": {"type": "number"},
            "completion_tokens": {"type": "number"},
        }),
        "SessionWithTurns": {"allOf": [_ref("Session"), _object(
            {"turns": {"type": "array", "items": _ref("Interaction"), "description": "Oldest first, at most 500."}}
        )]},
        "MemoryInput": _object({
            "project": {"type": ["string", "null"], "description": "Defaults to the config's default project."},
            "content": {"type": "string", "pattern": _NOT_BLANK},
            "type": {"type": "string", "pattern": _NOT_BLANK, "default": "note"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0},
            "status": {"enum": [s.value for s in MemoryStatus], "default": MemoryStatus.ACTIVE.value},
        }, required=("content",)),
        "Memory": _object({
            "id": {"type": "string"},
            "project": {"type": "string"},
            "type": {"type": "string"},
            "content": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "status": {"enum": [s.value for s in MemoryStatus]},
            "token_count": {"type": "integer", "minimum": 0},
            "created_at": _ref("Timestamp"),
            "updated_at": _ref("Timestamp"),
            "use_count": {"type": "integer", "minimum": 0},
            "last_used_at": {"anyOf": [_ref("Timestamp"), {"type": "null"}]},
        }),
        "IngestInput": _object({
            "project": {"type": ["string", "null"], "description": "Defaults to the config's default project."},
            "documents": {"type": "array", "items": _object({"path": {"type": "string"}, "text": {"type": "string"}})},
        }, required=("documents",)),
        "IngestReport": _object({
            "project": {"type": "string"},
            **{name: {"type": "integer", "minimum": 0} for name in ("ingested", "unchanged", "skipped", "chunks")},
        }),
        "ContextPreview": _object({
            "project": {"type": "string"},
            "query": {"type": "string"},
            "budget_tokens": {"type": "integer"},
            "tokens": {"type": "integer", "minimum": 0},
            "text": text_or_null,
            "memories": {"type": "array", "items": _object(
                {"id": {"type": "string"}, "score": {"type": "number"}, "content": {"type": "string"}})},
            "chunks": {"type": "array", "items": _object({
                "id": {"type": "string"}, "score": {"type": "number"}, "source": text_or_null,
                "content": {"type": "string"}})},
        }),
        "Approval": _object({
            "id": {"type": "string"},
            "created_at": _ref("Timestamp"),
            "expires_at": _ref("Timestamp"),
            "project": {"type": "string"},
            "tool": {"type": "string"},
            "status": {"enum": [s.value for s in ApprovalStatus]},
            **{name: text_or_null for name in ("session_id", "interaction_id", "call_id", "arguments", "rule",
                                               "reason", "decided_by")},
            "decided_at": {"anyOf": [_ref("Timestamp"), {"type": "null"}]},
            "always": {"type": "boolean"},
            "context": {"type": ["object", "null"], "description": "What the person deciding is shown: the client, "
                                                                   "the model, the last turns and the context pack."},
        }),
        "Decision": _object({"always": {"type": "boolean", "default": False,
                                        "description": "Approve: allow this tool for the project from now on."}},
                            required=(), additionalProperties=True),
        "Health": _object({
            "status": {"enum": ["ok", "degraded", "failing"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "store": {"enum": ["ok", "unreachable", "refusing_writes"]},
            "capture_pending": {"type": "integer", "minimum": 0},
            "capture": _object({name: {"type": "integer", "minimum": 0} for name in (
                "pending", "spool_segments", "spool_bytes", "dead_letters", "dropped")}),
        }),
        "Model": _object({"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                          "owned_by": {"type": "string"}}),
        "ModelList": _object({"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}}),
        "AnthropicModel": _object({"type": {"const": "model"}, "id": {"type": "string"},
                                   "display_name": {"type": "string"}, "created_at": {"type": "string"}}),
        "AnthropicModelPage": _object({
            "data": {"type": "array", "items": _ref("AnthropicModel")}, "has_more": {"type": "boolean"},
            "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}}),
        "EmbeddingsRequest": _object({
            "model": {"type": "string", "pattern": _NOT_BLANK},
            "input": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1,
                                                           "items": {"type": "integer"}}}]},
        }, required=("model", "input"), additionalProperties=True),
        "CompletionRequest": _object({
            "model": {"type": "string", "pattern": _NOT_BLANK},
            "prompt": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1,
                                                           "items": {"type": "integer"}}}]},
            "stream": {"type": ["boolean", "null"], "default": False},
        }, required=("model", "prompt"), additionalProperties=True),
        "ResponsesRequest": _object({
            "model": {"type": "string", "pattern": _NOT_BLANK},
            "input": {"oneOf": [{"type": "string"},
                                {"type": "array", "items": _object({}, additionalProperties=True)}]},
            "instructions": {"type": ["string", "null"]},
            "stream": {"type": ["boolean", "null"], "default": False},
            "tools": {"type": "array", "items": _object({"type": {"type": "string"}}, required=("type",),
                                                        additionalProperties=True)},
        }, required=("model", "input"), additionalProperties=True),
        "ChatCompletionRequest": _object({
            "model": {"type": "string", "pattern": _NOT_BLANK},
            "messages": {"type": "array", "minItems": 1, "items": _object(
                {"role": {"type": "string"}}, additionalProperties=True)},
            "stream": {"type": ["boolean", "null"], "default": False},
        }, required=("model", "messages"), additionalProperties=True),
        "MessagesRequest": _object({
            "model": {"type": "string", "pattern": _NOT_BLANK},
            "messages": {"type": "array", "minItems": 1, "items": _object(
                {"role": {"type": "string"}, "content": {"type": ["string", "array"]}}, additionalProperties=True)},
            "system": {"type": ["string", "array"]},
            "stream": {"type": "boolean", "default": False},
        }, required=("model", "messages"), additionalProperties=True),
    }


def _paths() -> dict[str, Schema]:
    # Any store-backed route answers 503 while the store is unavailable; a body can be late (408),
    # too large (413) or not JSON (400).
    reads = (401, 403, 503)
    writes = (400, 401, 408, 413, 503)
    approval_id = _path("approval_id", "The approval's id.")
    decide = {
        verdict: _operation(
            f"{verdict.capitalize()} a held tool call (needs CTXGATE_ADMIN_KEY set: 403 otherwise).",
            {"200": _json(_ref("Approval"), "The approval as decided."), **_errors(*writes, 403, 404, 409)},
            tag="approvals", parameters=[approval_id], body=_ref("Decision"), body_required=False)
        for verdict in ("approve", "deny")
    }
    anthropic_shape = ("With an `anthropic-version` header (the anthropic SDK, Claude Code's model discovery) "
                       "in Anthropic's shape, else in OpenAI's.")
    models = _operation(
        "The declared models (those the key may use). " + anthropic_shape,
        {"200": _json({"oneOf": [_ref("ModelList"), _ref("AnthropicModelPage")]}, "The models."), **_errors(400, 401)},
        tag="openai", parameters=[
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                   "Anthropic's shape only: models per page (default 20)."),
            _query("after_id", {"type": "string"}, "Anthropic's shape only: the page after this model."),
            _query("before_id", {"type": "string"}, "Anthropic's shape only: the page before this model.")])
    model = _operation(
        "One declared model the key may use. " + anthropic_shape,
        {"200": _json({"oneOf": [_ref("Model"), _ref("AnthropicModel")]}, "The model."), **_errors(401, 404)},
        tag="openai", parameters=[_path("model", "The model's name, as declared.")])
    chat = _operation(
        "OpenAI chat completions, proxied: context injected, tool calls checked, recorded. Every other "
        "parameter is passed through; the provider's errors keep their status where it is one of these.",
        {"200": {"description": "The completion, or with `stream: true` server-sent events.",
                 "content": {"application/json": {"schema": {"type": "object"}},
                             "text/event-stream": {"schema": {"type": "string"}}}},
         **_errors(400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504)},
        tag="openai", body=_ref("ChatCompletionRequest"))
    embeddings = _operation(
        "OpenAI embeddings, proxied natively to a route whose provider speaks OpenAI, else through litellm; "
        "no context pack, never streamed; recorded with the input and the usage, not the vectors.",
        {"200": _json({"type": "object"}, "The embeddings, as the provider made them."),
         **_errors(400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504)},
        tag="openai", body=_ref("EmbeddingsRequest"))
    completions = _operation(
        "OpenAI legacy completions, proxied natively to a route whose provider speaks OpenAI, else through "
        "litellm; no context pack (a raw prompt is the client's own format); recorded.",
        {"200": {"description": "The text completion, or with `stream: true` server-sent events.",
                 "content": {"application/json": {"schema": {"type": "object"}},
                             "text/event-stream": {"schema": {"type": "string"}}}},
         **_errors(400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504)},
        tag="openai", body=_ref("CompletionRequest"))
    responses = _operation(
        "OpenAI's Responses API (the openai SDK's `responses.create`, the agents SDK, Codex), proxied natively "
        "to a route whose provider serves it, else translated by litellm to chat: context injected, function, "
        "custom and shell call items checked (a refused one becomes a message item), recorded. "
        "`previous_response_id` is the provider's to resolve on a native route; on a translated one the "
        "gateway rebuilds the earlier turns from its records, or answers 400.",
        {"200": {"description": "The response, or with `stream: true` server-sent events.",
                 "content": {"application/json": {"schema": {"type": "object"}},
                             "text/event-stream": {"schema": {"type": "string"}}}},
         **_errors(400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504)},
        tag="openai", body=_ref("ResponsesRequest"))
    response_id = _path("response_id", "The response's id (`resp_ctxgate_...` for one the gateway made).")
    stored_response = _operation(
        "A stored response the gateway has a record of in the caller's project (not made with `store: false`, "
        "for a model the key may use; else 404): one the gateway made (translating) from its record, any other "
        "asked of the route of the model that made it.",
        {"200": _json({"type": "object"}, "The response."), **_errors(400, 401, 403, 404, 502, 504)},
        tag="openai", parameters=[response_id])
    input_items = _operation(
        "The input items of a stored response, found as `GET /v1/responses/{response_id}` finds it.",
        {"200": _json({"type": "object"}, "A list of input items."), **_errors(400, 401, 403, 404, 502, 504)},
        tag="openai", parameters=[response_id,
                                  _query("order", {"type": "string", "enum": ["asc", "desc"]}, "Default desc."),
                                  _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Default 20."),
                                  _query("after", {"type": "string"}, "The page after this item."),
                                  _query("before", {"type": "string"}, "The provider's: the page before this item.")])
    delete_response = _operation(
        "Deletes a response the provider stores; one the gateway made is its audit record and is not deleted "
        "(400 `response_not_deletable`).",
        {"200": _json({"type": "object"}, "The provider's confirmation."), **_errors(400, 401, 403, 404, 502, 504)},
        tag="openai", parameters=[response_id])
    messages = _operation(
        "Anthropic Messages (the anthropic SDK, Claude Code), proxied natively to a route whose provider "
        "speaks it, or translated by litellm to one whose provider speaks OpenAI chat: context injected, "
        "tool_use blocks checked, recorded. The key comes as `x-api-key` or a bearer token; "
        "`anthropic-version` and `anthropic-beta` reach a native provider as sent. Errors are "
        "Anthropic's `{\"type\": \"error\", \"error\": {\"type\", \"message\"}}`.",
        {"200": {"description": "The message, or with `stream: true` server-sent events.",
                 "content": {"application/json": {"schema": {"type": "object"}},
                             "text/event-stream": {"schema": {"type": "string"}}}},
         **_errors(400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504, 529)},
        tag="anthropic", body=_ref("MessagesRequest"))
    count_tokens = _operation(
        "The input tokens a Messages request would take: counted by the provider on a native route, by "
        "litellm on a translated one. The caller is checked as for a call; nothing is recorded. Errors are "
        "Anthropic's.",
        {"200": _json(_object({"input_tokens": {"type": "integer", "minimum": 0}}, additionalProperties=True),
                      "The count."),
         **_errors(400, 401, 403, 404, 408, 413, 429, 502, 504, 529)},
        tag="anthropic", body=_ref("MessagesRequest"))
    health_responses = {"200": _json(_ref("Health"), "Taking calls: `ok`, or `degraded` (records wait in the "
                                                     "spool)."),
                        "503": _json(_ref("Health"), "`failing`: records held in memory only, or stopping.")}
    return {
        "/openapi.json": {"get": _operation("This document.", {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
                                            tag="operations", public=True)},
        "/interactions": {
            "post": _operation("Record one interaction (stored before the answer).",
                               {"201": _json(_ref("Interaction"), "The stored record."),
                                **_errors(*writes)},
                               tag="interactions", body=_ref("InteractionInput")),
            "get": _operation("Interaction summaries (no prompt, params, response or pack), newest first.",
                              {"200": _json(_list_of("InteractionSummary"), "The summaries."),
                               **_errors(400, *reads)},
                              tag="interactions", parameters=[
                                  _PROJECT, _query("session_id", {"type": "string"}, "Only this session."), _CLIENT,
                                  _query("since", _MOMENT, "Only records at or after this time (inclusive)."),
                                  _query("status", {"type": "string"}, "Only records of this status."),
                                  _query("model", {"type": "string"}, "Only records of this model (as the client "
                                                                      "named it)."),
                                  _query("before", {"type": "string"}, "The next page: records listed after this "
                                                                       "interaction id."),
                                  _LIMIT]),
        },
        "/interactions/{interaction_id}": {"get": _operation(
            "The full record, with the response and the context pack.",
            {"200": _json(_ref("Interaction"), "The record."), **_errors(*reads, 404)},
            tag="interactions", parameters=[_path("interaction_id", "The interaction's id.")])},
        "/sessions": {"get": _operation(
            "Sessions, most recently active first.",
            {"200": _json(_list_of("Session"), "The sessions."), **_errors(400, *reads)},
            tag="sessions", parameters=[_PROJECT, _CLIENT, _LIMIT])},
        "/sessions/{session_id}": {"get": _operation(
            "A session and its turns, oldest first.",
            {"200": _json(_ref("SessionWithTurns"), "The session."), **_errors(400, *reads, 404)},
            tag="sessions", parameters=[_path("session_id", "The session's id."),
                                        _query("project", {"type": "string"},
                                               "Which project's session, when two share the id (else 400).")])},
        "/memories": {
            "post": _operation("Add a memory.", {"201": _json(_ref("Memory"), "The memory."),
                                                 **_errors(*writes)},
                               tag="knowledge", body=_ref("MemoryInput")),
            "get": _operation("Memories (at most 500).", {"200": _json(_list_of("Memory"), "The memories."),
                                                         **_errors(*reads)},
                              tag="knowledge", parameters=[_PROJECT]),
        },
        "/memories/{memory_id}": {"delete": _operation(
            "Remove a memory.", {"204": {"description": "Removed."}, **_errors(401, 404, 503)},
            tag="knowledge", parameters=[_path("memory_id", "The memory's id.")])},
        "/ingest": {"post": _operation(
            "Chunk and store documents; unchanged ones are left alone, a changed one is replaced.",
            {"200": _json(_ref("IngestReport"), "The counts."), **_errors(*writes)},
            tag="knowledge", body=_ref("IngestInput"))},
        "/context": {"get": _operation(
            "The context pack that would be injected for a question, with the scores.",
            {"200": _json(_ref("ContextPreview"), "The pack."), **_errors(*reads, 404)},
            tag="knowledge", parameters=[_PROJECT, _query("q", {"type": "string"}, "The question.")])},
        "/approvals": {"get": _operation(
            "Tool calls held for a person, and how they were decided.",
            {"200": _json(_list_of("Approval"), "The approvals."), **_errors(400, *reads)},
            tag="approvals", parameters=[_query("status", {"enum": [s.value for s in ApprovalStatus]},
                                                "Only approvals in this state.")])},
        "/approvals/{approval_id}": {"get": _operation(
            "One approval.", {"200": _json(_ref("Approval"), "The approval."), **_errors(*reads, 404)},
            tag="approvals", parameters=[approval_id])},
        "/approvals/{approval_id}/approve": {"post": decide["approve"]},
        "/approvals/{approval_id}/deny": {"post": decide["deny"]},
        "/healthz": {"get": _operation("Readiness: can it take calls and record them.", health_responses,
                                       tag="operations", public=True)},
        "/readyz": {"get": _operation("The same as /healthz.", health_responses, tag="operations", public=True)},
        "/livez": {"get": _operation("Liveness: the process answers.",
                                     {"200": _json(_object({"status": {"const": "alive"}}), "Alive.")},
                                     tag="operations", public=True)},
        "/metrics": {"get": _operation(
            "Prometheus metrics. Open unless an admin key, virtual keys or `metrics.token` are configured "
            "(and `metrics.public` is not set); then the admin key or the metrics token.",
            {"200": {"description": "Prometheus text.", "content": {"text/plain": {"schema": {"type": "string"}}}},
             **_errors(401)},
            tag="operations")},
        "/v1/models": {"get": models},
        "/p/{project}/v1/models": {"get": {**models, "parameters": [_path("project", "The project."),
                                                                    *models["parameters"]]}},
        "/v1/models/{model}": {"get": model},
        "/p/{project}/v1/models/{model}": {"get": {**model, "parameters": [_path("project", "The project."),
                                                                           *model["parameters"]]}},
        "/v1/chat/completions": {"post": chat},
        "/p/{project}/v1/chat/completions": {"post": {**chat, "parameters": [_path("project", "The project.")]}},
        "/v1/completions": {"post": completions},
        "/p/{project}/v1/completions": {"post": {**completions, "parameters": [_path("project", "The project.")]}},
        "/v1/responses": {"post": responses},
        "/v1/responses/{response_id}": {"get": stored_response, "delete": delete_response},
        "/p/{project}/v1/responses/{response_id}": {
            "get": {**stored_response, "parameters": [_path("project", "The project."), response_id]},
            "delete": {**delete_response, "parameters": [_path("project", "The project."), response_id]}},
        "/v1/responses/{response_id}/input_items": {"get": input_items},
        "/p/{project}/v1/responses/{response_id}/input_items": {"get": {
            **input_items, "parameters": [_path("project", "The project."), *input_items["parameters"]]}},
        "/p/{project}/v1/responses": {"post": {**responses, "parameters": [_path("project", "The project.")]}},
        "/v1/embeddings": {"post": embeddings},
        "/p/{project}/v1/embeddings": {"post": {**embeddings, "parameters": [_path("project", "The project.")]}},
        "/v1/messages": {"post": messages},
        "/p/{project}/v1/messages": {"post": {**messages, "parameters": [_path("project", "The project.")]}},
        "/v1/messages/count_tokens": {"post": count_tokens},
        "/p/{project}/v1/messages/count_tokens": {"post": {**count_tokens,
                                                           "parameters": [_path("project", "The project.")]}},
    }


def build_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ctxgate",
            "version": "0.1.0",
            "description": "The management API of the ctxgate LLM gateway (interactions, sessions, memories, "
                           "ingest, context, approvals, health), its OpenAI-compatible chat endpoint and its "
                           "Anthropic-compatible messages endpoints. Every error but the messages endpoints' is "
                           "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
        },
        "security": [{"bearerAuth": []}, {}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The admin key (CTXGATE_ADMIN_KEY), or a ctxgate key: reads take one with the "
                               "`read` scope (it sees its own projects), writes the admin key. With neither "
                               "configured the gateway runs open.",
            }},
            "schemas": _schemas(),
            "responses": {f"Error{status}": _error_response(status, meaning)
                          for status, meaning in _ERROR_MEANINGS.items()},
        },
    }


DOCUMENT = build_document()


async def spec(_: web.Request) -> web.Response:
    return json_response(DOCUMENT)
