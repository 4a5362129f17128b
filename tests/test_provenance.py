"""benchmarks/provenance.py: the commit a benchmark's JSON names is the code that ran, also where a copy's git
metadata lags behind its files. A real git repository in a temporary folder."""
import subprocess

import pytest

from benchmarks.provenance import source_commit


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "a.py").write_text("a = 1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_files_as_committed_name_the_commit(repo):
    (repo / "ignored").mkdir()
    (repo / "ignored" / "cache.bin").write_bytes(b"\0" * 10)       # ignored files do not count
    assert source_commit(repo) == git(repo, "rev-parse", "--short", "HEAD")


def test_files_ahead_of_the_metadata_name_their_tree_which_finds_the_commit(repo):
    head = git(repo, "rev-parse", "--short", "HEAD")
    (repo / "a.py").write_text("a = 2\n")
    (repo / "b.py").write_text("b = 1\n")                          # new, untracked: part of what runs
    said = source_commit(repo)
    assert said.startswith("tree ") and said.endswith(f"(HEAD {head})")
    status = [line.strip() for line in git(repo, "status", "--porcelain").splitlines()]
    assert status == ["M a.py", "?? b.py"]                         # the repository's index and HEAD left alone
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")                              # the commit those files became
    assert git(repo, "rev-parse", "HEAD^{tree}").startswith(said.split()[1])
    assert source_commit(repo) == git(repo, "rev-parse", "--short", "HEAD")


def test_without_git_it_says_so(tmp_path):
    assert source_commit(tmp_path / "nowhere") == "?"
