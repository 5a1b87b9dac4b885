"""The client's name for the model, stamped into the bytes of a provider's event in place of
the provider's own name (`gpt-4o-mini-2024-07-18` for an alias `gpt-fast`), so a relayed
frame need not be decoded and written anew just for that."""

from __future__ import annotations

from typing import Any

import orjson

# How `"model"` is written: compactly by most providers, with a space by Python's json.
_KEYS = (b'"model":', b'"model": ')


class ModelStamp:
    def __init__(self, model: str) -> None:
        self.model = model
        self._ours = _KEYS[0] + orjson.dumps(model)
        self._theirs: dict[str, tuple[bytes, ...]] = {}  # a provider's name -> how it may be written

    def restamped(self, raw: bytes, provider_model: Any) -> bytes | None:
        """`raw` with the client's name in place of `provider_model`; None when that cannot be
        done on the bytes (no name, or written unusually, or twice): write the event anew."""
        if provider_model == self.model:
            return raw
        if not isinstance(provider_model, str):
            return None
        keys = self._theirs.get(provider_model)
        if keys is None:
            name = orjson.dumps(provider_model)
            keys = self._theirs[provider_model] = tuple(key + name for key in _KEYS)
        for key in keys:
            if raw.count(key) == 1:
                return raw.replace(key, self._ours)
        return None
