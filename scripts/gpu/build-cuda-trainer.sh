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
CUDA_PIP=${CUDA_PIP:-$HOME/.cache/pg_plm/cuda13}
TARGET=${CUDA_TARGET_DIR:-$HOME/.cache/pg_plm/target-cuda}
CUDA=$CUDA_PIP/nvidia/cu13

if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -x "$CUDA/nvvm/bin/cicc" ]; then
  mkdir -p "$CUDA_PIP/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$CUDA_PIP/wheels" \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
  for w in "$CUDA_PIP"/wheels/*.whl; do unzip -q -o "$w" -d "$CUDA_PIP"; done
fi

# Unversioned names for the linker.
(cd "$CUDA/lib" && for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
  ln -sf libcurand.so.10 libcurand.so)

# libcuda.so stub: every cu* entry point cudarc declares, as an empty function.
mkdir -p "$CUDA/lib/stubs"
if [ ! -f "$CUDA/lib/stubs/libcuda.so" ]; then
  cargo metadata --format-version 1 --manifest-path "$ROOT/Cargo.toml" >/dev/null # fetches sources
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* | sort -V | tail -1)
  grep -ohE "\bfn cu[A-Za-z0-9_]+\s*\(" "$CUDARC/src/driver/sys/mod.rs" | sed -E 's/fn //; s/\s*\(//' |
    sort -u | awk '{print "void " $1 "(void) {}"}' >"$CUDA/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$CUDA/lib/stubs/cuda_stub.c"
fi

export CUDA_HOME=$CUDA CUDA_PATH=$CUDA CUDA_COMPUTE_CAP=$CAP
export PATH=$CUDA/bin:$PATH LIBRARY_PATH=$CUDA/lib:$CUDA/lib/stubs CPATH=$CUDA/include
CARGO_TARGET_DIR=$TARGET cargo build --release -p plm-train --features plm-model/cuda \
  --manifest-path "$ROOT/Cargo.toml" >&2
strip -o "$TARGET/release/plm-train-cuda" "$TARGET/release/plm-train"
echo "$TARGET/release/plm-train-cuda"
