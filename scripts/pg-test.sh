#!/usr/bin/env bash
# A throwaway PostgreSQL for the state-store and vector-store tests: Debian's
# packages (plus pgvector, built from Debian's source package), one
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
# pgvector, for reins-context's vector store tests (the tests run CREATE
# EXTENSION themselves). Debian 12 has no package for it, so Debian's own
# source package from trixie is built against the installed server: fetched
# with apt into a private state folder (the system's sources and lists are
# left alone) and cached in ~/.cache/reins-pgvector. Skipped when the
# extension is already installed.
pgv_major="$(basename "$(dirname "$bin")")"
if [ ! -f "$("$bin/pg_config" --sharedir)/extension/vector.control" ]; then
  if [ ! -f "$("$bin/pg_config" --pgxs)" ] || ! command -v make >/dev/null || ! command -v gcc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$pgv_major" make gcc libc6-dev >/dev/null
  fi
  pgv_cache="${XDG_CACHE_HOME:-$HOME/.cache}/reins-pgvector"
  if ! ls "$pgv_cache"/src/pgvector_*.orig.tar.* >/dev/null 2>&1; then
    mkdir -p "$pgv_cache/apt/lists/partial" "$pgv_cache/apt/cache/archives/partial" "$pgv_cache/src"
    echo 'deb-src http://deb.debian.org/debian trixie main' >"$pgv_cache/apt/sources.list"
    pgv_apt=(-o "Dir::Etc::sourcelist=$pgv_cache/apt/sources.list" -o "Dir::Etc::sourceparts=-"
      -o "Dir::State::Lists=$pgv_cache/apt/lists" -o "Dir::Cache=$pgv_cache/apt/cache"
      -o "APT::Sandbox::User=root")
    apt-get "${pgv_apt[@]}" update -qq
    (cd "$pgv_cache/src" && apt-get "${pgv_apt[@]}" source --download-only pgvector >/dev/null)
  fi
  pgv_tarball="$(ls "$pgv_cache"/src/pgvector_*.orig.tar.* | sort -V | tail -1)"
  pgv_build="$pgv_cache/build-$pgv_major"
  rm -rf "$pgv_build"
  mkdir -p "$pgv_build"
  tar xf "$pgv_tarball" -C "$pgv_build" --strip-components=1
  # OPTFLAGS="": no -march=native, the build may be copied to another CPU;
  # with_llvm=no: no JIT bitcode, which would need clang.
  make -s -C "$pgv_build" PG_CONFIG="$bin/pg_config" OPTFLAGS="" with_llvm=no >/dev/null
  make -s -C "$pgv_build" PG_CONFIG="$bin/pg_config" with_llvm=no install >/dev/null
  echo "pgvector built from $(basename "$pgv_tarball") for PostgreSQL $pgv_major"
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
