"""The LiteLLM proxy baseline: its own venv, its config, and the command that serves it.

    python -m bench.litellm_proxy      # make (or check) bench/.venv-litellm-proxy

LiteLLM proxy needs `litellm[proxy]` (fastapi, uvicorn, ...). It is installed in a venv of its
own, never in the product's: there it would change what the product's litellm can import. The
venv holds the same litellm version as the product's venv, pinned, so the two compare one
litellm. It is made again whenever the product's litellm version changes.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-litellm-proxy"
PYTHON = VENV / "bin" / "python"
LITELLM = VENV / "bin" / "litellm"
MASTER_KEY = "sk-bench-client"  # the key the load generator sends to every target
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: a call meant for the internet fails at once


def product_litellm_version() -> str:
    """The litellm of the interpreter running the bench, which is the product's venv."""
    return importlib.metadata.version("litellm")


def installed_version() -> str | None:
    """The litellm version in the proxy venv, or None when the venv or its proxy extra is missing."""
    if not LITELLM.exists():
        return None
    probe = ("import importlib.metadata as m, fastapi, uvicorn; print(m.version('litellm'))")
    done = subprocess.run([str(PYTHON), "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv() -> str | None:
    """Make the venv if it is missing or holds another litellm. None when ready, else why not."""
    wanted = product_litellm_version()
    have = installed_version()
    if have == wanted:
        return None
    print(f"making {VENV} with litellm[proxy]=={wanted} (had: {have or 'nothing'})", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"litellm[proxy]=={wanted}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = [line for line in (done.stderr or done.stdout).splitlines() if not line.startswith("WARNING")]
            return f"`{' '.join(step)}` failed ({done.returncode}): " + " | ".join(tail[-3:])
    have = installed_version()
    return None if have == wanted else f"the venv holds litellm {have}, not {wanted}"


def config_text(model: str, upstream_base: str) -> str:
    """A model_list routing `model` to the fake upstream as an OpenAI-compatible provider, and
    nothing that needs a database or the network: no DB (so no spend logs, no key table), the
    master key set because the proxy refuses to start without one."""
    return (
        f"model_list:\n  - model_name: {model}\n    litellm_params:\n      model: openai/fake-model\n"
        f"      api_base: {upstream_base}\n      api_key: sk-bench\n"
        f"general_settings:\n  master_key: {MASTER_KEY}\n  disable_spend_logs: true\n"
    )


def command(config: Path, port: int) -> list[str]:
    return [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]


def environment(base: Mapping[str, str]) -> dict[str, str]:
    """Offline: the local cost map, every HTTP proxy variable at a closed port (a fetch that
    would leave the host fails at once, and shows in the log), no database URL or master key
    from the caller's environment."""
    env = {k: v for k, v in base.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST")}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    return env


def main() -> None:
    why_not = ensure_venv()
    if why_not:
        print(f"LiteLLM proxy venv not ready, its rows will be skipped: {why_not}")
    else:
        print(f"{VENV.relative_to(Path.cwd()) if VENV.is_relative_to(Path.cwd()) else VENV}: "
              f"litellm[proxy]=={product_litellm_version()}")


if __name__ == "__main__":
    main()
