#!/usr/bin/env bash
# The everyday loop (about a minute on 2 cores): lint, format, types, then the tests that
# need no PostgreSQL, no browser and no fuzzing (markers set in tests/conftest.py).
# The full suite is scripts/test.sh (the CI's command). Extra arguments go to pytest,
# e.g. `bash scripts/quick-test.sh tests/test_job_rules.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest -q -m "not db and not browser and not fuzz and not slow" "$@"
