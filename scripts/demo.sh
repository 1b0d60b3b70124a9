#!/usr/bin/env bash
# The main job: database + API + sample collection, served until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/tilekeeper demo "$@"
