#!/usr/bin/env bash
# Installs everything the project needs on Debian 12, idempotently and non-interactively:
# PostgreSQL 15 with headers, clang, OpenMPI, a TrueType font (trainer loss plots), sudo,
# cargo-pgrx (pinned), pgrx's PG15 config, pgvector (built from Debian's source package when
# missing) and, optionally, the Python reference stack (torch + transformers) used by the
# parity tests and benchmarks.
#
#   scripts/install-deps.sh            # everything
#   PLM_SKIP_PYTHON=1 scripts/install-deps.sh   # no Python reference stack
set -euo pipefail

PGRX_VERSION=0.18.1
PG_MAJOR=15
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '\033[1;34m[install-deps]\033[0m %s\n' "$*"; }

export DEBIAN_FRONTEND=noninteractive
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib libclang-dev clang
  build-essential pkg-config sudo libopenmpi-dev openmpi-bin libssl-dev ca-certificates dpkg-dev
  fonts-dejavu-core
  # sequence clustering for the identity-split GO evaluation of plm-train finetune
  mmseqs2)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config

# cargo-pgrx, pinned: skip the 4-minute build when the right version is installed.
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
else
  log "cargo-pgrx $PGRX_VERSION present"
fi
# Run `cargo pgrx init` only once: re-running rewrites the config and forces a rebuild.
if ! grep -q "pg$PG_MAJOR *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi

# pgvector from Debian's own source package (trixie), built against PostgreSQL 15.
if [ ! -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then
  log "building pgvector from Debian's source package"
  src_list=/etc/apt/sources.list.d/pg-plm-trixie-src.sources
  if [ ! -f "$src_list" ]; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | $SUDO tee "$src_list" >/dev/null
    $SUDO apt-get update -qq
  fi
  build_dir="$(mktemp -d)"
  (cd "$build_dir" && apt-get source -qq pgvector >/dev/null 2>&1 || apt-get source pgvector)
  (cd "$build_dir"/pgvector-*/ && make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null && $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null)
  rm -rf "$build_dir"
else
  log "pgvector present"
fi

# Python reference stack for parity tests and side-by-side benchmarks (optional).
if [ "${PLM_SKIP_PYTHON:-0}" != "1" ]; then
  VENV="${PLM_VENV:-$HOME/.cache/pg_plm/venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
    log "pip install torch transformers safetensors (reference implementation)"
    "$VENV/bin/pip" install -q torch transformers safetensors numpy ||
      log "WARNING: Python reference stack unavailable; parity tests on large configs will be skipped"
  else
    log "Python reference stack present"
  fi
  # The data-team pipeline that the sync benchmark compares against (scripts/bench_sync.sh).
  if ! "$VENV/bin/python" -c "import psycopg" 2>/dev/null; then
    "$VENV/bin/pip" install -q "psycopg[binary]" || log "WARNING: psycopg unavailable; scripts/bench_sync.sh cannot run"
  fi
fi
log "done"
