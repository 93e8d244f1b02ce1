#!/usr/bin/env bash
# Builds and installs a PostgreSQL major version that Debian 12 does not ship (17, 18) from
# Debian's own source package, into a cache directory that later runs reuse:
#
#   scripts/install-pg.sh 17     # prints the pg_config path of the install on its last line
#
# 17 comes from the trixie source suite, 18 from sid. The build is the server, client tools and
# PGXS (what an extension build and pg_regress need), without documentation. Set PLM_PG_PREFIX to
# choose where the versions go (default /usr/local/pg_plm/postgresql, readable by the postgres user).
set -euo pipefail
MAJOR="${1:?usage: install-pg.sh MAJOR (17 or 18)}"
PREFIX_ROOT="${PLM_PG_PREFIX:-/usr/local/pg_plm/postgresql}"
PREFIX="$PREFIX_ROOT/$MAJOR"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '\033[1;34m[install-pg %s]\033[0m %s\n' "$MAJOR" "$*" >&2; }

case "$MAJOR" in
  17) SUITE=trixie ;;
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
(cd "$build_dir" && apt-get source -qq --download-only "postgresql-$MAJOR/$SUITE" >/dev/null)
tar -xf "$build_dir"/postgresql-"$MAJOR"_*.orig.tar.* -C "$build_dir"
cd "$build_dir"/postgresql-"$MAJOR".*/
log "configure --prefix=$PREFIX"
./configure -q --prefix="$PREFIX" --with-openssl --with-icu --without-llvm \
  CFLAGS="-O2 -g0" >/dev/null
log "make (about 4 minutes on 2 cores)"
make -s -j"$(nproc)" >/dev/null 2>&1 || make -j1 >/dev/null
make -s install >/dev/null
# pg_regress is part of PGXS; contrib is not needed by the tests.
touch "$PREFIX/.complete"
log "installed $("$PREFIX/bin/pg_config" --version)"
echo "$PREFIX/bin/pg_config"
