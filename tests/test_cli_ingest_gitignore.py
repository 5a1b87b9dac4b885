"""`ctxgate ingest` of a repository takes what git would track: `.gitignore` files are honoured
(so build output and packaging metadata do not put duplicates in packs) and empty files skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.ingest import walk
from proxy.cli.commands import main


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def taken(root: Path) -> list[str]:
    return sorted(path.relative_to(given).as_posix() for path, given in walk([root]))


def test_ingest_of_a_repository_skips_what_gitignore_ignores_and_empty_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    tree(repo, {
        ".git/HEAD": "ref: refs/heads/main\n",
        ".gitignore": "build/\n*.egg-info\n__pycache__/\n",
        "src/app.py": "print('the one copy')\n",
        "build/lib/app.py": "print('the one copy')\n",
        "app.egg-info/PKG-INFO": "Name: app\n",
        "src/__pycache__/app.txt": "cached\n",
        "src/__init__.py": "",
        "notes/blank.md": "  \n\n\t\n",
        "README.md": "# App\n\nWhat it does.\n",
    })
    assert taken(repo) == ["README.md", "notes/blank.md", "src/__init__.py", "src/app.py"]
    assert main(["ingest", str(repo), "--project", "app", "--db", str(tmp_path / "db")]) == 0
    assert capsys.readouterr().out.strip() == "2 ingested (2 chunks), 0 unchanged, 2 skipped (empty, binary or unreadable)"


def test_gitignore_syntax_as_git_reads_it(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "*.log\n!keep.log\n/top-only.txt\ndocs/**/draft-*.md\ncache/\n",
        "a.log": "x", "keep.log": "x", "sub/b.log": "x",
        "top-only.txt": "x", "sub/top-only.txt": "x",
        "docs/draft-1.md": "x", "docs/a/b/draft-2.md": "x", "docs/final.md": "x",
        "cache/x.txt": "x", "sub/cache/y.txt": "x", "cache.txt": "x",
        "sub/.gitignore": "*.txt\n!top-only.txt\n",  # deeper files override shallower ones
        "sub/keep.md": "x", "sub/notes.txt": "x",
        "sub/inner/.gitignore": "!notes.txt\n", "sub/inner/notes.txt": "x",
    })
    assert taken(tmp_path) == [
        "cache.txt", "docs/final.md", "keep.log", "sub/inner/notes.txt", "sub/keep.md", "sub/top-only.txt",
    ]


def test_nothing_inside_an_ignored_directory_comes_back(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "out/\n!out/keep.md\n", "out/keep.md": "x", "in.md": "x"})
    assert taken(tmp_path) == ["in.md"]


def test_the_gitignore_files_above_count_up_to_the_repository_top(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "*.md\n",  # above the repository: not its business
        "repo/.git/HEAD": "x",
        "repo/.gitignore": "generated/\n/docs/private.md\n",
        "repo/docs/guide.md": "x", "repo/docs/private.md": "x", "repo/docs/generated/api.md": "x",
    })
    assert taken(tmp_path / "repo" / "docs") == ["guide.md"]
    assert taken(tmp_path / "repo") == ["docs/guide.md"]


def test_a_file_named_on_its_own_is_taken_even_if_ignored(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "*.md\n", "a.md": "x"})
    assert [path.name for path, _ in walk([tmp_path / "a.md"])] == ["a.md"]
