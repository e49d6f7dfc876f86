"""The footfall command: usage, version, unknown commands, and bad flags as one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stack.cli import COMMANDS, main


def test_usage_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("footfall ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["up", "--gateway-port", "70000"],
            "error: --gateway-port (env FOOTFALL_UP_GATEWAY_PORT): expected a whole number <= 65535, got '70000'",
        ),
        (
            ["up", "--profile", "weird"],
            "error: --profile: invalid choice 'weird' (choose from 'original', 'realistic'); see footfall up --help",
        ),
        (
            ["broker", "--port", "-1"],
            "error: --port (env FOOTFALL_BROKER_PORT): expected a whole number >= 0, got '-1'",
        ),
        (["up", "--duration"], "error: --duration: expected one argument; see footfall up --help"),
    ],
)
def test_bad_flags_are_one_line_errors(argv: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "stack.cli", *argv], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message], "one line, not the usage"


def _subcommands() -> list[list[str]]:
    from perf.__main__ import _COMMANDS, _SCRIPTS

    perf = [["perf", name] for name in [*_COMMANDS, *_SCRIPTS]]
    return [[name] for name in COMMANDS if name != "perf"] + [["bench", "verify"], *perf]


@pytest.mark.parametrize("argv", _subcommands(), ids=" ".join)
def test_help_never_shows_an_empty_default(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A flag without a default says what it does instead; --help shows no "default None"/"default "."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "usage:" in text
    assert not re.search(r"default:? (None\b|\]|\)|;)", text), text
