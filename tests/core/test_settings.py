"""Settings: flags, env vars, precedence, and one-line errors naming the flag."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import pytest

from footfall.errors import ConfigError
from footfall.settings import SettingsParser


class Demo(msgspec.Struct, frozen=True, kw_only=True):
    brokers: Annotated[str, msgspec.Meta(description="bootstrap", extra={"env": "FOOTFALL_BROKERS"})] = "h:1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="HTTP port")] = 8080
    groups: Annotated[tuple[str, ...], msgspec.Meta(description="GROUP:TOPIC")] = ()
    access_log: Annotated[bool, msgspec.Meta(description="log each request")] = False
    level: Annotated[Literal["info", "debug"], msgspec.Meta(description="level")] = "info"
    ratio: Annotated[float, msgspec.Meta(gt=0, description="a ratio")] = 1.5


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
        (["--port", "0"], {}, "--port (env FOOTFALL_DEMO_PORT): Expected `int` >= 1"),
        ([], {"FOOTFALL_DEMO_PORT": "eighty"}, "--port (env FOOTFALL_DEMO_PORT): Expected `int`, got `str`"),
        ([], {"FOOTFALL_DEMO_RATIO": "-1"}, "--ratio (env FOOTFALL_DEMO_RATIO): Expected `float` > 0.0"),
        ([], {"FOOTFALL_DEMO_LEVEL": "loud"}, "--level (env FOOTFALL_DEMO_LEVEL): Invalid enum value 'loud'"),
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
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


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
