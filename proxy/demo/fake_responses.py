"""The Responses API side of the fake provider: a scripted `Reply` as a whole response object, or
as the events OpenAI streams it in (numbered from 0), and the text it echoes when nothing is
scripted."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson

from proxy.demo.replies import Reply, pieces

_ids = itertools.count(1)


def response_object(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The whole response: a reasoning item (with its encrypted content) when scripted, the
    text as a message item, then one item per tool call (`ToolCall.type`: function, custom,
    or local_shell with the arguments as its command)."""
    number = next(_ids)
    output: list[dict[str, Any]] = []
    if reply.reasoning is not None:
        output.append({"id": f"rs_fake_{number}", "type": "reasoning",
                       "summary": [{"type": "summary_text", "text": reply.reasoning}],
                       "encrypted_content": "gAAAA-fake-encrypted-" + reply.reasoning[:16]})
    text = reply.text if reply.text is not None or reply.tool_calls else echo(body)
    if text is not None:
        output.append({"id": f"msg_fake_{number}", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id or f"call_fake_{number}_{index}"
        item: dict[str, Any]
        if call.type == "custom":
            item = {"id": f"ctc_fake_{number}_{index}", "type": "custom_tool_call", "status": "completed",
                    "call_id": call_id, "name": call.name, "input": call.arguments}
        elif call.type == "local_shell":
            item = {"id": f"lsh_fake_{number}_{index}", "type": "local_shell_call", "status": "completed",
                    "call_id": call_id, "action": {"type": "exec", "command": orjson.loads(call.arguments), "env": {}}}
        else:
            item = {"id": f"fc_fake_{number}_{index}", "type": "function_call", "status": "completed",
                    "call_id": call_id, "name": call.name, "arguments": call.arguments}
            if call.namespace:
                item["namespace"] = call.namespace
        output.append(item)
    prompt = len(orjson.dumps([body.get("instructions"), body.get("input")])) // 4
    completion = len(orjson.dumps(output)) // 4
    response: dict[str, Any] = {
        "id": f"resp_fake_{number}", "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": "fake-model", "output": output, "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
    }
    if reply.usage:
        response["usage"] = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": reply.cached_tokens or 0},
                             "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": prompt + completion}
    return response


def response_events(response: dict[str, Any], fragment: int) -> list[dict[str, Any]]:
    """`response` as OpenAI streams it: created, in_progress, each item added, its deltas in
    pieces of `fragment` characters, its done events, and completed; numbered from 0."""
    head = {**response, "status": "in_progress", "output": []}
    head.pop("usage", None)
    events: list[dict[str, Any]] = [{"type": "response.created", "response": head},
                                    {"type": "response.in_progress", "response": head}]
    for index, item in enumerate(response["output"]):
        events += _item_events(index, item, fragment)
    events.append({"type": "response.completed", "response": response})
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _item_events(index: int, item: dict[str, Any], fragment: int) -> list[dict[str, Any]]:
    kind, at = item["type"], {"item_id": item["id"], "output_index": index}
    events: list[dict[str, Any]]
    if kind == "message":
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {**at, "content_index": 0}
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", "content": []}},
                  {"type": "response.content_part.added", **where, "part": part}]
        events += [{"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
                   for piece in pieces(text, fragment)]
        events += [{"type": "response.output_text.done", **where, "text": text, "logprobs": []},
                   {"type": "response.content_part.done", **where, "part": {**part, "text": text}}]
    elif kind == "reasoning":
        text = item["summary"][0]["text"]
        where = {**at, "summary_index": 0}
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "summary": [], "encrypted_content": None}},
                  {"type": "response.reasoning_summary_part.added", **where, "part": {"type": "summary_text", "text": ""}}]
        events += [{"type": "response.reasoning_summary_text.delta", **where, "delta": piece}
                   for piece in pieces(text, fragment)]
        events += [{"type": "response.reasoning_summary_text.done", **where, "text": text},
                   {"type": "response.reasoning_summary_part.done", **where,
                    "part": {"type": "summary_text", "text": text}}]
    elif kind in ("function_call", "custom_tool_call"):
        key, name = ("arguments", "function_call_arguments") if kind == "function_call" else ("input", "custom_tool_call_input")
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", key: ""}}]
        events += [{"type": f"response.{name}.delta", **at, "delta": piece} for piece in pieces(item[key], fragment)]
        events.append({"type": f"response.{name}.done", **at, key: item[key]})
    else:
        events = [{"type": "response.output_item.added", "output_index": index, "item": {**item, "status": "in_progress"}}]
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def echo(body: dict[str, Any]) -> str:
    """The text of the latest user message, echoed."""
    given = body.get("input")
    if isinstance(given, str):
        return f"Echo: {given}"
    for item in reversed(given or []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return f"Echo: {content}"
            return "Echo: " + " ".join(part["text"] for part in content or () if isinstance(part, dict)
                                       and part.get("type") == "input_text" and isinstance(part.get("text"), str))
    return "Hello from the fake upstream."
