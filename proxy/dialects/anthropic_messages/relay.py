"""A streamed Anthropic reply on its way to the client: events the gate leaves as they came are
relayed as the provider's own bytes (the client's model name stamped into `message_start`),
the rest are gated and written anew; what reached the client is assembled for the record."""

from __future__ import annotations

from typing import Any

from capture.writable import writable
from proxy.dialects.anthropic_messages.assembly import MessageAssembler, usage_of
from proxy.dialects.anthropic_messages.gate import MessagesStreamGate
from proxy.dialects.model_stamp import ModelStamp
from proxy.edge.errors import GatewayError
from proxy.edge.wire import event_frame
from proxy.pipeline.dialect import StreamEvent, Usage


class MessagesStreamRelay:
    def __init__(self, model: str, gate: MessagesStreamGate, error_body: Any) -> None:
        self.model = model
        self.gate = gate
        self.assembler = MessageAssembler()
        self._error_body = error_body
        self._sent: list[dict[str, Any]] = []
        self._stamp = ModelStamp(model)

    async def feed(self, events: list[StreamEvent]) -> bytes:
        frames: list[bytes] = []
        for event in events:
            data = event.data
            if event.raw is not None and self.gate.passes_intact(data):
                frame: bytes | None = event.raw
                if data.get("type") == "message_start":  # the only event that names the model
                    message = data.get("message")
                    frame = self._stamp.restamped(event.raw, message.get("model") if isinstance(message, dict) else None)
                if frame is not None:
                    frames += (frame, b"\n\n")
                    self._sent.append(data)
                    continue
            data = writable(data)
            if data.get("type") == "message_start" and isinstance(data.get("message"), dict):
                data["message"]["model"] = self.model
            for out in await self.gate.feed(data):
                frames.append(event_frame(out))
                self._sent.append(out)
        return b"".join(frames)

    async def finish(self) -> bytes:
        self.gate.finish()
        return b""  # an Anthropic stream ends with message_stop, already sent

    def commit(self) -> None:
        for event in self._sent:
            self.assembler.add(event)
        self._sent.clear()

    def error_frame(self, error: GatewayError) -> bytes:
        return event_frame(self._error_body(error))

    def reply(self) -> Any:
        return writable(self.assembler.message())

    def usage(self) -> Usage:
        return usage_of(self.assembler.usage)
