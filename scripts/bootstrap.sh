#!/usr/bin/env bash
# Installs what tilekeeper needs on a fresh Debian/Ubuntu machine, idempotently:
# PostgreSQL 15 + PostGIS 3 (apt), a virtualenv in .venv with the pinned stack, and one
# in .venv-openeo for the local openEO back-end (see local_openeo/__init__.py for why
# it is a virtualenv of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
POSTGIS_CONTROL=/usr/share/postgresql/15/extension/postgis.control
# Debian packages: PostgreSQL 15 + PostGIS 3; npm (STAC Browser's build); Chromium (the
# browser tests drive it with playwright); gdal-bin (tests/test_gdal_clients.py runs
# Debian's gdalinfo/gdal_translate against the API, as users of that GDAL do); nginx
# (tests/test_behind_a_proxy.py runs its own, not the system service, in front of the API).
missing=()
[[ -x "$PG_BIN/initdb" && -f "$POSTGIS_CONTROL" ]] || missing+=(postgresql-15 postgresql-15-postgis-3)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v gdalinfo >/dev/null || missing+=(gdal-bin)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
if (( ${#missing[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "Missing Debian packages. Install them as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "Installing ${missing[*]} (apt)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
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

# The local openEO back-end: its own pins; openeo-driver without its dependencies
# (it pins pystac~=1.8, which openeo 0.53.0 and openeo-processes-dask cannot use).
if [[ ! -x .venv-openeo/bin/python ]]; then
  echo "Creating .venv-openeo for the local openEO back-end..."
  "$PYTHON" -m venv .venv-openeo
fi
stamp=.venv-openeo/.tilekeeper-installed
wanted=$(cat local_openeo/requirements.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "Installing the local openEO back-end's pinned stack into .venv-openeo (~1 GB, a few minutes)..."
  .venv-openeo/bin/python -m pip install -q --upgrade pip
  .venv-openeo/bin/python -m pip install -q -r local_openeo/requirements.txt
  .venv-openeo/bin/python -m pip install -q --no-deps "openeo-driver==0.136.0a4"
  echo "$wanted" > "$stamp"
fi

# STAC Browser, served by the API at /browser/ (built once, then cached).
bash scripts/build_web.sh
