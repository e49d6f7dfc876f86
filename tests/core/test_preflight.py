"""footfall.preflight.describe_pid: how a one-line message names the process in the way."""

from __future__ import annotations

import subprocess
import sys

from footfall.preflight import describe_pid


def test_a_long_command_line_is_cut_between_words() -> None:
    flags = [f"--flag-{i}=abc" for i in range(20)]
    program = "import sys; print('up', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", program, *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # exec'd: its own command line
        named = describe_pid(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert named.startswith(f"pid {proc.pid}: python") and named.endswith(" …"), named
    shown = [word for word in named.removesuffix(" …").split() if word.startswith("--")]
    assert shown and all(word in flags for word in shown), f"a flag cut in half: {named}"
    assert len(named) < 110, named
