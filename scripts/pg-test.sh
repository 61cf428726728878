#!/usr/bin/env bash
# A throwaway PostgreSQL for the state-store tests: Debian's packages, one
# cluster under target/pgtest listening on 127.0.0.1 (port: $REINS_TEST_PG_PORT,
# else the running cluster's, else a free one),
# user `reins` (trust auth on loopback only), database `reins_test`.
# Idempotent: installs only when missing, starts only when stopped.
# Source it (`. scripts/pg-test.sh`): it exports REINS_TEST_PG_URL.
set -euo pipefail
root="$(pwd)/target/pgtest"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$root"
[ "$(id -u)" = 0 ] && chown postgres: "$root"
if [ ! -f "$root/data/PG_VERSION" ]; then
  as_pg "$bin/initdb" -D "$root/data" -U reins -A trust --no-sync >/dev/null
fi
if as_pg "$bin/pg_ctl" -D "$root/data" status >/dev/null 2>&1; then
  # Already running (an earlier run in this checkout): use its port.
  port="$(sed -n 4p "$root/data/postmaster.pid")"
else
  # Never a fixed port: another cluster (or anything else) may hold it.
  port="${REINS_TEST_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $root -c fsync=off -c max_connections=200" start >/dev/null
fi
if ! as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U reins -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'reins_test'" | grep -q 1; then
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U reins reins_test
fi
export REINS_TEST_PG_URL="postgres://reins@127.0.0.1:$port/reins_test"
echo "PostgreSQL for tests: $REINS_TEST_PG_URL"
