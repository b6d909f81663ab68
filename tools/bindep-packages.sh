#!/bin/bash
# Print the Debian package names listed in bindep.txt for the given profiles
# (default: all). A stand-in for `bindep -b` that needs nothing installed, so
# the host can be prepared before any virtualenv exists.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
awk '!/^#/ && NF && /platform:dpkg/ {print $1}' "$root/bindep.txt" | sort -u
