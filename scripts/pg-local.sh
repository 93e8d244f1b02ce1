#!/usr/bin/env bash
# A local PostgreSQL 15 cluster for pg_plm, run as the unprivileged `postgres` user (the server
# refuses to run as root). Idempotent.
#
#   scripts/pg-local.sh start     # initdb if needed, start, create database plm with the extensions
#   scripts/pg-local.sh stop
#   scripts/pg-local.sh stop-immediate  # no shutdown checkpoint: crash recovery at the next start
#   scripts/pg-local.sh psql ARGS # psql connected to it
#   scripts/pg-local.sh env       # print PGHOST/PGPORT/PGUSER/PGDATABASE exports
set -euo pipefail
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PLM_PGHOME="${PLM_PGHOME:-/var/lib/postgresql/pg_plm}"
PGDATA="$PLM_PGHOME/data"
export PGHOST="$PLM_PGHOME/run" PGPORT="${PLM_PGPORT:-5499}" PGUSER=postgres PGDATABASE="${PLM_PGDATABASE:-plm}"

as_pg() {
  # The server must not attach Rust backtraces to SQL errors: clients see them as DETAIL.
  if [ "$(id -un)" = postgres ]; then env RUST_BACKTRACE=0 "$@"; else sudo -u postgres -E env PATH="$PATH" RUST_BACKTRACE=0 "$@"; fi
}

start() {
  if [ ! -d "$PLM_PGHOME" ]; then
    mkdir -p "$PLM_PGHOME"
    chown postgres:postgres "$PLM_PGHOME"
  fi
  as_pg mkdir -p "$PGHOST"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat <<CONF | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
# pg_plm local cluster
listen_addresses = ''
port = $PGPORT
unix_socket_directories = '$PGHOST'
max_parallel_workers_per_gather = 2
CONF
  fi
  # One shared inference worker for all sessions (a restart applies a change).
  if ! grep -q "^shared_preload_libraries = 'pg_plm'" "$PGDATA/postgresql.conf" 2>/dev/null; then
    echo "shared_preload_libraries = 'pg_plm'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PLM_PGHOME/server.log" -w -t 60 start >/dev/null
  fi
  if ! as_pg "$PG_BIN/psql" -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$PGDATABASE'" | grep -q 1; then
    as_pg "$PG_BIN/createdb" "$PGDATABASE"
  fi
  # Until releases ship upgrade scripts, a rebuilt library with the same version but a changed SQL
  # surface needs its SQL objects re-created in this development database (never done to others).
  local script sum
  script="$("$PG_BIN/pg_config" --sharedir)/extension/pg_plm--$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$PG_BIN/pg_config" --sharedir)/extension/pg_plm.control").sql"
  sum="$(md5sum "$script" 2>/dev/null | cut -d' ' -f1)"
  if [ -n "$sum" ] && [ "$(cat "$PLM_PGHOME/pg_plm.sql.md5" 2>/dev/null)" != "$sum" ]; then
    echo "pg-local: the pg_plm SQL script changed; re-creating the extension in database $PGDATABASE" >&2
    as_pg "$PG_BIN/psql" -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; DROP EXTENSION IF EXISTS pg_plm CASCADE" >/dev/null
    echo "$sum" | as_pg tee "$PLM_PGHOME/pg_plm.sql.md5" >/dev/null
  fi
  as_pg "$PG_BIN/psql" -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_plm;" >/dev/null
}

case "${1:-start}" in
  start) start; echo "PostgreSQL running: PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER PGDATABASE=$PGDATABASE" ;;
  stop) as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true ;;
  # As if the machine lost power: no shutdown checkpoint, crash recovery at the next start.
  stop-immediate) as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true ;;
  restart) as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; start ;;
  psql) shift; exec "$PG_BIN/psql" "$@" ;;
  env) echo "export PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER PGDATABASE=$PGDATABASE" ;;
  *) echo "usage: $0 start|stop|stop-immediate|restart|psql|env" >&2; exit 2 ;;
esac
