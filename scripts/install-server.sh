#!/usr/bin/env bash
# Builds the inference server executable (plm-serve) and installs it beside the `postgres`
# executable of PostgreSQL ($(pg_config --bindir)), where the extension's supervisor looks for
# it by default (plm.server_path overrides). The file is replaced atomically, so a running
# server keeps its old image until it restarts.
#
#   scripts/install-server.sh                 # release profile (the default)
#   PLM_RELEASE=0 scripts/install-server.sh   # dev profile: 3.3x slower inference, for debugging
#
# The release profile matters: the dev profile's incremental, 256-unit code generation keeps
# the engine's hot loops from being inlined even at opt-level 3 (128 x 300 residues through
# plm_embed: 1.5-1.8 s release, 5.0 s dev, same machine, docs/BENCHMARKS.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
cd "$ROOT"
profile=release
flags=(--release)
if [ "${PLM_RELEASE:-1}" = "0" ]; then profile=debug; flags=(); fi
cargo build -q "${flags[@]}" -p plm-serve --bin plm-serve
bindir="$("$PG_CONFIG" --bindir)"
SUDO=""
[ -w "$bindir" ] || SUDO="sudo"
$SUDO install -m 0755 "$CARGO_TARGET_DIR/$profile/plm-serve" "$bindir/.plm-serve.new"
$SUDO mv -f "$bindir/.plm-serve.new" "$bindir/plm-serve"
echo "[install-server] $bindir/plm-serve"
