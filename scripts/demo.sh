#!/usr/bin/env bash
# The main job: the demo campaign end to end (database, API, sample data, two local
# openEO back-ends, a 16-tile run with a retry); `--down` stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/tilekeeper demo "$@"
