#!/usr/bin/env bash
# Builds the inference server executable (plm-serve) and installs it beside the `postgres`
# executable of PostgreSQL ($(pg_config --bindir)), where the extension's supervisor looks for
# it by default (plm.server_path overrides). The file is replaced atomically, so a running
# server keeps its old image until it restarts.
#
#   scripts/install-server.sh                 # dev profile (numeric code at opt-level 3)
#   PLM_RELEASE=1 scripts/install-server.sh   # release profile
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
cd "$ROOT"
profile=debug
flags=()
if [ "${PLM_RELEASE:-0}" = "1" ]; then profile=release; flags=(--release); fi
cargo build -q "${flags[@]}" -p plm-serve --bin plm-serve
bindir="$("$PG_CONFIG" --bindir)"
SUDO=""
[ -w "$bindir" ] || SUDO="sudo"
$SUDO install -m 0755 "$CARGO_TARGET_DIR/$profile/plm-serve" "$bindir/.plm-serve.new"
$SUDO mv -f "$bindir/.plm-serve.new" "$bindir/plm-serve"
echo "[install-server] $bindir/plm-serve"
