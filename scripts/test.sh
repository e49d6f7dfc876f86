#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check CI runs: compose validation, lint, types, tests.
# Extra arguments go to the first (Tansu) pytest pass, e.g. scripts/test.sh -k gateway -x; then the
# integration suite runs on one Apache Kafka node and the cluster scenarios on three
# (FOOTFALL_TEST_MATRIX="tansu" runs the first pass only).
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

echo "== prometheus config and alert rules"
promtool check config deploy/prometheus.yml
promtool check rules deploy/alerts.yml
promtool test rules deploy/alerts_test.yml

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

# The broker matrix (tests/conftest.py --broker). FOOTFALL_TEST_MATRIX picks passes, e.g. "tansu".
matrix=${FOOTFALL_TEST_MATRIX:-tansu kafka kafka3}
for kind in $matrix; do
  case $kind in
    tansu)
      echo "== pytest (embedded broker: Tansu)"
      .venv/bin/pytest "$@" ;;
    kafka)
      echo "== pytest --broker kafka (the integration suite on one Apache Kafka node)"
      .venv/bin/pytest tests -m integration --broker kafka ;;
    kafka3)
      echo "== pytest --broker kafka3 (the cluster fault scenarios on three Apache Kafka nodes)"
      .venv/bin/pytest -m kafka3 --broker kafka3 tests/kafka ;;
    *) echo "FOOTFALL_TEST_MATRIX: unknown broker $kind (tansu, kafka, kafka3)"; exit 2 ;;
  esac
done
