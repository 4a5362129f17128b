"""The documentation's links hold: every relative link of the README and ``docs/`` names a file that exists and, with
``#anchor``, a heading of it; every ``docs/...md#anchor`` a comment or docstring of the code names (a tuning
constant's measurement, say) is a heading of that page; and the README shows the test command CI runs (``.ci/run``).
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("trellis", "desktop", "installer", "extensions", "benchmarks", "tests")
CODE_SUFFIXES = {".py", ".sh", ".ps1", ".bat", ".js", ".mjs", ".html", ".toml"}
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", ".venv"}
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_DOC = re.compile(r"(?<![\w/.-])((?:docs/)[\w./-]*?\.md)(?:#([A-Za-z0-9_-]+))?")
PLACEHOLDER = re.compile(r"/(PAGE|NAME)\.md$")          # a message's pattern (docs/benchmarks/PAGE.md#heading)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    """Every anchor the headings of markdown file `path` make (a repeated heading gets -1, -2, ...)."""
    seen, out = {}, set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} +(.*?) *#*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def markdown_files(root: Path = ROOT):
    yield root / "README.md"
    yield from sorted((root / "docs").rglob("*.md"))


def link_problems(md: Path, root: Path = ROOT) -> list:
    """'file: link (why)' for each relative link of `md` whose file or heading is missing."""
    bad = []
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for target in MD_LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):                  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        where = f"{md.relative_to(root).as_posix()}: {target}"
        if not dest.exists():
            bad.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{where} (no such heading)")
    return bad


def code_files(root: Path = ROOT):
    for top in CODE_DIRS:
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and p.suffix in CODE_SUFFIXES and not SKIP_DIRS & set(p.relative_to(root).parts) \
                    and p != Path(__file__).resolve():                 # this file's examples name made-up pages
                yield p


def code_reference_problems(path: Path, root: Path = ROOT) -> list:
    """'file: docs/x.md#anchor (why)' for each page or heading that `path`'s text names and that is missing."""
    text = path.read_text(encoding="utf-8", errors="replace")
    text = re.sub(r"-\n[ \t]*(?:#|//|\*)?[ \t]*", "-", text)       # an anchor wrapped at its hyphen in a comment
    bad = []
    for page, anchor in CODE_DOC.findall(text):
        if PLACEHOLDER.search(page):
            continue
        dest = root / page
        where = f"{path.relative_to(root).as_posix()}: {page}{'#' + anchor if anchor else ''}"
        if not dest.is_file():
            bad.append(f"{where} (no such file)")
        elif anchor and anchor not in anchors(dest):
            bad.append(f"{where} (no such heading)")
    return bad


def test_every_relative_link_of_the_docs_resolves():
    bad = [problem for md in markdown_files() for problem in link_problems(md)]
    assert not bad, "\n".join(bad)


def test_every_docs_anchor_the_code_names_is_a_heading():
    bad = [problem for path in code_files() for problem in code_reference_problems(path)]
    assert not bad, "keep a heading for each (or point the comment at where the measurement is now):\n" + "\n".join(bad)


def test_the_checks_catch_missing_pages_and_headings(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## The `to_glb` step, again\n\n## Memory\n\n## Memory\n\n"
                                               "```\n# not a heading\n```\n[ok](#memory-1) [gone](#not-a-heading) "
                                               "[web](https://example.com/x.md#y) [no](other.md)\n")
    assert anchors(tmp_path / "docs" / "page.md") == {"page", "the-to_glb-step-again", "memory", "memory-1"}
    assert [p.split(": ")[1] for p in link_problems(tmp_path / "docs" / "page.md", tmp_path)] == [
        "#not-a-heading (no such heading)", "other.md (no such file)"]
    code = tmp_path / "trellis" / "a.py"
    code.parent.mkdir()
    code.write_text("# measured: docs/page.md#memory; docs/page.md#the-to_glb-step-\n# again. docs/page.md#gone,\n"
                    "# docs/missing.md\n")
    assert [p.split(": ")[1] for p in code_reference_problems(code, tmp_path)] == [
        "docs/page.md#gone (no such heading)", "docs/missing.md (no such file)"]


def test_the_readme_shows_the_test_command_ci_runs():
    """.ci/run runs the README's test command from a clean clone: the README's first code block shows that command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line.strip() for line in ci.splitlines() if line.startswith("./run.sh") and " test" in line)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    assert command in first_block, (command, first_block)
    assert readme.index("```") < readme.index("\n## "), "the two commands come before the first section"
