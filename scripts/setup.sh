#!/usr/bin/env bash
# Set up a development machine: system packages (Debian) and a virtual environment in .venv.
# Idempotent: run it again after pulling. Needs only the package registries (Debian, PyPI).
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
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# Apache Kafka's jars from Maven Central (kafka/pom.xml), cached in ~/.m2; the classpath in ~/.cache/footfall.
.venv/bin/python -c "from stack.kafka import kafka_classpath; kafka_classpath()"
echo "setup: done (.venv/bin/footfall --help)"
