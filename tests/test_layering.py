"""Dependencies point one way, and store-only commands never pay for litellm."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_capture_imports_neither_proxy_nor_aiohttp_nor_litellm() -> None:
    loaded = modules_after("import capture.records, capture.store, capture.backends, capture.sqlite, capture.writer, "
                           "capture.spool, capture.writable, capture.migrations")
    assert not {m for m in loaded if m.split(".")[0] in {"proxy", "aiohttp", "litellm", "policy"}}


def test_policy_imports_neither_proxy_nor_capture_nor_aiohttp() -> None:
    loaded = modules_after("import policy.rules, policy.evaluate")
    assert not {m for m in loaded if m.split(".")[0] in {"proxy", "capture", "aiohttp", "litellm"}}


def test_store_reading_cli_commands_do_not_import_litellm(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    # A store that exists, so the command reads it (a missing one is refused before any reading).
    modules_after(f"import asyncio\nfrom capture.sqlite import SQLiteStore\ns = SQLiteStore({str(db)!r})\n"
                  "asyncio.run(s.open())\nasyncio.run(s.close())")
    loaded = modules_after(f"from proxy.cli.commands import main\nassert main(['interactions', 'list', '--db', {str(db)!r}]) == 0")
    assert "proxy.cli.commands" in loaded and "capture.sqlite" in loaded
    assert "litellm" not in loaded


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_upstream_room_imports_litellm_and_not_its_native_transport() -> None:
    root = Path(__file__).resolve().parent.parent
    importers = sorted(
        str(path.relative_to(root))
        for package in ("proxy", "capture", "policy")
        for path in (root / package).rglob("*.py")
        if "litellm" in imported_roots(path)
    )
    assert "proxy/upstream/translate.py" in importers
    assert all(path.startswith("proxy/upstream/") for path in importers), importers
    assert not {"proxy/upstream/native.py", "proxy/upstream/seam.py"} & set(importers)


def test_no_two_modules_import_each_other_even_lazily() -> None:
    root = Path(__file__).resolve().parent.parent
    imports: dict[str, set[str]] = {}
    for package in ("proxy", "capture", "policy"):
        for path in (root / package).rglob("*.py"):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            imports[module] = {
                node.module for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                and node.module.split(".")[0] in ("proxy", "capture", "policy")
            }

    def reaches(start: str, goal: str) -> bool:
        todo, seen = [start], {start}
        while todo:
            for step in imports.get(todo.pop(), ()):
                if step == goal:
                    return True
                if step not in seen:
                    seen.add(step)
                    todo.append(step)
        return False

    assert [m for m in imports if reaches(m, m)] == []


def test_dialects_import_no_http_client() -> None:
    root = Path(__file__).resolve().parent.parent
    found = {str(path.relative_to(root)): imported_roots(path) & {"aiohttp", "httpx", "litellm", "requests"}
             for path in (root / "proxy" / "dialects").rglob("*.py")}
    assert found and all(not clients for clients in found.values()), found
