"""Docs stay true to the code: the README's configuration tables are generated from the settings."""

from __future__ import annotations

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
