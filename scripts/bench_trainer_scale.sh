#!/usr/bin/env bash
# Training at scale on this machine, recorded in docs/BENCHMARKS.md:
#  1. per-rank memory of 2 MPI ranks with and without --shard-optimizer (ZeRO stage 1), for the
#     ESM-2 8M and 35M shapes: AdamW state held per rank and peak resident memory per rank, as
#     the trainer measures them (RUN/last/manifest.json, training.memory);
#  2. pretraining tokens/s reading the Swiss-Prot corpus from a local S3-compatible server
#     (s3s-fs on loopback, checkpoints also to the bucket) against the same run on the local
#     file, alternating, same seed and steps.
#
#   scripts/bench_trainer_scale.sh [STEPS]     # STEPS of the throughput runs (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-30}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
S3S="${PLM_S3_SERVER:-$HOME/.cache/pg_plm/s3s/bin/s3s-fs}"
DATA="${PLM_DATA:-../shared/data}/pretrain/swissprot2014_train.fasta.gz"
[ -x "$S3S" ] || { echo "no s3s-fs at $S3S (scripts/install-deps.sh installs it)" >&2; exit 1; }
[ -f "$DATA" ] || { echo "no corpus at $DATA" >&2; exit 1; }

cargo build --release -q -p plm-train --features mpi
B="$CARGO_TARGET_DIR/release/plm-train"
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/s3/corpora"
cp "$DATA" "$tmp/s3/corpora/train.fasta.gz"
"$S3S" --host 127.0.0.1 --port "$port" --access-key bench --secret-key benchsecret "$tmp/s3" \
  >/dev/null 2>&1 &
s3pid=$!
trap 'kill $s3pid 2>/dev/null; rm -rf "$tmp"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true PLM_TRAIN_STAGING="$tmp/staging"
sleep 1

shape_args() {
  case "$1" in
    8M) echo "--hidden 320 --layers 6 --heads 20" ;;
    35M) echo "--hidden 480 --layers 12 --heads 20" ;;
  esac
}
field() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

declare -A tps wall
states=(); rsss=()
echo "## per-rank memory, 2 ranks, micro-batches of 2,048 tokens (MiB; rank 0 / rank 1)"
echo
echo "| shape | parameters | optimizer state, unsharded | sharded | peak RSS, unsharded | sharded |"
echo "|---|---|---|---|---|---|"
for shape in 8M 35M; do
  row="| $shape "
  for flag in "" "--shard-optimizer"; do
    run="$tmp/mem-$shape${flag:+-sharded}"
    # shellcheck disable=SC2046
    mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS "$B" pretrain \
      --train "$DATA" --out "$run" $(shape_args "$shape") --steps 2 --save-every 2 \
      --max-tokens 2048 --max-len 256 --buffer 256 --warmup 1 $flag 2>"$run.log" >/dev/null ||
      { tail -20 "$run.log" >&2; exit 1; }
    m="$run/last/manifest.json"
    [ -z "$flag" ] && row+="| $(field "$m" "m['training'].get('parameters') or ''") "
    state=$(field "$m" "' / '.join('%.1f' % v for v in m['training']['memory']['optimizer_state_mib'])")
    rss=$(field "$m" "' / '.join('%.0f' % v for v in m['training']['memory']['peak_rss_mib'])")
    states+=("$state"); rsss+=("$rss")
  done
  echo "$row| ${states[0]} | ${states[1]} | ${rsss[0]} | ${rsss[1]} |"
  states=(); rsss=()
done

echo
echo "## tokens/s: corpus and checkpoints in the local S3 server vs local files (8M shape, 1 process, $STEPS steps of 2,048 tokens)"
echo
echo "| round | local tokens/s | s3:// tokens/s | s3 ÷ local | local wall s | s3:// wall s (incl. upload) |"
echo "|---|---|---|---|---|---|"
for round in 1 2 3; do
  for where in local s3; do
    if [ "$where" = local ]; then train="$DATA"; out="$tmp/tp-local-$round"
    else train="s3://corpora/train.fasta.gz"; out="s3://corpora/runs/tp-$round"; fi
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    "$B" pretrain --train "$train" --out "$out" $(shape_args 8M) --steps "$STEPS" \
      --save-every "$STEPS" --max-tokens 2048 --max-len 256 --buffer 256 --warmup 5 \
      2>"$tmp/tp.log" >/dev/null || { tail -20 "$tmp/tp.log" >&2; exit 1; }
    wall[$where]=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    if [ "$where" = local ]; then m="$out/last/manifest.json"
    else m="$tmp/s3/corpora/runs/tp-$round/$(field "$tmp/s3/corpora/runs/tp-$round/last.json" "m['checkpoint']")/manifest.json"; fi
    tps[$where]=$(field "$m" "round(m['training']['tokens_seen'] / m['training']['elapsed_s'])")
  done
  echo "| $round | ${tps[local]} | ${tps[s3]} | $(python3 -c "print(f'{${tps[s3]}/${tps[local]}:.3f}')") | ${wall[local]} | ${wall[s3]} |"
done
