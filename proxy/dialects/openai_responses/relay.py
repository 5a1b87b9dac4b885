"""A streamed response on its way to the client: events the gate leaves as they came are relayed
as the provider's own bytes (the client's model name stamped into the events that carry the
response), the rest are gated and written anew. Every event leaves numbered one after the
other: a refused call's events are replaced by more or fewer, and clients check the
`sequence_number`s. What reached the client is assembled for the record."""

from __future__ import annotations

from typing import Any

from capture.writable import writable
from proxy.dialects.model_stamp import ModelStamp
from proxy.dialects.openai_responses.assembly import ResponseAssembler, usage_of
from proxy.dialects.openai_responses.gate import ResponsesStreamGate
from proxy.edge.errors import GatewayError, UpstreamError
from proxy.edge.wire import event_frame
from proxy.pipeline.dialect import StreamEvent, Usage


class ResponsesStreamRelay:
    def __init__(self, model: str, gate: ResponsesStreamGate) -> None:
        self.model = model
        self.gate = gate
        self.assembler = ResponseAssembler()
        self._sent: list[dict[str, Any]] = []
        self._stamp = ModelStamp(model)
        self._next_number: int | None = None  # the sequence_number the next event leaves with
        self._failure: UpstreamError | None = None  # the provider's error event, once one came

    async def feed(self, events: list[StreamEvent]) -> bytes:
        if self._failure is not None:
            raise self._failure
        frames: list[bytes] = []
        for event in events:
            data = event.data
            if data.get("type") == "error":  # the provider's failure mid-stream, in its words
                # Raised at the next feed or at finish: the frames before it still go out.
                self._failure = UpstreamError(
                    f"upstream failed: {data.get('message') or 'the provider reported an error'}",
                    status=502, code=str(data.get("code") or "upstream_unavailable"))
                break
            if event.raw is not None and self.gate.passes_intact(data) and self._bears_next_number(data):
                frame = self._restamped(event.raw, data)
                if frame is not None:
                    if type(number := data.get("sequence_number")) is int:
                        self._next_number = number + 1
                    frames += (frame, b"\n\n")
                    self._sent.append(data)
                    continue
            data = writable(data)
            response = data.get("response")
            if isinstance(response, dict):
                response["model"] = self.model
            for out in await self.gate.feed(data):
                self._number(out)
                frames.append(event_frame(out))
                self._sent.append(out)
        return b"".join(frames)

    async def finish(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        self.gate.finish()
        return b""  # a response stream ends with its final event, already sent

    def commit(self) -> None:
        for event in self._sent:
            self.assembler.add(event)
        self._sent.clear()

    def error_frame(self, error: GatewayError) -> bytes:
        # The Responses API's own way to fail a started stream: an `error` event the SDK raises.
        event = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
        self._number(event)
        return event_frame(event)

    def reply(self) -> Any:
        return writable(self.assembler.response())

    def usage(self) -> Usage:
        return usage_of(self.assembler.usage)

    def _bears_next_number(self, data: dict[str, Any]) -> bool:
        """The event already bears the number it must leave with."""
        number = data.get("sequence_number")
        return type(number) is int and (self._next_number is None or number == self._next_number)

    def _number(self, event: dict[str, Any]) -> None:
        """The next number, counting on from the provider's first (from 0 if it numbers none)."""
        if self._next_number is None:
            number = event.get("sequence_number")
            self._next_number = number if type(number) is int else 0
        event["sequence_number"] = self._next_number
        self._next_number += 1

    def _restamped(self, raw: bytes, data: dict[str, Any]) -> bytes | None:
        response = data.get("response")
        if not isinstance(response, dict):
            return raw
        return self._stamp.restamped(raw, response.get("model"))
