# shellcheck shell=bash
# The host's apt sources, read the way apt reads them, for the guest
# builders: which repository serves a suite's component, and which keyring
# apt checks it with. Sourcing it only defines the functions below.

# host_source SUITE COMPONENT: print "URI|SOURCESENTRY" of the first source
# the host's apt fetches SUITE COMPONENT from (one-line and deb822 sources
# alike: apt-get indextargets reports what apt itself resolved, after an
# apt-get update); nothing when there is none.
host_source() {
    local uri rel comp entry
    # shellcheck disable=SC2016 # apt's $(FIELD) placeholders, not shell
    while IFS='|' read -r uri rel comp entry; do
        if [ "$rel" = "$1" ] && [ "$comp" = "$2" ]; then
            echo "${uri%/}|$entry"
            return 0
        fi
    done < <(apt-get indextargets \
        --format '$(REPO_URI)|$(RELEASE)|$(COMPONENT)|$(SOURCESENTRY)' \
        'Identifier: Packages' 2>/dev/null || true)
}

# source_keyring FILE:N: the keyring file apt checks the source at entry N
# of FILE with: Signed-By of the Nth stanza of a deb822 .sources file, or
# the signed-by option of line N of a one-line .list file. Prints nothing
# when the source names none, or names something other than one existing
# file (fingerprints, an inline key): the caller's default keyring applies.
source_keyring() {
    local file=${1%:*} n=${1##*:} value=
    [ -r "$file" ] || return 0
    case $file in
    *.sources)
        # Stanzas are separated by blank lines; field names are
        # case-insensitive; the value may continue on indented lines.
        value=$(awk -v n="$n" '
            BEGIN { RS = ""; FS = "\n" }
            NR == n {
                for (i = 1; i <= NF; i++)
                    if (tolower($i) ~ /^signed-by:/) {
                        sub(/^[^:]*:[ \t]*/, "", $i); print $i; exit
                    }
            }' "$file") ;;
    *)
        value=$(sed -n "${n}p" "$file" \
            | sed -n 's/^[^#]*\[\([^]]*\)\].*/\1/p' | tr ' ' '\n' \
            | sed -n 's/^signed-by=//p' | head -n 1) ;;
    esac
    # One path to an existing file, nothing else.
    case $value in
    /*) [ -f "$value" ] && [ "${value#* }" = "$value" ] && echo "$value" ;;
    esac
    return 0
}
