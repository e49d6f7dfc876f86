"""Packaging: the lock file pins everything, bounds exist, extras are honest, the wheel holds the roles only."""

from __future__ import annotations

import functools
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stack import cli

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ROLE_PACKAGES = {"footfall", "gateway", "sink", "bench", "dashboard", "stack"}
#: Installed by venv/pip themselves: a lock need not pin them (pip freeze leaves them out).
_BOOTSTRAP = {"pip", "setuptools", "wheel"}


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"requirements.lock:{number}: not NAME==VERSION: {line!r}"
        name = canonicalize_name(m[1])
        assert name not in pins, f"requirements.lock:{number}: {name} pinned twice"
        pins[name] = m[2]
    return pins


def _needed() -> dict[str, str]:
    """Every distribution footfall[all extras] needs, walked through the installed metadata: name -> why."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    declared = [*project["dependencies"], *(r for group in extras.values() for r in group)]
    todo = [(Requirement(r), "pyproject.toml") for r in declared]
    needed: dict[str, str] = {}
    while todo:
        req, via = todo.pop()
        name = canonicalize_name(req.name)
        if name == "footfall" or name in needed:
            continue
        needed[name] = via
        try:
            requires = md.distribution(req.name).requires or []
        except md.PackageNotFoundError:
            continue  # reported by the test as not installed
        for raw in requires:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append((sub, name))
    return needed


def test_the_lock_pins_every_distribution_the_project_needs() -> None:
    pins = _lock()
    unpinned = [
        f"{name} (needed by {via})"
        for name, via in sorted(_needed().items())
        if name not in pins | dict.fromkeys(_BOOTSTRAP)
    ]
    assert unpinned == [], (
        "not in requirements.lock (it would float): add NAME==VERSION or run bash scripts/lock.sh: "
        + ", ".join(unpinned)
    )


def test_the_environment_is_what_the_lock_says() -> None:
    """What the tests run on is what CI and the image install (scripts/setup.sh installs from the lock)."""
    differ = []
    for name, version in _lock().items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            differ.append(f"{name}: lock {version}, installed {installed}")
    assert differ == [], "run bash scripts/setup.sh (or fix requirements.lock): " + "; ".join(differ)


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    project = PYPROJECT["project"]
    runtime = [*project["dependencies"], *project["optional-dependencies"]["bench"]]
    runtime += project["optional-dependencies"]["dashboard"]
    unbounded = [r for r in runtime if not any(s.operator in {"<", "<=", "==", "~="} for s in Requirement(r).specifier)]
    assert unbounded == []


def test_packages_used_through_their_internals_are_held_to_one_release_line() -> None:
    # gateway/watchdog.py drives Sanic's worker manager, gateway/sender.py subclasses aiokafka's
    # Sender and reaches into its accumulator, sink/consumer.py reads aiokafka's fetcher task.
    specs = {
        canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in PYPROJECT["project"]["dependencies"]
    }
    assert "26.0" not in specs["sanic"] and "25.12.1" in specs["sanic"]
    assert "0.15.0" not in specs["aiokafka"] and "0.14.0" in specs["aiokafka"]


def test_the_cli_knows_which_modules_each_extra_brings() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    providers = md.packages_distributions()
    for extra, modules in cli.EXTRAS.items():
        declared = {canonicalize_name(Requirement(r).name) for r in extras[extra]}
        for module in modules:
            assert {canonicalize_name(d) for d in providers.get(module, [])} & declared, (
                f"{module} is not provided by the '{extra}' extra {sorted(declared)}"
            )


def test_a_command_without_its_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.EXTRAS, "dashboard", ("no_such_module_for_the_test",))
    assert cli.main(["up", "--help"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "footfall up needs the extra 'dashboard'" in err
    assert "pip install 'footfall[dashboard]'" in err


@pytest.mark.parametrize(("command", "needed"), [("perf", "perf/__init__.py"), ("rehearse", "docker-compose.yml")])
def test_a_checkout_only_command_outside_a_checkout_is_one_line(
    command: str, needed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli._not_installed(command) is None  # this checkout has it
    monkeypatch.setattr(cli, "_not_installed", functools.partial(cli._not_installed, root=tmp_path))  # an install
    assert cli.main([command, "--help"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"footfall {command} runs from a source checkout ({needed} is not part of the package)" in err


def test_the_image_installs_py_spy_at_its_locked_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"py-spy=={_lock()['py-spy']}" in dockerfile
    assert "-c requirements.lock" in dockerfile
    assert "-c requirements.lock" in (ROOT / "scripts" / "setup.sh").read_text()


def test_the_wheel_holds_the_roles_and_their_data_but_not_perf_or_tests(tmp_path: Path) -> None:
    # Built from what the image's build context holds (.dockerignore), so stray files of the
    # checkout (build/, caches) cannot hide a missing package.
    source = tmp_path / "src"
    source.mkdir()
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, source / name)
    for package in ROLE_PACKAGES | {"perf", "tests"}:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = out.glob("footfall-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == ROLE_PACKAGES
    for package in ROLE_PACKAGES:
        assert f"{package}/py.typed" in names
        assert f"{package}/__init__.py" in names
    assert "dashboard/static/index.html" in names
    assert any(n.startswith("dashboard/static/vendor/") for n in names)
    meta = zipfile.ZipFile(wheel)
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "footfall = stack.cli:main" in meta.read(entry_points).decode()
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = meta.read(metadata).decode()
    assert "Provides-Extra: bench" in text and "Provides-Extra: dashboard" in text
    assert re.search(r"^Requires-Dist: duckdb<3,>=1\.1; extra == \"dashboard\"$", text, flags=re.M)


def test_no_other_installed_distribution_claims_footfalls_top_level_names() -> None:
    """The roles are top-level packages (docs/decisions.md, D177): no dependency may ship one of these names."""
    providers = md.packages_distributions()
    claimed = {
        name: sorted(d for d in providers.get(name, []) if canonicalize_name(d) != "footfall")
        for name in ROLE_PACKAGES | {"perf", "tests"}
    }
    assert {name: dists for name, dists in claimed.items() if dists} == {}


def test_a_second_setup_run_finds_nothing_to_install() -> None:
    """scripts/setup.sh skips pip (so needs no registry) when its check passes: it must on the env it made."""
    script = (ROOT / "scripts" / "setup.sh").read_text()
    check = script.split("<<'CHECK'\n", 1)[1].split("\nCHECK\n", 1)[0]
    result = subprocess.run(
        [sys.executable, "-I", "-"], input=check, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
