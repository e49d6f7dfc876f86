"""Dependency audit gate for CI: fail on known vulnerabilities that have a fix available.

``python -m tests.security.audit [--allow-unaudited]`` runs ``pip-audit`` (PyPI) on the
current environment (``--skip-editable``: Footfall itself is not on PyPI) with JSON output and:

* exits **1** if any installed package has a known vulnerability with a fixed version
  (listed with the versions to upgrade to);
* exits **0** otherwise, listing vulnerabilities that have no fix yet (nothing to upgrade to);
* exits **3** if packages could not be audited (pip-audit could not reach its vulnerability
  service: it needs ``https://pypi.org/pypi/<name>/<version>/json``, or ``https://api.osv.dev``
  with ``--service osv``), unless ``--allow-unaudited``: an audit that checked nothing must
  not pass silently.

pip-audit alone exits 1 for every known vulnerability, fixed or not; this gate implements the
"with a fix available" policy (docs/security.md, "Dependencies").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FIXABLE = 1
EXIT_UNAUDITED = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi", help="pip-audit vulnerability service")
    parser.add_argument("--allow-unaudited", action="store_true", help="exit 0 even if packages could not be audited")
    parser.add_argument("--timeout", type=int, default=30, help="pip-audit socket timeout (seconds)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        done = subprocess.run(
            [
                sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "-f", "json",
                "-o", str(out), "-s", args.service, "--timeout", str(args.timeout),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if not out.exists():
            print(f"pip-audit failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
            return EXIT_UNAUDITED
        report = json.loads(out.read_text())
    fixable, unfixed, skipped = [], [], []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            line = f"{dep['name']} {dep.get('version', '?')}: {vuln['id']}"
            if vuln.get("fix_versions"):
                fixable.append(f"{line} (fixed in {', '.join(vuln['fix_versions'])})")
            else:
                unfixed.append(f"{line} (no fix yet)")
    audited = len(report.get("dependencies", [])) - len(skipped)
    print(f"pip-audit: {audited} packages audited, {len(skipped)} not audited, "
          f"{len(fixable)} fixable and {len(unfixed)} unfixed vulnerabilities")  # fmt: skip
    for line in fixable + unfixed:
        print(f"  {line}")
    if fixable:
        return EXIT_FIXABLE
    if skipped and not args.allow_unaudited:
        print("not audited (is the vulnerability service reachable?):", file=sys.stderr)
        for line in skipped[:10]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_UNAUDITED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
