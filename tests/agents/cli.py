"""Running an agent CLI under test: in its own directory and environment, killed if it
outlives its time or the caller stops waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path


async def run_cli(args: Sequence[str], cwd: Path, env: Mapping[str, str], timeout_s: float) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of `args`; an AssertionError naming it if it runs past `timeout_s`."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"{Path(args[0]).name} {args[1]} did not finish within {timeout_s} s") from None
    finally:
        if process.returncode is None:  # timed out, or cancelled by a test that failed first
            process.kill()
            await process.wait()
    return process.returncode or 0, stdout, stderr
