"""Settings, path safety and start-up errors: clear one-line messages, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from footfall.errors import ConfigError, StartupError
from sink.checkpoint import CheckpointStore
from sink.settings import parse_groups, parse_sink_settings
from sink.writer import PartitionWriter
from tests.sink.support import REPO


def test_groups_parse() -> None:
    assert parse_groups(["a:visit", "a:activity", "b:other"]) == {"a": ["visit", "activity"], "b": ["other"]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("visit", "is not GROUP:TOPIC"),
        (":visit", "is not GROUP:TOPIC"),
        ("g:", "is not GROUP:TOPIC"),
        ("g:../etc", "invalid topic name"),
        ("g:/abs", "invalid topic name"),
        ("g:a/b", "invalid topic name"),
        ("g:..", "invalid topic name"),
        ("g:.", "invalid topic name"),
        ("g:visit.retry", "consumes <topic>.retry itself"),
        ("g:visit.dlq", "consumes <topic>.retry itself"),
    ],
)
def test_bad_groups_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--groups") as info:
        parse_groups([spec])
    assert message in str(info.value)


def test_one_topic_in_two_groups_is_refused() -> None:
    with pytest.raises(ConfigError, match="both would write the same files"):
        parse_groups(["a:visit", "b:visit"])


@pytest.mark.parametrize("topic", ["../x", "/etc", "a/b", "..", "", "x" * 250])
def test_unsafe_names_never_become_paths(tmp_path: Path, topic: str) -> None:
    with pytest.raises(ConfigError):
        CheckpointStore(tmp_path).path(topic, 0)
    with pytest.raises(ConfigError):
        PartitionWriter(tmp_path, topic, 0, CheckpointStore(tmp_path))


def test_record_directory_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    parse_sink_settings(["--groups", "g:visit", "--record-directory", str(target)], environ={})
    assert target.is_dir()


def test_record_directory_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StartupError, match=r"--record-directory: .* is not a directory"):
        parse_sink_settings(["--groups", "g:visit", "--record-directory", str(target)], environ={})
    with pytest.raises(StartupError, match=r"--record-directory: cannot write to .*: a part of the path is a file"):
        parse_sink_settings(["--groups", "g:visit", "--record-directory", str(target / "sub")], environ={})


def test_read_only_record_directory(tmp_path: Path) -> None:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount_point)], check=False)
    if result.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root/CAP_SYS_ADMIN)")
    try:
        with pytest.raises(StartupError, match=r"cannot write to .*: it is on a read-only file system"):
            parse_sink_settings(["--groups", "g:visit", "--record-directory", str(mount_point)], environ={})
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_env_vars_and_precedence(tmp_path: Path) -> None:
    env = {
        "FOOTFALL_BROKERS": "h:1",
        "FOOTFALL_SINK_GROUPS": "g:visit,g:activity",
        "FOOTFALL_SINK_RECORD_DIRECTORY": str(tmp_path),
        "FOOTFALL_SINK_CONCURRENT_COUNT": "3",
        "FOOTFALL_SINK_FSYNC": "always",
    }
    s = parse_sink_settings(["--concurrent-count", "4"], environ=env)
    assert (s.brokers, s.concurrent_count, s.fsync) == ("h:1", 4, "always")
    assert s.group_topics() == {"g": ["visit", "activity"]}


def test_max_poll_records(tmp_path: Path) -> None:
    base = ["--groups", "g:visit", "--record-directory", str(tmp_path)]
    assert parse_sink_settings(base, environ={}).max_poll_records == 2000
    assert parse_sink_settings(base, environ={"FOOTFALL_SINK_MAX_POLL_RECORDS": "0"}).max_poll_records == 0
    assert parse_sink_settings([*base, "--max-poll-records", "7"], environ={}).max_poll_records == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-poll-records", "-1"], "--max-poll-records (env FOOTFALL_SINK_MAX_POLL_RECORDS)"),
        (["--concurrent-count", "0"], "--concurrent-count (env FOOTFALL_SINK_CONCURRENT_COUNT)"),
        (["--flush-interval", "abc"], "--flush-interval (env FOOTFALL_SINK_FLUSH_INTERVAL)"),
        (["--brokers", "nohostport"], "--brokers"),
    ],
)
def test_bad_values_name_the_flag(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_settings(["--groups", "g:visit", "--record-directory", str(tmp_path), *argv], environ={})
    assert message in str(info.value)


def test_cli_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sink", "--groups", "g:../x", "--record-directory", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --groups: invalid topic name '../x'")
    assert result.stderr.count("\n") == 1


def test_help_names_every_env_var() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sink", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        timeout=30,
    )
    assert result.returncode == 0
    for env in ("FOOTFALL_BROKERS", "FOOTFALL_SINK_GROUPS", "FOOTFALL_SINK_FSYNC", "FOOTFALL_SINK_METRICS_PORT"):
        assert env in result.stdout
