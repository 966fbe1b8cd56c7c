#!/usr/bin/env bash
# Set up the project on a fresh machine: a virtual environment with the pinned requirements,
# DVC configured, and (where the Hugging Face hub is unreachable) the small offline models.
# Idempotent: rerunning only fills in what is missing.
#
#   VENV=.venv            where to create the environment
#   PYTHON=python3        interpreter used to create it (3.11 recommended)
#   SHARED_TOOLS=../shared/tools   offline model fetcher (used when present)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
SHARED_TOOLS=${SHARED_TOOLS:-../shared/tools}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import sys; sys.exit(0 if open('requirements.txt').read() == open('$VENV/.requirements.installed').read() else 1)" 2>/dev/null; then
  echo "[setup] installing requirements.txt (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  cp requirements.txt "$VENV/.requirements.installed"
fi

# DVC: no analytics; the default remote is a local directory (see README, "Sharing").
"$VENV/bin/dvc" config --local core.analytics false >/dev/null 2>&1 || true

# Offline machines: the small models the default params use come as GGUF files.
if [ -x "$SHARED_TOOLS/get-offline-models" ]; then
  echo "[setup] fetching offline models into .cache/offline-models"
  PATH="$PWD/$VENV/bin:$PATH" "$SHARED_TOOLS/get-offline-models" .cache/offline-models 2>&1 | grep -v "^WARNING: Location" || true
fi
echo "[setup] done. Run the study with: $VENV/bin/dvc repro"
