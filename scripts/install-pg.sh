#!/usr/bin/env bash
# Builds and installs a PostgreSQL major version that Debian 12 does not ship (17, 18) from
# Debian's own source package, into a cache directory that later runs reuse:
#
#   scripts/install-pg.sh 17     # prints the pg_config path of the install on its last line
#
# 17 comes from the trixie source suite, 18 from sid. When the suite's current upstream tarball is
# not on the mirror (trixie's 17.12 is not served by every mirror), the pinned tarball of the
# previous trixie upload is fetched from Debian's pool and checked against the SHA-256 of that
# upload's .dsc. The build is what an extension build, pgrx and the tests need (the server,
# PL/pgSQL, libpq, the basic client tools, PGXS and pg_regress). Set PLM_PG_PREFIX to
# choose where the versions go (default /usr/local/pg_plm/postgresql, readable by the postgres user).
set -euo pipefail
MAJOR="${1:?usage: install-pg.sh MAJOR (17 or 18)}"
PREFIX_ROOT="${PLM_PG_PREFIX:-/usr/local/pg_plm/postgresql}"
PREFIX="$PREFIX_ROOT/$MAJOR"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '\033[1;34m[install-pg %s]\033[0m %s\n' "$MAJOR" "$*" >&2; }

# Fallback upstream tarball per major: Debian pool path and its SHA-256 (from the upload's .dsc).
FALLBACK_TARBALL=""
case "$MAJOR" in
  17) SUITE=trixie
      FALLBACK_TARBALL="pool/main/p/postgresql-17/postgresql-17_17.11.orig.tar.bz2"
      FALLBACK_SHA256="dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979" ;;
  18) SUITE=sid ;;
  *) echo "install-pg.sh: PostgreSQL $MAJOR is not built from source here (15 comes from Debian 12)" >&2; exit 2 ;;
esac

if [ -x "$PREFIX/bin/pg_config" ] && [ -f "$PREFIX/.complete" ]; then
  log "present: $("$PREFIX/bin/pg_config" --version)"
  echo "$PREFIX/bin/pg_config"
  exit 0
fi

"$(dirname "${BASH_SOURCE[0]}")/deb-src.sh" "$SUITE"

# Release tarballs of 18 no longer carry the generated parser files: bison and flex build them.
need=()
for p in bison flex libreadline-dev zlib1g-dev libicu-dev libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT
log "apt-get source postgresql-$MAJOR ($SUITE)"
# Only the upstream tarball is needed (Debian's patches concern packaging).
if ! (cd "$build_dir" && apt-get source -qq --download-only "postgresql-$MAJOR/$SUITE" >/dev/null 2>&1); then
  [ -n "$FALLBACK_TARBALL" ] || { echo "install-pg.sh: apt-get source postgresql-$MAJOR/$SUITE failed" >&2; exit 1; }
  log "the suite's tarball is not on the mirror: fetching ${FALLBACK_TARBALL##*/} from Debian's pool"
  rm -f "$build_dir"/postgresql-"$MAJOR"_*
  curl -fsSL -o "$build_dir/${FALLBACK_TARBALL##*/}" "http://deb.debian.org/debian/$FALLBACK_TARBALL"
  echo "$FALLBACK_SHA256  $build_dir/${FALLBACK_TARBALL##*/}" | sha256sum -c --quiet
fi
tar -xf "$build_dir"/postgresql-"$MAJOR"_*.orig.tar.* -C "$build_dir"
cd "$build_dir"/postgresql-"$MAJOR".*/
log "configure --prefix=$PREFIX"
# Unoptimised: these servers only run the test suites (inference runs in plm-serve), and -O2
# more than doubles the compile time of the backend.
./configure -q --prefix="$PREFIX" --with-openssl --with-icu --without-llvm \
  CFLAGS="-O0 -g0" >/dev/null
# Only what an extension build, pgrx and the tests use: the server with its encoding conversions
# and text-search dictionaries, PL/pgSQL, libpq, initdb, pg_ctl, psql, pg_config, createdb and
# friends, PGXS and pg_regress (not ecpg, the backup and upgrade tools, or the isolation tester).
PARTS=(src/backend src/backend/utils/mb/conversion_procs src/backend/snowball
  src/backend/replication/libpqwalreceiver src/backend/replication/pgoutput src/timezone src/common
  src/port src/include src/interfaces/libpq src/fe_utils src/bin/initdb src/bin/pg_ctl src/bin/psql
  src/bin/pg_config src/bin/scripts src/pl/plpgsql src/makefiles src/test/regress)
log "make ${#PARTS[@]} parts (about 2 minutes on 2 cores)"
for part in "${PARTS[@]}"; do
  make -s -j"$(nproc)" -C "$part" >/dev/null 2>&1 || make -C "$part" >/dev/null
done
for part in "${PARTS[@]}" config; do
  make -s -C "$part" install >/dev/null
done
make -s -C src install-local >/dev/null # PGXS's Makefile.global and friends
touch "$PREFIX/.complete"
log "installed $("$PREFIX/bin/pg_config" --version)"
echo "$PREFIX/bin/pg_config"
