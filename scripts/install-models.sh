#!/usr/bin/env bash
# Installs the checkpoints under models/ into SHAREDIR/extension/pg_plm_models (the default
# plm.model_dir), readable by the server. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
DEST="$($PG_CONFIG --sharedir)/extension/pg_plm_models"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
for model in "$ROOT"/models/*/; do
  name="$(basename "$model")"
  [ -f "$model/config.json" ] || continue
  $SUDO install -d -m 755 "$DEST/$name"
  for f in "$model"*; do
    [ -f "$f" ] && $SUDO install -m 644 "$f" "$DEST/$name/"
  done
  echo "installed model $name -> $DEST/$name"
done
# Reference sets of homology transfer: shared by every model directory beside them.
if [ -d "$ROOT/models/reference" ]; then
  $SUDO install -d -m 755 "$DEST/reference"
  for f in "$ROOT"/models/reference/*; do
    [ -f "$f" ] && $SUDO install -m 644 "$f" "$DEST/reference/"
  done
  echo "installed reference sets -> $DEST/reference"
fi
