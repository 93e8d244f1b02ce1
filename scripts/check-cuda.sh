#!/usr/bin/env bash
# Compiles the GPU build of the inference server and the extension (`--features cuda`) on a
# machine without a GPU or CUDA toolkit, so that the CUDA code paths never rot: NVIDIA's compiler
# and headers come from PyPI wheels (scripts/gpu/cuda-toolkit.sh, cached), candle's CUDA kernels
# are compiled by nvcc, and the Rust code is type-checked (`cargo check`: nothing is linked, so
# neither the CUDA libraries nor a driver are needed). Run by scripts/test.sh.
#
#   scripts/check-cuda.sh [PG_MAJOR (default 15)]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR=${1:-15}
# shellcheck source=scripts/gpu/cuda-toolkit.sh
. "$ROOT/scripts/gpu/cuda-toolkit.sh"
cuda_toolkit
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$HOME/.cache/pg_plm/target-cuda}
cd "$ROOT"
# One invocation for both crates: candle's CUDA kernels (nvcc, minutes) are then built once, for
# one set of unified features.
cargo check -q -p plm-serve -p pg_plm --no-default-features \
  --features "plm-serve/cuda pg_plm/cuda pg_plm/pg$PG_MAJOR"
echo "[check-cuda] plm-serve and pg_plm (pg$PG_MAJOR) compile with --features cuda"
