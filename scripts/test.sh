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

echo "== pytest"
.venv/bin/pytest "$@"
