#!/usr/bin/env bash
# Installs everything the project needs on Debian 12, idempotently and non-interactively:
# PostgreSQL 15 with headers, clang, OpenMPI, a TrueType font (trainer loss plots), sudo,
# cargo-pgrx (pinned), PostgreSQL 17 and 18 built from Debian's source package (scripts/install-pg.sh),
# pgrx's config for each PostgreSQL, pgvector for each (built from Debian's source package when
# missing) and, optionally, the Python reference stack (torch + transformers) used by the
# parity tests and benchmarks.
#
#   scripts/install-deps.sh            # everything
#   PLM_SKIP_PYTHON=1 scripts/install-deps.sh   # no Python reference stack
#   PLM_PG_EXTRA="" scripts/install-deps.sh     # PostgreSQL 15 only (also read by scripts/test.sh)
#   PLM_SKIP_TEST_TOOLS=1 scripts/install-deps.sh  # no S3 test server (scripts/setup.sh)
set -euo pipefail

PGRX_VERSION=0.18.1
PG_MAJOR=15
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '\033[1;34m[install-deps]\033[0m %s\n' "$*"; }

export DEBIAN_FRONTEND=noninteractive
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib libclang-dev clang
  build-essential pkg-config sudo libopenmpi-dev openmpi-bin libssl-dev ca-certificates curl dpkg-dev
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

# Python reference stack for parity tests and side-by-side benchmarks (optional). Mostly a
# download (torch's wheels are gigabytes): it runs in the background while the compilers below
# use the CPU, its output printed when it ends.
python_stack() {
  VENV="${PLM_VENV:-$HOME/.cache/pg_plm/venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
    # Pinned: the benchmarks' reference side (docs/BENCHMARKS.md) must not move between machines.
    log "pip install torch==2.15.0 transformers==5.24.0 safetensors (reference implementation)"
    "$VENV/bin/pip" install -q torch==2.15.0 transformers==5.24.0 safetensors numpy ||
      log "WARNING: Python reference stack unavailable; parity tests on large configs will be skipped"
  else
    log "Python reference stack present"
  fi
  # The data-team pipeline that the sync benchmark compares against (scripts/bench_sync.sh).
  if ! "$VENV/bin/python" -c "import psycopg" 2>/dev/null; then
    "$VENV/bin/pip" install -q "psycopg[binary]" || log "WARNING: psycopg unavailable; scripts/bench_sync.sh cannot run"
  fi
}
python_pid=""
if [ "${PLM_SKIP_PYTHON:-0}" != "1" ]; then
  python_log="$(mktemp)"
  python_stack >"$python_log" 2>&1 &
  python_pid=$!
  # A failing step below must not leave pip running.
  trap 'if [ -n "$python_pid" ]; then pkill -P "$python_pid" || true; kill "$python_pid" 2>/dev/null || true; fi' EXIT
fi

# The tools below are built unoptimised: they spend their time waiting on cargo, PostgreSQL or the
# disk, and optimisation would double their build time on a fresh machine.
tool_install() { CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked "$@"; }
# cargo-pgrx, pinned: skip the build when the right version is installed.
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION"
  tool_install cargo-pgrx --version "=$PGRX_VERSION"
else
  log "cargo-pgrx $PGRX_VERSION present"
fi
# An S3-compatible server for the trainer's object-storage tests (s3s-fs: the S3 protocol over
# a directory; 0.14.1 is the newest that builds with Rust 1.95), pinned and cached.
S3S_VERSION=0.14.1
S3S_ROOT="$HOME/.cache/pg_plm/s3s"
if [ "${PLM_SKIP_TEST_TOOLS:-0}" = "1" ]; then
  log "s3s-fs skipped (PLM_SKIP_TEST_TOOLS=1)"
elif ! "$S3S_ROOT/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "cargo install s3s-fs $S3S_VERSION (once)"
  tool_install s3s-fs --version "=$S3S_VERSION" --features binary --root "$S3S_ROOT"
else
  log "s3s-fs $S3S_VERSION present"
fi
# PostgreSQL majors besides Debian 12's 15, built from Debian's source packages and cached
# (scripts/install-pg.sh): the extension is tested against each. PLM_PG_EXTRA="" skips them.
PG_EXTRA="${PLM_PG_EXTRA-17 18}"
declare -A PG_CONFIGS=([$PG_MAJOR]="$PG_CONFIG")
for major in $PG_EXTRA; do
  PG_CONFIGS[$major]="$("$ROOT/scripts/install-pg.sh" "$major" | tail -1)"
done

# Run `cargo pgrx init` only when a version is missing from its config: re-running rewrites the
# config and forces a rebuild.
init_args=()
need_init=0
for major in "${!PG_CONFIGS[@]}"; do
  init_args+=("--pg$major" "${PG_CONFIGS[$major]}")
  grep -q "pg$major *= *\"${PG_CONFIGS[$major]}\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null || need_init=1
done
if [ "$need_init" = 1 ]; then
  log "cargo pgrx init ${init_args[*]}"
  cargo pgrx init "${init_args[@]}"
fi

# pgvector from Debian's own source package (trixie, 0.8.0), built against each PostgreSQL; for 18
# with scripts/patches/pgvector-0.8.0-pg18.patch (0.8.0 predates 18's API).
for major in "${!PG_CONFIGS[@]}"; do
  config="${PG_CONFIGS[$major]}"
  if [ -f "$("$config" --sharedir)/extension/vector.control" ]; then
    log "pgvector present for PostgreSQL $major"
    continue
  fi
  log "building pgvector for PostgreSQL $major from Debian's source package"
  "$ROOT/scripts/deb-src.sh" trixie
  build_dir="$(mktemp -d)"
  (cd "$build_dir" && apt-get source -qq pgvector/trixie >/dev/null 2>&1 || apt-get source pgvector/trixie)
  if [ "$major" -ge 18 ]; then
    (cd "$build_dir"/pgvector-*/ && patch -s -p1 <"$ROOT/scripts/patches/pgvector-0.8.0-pg18.patch")
  fi
  (cd "$build_dir"/pgvector-*/ && make -s PG_CONFIG="$config" OPTFLAGS="" >/dev/null && $SUDO make -s install PG_CONFIG="$config" >/dev/null)
  rm -rf "$build_dir"
done

if [ -n "$python_pid" ]; then
  status=0
  wait "$python_pid" || status=$?
  python_pid=""
  cat "$python_log" && rm -f "$python_log"
  [ "$status" = 0 ] || log "WARNING: Python reference stack setup failed; parity tests on large configs will be skipped"
fi
log "done"
