#!/usr/bin/env bash
# Installs what tilekeeper needs on a fresh Debian/Ubuntu machine, idempotently:
# PostgreSQL 15 + PostGIS 3 (apt) and a virtualenv in .venv with the pinned stack.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
POSTGIS_CONTROL=/usr/share/postgresql/15/extension/postgis.control
if [[ ! -x "$PG_BIN/initdb" || ! -f "$POSTGIS_CONTROL" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "PostgreSQL 15 with PostGIS is missing. Install it as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y postgresql-15 postgresql-15-postgis-3" >&2
    exit 1
  fi
  echo "Installing PostgreSQL 15 + PostGIS 3 (apt)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-15-postgis-3 >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "Creating .venv with $($PYTHON --version)..."
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the pins or the package metadata changed.
stamp=.venv/.tilekeeper-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "Installing tilekeeper and its pinned dependencies into .venv..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$wanted" > "$stamp"
fi
