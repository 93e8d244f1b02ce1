#!/usr/bin/env bash
# Inference throughput of a teacher and its distilled student (and optionally a third model),
# side by side: `examples/throughput` on each model in turn, shape by shape, round by round, one
# thread, so every model sees the same machine load. Prints one JSON line per measurement.
#
#   scripts/bench_distillation.sh TEACHER_DIR STUDENT_DIR [OTHER_DIR] [ROUNDS (3)]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
cargo build -q --release --example throughput -p plm-model --manifest-path "$ROOT/Cargo.toml"
B=$CARGO_TARGET_DIR/release/examples/throughput
models=("$1" "$2")
[ -n "${3:-}" ] && models+=("$3")
for round in $(seq "${4:-3}"); do
  for shape in "1 300" "32 300"; do
    for dir in "${models[@]}"; do
      read -r batch length <<<"$shape"
      echo "{\"round\": $round, \"model\": \"$dir\", \"result\": $("$B" "$dir" "$batch" "$length" 5 1 | tail -1)}"
    done
  done
done
