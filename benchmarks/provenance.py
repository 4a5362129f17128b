"""Which code a benchmark ran, for its JSON: ``source_commit()``.

    python benchmarks/provenance.py          # prints it (gpu_session.sh passes it on)

A copy of the working tree can carry git metadata older than its files (the lent GPU hosts did: their JSON named a
HEAD ten commits back), so `git rev-parse HEAD` alone can name code that did not run. Here the working tree's own
git tree id is taken too (every file git does not ignore, through a temporary index; the repository's index and
HEAD are left alone) and compared with HEAD's: equal, the short commit id; different, "tree <id> (HEAD <id>)", whose
commit, where there is one, `git log --format='%h %T' | grep <id>` finds in the repository the copy was made from.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(args: list, root: Path, env: dict | None = None) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60,
                          env=env).stdout.strip()


def working_tree_id(root: Path = ROOT) -> str:
    """The git tree id of the files under `root` as they are now (those git does not ignore)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(["read-tree", "HEAD"], root, env)       # unchanged files are then not hashed again
        _git(["add", "-A", "."], root, env)
        return _git(["write-tree"], root, env)


def source_commit(root: Path = ROOT) -> str:
    """HEAD's short id where the files are HEAD's; else "tree <id> (HEAD <id>)"; "?" without git."""
    try:
        head = _git(["rev-parse", "--short", "HEAD"], root)
        tree = working_tree_id(root)
        if tree == _git(["rev-parse", "HEAD^{tree}"], root):
            return head
        return f"tree {tree[:12]} (HEAD {head})"
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    print(source_commit())
