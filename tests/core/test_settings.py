"""Settings: flags, env vars, precedence, and one-line errors naming the flag."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import pytest

from footfall.errors import ConfigError, StartupError
from footfall.settings import SettingsParser, run_main


class Demo(msgspec.Struct, frozen=True, kw_only=True):
    brokers: Annotated[str, msgspec.Meta(description="bootstrap", extra={"env": "FOOTFALL_BROKERS"})] = "h:1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="HTTP port")] = 8080
    groups: Annotated[
        tuple[Annotated[str, msgspec.Meta(pattern=r"^[^:]+:[^:]+$")], ...], msgspec.Meta(description="GROUP:TOPIC")
    ] = ()
    access_log: Annotated[bool, msgspec.Meta(description="log each request")] = False
    level: Annotated[Literal["info", "debug"], msgspec.Meta(description="level")] = "info"
    ratio: Annotated[float, msgspec.Meta(gt=0, description="a ratio")] = 1.5
    form: Annotated[str, msgspec.Meta(pattern=r"^[^:]+:.+$", description="KEY:SECRET for something")] = "a:b"
    size: Annotated[str, msgspec.Meta(pattern=r"^\d+GB$", description="a size, e.g. 1GB")] = "1GB"
    api_key: Annotated[str, msgspec.Meta(min_length=8, description="a key")] = "12345678"
    name: Annotated[str, msgspec.Meta(min_length=1, description="a name")] = "n"


@pytest.fixture
def parser() -> SettingsParser:
    return SettingsParser(Demo, prog="demo", description="demo", env_prefix="FOOTFALL_DEMO_")


def test_defaults(parser: SettingsParser) -> None:
    assert parser.parse([], {}) == Demo()


def test_flags(parser: SettingsParser) -> None:
    got = parser.parse(["--port", "81", "--groups", "a:b", "--groups", "c:d", "--access-log", "--ratio", "0.5"], {})
    assert got == Demo(port=81, groups=("a:b", "c:d"), access_log=True, ratio=0.5)


def test_env_vars_and_precedence(parser: SettingsParser) -> None:
    env = {
        "FOOTFALL_DEMO_PORT": "99",
        "FOOTFALL_BROKERS": "k:9",
        "FOOTFALL_DEMO_GROUPS": "x:y, z:w",
        "FOOTFALL_DEMO_ACCESS_LOG": "true",
    }
    assert parser.parse([], env) == Demo(brokers="k:9", port=99, groups=("x:y", "z:w"), access_log=True)
    assert parser.parse(["--port", "7", "--no-access-log"], env).port == 7
    assert parser.parse(["--no-access-log"], env).access_log is False


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "0"], {}, "--port (env FOOTFALL_DEMO_PORT): expected a whole number >= 1, got '0'"),
        (["--port", "abc"], {}, "--port (env FOOTFALL_DEMO_PORT): expected a whole number, got 'abc'"),
        (
            [],
            {"FOOTFALL_DEMO_PORT": "eighty"},
            "--port (env FOOTFALL_DEMO_PORT): expected a whole number, got 'eighty'",
        ),
        ([], {"FOOTFALL_DEMO_RATIO": "-1"}, "--ratio (env FOOTFALL_DEMO_RATIO): expected a number > 0, got '-1'"),
        (["--ratio", "x"], {}, "--ratio (env FOOTFALL_DEMO_RATIO): expected a number, got 'x'"),
        (
            [],
            {"FOOTFALL_DEMO_LEVEL": "loud"},
            "--level (env FOOTFALL_DEMO_LEVEL): expected one of debug, info, got 'loud'",
        ),
        (
            [],
            {"FOOTFALL_DEMO_ACCESS_LOG": "maybe"},
            "--access-log (env FOOTFALL_DEMO_ACCESS_LOG): expected true or false, got 'maybe'",
        ),
        (["--form", "nocolon"], {}, "--form (env FOOTFALL_DEMO_FORM): expected KEY:SECRET, got 'nocolon'"),
        (["--size", "lots"], {}, "--size (env FOOTFALL_DEMO_SIZE): expected a value like 1GB, got 'lots'"),
        (
            ["--api-key", "x"],
            {},
            "--api-key (env FOOTFALL_DEMO_API_KEY): expected at least 8 characters (value not shown: it is a secret)",
        ),
        (["--name", ""], {}, "--name (env FOOTFALL_DEMO_NAME): must not be empty"),
        (
            ["--groups", "a:b", "--groups", "c"],
            {},
            "--groups (env FOOTFALL_DEMO_GROUPS): expected GROUP:TOPIC, got 'c'",
        ),
    ],
)
def test_bad_values_name_flag_and_env(
    parser: SettingsParser, argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parser.parse(argv, env)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_unknown_flag_exits_2(parser: SettingsParser, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser.parse(["--nope"], {})
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --nope; see demo --help\n"


def test_invalid_choice_is_one_line(parser: SettingsParser, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser.parse(["--level", "loud"], {})
    assert info.value.code == 2
    assert (
        capsys.readouterr().err
        == "error: --level: invalid choice 'loud' (choose from 'debug', 'info'); see demo --help\n"
    )


def test_run_main_turns_errors_into_one_line_and_their_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    def refused() -> int:
        raise StartupError("--port: cannot listen on 127.0.0.1:1: address already in use")

    def bad() -> int:
        raise ConfigError("--port: expected a whole number")

    assert run_main(refused) == 1
    assert run_main(bad) == 2
    assert capsys.readouterr().err == (
        "error: --port: cannot listen on 127.0.0.1:1: address already in use\nerror: --port: expected a whole number\n"
    )


def test_help_names_every_env_var(parser: SettingsParser) -> None:
    text = parser.parser.format_help()
    for env in ("FOOTFALL_BROKERS", "FOOTFALL_DEMO_PORT", "FOOTFALL_DEMO_GROUPS", "FOOTFALL_DEMO_ACCESS_LOG"):
        assert env in text


class Needs(msgspec.Struct, frozen=True, kw_only=True):
    record_directory: Annotated[str, msgspec.Meta(description="where")]


def test_missing_required_flag_is_named() -> None:
    parser = SettingsParser(Needs, prog="n", description="n", env_prefix="FOOTFALL_N_")
    with pytest.raises(ConfigError) as info:
        parser.parse([], {})
    assert str(info.value) == "--record-directory (env FOOTFALL_N_RECORD_DIRECTORY) is required"
    assert parser.parse([], {"FOOTFALL_N_RECORD_DIRECTORY": "/x"}).record_directory == "/x"
