#!/usr/bin/env bash
# Fuzzes the parsers with afl++ on a stable toolchain (cargo-afl), resumably.
#
#   scripts/fuzz.sh build                 # install cargo-afl if missing, build the targets
#   scripts/fuzz.sh run TARGET [SECONDS]  # fuzz one target (default 600 s), resuming runs/fuzz/TARGET
#   scripts/fuzz.sh all [SECONDS]         # every target in turn
#   scripts/fuzz.sh keep TARGET           # add the queue's coverage-increasing inputs to fuzz/corpus/TARGET
#
# Targets: sequence structure checkpoint protocol align (see fuzz/src/lib.rs). A crash is
# saved under runs/fuzz/TARGET/default/crashes; copy it to fuzz/regressions/TARGET once fixed:
# `cargo test -p plm-fuzz` replays both directories in the normal test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGETS=(sequence structure checkpoint protocol align)
AFL_VERSION=0.15.24
# Instrumented builds use other compiler flags: keep them out of the normal build cache.
export CARGO_TARGET_DIR="${PLM_AFL_TARGET_DIR:-$HOME/.cache/pg_plm/target-afl}"
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
log() { printf '\033[1;34m[fuzz]\033[0m %s\n' "$*"; }

build() {
  if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
    log "cargo install cargo-afl $AFL_VERSION"
    cargo install cargo-afl --version "=$AFL_VERSION" --locked
  fi
  cargo afl config --build >/dev/null 2>&1 || true   # builds AFL++ once per toolchain
  [ -n "$(ls fuzz/corpus 2>/dev/null)" ] || cargo run -q -p plm-fuzz --bin fuzz_seeds
  cargo afl build -p plm-fuzz --features afl --bins
}

run() {
  local target=$1 seconds=${2:-600} out="runs/fuzz/$1" input
  mkdir -p "$out"
  input="fuzz/corpus/$target"
  # afl cannot add inputs to a resumed run: when the committed corpus changed (new seeds, kept
  # entries), start afresh from it and keep the old output beside it.
  local signature
  signature="$(cd "$input" && ls | sha1sum | cut -c1-16)"
  if [ -d "$out/default/queue" ] && [ "$(cat "$out/corpus.sig" 2>/dev/null)" = "$signature" ]; then
    input=-   # resume
  elif [ -d "$out/default/queue" ]; then
    rm -rf "$out.old" && mv "$out" "$out.old" && mkdir -p "$out"
    log "$target: the corpus changed since the last run; starting from it (previous output in $out.old)"
  fi
  echo "$signature" >"$out/corpus.sig"
  log "$target for ${seconds}s (output $out)"
  # -t: per-input time limit (ms); the checkpoint target loads a model per input.
  cargo afl fuzz -i "$input" -o "$out" -V "$seconds" -t 5000 -m none \
    "$CARGO_TARGET_DIR/debug/fuzz_$target" >"$out/afl.log" 2>&1 || true
  local stats="$out/default/fuzzer_stats"
  if [ -f "$stats" ]; then
    awk -F' *: *' '/^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg)/{printf "%s=%s ", $1, $2} END{print ""}' "$stats"
  else
    tail -20 "$out/afl.log"
  fi
}

keep() {
  # The queue entries that found new coverage ("+cov"), smallest first, up to a budget per
  # target, added to the committed corpus under content-addressed names. (afl-cmin of this
  # cargo-afl release fails on its own scratch files; Debian's speaks another protocol.)
  local target=$1 queue="runs/fuzz/$1/default/queue" budget=${PLM_FUZZ_CORPUS_BYTES:-1048576} used=0
  mkdir -p "fuzz/corpus/$target"
  while read -r size f; do
    [ $((used + size)) -gt "$budget" ] && break
    cp "$f" "fuzz/corpus/$target/$(sha1sum "$f" | cut -c1-16)"
    used=$((used + size))
  done < <(find "$queue" -type f -name '*+cov*' -printf '%s %p\n' | sort -n)
  log "fuzz/corpus/$target: $(ls "fuzz/corpus/$target" | wc -l) inputs, $(du -sh "fuzz/corpus/$target" | cut -f1)"
}

case "${1:-}" in
  build) build ;;
  run) run "$2" "${3:-600}" ;;
  all) for t in "${TARGETS[@]}"; do run "$t" "${2:-600}"; done ;;
  keep) keep "$2" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
