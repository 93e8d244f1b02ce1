#!/usr/bin/env bash
# The release artifacts install on a clean PostgreSQL and answer a first query:
#
#   tests/package/run.sh [PG_CONFIG]
#
# Builds them (scripts/package.sh), copies the PostgreSQL installation of PG_CONFIG without any
# pg_plm file into a scratch directory (PostgreSQL finds its directories relative to its
# binaries), installs the tarball there with its install.sh, starts a fresh cluster preloading
# pg_plm, and runs CREATE EXTENSION pg_plm and SELECT plm_embed(...). Where a .deb was built, the
# same again with the package's files unpacked (dpkg-deb -x) into another clean copy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PG_CONFIG="${1:-${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}}"
PORT="${PLM_PACKAGE_TEST_PORT:-5477}"
. "$ROOT/tests/lib.sh"
as_pg() { sudo -u postgres env RUST_BACKTRACE=0 "$@"; }

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
"$ROOT/scripts/package.sh" "$PG_CONFIG"
tarball="$ROOT/dist/pg_plm-$VERSION-pg$MAJOR-linux-$(uname -m).tar.gz"
deb="$ROOT/dist/postgresql-$MAJOR-pg-plm_${VERSION}_$(dpkg --print-architecture 2>/dev/null || echo none).deb"
[ -f "$tarball" ] || fail "no $tarball"

SCRATCH="$(mktemp -d /tmp/pg_plm-package.XXXXXX)"
chmod 755 "$SCRATCH"
datadir=""
pgbin=""
cleanup() {
  [ -n "$datadir" ] && as_pg "$pgbin/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# A copy of the PostgreSQL installation without pg_plm; prints the copy's pg_config.
clean_copy() {
  local dest="$1" dir
  for dir in "$("$PG_CONFIG" --bindir)/.." "$("$PG_CONFIG" --sharedir)" "$("$PG_CONFIG" --pkglibdir)"; do
    dir="$(realpath "$dir")"
    mkdir -p "$dest$dir"
    tar -C "$dir" --exclude='pg_plm*' --exclude='plm-serve' --exclude='.plm-serve*' -cf - . | tar -C "$dest$dir" -xf -
  done
  chmod -R a+rX "$dest"
  echo "$dest$(realpath "$PG_CONFIG")"
}

# A fresh cluster of that copy preloading pg_plm; the first query.
first_query() {
  local config="$1" what="$2" cluster="$3"
  pgbin="$("$config" --bindir)"
  datadir="$cluster/data"
  mkdir -p "$cluster/run" && chown -R postgres:postgres "$cluster"
  as_pg "$pgbin/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  printf "listen_addresses = ''\nport = %s\nunix_socket_directories = '%s'\nshared_preload_libraries = 'pg_plm'\n" \
    "$PORT" "$cluster/run" | as_pg tee -a "$datadir/postgresql.conf" >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$datadir" -l "$cluster/server.log" -w -t 60 start >/dev/null
  local out
  out="$(as_pg "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$cluster/run" -p "$PORT" -d postgres \
    -c "CREATE EXTENSION pg_plm" \
    -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_plm'" \
    -c "SELECT array_length(plm_embed('MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'), 1)" \
    -c "SELECT count(*) FROM plm_function('MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG', 'go_mf')")" ||
    { cat "$cluster/server.log" >&2; fail "$what: first query"; }
  [ "$(echo "$out" | sed -n 1p)" = "$VERSION" ] || fail "$what: extension version $(echo "$out" | sed -n 1p)"
  [ "$(echo "$out" | sed -n 2p)" = 320 ] || fail "$what: plm_embed gave $(echo "$out" | sed -n 2p) dimensions"
  [ "$(echo "$out" | sed -n 3p)" -gt 0 ] || fail "$what: plm_function (with the reference sets) gave no terms"
  for script in "$ROOT"/extension/sql/pg_plm--*--*.sql; do
    [ -f "$("$config" --sharedir)/extension/$(basename "$script")" ] || fail "$what: no $(basename "$script")"
  done
  as_pg "$pgbin/pg_ctl" -D "$datadir" -m fast stop >/dev/null
  datadir=""
  ok "$what: CREATE EXTENSION pg_plm ($VERSION) and plm_embed on a fresh PostgreSQL $MAJOR cluster"
}

config="$(clean_copy "$SCRATCH/tarball")"
[ ! -e "$("$config" --pkglibdir)/pg_plm.so" ] || fail "the clean copy has pg_plm.so"
tar -C "$SCRATCH" -xzf "$tarball"
"$SCRATCH/$(basename "$tarball" .tar.gz)/install.sh" --pg-config "$config" >/dev/null
if "$SCRATCH/$(basename "$tarball" .tar.gz)/install.sh" --pg-config /bin/false 2>/dev/null; then
  fail "install.sh accepted a broken pg_config"
fi
first_query "$config" "$(basename "$tarball")" "$SCRATCH/tarball-cluster"

if [ -f "$deb" ]; then
  config="$(clean_copy "$SCRATCH/deb")"
  dpkg-deb -x "$deb" "$SCRATCH/deb"
  first_query "$config" "$(basename "$deb")" "$SCRATCH/deb-cluster"
fi
echo "package tests passed"
