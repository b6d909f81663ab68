#!/bin/bash
# Create the project's virtualenv (default .venv) with the pinned
# requirements and the project installed in it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
python=${PYTHON:-python3}
cd "$root"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -c upper-constraints.txt \
    -r requirements.txt -r test-requirements.txt -r doc/requirements.txt
# A regular install, not an editable one: the wheel carries the re-export
# package nova/virt/livesnapshot that Nova loads the driver through, which
# an editable install would not put inside Nova's package.
"$venv/bin/pip" install -q --no-deps --force-reinstall .
rm -rf build
