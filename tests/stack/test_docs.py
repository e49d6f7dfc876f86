"""Docs stay true to the code: the README's configuration tables are generated from the settings."""

from __future__ import annotations

import re
from pathlib import Path

from stack.config_reference import BEGIN, END, SETTINGS, markdown

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_matches_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme
    current = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert current == markdown().strip(), "README is stale: run python -m stack.config_reference --write README.md"


def test_every_command_is_documented() -> None:
    text = markdown()
    for command in SETTINGS:
        assert f"#### `{command}`" in text, f"{command}: settings class not importable"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "scripts/setup.sh && .venv/bin/footfall up" in first_block
    assert "bash scripts/test.sh" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def _project_files() -> list[Path]:
    skip = {".git", ".venv", "node_modules", "vendor", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    suffixes = {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".sh", ".js", ".html", ".xml", ".properties"}
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file() and path.suffix in suffixes and not skip.intersection(path.relative_to(ROOT).parts)
    ]


def test_no_reference_to_documents_outside_the_project() -> None:
    """The project stands alone: code, help texts and docs cite only files it contains."""
    this = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _project_files()
        if path != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if "design.md" in line or "../shared" in line
    ]
    assert offenders == [], f"references to documents the project does not have: {offenders}"


def test_section_references_in_code_resolve() -> None:
    """Code never cites a section sign: point at a docs/ file (and its heading) instead."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _project_files()
        if path.suffix == ".py" and path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if "\u00a7" in line
    ]
    assert offenders == [], f"section references in code: {offenders}"


# --- references into docs/ resolve --------------------------------------------------------------
# The forms in use: Markdown links `[text](operations.md#scaling-out)`, bare `docs/x.md#anchor`,
# a quoted heading after a file name `docs/operations.md, "Upgrading"`, and `§N` for a numbered
# heading (`## 3. Scaling out`) of the same document or of the file named just before it.

_HEADING_RE = re.compile(r"^(#{1,6}) +(.+?) *#*$")
_NUMBERED_RE = re.compile(r"^(\d+)\. +")
_LINK_RE = re.compile(r"\]\(([^)\s]+?\.md)(?:#([^)\s]+))?\)")
_BARE_ANCHOR_RE = re.compile(r"(?<![\w(/.-])((?:docs/)?[\w-]+\.md)#([\w-]+)")
_QUOTED_RE = re.compile(r"((?:docs/)?[\w-]+\.md),? +[\"“]([^\"”]+)[\"”]")
_SECTION_RE = re.compile(r"(?:((?:docs/)?[\w-]+\.md) *)?\u00a7 *(\d+|[A-Z][\w ]*\w)")
_DOC_FILE_RE = re.compile(r"(?<![\w/.-])((?:\.\./)?docs/[\w-]+\.md)\b")


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _headings(doc: Path) -> list[str]:
    titles, fenced = [], False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := _HEADING_RE.match(line)):
            titles.append(m[2])
    return titles


def _anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for title in _headings(doc):
        slug = _slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _doc(name: str, source: Path) -> Path:
    """The document a reference in ``source`` names: relative to ``source``, else under docs/."""
    for base in (source.parent, ROOT, ROOT / "docs"):
        if (base / name).is_file():
            return (base / name).resolve()
    return ROOT / "docs" / Path(name).name


def _has_heading(doc: Path, wanted: str) -> bool:
    wanted = wanted.strip().rstrip(".")
    for title in _headings(doc):
        plain = _NUMBERED_RE.sub("", title)
        if plain == wanted or re.match(re.escape(wanted) + r"(?:[ (:,]|$)", plain):
            return True
    return False


def _referencing_files() -> list[Path]:
    extra = [ROOT / "Dockerfile", ROOT / ".ci" / "run"]
    return [p for p in [*_project_files(), *extra] if p.is_file() and p.resolve() != Path(__file__).resolve()]


def _unresolved(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    is_doc = path.suffix == ".md"
    bad = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{number}"
        for m in _LINK_RE.finditer(line):
            if "://" in m[1]:
                continue
            doc = _doc(m[1], path)
            if not doc.is_file():
                bad.append(f"{where}: {m[1]} does not exist")
            elif m[2] and m[2] not in _anchors(doc):
                bad.append(f"{where}: {m[1]}#{m[2]} names no heading")
        for m in _BARE_ANCHOR_RE.finditer(line):
            doc = _doc(m[1], path)
            if not doc.is_file() or m[2] not in _anchors(doc):
                bad.append(f"{where}: {m[1]}#{m[2]} names no heading")
        for m in _QUOTED_RE.finditer(line):
            doc = _doc(m[1], path)
            if not doc.is_file() or not _has_heading(doc, m[2]):
                bad.append(f'{where}: {m[1]}, "{m[2]}" names no heading')
        for m in _SECTION_RE.finditer(line):
            if m[1] is None and not is_doc:
                bad.append(f"{where}: \u00a7{m[2]} without the document it is in")
                continue
            doc = _doc(m[1], path) if m[1] else path
            numbered = {mm[1] for t in _headings(doc) if (mm := _NUMBERED_RE.match(t))} if doc.is_file() else set()
            ok = m[2] in numbered if m[2].isdigit() else doc.is_file() and _has_heading(doc, m[2])
            if not ok:
                bad.append(f"{where}: {m[1] or path.name} \u00a7{m[2]} names no heading")
        for m in _DOC_FILE_RE.finditer(line):
            if not (path.parent / m[1]).is_file() and not (ROOT / m[1].removeprefix("../")).is_file():
                bad.append(f"{where}: {m[1]} does not exist")
    return bad


def test_references_into_the_docs_resolve() -> None:
    """Every `§N`, `x.md#anchor`, `x.md, "Heading"` and docs/ file named in code, help or docs exists."""
    bad = [problem for path in _referencing_files() for problem in _unresolved(path)]
    assert bad == [], "references that do not resolve:\n" + "\n".join(bad)


def test_the_reference_checker_catches_what_does_not_resolve(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text("# Guide\n\n## 1. Start here\n\n## 2. Then this\n\n```\n## 9. not a heading\n```\n")
    source = tmp_path / "code.md"
    source.write_text(
        "[ok](guide.md#2-then-this) [bad](guide.md#3-missing) [gone](nowhere.md)\n"
        'guide.md, "Start here" and guide.md, "Finish"\n'
        "guide.md \u00a71, guide.md \u00a79, guide.md \u00a7 Then, guide.md \u00a7 Nothing\n"
        "guide.md#1-start-here and guide.md#nope\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _unresolved(source)
    finally:
        ROOT = saved
    assert found == [
        "code.md:1: guide.md#3-missing names no heading",
        "code.md:1: nowhere.md does not exist",
        'code.md:2: guide.md, "Finish" names no heading',
        "code.md:3: guide.md \u00a79 names no heading",
        "code.md:3: guide.md \u00a7Nothing names no heading",
        "code.md:4: guide.md#nope names no heading",
    ]


_TABLE_ROW_RE = re.compile(r"^\| (?:\*\*)?`([\w/.-]+)`(?:\*\*)? \|", re.M)
_ROLE_PACKAGES = ("footfall", "gateway", "sink", "bench", "dashboard", "stack", "perf", "perf/references")


def test_the_architecture_module_table_lists_every_package_and_module() -> None:
    """docs/architecture.md has a row for each package and module, and no row for one that is gone."""
    listed = set(_TABLE_ROW_RE.findall((ROOT / "docs" / "architecture.md").read_text()))
    tree = {f"{package}/" for package in _ROLE_PACKAGES}
    tree |= {
        path.relative_to(ROOT).as_posix()
        for package in _ROLE_PACKAGES
        for path in (ROOT / package).glob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(tree - listed) == [], "modules without a row in docs/architecture.md's module table"
    assert sorted(p for p in listed - tree if not (ROOT / p).exists()) == [], "rows for files that do not exist"
