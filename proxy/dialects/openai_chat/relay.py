"""A streamed OpenAI chat reply on its way to the client: chunks the gate leaves as they came
are relayed as the provider's own bytes (the client's model name stamped in), the rest are
gated and written anew; what reached the client is assembled for the record."""

from __future__ import annotations

from typing import Any

from capture.writable import writable
from proxy.dialects.openai_chat.assembly import StreamAssembler
from proxy.dialects.model_stamp import ModelStamp
from proxy.dialects.openai_chat.gate import StreamToolGate
from proxy.edge.errors import GatewayError
from proxy.dialects.openai_usage import usage_of
from proxy.edge.wire import SSE_DONE, error_envelope, sse_frame
from proxy.pipeline.dialect import StreamEvent, Usage



class ChatStreamRelay:
    def __init__(self, model: str, gate: StreamToolGate) -> None:
        self.model = model  # the client's name for it, on every chunk
        self.gate = gate
        self.assembler = StreamAssembler()
        self._sent: list[dict[str, Any]] = []  # written, not yet assembled
        self._stamp = ModelStamp(model)

    async def feed(self, events: list[StreamEvent]) -> bytes:
        frames: list[bytes] = []
        for event in events:
            chunk = event.data
            if event.raw is not None and self.gate.passes_intact(chunk):
                frame = self._stamp.restamped(event.raw, chunk.get("model"))
                if frame is not None:
                    frames += (frame, b"\n\n")
                    self._sent.append(chunk)
                    continue
            chunk = writable(chunk)  # written anew below: what orjson cannot write is made writable
            chunk["model"] = self.model
            for out in await self.gate.feed(chunk):
                frames.append(sse_frame(out))
                self._sent.append(out)
        return b"".join(frames)

    async def finish(self) -> bytes:
        settled = await self.gate.finish()
        self._sent += settled
        return b"".join(sse_frame(chunk) for chunk in settled) + SSE_DONE

    def commit(self) -> None:
        for chunk in self._sent:
            self.assembler.add(chunk)
        self._sent.clear()

    def error_frame(self, error: GatewayError) -> bytes:
        # Mid-stream the status is sent: OpenAI's own way is an error event the SDK raises.
        return sse_frame(error_envelope(error.message, error.kind, code=error.code))

    def reply(self) -> Any:
        return writable(self.assembler.message())

    def usage(self) -> Usage:
        return usage_of(self.assembler.usage)
