"""Counting tokens with a real tokenizer (tiktoken's cl100k_base), offline.

litellm ships tiktoken's BPE files; pointing tiktoken there means no download and no litellm
import, so the CLI that ingests documents stays light.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _encoding() -> Any:
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
        # Written, not read: tiktoken looks here before it would fetch the file.
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(_encoding().encode_ordinary(text))
