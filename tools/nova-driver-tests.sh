#!/bin/bash
# Run Nova's libvirt driver unit tests (from the installed nova wheel) once
# against LibvirtDriver ("stock") and once against our subclass
# ("subclass"), then compare the outcomes test by test.
#
#   tools/nova-driver-tests.sh [-o OUTDIR] [-d MODULE:CLASS] [-s|-p]
#                              [-t eventlet|threading] [-f REGEX] [-x FILE]
#                              [MODULE ...]
#
#   -o  where the JSON results and logs go (default: $TMPDIR/nova-driver-tests)
#   -d  the subclass (default nova_live_snapshot.virt.driver:LiveSnapshotDriver)
#   -s  run the two modes one after the other; -p in parallel (default:
#       parallel when there are 2+ cores and 3 GiB of memory available)
#   -t  nova's concurrency mode for the run (default: nova's test default)
#   -f  only tests whose id matches REGEX
#   -x  file of test-id regexes allowed to differ, one a line with an
#       optional "# reason" (e.g. test_public_api_signatures while the driver
#       has public methods ComputeDriver lacks); may be repeated
#   MODULE  nova test modules or packages (default: the whole
#       nova.tests.unit.virt.libvirt package: 2,409 tests, about 135 s a
#       mode on 2 cores, both modes in parallel about 140 s)
#
# PYTHON selects the interpreter (default: .venv/bin/python); it needs the
# test requirements (testtools, oslotest, ...) installed.
# Exit status: 0 when every test has the same outcome in both modes (tests
# failing in both, for reasons of this environment, are listed but allowed),
# 1 when any differ, 2 when a run could not be done.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
runner=$root/tools/nova_driver_tests.py
out=${TMPDIR:-/tmp}/nova-driver-tests
driver=${NLS_DRIVER_CLASS:-nova_live_snapshot.virt.driver:LiveSnapshotDriver}
parallel=auto
conc=default
filter=()
expected=()
while getopts "o:d:spt:f:x:h" opt; do
    case $opt in
        o) out=$OPTARG ;;
        d) driver=$OPTARG ;;
        s) parallel=no ;;
        p) parallel=yes ;;
        t) conc=$OPTARG ;;
        f) filter=(--filter "$OPTARG") ;;
        x) expected+=(--expected "$OPTARG") ;;
        *) sed -n '2,26p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
mkdir -p "$out"

if [ "$parallel" = auto ]; then
    # One mode peaks at about 0.5 GiB RSS on test_driver; leave headroom.
    avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    if [ "$(nproc)" -ge 2 ] && [ "${avail_kb:-0}" -ge $((3 * 1024 * 1024)) ]; then
        parallel=yes
    else
        parallel=no
    fi
fi

run_mode() {
    local mode=$1; shift
    "$python" "$runner" run --mode "$mode" --driver "$driver" \
        --concurrency "$conc" "${filter[@]}" --out "$out/$mode.json" -v "$@" \
        >"$out/$mode.log" 2>&1
}

start=$(date +%s)
rm -f "$out/stock.json" "$out/subclass.json"
if [ "$parallel" = yes ]; then
    run_mode stock "$@" & p1=$!
    run_mode subclass "$@" & p2=$!
    wait $p1; rc1=$?
    wait $p2; rc2=$?
else
    run_mode stock "$@"; rc1=$?
    run_mode subclass "$@"; rc2=$?
fi
for m in stock subclass; do tail -n 1 "$out/$m.log"; done
echo "nova-driver-tests: both modes in $(( $(date +%s) - start )) s" \
     "($( [ "$parallel" = yes ] && echo parallel || echo sequential)), logs in $out"
if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then
    echo "nova-driver-tests: a run failed (stock rc=$rc1, subclass rc=$rc2);" \
         "see $out/*.log" >&2
    for m in stock subclass; do tail -n 20 "$out/$m.log" >&2; done
    exit 2
fi
"$python" "$runner" compare "$out/stock.json" "$out/subclass.json" \
    --json "$out/compare.json" "${expected[@]}"
