#!/usr/bin/env bash
# Builds the release artifacts of pg_plm for one PostgreSQL major version:
#
#   scripts/package.sh [PG_CONFIG]      # default: Debian's PostgreSQL 15
#
# writes into dist/:
#   pg_plm-VERSION-pgN-linux-x86_64.tar.gz   the extension library (release build), its control
#       file, install and upgrade scripts, the inference server plm-serve, the default model and
#       the reference sets, and install.sh, which copies them into the directories of any
#       PostgreSQL N given its pg_config:  sudo ./install.sh [--pg-config PATH]
#   postgresql-N-pg-plm_VERSION_amd64.deb     the same files in the layout of Debian's and the
#       PGDG apt packages (/usr/lib/postgresql/N, /usr/share/postgresql/N), when dpkg-deb is
#       there and PG_CONFIG uses that layout: sudo apt install ./postgresql-N-pg-plm_*.deb
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${1:-${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
# cargo-pgrx's --no-gc-sections rustflag would recompile every dependency apart from cargo test's
# build; extension/build.rs passes it to the cdylib's link alone.
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1
log() { printf '\033[1;34m[package]\033[0m %s\n' "$*" >&2; }
cd "$ROOT"

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
NAME="pg_plm-$VERSION-pg$MAJOR-linux-$(uname -m)"
DIST="$ROOT/dist"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$DIST" "$STAGE/$NAME"/{lib,extension,bin,models}

log "cargo pgrx package (release) for PostgreSQL $MAJOR"
(cd extension && cargo pgrx package --pg-config "$PG_CONFIG" --no-default-features \
  --features "pg$MAJOR" --out-dir "$STAGE/pgrx" >&2)
log "cargo build --release -p plm-serve"
cargo build -q --release -p plm-serve --bin plm-serve

pkg="$STAGE/$NAME"
install -m 0755 "$(find "$STAGE/pgrx" -name pg_plm.so)" "$pkg/lib/"
find "$STAGE/pgrx" -name 'pg_plm.control' -exec install -m 0644 {} "$pkg/extension/" \;
find "$STAGE/pgrx" -name 'pg_plm--*.sql' -exec install -m 0644 {} "$pkg/extension/" \;
install -m 0755 "$CARGO_TARGET_DIR/release/plm-serve" "$pkg/bin/"
# The release profile keeps line tables for backtraces during development; artifacts do not.
strip --strip-debug "$pkg/lib/pg_plm.so" "$pkg/bin/plm-serve"
for dir in "$ROOT"/models/*/; do
  [ -f "$dir/config.json" ] || [ "$(basename "$dir")" = reference ] || continue
  cp -r "$dir" "$pkg/models/"
done
echo "$MAJOR" >"$pkg/PG_MAJOR"
cat >"$pkg/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Installs this pg_plm build into a PostgreSQL of the major version in PG_MAJOR:
#   sudo ./install.sh [--pg-config /path/to/pg_config]     (default: pg_config on PATH)
# Then: shared_preload_libraries = 'pg_plm' in postgresql.conf (recommended), restart, and
# CREATE EXTENSION pg_plm; (or ALTER EXTENSION pg_plm UPDATE; where an older version is installed).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PG_CONFIG=pg_config
[ "${1:-}" = "--pg-config" ] && PG_CONFIG="${2:?--pg-config needs a path}"
command -v "$PG_CONFIG" >/dev/null || { echo "install.sh: no pg_config (use --pg-config PATH)" >&2; exit 2; }
want="$(cat "$HERE/PG_MAJOR")"
have="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
if [ "$want" != "$have" ]; then
  echo "install.sh: this build is for PostgreSQL $want, $PG_CONFIG is PostgreSQL $have" >&2
  exit 2
fi
libdir="$("$PG_CONFIG" --pkglibdir)"
extdir="$("$PG_CONFIG" --sharedir)/extension"
bindir="$("$PG_CONFIG" --bindir)"
install -d "$libdir" "$extdir" "$bindir" "$extdir/pg_plm_models"
install -m 0755 "$HERE/lib/pg_plm.so" "$libdir/pg_plm.so.new" && mv -f "$libdir/pg_plm.so.new" "$libdir/pg_plm.so"
install -m 0644 "$HERE"/extension/* "$extdir/"
install -m 0755 "$HERE/bin/plm-serve" "$bindir/.plm-serve.new" && mv -f "$bindir/.plm-serve.new" "$bindir/plm-serve"
for model in "$HERE"/models/*/; do
  dest="$extdir/pg_plm_models/$(basename "$model")"
  install -d -m 0755 "$dest"
  install -m 0644 "$model"* "$dest/"
done
echo "pg_plm installed into PostgreSQL $have ($libdir, $extdir, $bindir/plm-serve)"
INSTALL
chmod 0755 "$pkg/install.sh"
tar -C "$STAGE" -czf "$DIST/$NAME.tar.gz" "$NAME"
log "$DIST/$NAME.tar.gz ($(du -h "$DIST/$NAME.tar.gz" | cut -f1))"

# The Debian package: the same files at the paths of Debian's PostgreSQL packages.
if command -v dpkg-deb >/dev/null && [ "$("$PG_CONFIG" --pkglibdir)" = "/usr/lib/postgresql/$MAJOR/lib" ]; then
  deb="$STAGE/deb"
  mkdir -p "$deb/DEBIAN"
  install -d "$deb/usr/lib/postgresql/$MAJOR/lib" "$deb/usr/lib/postgresql/$MAJOR/bin" \
    "$deb/usr/share/postgresql/$MAJOR/extension/pg_plm_models"
  install -m 0644 "$pkg/lib/pg_plm.so" "$deb/usr/lib/postgresql/$MAJOR/lib/"
  install -m 0755 "$pkg/bin/plm-serve" "$deb/usr/lib/postgresql/$MAJOR/bin/"
  install -m 0644 "$pkg"/extension/* "$deb/usr/share/postgresql/$MAJOR/extension/"
  cp -r "$pkg"/models/* "$deb/usr/share/postgresql/$MAJOR/extension/pg_plm_models/"
  find "$deb/usr" -type d -exec chmod 0755 {} \;
  find "$deb/usr/share" -type f -exec chmod 0644 {} \;
  cat >"$deb/DEBIAN/control" <<CONTROL
Package: postgresql-$MAJOR-pg-plm
Version: $VERSION
Architecture: $(dpkg --print-architecture)
Maintainer: pg_plm developers <pg_plm@example.invalid>
Depends: postgresql-$MAJOR, libc6, libgcc-s1
Section: database
Priority: optional
Installed-Size: $(du -sk "$deb/usr" | cut -f1)
Description: protein language models (ESM-2) in PostgreSQL $MAJOR
 pg_plm: embeddings, contacts, function, interactions and binding sites of
 proteins from SQL, with the inference server plm-serve, the default model
 and the reference sets of homology transfer.
CONTROL
  debfile="$DIST/postgresql-$MAJOR-pg-plm_${VERSION}_$(dpkg --print-architecture).deb"
  dpkg-deb --root-owner-group -Zgzip --build "$deb" "$debfile" >/dev/null
  log "$debfile ($(du -h "$debfile" | cut -f1))"
fi
