#!/usr/bin/env bash
# Builds a CUDA-enabled `plm-train` on a machine WITHOUT a GPU or CUDA toolkit, for running on a
# CUDA 13 machine (driver >= 580) that has the CUDA 13 runtime libraries (cuBLAS, cuRAND, NVRTC,
# cudart: e.g. a PyTorch cu130 install). This is how the shipped teacher was trained on an H200.
#
#   scripts/gpu/build-cuda-trainer.sh [COMPUTE_CAP (default 90 = Hopper)]
#
# What it does: installs NVIDIA's CUDA 13.0 compiler, headers and libraries from PyPI wheels
# into $CUDA_PIP (default ~/.cache/pg_plm/cuda13), makes a link-time stub of libcuda.so (the
# driver library exists only where a GPU driver is installed; the stub only satisfies the linker,
# the real one is loaded at run time), and builds `--features plm-model/cuda` into its own target
# directory. Prints the path of the stripped binary. On the GPU machine, put the directories
# holding libcublas.so.13, libcudart.so.13, libcurand.so.10 and libnvrtc.so.13 on LD_LIBRARY_PATH.
# Where a full CUDA toolkit is installed, a plain `cargo build --release -p plm-train --features
# plm-model/cuda` does the same.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CAP=${1:-90}
TARGET=${CUDA_TARGET_DIR:-$HOME/.cache/pg_plm/target-cuda}
# shellcheck source=scripts/gpu/cuda-toolkit.sh
. "$ROOT/scripts/gpu/cuda-toolkit.sh"
export CUDA_COMPUTE_CAP=$CAP
cuda_toolkit libs
CARGO_TARGET_DIR=$TARGET cargo build --release -p plm-train --features plm-model/cuda \
  --manifest-path "$ROOT/Cargo.toml" >&2
strip -o "$TARGET/release/plm-train-cuda" "$TARGET/release/plm-train"
echo "$TARGET/release/plm-train-cuda"
