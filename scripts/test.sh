#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check CI runs: compose validation, lint, types, tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k gateway -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== compose files"
if command -v docker-compose >/dev/null; then
  docker-compose -f kafka/docker-compose.yml config -q
  docker-compose -f docker-compose.yml config -q
else
  echo "docker-compose not installed: compose validation skipped"
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== mypy"
.venv/bin/mypy

echo "== dependency audit (pip-audit)"
# Fails on a known vulnerability with a fix available. Where the vulnerability service
# (PyPI's JSON API or OSV) cannot be reached, nothing was audited: say so loudly, don't fail.
audit=0; .venv/bin/python -m tests.security.audit || audit=$?
case $audit in
  0) ;;
  3) echo "WARNING: dependency audit could not reach its vulnerability service; nothing was audited" ;;
  *) echo "dependency audit failed (exit $audit)"; exit 1 ;;
esac

echo "== pytest"
.venv/bin/pytest "$@"
