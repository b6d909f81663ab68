#!/bin/bash
# Create the project's virtualenv (default .venv) with the pinned
# requirements and the project installed in it.
#
#   tools/make-venv.sh [VENV [NOVA_VERSION]]
#
# NOVA_VERSION pins nova to another release than upper-constraints.txt's
# (the functional suite on Nova 33: make nova33-functional); every other
# pin stays.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
nova=${2:-}
python=${PYTHON:-python3}
cd "$root"
constraints=upper-constraints.txt
if [ -n "$nova" ]; then
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    sed "s/^nova==.*/nova==$nova/" upper-constraints.txt >"$constraints"
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -c "$constraints" \
    -r requirements.txt -r test-requirements.txt -r doc/requirements.txt
# A regular install, not an editable one: the wheel carries the re-export
# package nova/virt/livesnapshot that Nova loads the driver through, which
# an editable install would not put inside Nova's package.
"$venv/bin/pip" install -q --no-deps --force-reinstall .
rm -rf build
