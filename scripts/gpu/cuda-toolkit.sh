# Sourced by the CUDA build scripts: NVIDIA's CUDA 13.0 compiler, headers and libraries from PyPI
# wheels (no system toolkit, no GPU, no driver needed to build), cached in $CUDA_PIP (default
# ~/.cache/pg_plm/cuda13). Defines $CUDA and exports the variables candle's and cudarc's build
# scripts read. `cuda_toolkit` fetches the compiler and headers (enough for `cargo check`);
# `cuda_toolkit libs` also the libraries and a link-time stub of libcuda.so (for `cargo build`).
CUDA_PIP=${CUDA_PIP:-$HOME/.cache/pg_plm/cuda13}
CUDA=$CUDA_PIP/nvidia/cu13

cuda_wheels() { # downloads and unpacks the named wheels once
  mkdir -p "$CUDA_PIP/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$CUDA_PIP/wheels" \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "$@"
  for w in "$CUDA_PIP"/wheels/*.whl; do
    [ -f "$w.unpacked" ] || { unzip -q -o "$w" -d "$CUDA_PIP" && touch "$w.unpacked"; }
  done
}

cuda_toolkit() {
  local root="${BASH_SOURCE[0]%/*}/../.."
  if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -x "$CUDA/nvvm/bin/cicc" ]; then
    cuda_wheels "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
      "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*"
  fi
  if [ "${1:-}" = libs ]; then
    [ -f "$CUDA/lib/libcublas.so.13" ] ||
      cuda_wheels "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
    # Unversioned names for the linker.
    (cd "$CUDA/lib" && for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
      ln -sf libcurand.so.10 libcurand.so)
    # libcuda.so stub: every cu* entry point cudarc declares, as an empty function. The driver
    # library exists only where a GPU driver is installed; the real one is loaded at run time.
    mkdir -p "$CUDA/lib/stubs"
    if [ ! -f "$CUDA/lib/stubs/libcuda.so" ]; then
      cargo metadata --format-version 1 --manifest-path "$root/Cargo.toml" >/dev/null # fetches sources
      local cudarc
      cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* | sort -V | tail -1)
      grep -ohE "\bfn cu[A-Za-z0-9_]+\s*\(" "$cudarc/src/driver/sys/mod.rs" | sed -E 's/fn //; s/\s*\(//' |
        sort -u | awk '{print "void " $1 "(void) {}"}' >"$CUDA/lib/stubs/cuda_stub.c"
      gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$CUDA/lib/stubs/cuda_stub.c"
    fi
    export LIBRARY_PATH=$CUDA/lib:$CUDA/lib/stubs
  fi
  export CUDA_HOME=$CUDA CUDA_PATH=$CUDA CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  export PATH=$CUDA/bin:$PATH CPATH=$CUDA/include
}
