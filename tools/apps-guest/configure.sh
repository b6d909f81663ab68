#!/bin/sh
# Runs inside the new root (chroot) after tools/debian-guest/configure.sh,
# as root with /proc mounted: what the apps guest adds to the Debian test
# guest. Usage: configure.sh PGBENCH_SCALE SHARED_BUFFERS_MB
# PostgreSQL runs here natively (not under TCG), only on its unix socket in
# the chroot (listen_addresses=''), to make the pgbench data set.
set -eu
scale=$1
shared_buffers_mb=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "apps configure.sh: $*" >&2; }
pgbin=/usr/lib/postgresql/15/bin
pgdata=/var/lib/postgresql/15/main
pgconf=/etc/postgresql/15/main
[ -d "$pgdata" ] && [ -d "$pgconf/conf.d" ] \
    || { log "postgresql-common made no 15/main cluster"; exit 1; }

# Served to the test network (an isolated namespace on the test host):
# trust, no passwords. shared_buffers holds the whole data set, so that a
# warm server answers from its own cache.
cat >"$pgconf/conf.d/nls.conf" <<CONF
# nova-live-snapshot apps guest (tools/apps-guest/configure.sh)
listen_addresses = '*'
shared_buffers = ${shared_buffers_mb}MB
max_connections = 20
# One vCPU under TCG: no parallel workers, no JIT compilation of queries.
max_worker_processes = 2
max_parallel_workers_per_gather = 0
jit = off
CONF
echo "host all all 0.0.0.0/0 trust" >>"$pgconf/pg_hba.conf"

log "pgbench -i -s $scale (PostgreSQL running in the chroot, socket only)"
sock=/tmp/nls-pg
mkdir -p "$sock"
chown postgres:postgres "$sock"
pgctl() {
    su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $pgdata -w -l /tmp/nls-pg.log $* \
        -o \"-c config_file=$pgconf/postgresql.conf -c listen_addresses= \
        -c unix_socket_directories=$sock -c dynamic_shared_memory_type=mmap \
        -c shared_buffers=32MB\""
}
pgctl start >&2 || { cat /tmp/nls-pg.log >&2; exit 1; }
su postgres -s /bin/sh -c "createdb -h $sock bench && pgbench -q -h $sock -i -s $scale bench \
    && psql -h $sock -qAt -c 'VACUUM ANALYZE' bench" >&2
pgctl stop -m fast >&2
rm -rf "$sock" /tmp/nls-pg.log /var/log/postgresql/*

# Started by the benchmarks (systemctl start postgresql@15-main), not at
# boot: cold = boot + start + warm-up.
echo manual >"$pgconf/start.conf"
systemctl -q disable postgresql.service >&2
