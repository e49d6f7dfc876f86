"""footfall.preflight.describe_pid: how a one-line message names the process in the way."""

from __future__ import annotations

import subprocess
import sys

from footfall.preflight import describe_pid


def test_a_long_command_line_is_cut_between_words() -> None:
    flags = [f"--flag-number-{i}=value" for i in range(12)]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", *flags], stdin=subprocess.PIPE)
    try:
        named = describe_pid(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert named.startswith(f"pid {proc.pid}: python") and named.endswith(" …"), named
    shown = [word for word in named.removesuffix(" …").split() if word.startswith("--")]
    assert shown and all(word in flags for word in shown), f"a flag cut in half: {named}"
    assert len(named) < 110, named
