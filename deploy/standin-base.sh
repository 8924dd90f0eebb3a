#!/bin/sh
# Build a stand-in for `python:3.11-slim` where no registry is reachable (CI, tests/deploy):
# Debian bookworm's python3 (3.11) from the Debian mirror with mmdebstrap, plus a wheelhouse of
# this project's dependencies (pip download from PyPI) at /wheels and an /etc/pip.conf that
# installs from it only, so the Dockerfiles build unchanged and offline.
#   deploy/standin-base.sh OUT.tar      (then: docker import ... OUT.tar pys3-standin-base)
# Needs root, mmdebstrap and network access to deb.debian.org and PyPI (this runs before the
# tests enter their own network namespace). About 45 s.
set -eu
out=$1
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/pys3-standin.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels"
# The project's dependencies (pyproject.toml) and its build backend, as wheels for this platform
# (bookworm amd64, CPython 3.11: the same as the stand-in).
"$py" - "$here/pyproject.toml" > "$work/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join([*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel", "pip"]))
PY
"$py" -m pip download -q --only-binary=:all: -d "$work/wheels" -r "$work/requirements.txt"
printf '[global]\nno-index = true\nfind-links = /wheels\ndisable-pip-version-check = true\n' > "$work/pip.conf"
mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,python3-pip,python-is-python3,passwd,ca-certificates \
    --customize-hook="mkdir -p \"\$1/wheels\" && cp $work/wheels/* \"\$1/wheels/\"" \
    --customize-hook="cp $work/pip.conf \"\$1/etc/pip.conf\"" \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$out"
