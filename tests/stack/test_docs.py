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
