#!/usr/bin/env bash
# Set up a development machine: system packages (Debian) and a virtual environment in .venv.
# Idempotent: run it again after pulling. Needs only the package registries (Debian, PyPI, Maven
# Central), and none of them when nothing is missing (each step checks first).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: chromium (dashboard browser tests), wrk (HTTP load reference),
# docker-compose (validates the compose files; no engine needed), haproxy (validates deploy/haproxy.cfg),
# fuse + libfuse2 (the slow-disk fault test mounts a delaying FUSE file system), kcat (sink benchmark reference),
# prometheus (promtool checks deploy/prometheus.yml and the alert rules; `footfall rehearse` runs it),
# openjdk-17-jre-headless + maven (Apache Kafka for `footfall kafka` and the tests' --broker kafka/kafka3).
apt_packages=(chromium wrk docker-compose haproxy fuse libfuse2 kcat prometheus openjdk-17-jre-headless maven)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})) && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

# Python packages: the project editable with every extra, each dependency at its version in
# requirements.lock (regenerate: bash scripts/lock.sh). The checkout itself goes on sys.path
# (a .pth file), so perf/, which is not part of the wheel, runs as `footfall perf` too.
# pip runs only when something is missing or differs: a second run needs no registry.
extras="bench,dashboard,dev"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" >"$site/footfall-checkout.pth"
stamp=.venv/.footfall-setup
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -I - <<'CHECK'
# Exit 1 unless every pin of requirements.lock is installed at its version and footfall (with
# perf beside it) is imported from this checkout. -I: the current directory is not on sys.path.
import importlib.metadata as md, importlib.util, pathlib, sys
here = pathlib.Path("footfall").resolve().parent
for line in pathlib.Path("requirements.lock").read_text().splitlines():
    name, sep, version = line.partition("==")
    if line.startswith("#") or not sep:
        continue
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
for module in ("footfall", "perf"):
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not pathlib.Path(spec.origin).resolve().is_relative_to(here):
        sys.exit(1)
CHECK
then
  echo "setup: installing footfall[$extras] with requirements.lock (pip)"
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[$extras]"
  echo "$want" >"$stamp"
fi
# Apache Kafka's jars from Maven Central (kafka/pom.xml), cached in ~/.m2; the classpath in ~/.cache/footfall
# (resolved again only when the pom changes or a jar is gone).
.venv/bin/python -c "from stack.kafka_jars import kafka_classpath; kafka_classpath()"
echo "setup: done (.venv/bin/footfall --help)"
