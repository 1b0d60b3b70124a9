#!/usr/bin/env bash
# The test suite: lint, types, then pytest against a real PostgreSQL cluster that the
# tests start themselves on free ports. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The local back-end against its own virtualenv's packages.
.venv/bin/mypy --python-executable .venv-openeo/bin/python --strict --ignore-missing-imports \
  --explicit-package-bases local_openeo
exec .venv/bin/pytest "$@"
