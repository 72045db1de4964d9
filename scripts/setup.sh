#!/usr/bin/env bash
# Builds .venv with the pinned, measured stack (requirements/*.txt) and installs the monorepo's packages
# in editable mode. Re-running it is fast: a stamp of the requirement files skips the pip work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1)). Install python3.11 or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# System packages, installed with apt-get when missing and allowed (root, apt-get present, ALCHEMIST_NO_APT unset);
# otherwise a warning says exactly what to run. apt-get update runs once, before the first install.
# * ffmpeg (the CLI) is optional for the product (PyAV and decord bundle their own FFmpeg) but users expect it next to
#   a video pipeline;
# * chromium renders the `alchemist report` page in the browser test (headless); without it that test skips, except
#   under CI, where it fails.
apt_updated=0
apt_install() {  # apt_install PACKAGE COMMAND WHY
  command -v "$2" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && [ "${ALCHEMIST_NO_APT:-0}" != "1" ]; then
    echo "setup: installing $1 with apt-get"
    if [ "$apt_updated" = "0" ]; then
      apt-get update -qq || echo "setup: WARNING apt-get update failed; trying to install $1 anyway" >&2
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null \
      || echo "setup: WARNING apt-get could not install $1; run 'sudo apt-get install -y $1' ($3)." >&2
  else
    echo "setup: WARNING $2 not found; install it with 'sudo apt-get install -y $1' ($3)." >&2
  fi
}
apt_install ffmpeg ffmpeg "optional: PyAV bundles FFmpeg"
apt_install chromium chromium "for the report's browser test; it skips without it"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(cat requirements/*.txt pyproject.toml packages/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f .venv/.setup-stamp ] && [ "$(cat .venv/.setup-stamp)" = "$stamp" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

PIP=".venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q --upgrade "pip>=25" 
echo "setup: installing the pinned stack into .venv (a few minutes on a fresh machine)"
$PIP install -q -r requirements/base.txt
# These pin opencv-python / old torch in their metadata; their real needs are in base.txt (dependencies.md §3A).
$PIP install -q --no-deps -r requirements/nodeps.txt
$PIP install -q --no-deps --no-build-isolation \
  -e packages/alchemist_data -e packages/alchemist_model -e packages/alchemist_eval -e .
.venv/bin/python -c "import torch, torchvision, ray, duckdb, pyarrow, av, spacy, alchemist_data, pipelines" \
  || { echo "setup: the environment does not import; see the errors above" >&2; exit 1; }
echo "$stamp" > .venv/.setup-stamp
echo "setup: done (.venv ready; activate with 'source .venv/bin/activate')"
