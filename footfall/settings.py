"""Settings from CLI flags and environment variables, typed and validated by msgspec.

Each process has one frozen ``msgspec.Struct`` of settings. Its fields define the
command line: field ``record_directory`` is flag ``--record-directory`` and env var
``<PREFIX>RECORD_DIRECTORY``; the field's ``Meta(description=...)`` is the help text,
``Meta(extra={"env": "NAME"})`` overrides the env var name, ``extra={"flag": "--x"}``
the flag. Sequence fields are repeatable flags (and comma-separated env values);
bool fields get ``--x/--no-x``.

Precedence: CLI flag > env var > default. A bad value is one ``ConfigError`` line
that names the flag and its env var.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NoReturn, TypeVar, get_args

import msgspec

from footfall.errors import ConfigError, FootfallError

__all__ = [
    "LOG_LEVELS",
    "LogLevel",
    "SettingsParser",
    "env_name",
    "flag_name",
    "in_words",
    "parse_settings",
    "run_main",
]

S = TypeVar("S", bound=msgspec.Struct)

#: The ``--log-level`` of every role: a settings field annotated with this type.
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
_PATH_RE = re.compile(r" - at `\$\.(\w+)(?:\[(\d+)\])?`")
_MISSING_RE = re.compile(r"missing required field `(\w+)`")
_SEQUENCE_TYPES = (msgspec.inspect.ListType, msgspec.inspect.VarTupleType, msgspec.inspect.SetType)


def _extra(field: msgspec.inspect.Field) -> dict[str, Any]:
    t = field.type
    return dict(t.extra or {}) if isinstance(t, msgspec.inspect.Metadata) else {}


def _description(field: msgspec.inspect.Field) -> str:
    t = field.type
    if isinstance(t, msgspec.inspect.Metadata):
        return str((t.extra_json_schema or {}).get("description", ""))
    return ""


def _base_type(field: msgspec.inspect.Field) -> msgspec.inspect.Type:
    t = field.type
    return t.type if isinstance(t, msgspec.inspect.Metadata) else t


def flag_name(field: msgspec.inspect.Field) -> str:
    """The CLI flag of a settings field."""
    return str(_extra(field).get("flag", "--" + field.name.replace("_", "-")))


def env_name(field: msgspec.inspect.Field, prefix: str) -> str:
    """The environment variable of a settings field."""
    return str(_extra(field).get("env", prefix + field.name.upper()))


def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.inspect.Field, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line naming the flag (not the whole usage), exit 2."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message).replace("invalid choice: ", "invalid choice ")
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


class SettingsParser:
    """An argparse front end for one settings Struct; see the module docstring."""

    def __init__(
        self,
        cls: type[S],
        *,
        prog: str,
        description: str,
        env_prefix: str,
        epilog: str | None = None,
    ) -> None:
        self.cls = cls
        self.env_prefix = env_prefix
        self.parser = _OneLineParser(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self._by_dest: dict[str, msgspec.inspect.Field] = {}
        for field in _fields(cls):
            self._add(field)

    def _add(self, field: msgspec.inspect.Field) -> None:
        base = _base_type(field)
        env = env_name(field, self.env_prefix)
        default = field.default if field.default is not msgspec.NODEFAULT else None
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help_text = _description(field)
        # No "default None" / "default " in --help: an absent default is said by the description.
        unset = field.required or shown is None or shown == ""
        suffix = f"[env {env}" + ("" if unset else f"; default {shown!s}") + "]"
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        if isinstance(base, msgspec.inspect.BoolType):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(base, _SEQUENCE_TYPES):
            kwargs["action"] = "append"
            kwargs["metavar"] = field.name.upper().removesuffix("S") or "VALUE"
            suffix += " (repeatable)"
        elif isinstance(base, msgspec.inspect.LiteralType):
            kwargs["choices"] = [str(v) for v in base.values]
        else:
            kwargs["metavar"] = field.name.upper()
        kwargs["help"] = f"{help_text} {suffix}".strip()
        self.parser.add_argument(flag_name(field), **kwargs)
        self._by_dest[field.name] = field

    def parse(self, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Any:
        """Parse ``argv`` (default ``sys.argv[1:]``) and ``environ`` into the settings Struct.

        Raises:
            ConfigError: a value is invalid; the message names the flag and env var.
            SystemExit: ``--help`` or an unknown flag (argparse's own behaviour).
        """
        environ = os.environ if environ is None else environ
        given = vars(self.parser.parse_args(argv))
        values: dict[str, Any] = {}
        for name, field in self._by_dest.items():
            if name in given:
                values[name] = given[name]
                continue
            env = env_name(field, self.env_prefix)
            raw = environ.get(env)
            if raw is None or raw == "":
                continue
            if isinstance(_base_type(field), _SEQUENCE_TYPES):
                values[name] = [part.strip() for part in raw.split(",") if part.strip()]
            else:
                values[name] = raw
        try:
            return msgspec.convert(values, self.cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(self._explain(str(exc), values)) from exc

    def _explain(self, message: str, values: Mapping[str, Any]) -> str:
        missing = _MISSING_RE.search(message)
        if missing is not None and missing[1] in self._by_dest:
            field = self._by_dest[missing[1]]
            return f"{flag_name(field)} (env {env_name(field, self.env_prefix)}) is required"
        m = _PATH_RE.search(message)
        if m is None or m[1] not in self._by_dest:
            return f"invalid settings: {message}"
        field = self._by_dest[m[1]]
        value = values.get(m[1])
        if m[2] is not None and isinstance(value, (list, tuple)) and int(m[2]) < len(value):
            value = value[int(m[2])]
        what = in_words(message[: m.start()], field, value)
        return f"{flag_name(field)} (env {env_name(field, self.env_prefix)}): {what}"


_TYPE_WORDS: Final = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "array": "a list",
}
_EXPECTED_RE = re.compile(r"^Expected `(\w+)`(?: \| null)?(?:, got `\w+`)?(?: (.*))?$")
_BOUND_RE = re.compile(r"^(>=|<=|>|<) (\S+)$")
_LENGTH_RE = re.compile(r"^of length (>=|<=) (\d+)$")
_SECRET_RE = re.compile(r"auth|key|password|secret|token")
_FORM_RE = re.compile(r"^([A-Z][A-Z0-9_]*(?:[:=@/.][A-Z0-9_]+)+)\b")
_EXAMPLE_RE = re.compile(r"\be\.g\. (\S+)")


def _form(field: msgspec.inspect.Field) -> str:
    """What a pattern-checked value looks like, in words: ``extra={"form": ...}``, else the
    description's leading ``KEY:SECRET``-like token or its ``e.g. X``."""
    given = _extra(field).get("form")
    if given:
        return str(given)
    description = _description(field)
    if m := _FORM_RE.match(description):
        return m[1]
    if m := _EXAMPLE_RE.search(description):
        return "a value like " + m[1].rstrip(".,;)")
    return f"the form described in --help ({description})" if description else "the form described in --help"


def in_words(message: str, field: msgspec.inspect.Field, value: Any) -> str:
    """A msgspec validation message for one field, said in words with the value given.

    ``Expected `int`, got `str``` becomes ``expected a whole number, got 'abc'``; a regex
    mismatch becomes ``expected USER:PASSWORD, got 'nocolon'``. Messages this does not know
    are passed through.
    """
    if value is None:
        got = ""
    elif _SECRET_RE.search(field.name):
        got = " (value not shown: it is a secret)"
    else:
        got = f", got {value!r}"
    if message.startswith("Invalid enum value"):
        base = _base_type(field)
        choices = [str(v) for v in base.values] if isinstance(base, msgspec.inspect.LiteralType) else []
        return f"expected one of {', '.join(choices)}{got}" if choices else message
    m = _EXPECTED_RE.match(message)
    if m is None:
        return message
    kind, rest = m[1], m[2] or ""
    words = _TYPE_WORDS.get(kind, kind)
    if not rest:
        return f"expected {words}{got}"
    if rest.startswith("matching regex"):
        return f"expected {_form(field)}{got}"
    if bound := _BOUND_RE.match(rest):
        op, limit = bound[1], bound[2].removesuffix(".0") if kind == "float" else bound[2]
        return f"expected {words} {op} {limit}{got}"
    if length := _LENGTH_RE.match(rest):
        op, n = length[1], int(length[2])
        if kind == "array":
            most = "at least" if op == ">=" else "at most"
            return "give it at least once" if (op, n) == (">=", 1) else f"give it {most} {n} times"
        if (op, n) == (">=", 1):
            return "must not be empty"
        return f"expected {'at least' if op == '>=' else 'at most'} {n} characters{got}"
    return f"expected {words} {rest}{got}"


def parse_settings(
    cls: type[S],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> S:
    """Build a :class:`SettingsParser` and parse once; see the module docstring."""
    parser = SettingsParser(cls, prog=prog, description=description, env_prefix=env_prefix)
    result: S = parser.parse(argv, environ)
    return result


def run_main(main: Callable[[], int]) -> int:
    """Run a CLI entry point; a :class:`FootfallError` that ends it becomes one line on stderr.

    The exit code is the error's ``exit_code`` (2 for a bad setting, 1 for what the machine
    refused). The traceback follows only when the root logger is at debug
    (``--log-level debug``); Ctrl+C is exit 130.
    """
    try:
        return main()
    except FootfallError as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exc(file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
