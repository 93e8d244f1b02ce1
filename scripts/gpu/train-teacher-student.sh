#!/usr/bin/env bash
# Pretrains a teacher (ESM-2 8M shape: 6 blocks x 320) and distils a 2-block student from it on
# one CUDA GPU inside a wall-clock budget, evaluates both, and packs the deployable checkpoints
# and the runs' metrics into OUT_DIR (split into 15 MB parts: bundle.tar.gz.part-*).
#
#   PLM_TRAIN=path/to/plm-train \   # built with: cargo build --release -p plm-train --features plm-model/cuda
#   scripts/gpu/train-teacher-student.sh TRAIN.fasta[.gz] VALID.fasta[.gz] OUT_DIR
#
# The number of optimizer steps is not fixed: a 20-step probe of each phase measures the
# seconds per step on this GPU (f32 and bf16; bf16 is used when it is at least 1.25x faster)
# and the schedule is sized to fill PRETRAIN_S and DISTILL_S seconds. Knobs (environment):
# PRETRAIN_S (300), DISTILL_S (100), TOKENS per micro-batch (65536), LR (1e-3), WORK (/tmp/plm-gpu),
# TEACHER (its plm-train shape flags), DEVICE (cuda; cpu for a dry run with a small TEACHER).
set -euo pipefail
TRAIN=$1 VALID=$2 OUT=$3
BIN=${PLM_TRAIN:-target/release/plm-train}
WORK=${WORK:-/tmp/plm-gpu}
PRETRAIN_S=${PRETRAIN_S:-300}
DISTILL_S=${DISTILL_S:-100}
TOKENS=${TOKENS:-65536}
LR=${LR:-1e-3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$WORK" "$OUT"
log() { echo "[$(date +%T)] $*"; }

read -r -a teacher_shape <<<"${TEACHER:---hidden 320 --layers 6 --heads 20 --intermediate 1280}"
data=(--train "$TRAIN" --valid "$VALID" --max-len 512 --max-tokens "$TOKENS" --accumulate "${ACCUM:-1}" --buffer 16384)

# Seconds per optimizer step from a run's metrics.jsonl (step 5 to the last step).
sec_per_step() {
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if "elapsed_s" in r and "step" in r]
a = next(r for r in rows if r["step"] == 5)
b = rows[-1]
print(f'{(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]):.5f}')
PY
}

# probe PHASE DTYPE ARGS...: runs 20 steps of PHASE and prints seconds per step.
probe() {
  local phase=$1 dtype=$2
  shift 2
  local dir=$WORK/probe-$phase-$dtype
  rm -rf "$dir"
  if ! "$BIN" --device "$DEVICE" "$phase" "${data[@]}" "$@" --out "$dir" --steps 20 --warmup 10 \
    --eval-every 1000 --save-every 1000 --valid-sequences 8 --dtype "$dtype" >"$dir.log" 2>&1; then
    tail -25 "$dir.log" >&2
    return 1
  fi
  sec_per_step "$dir/metrics.jsonl"
}

# pick F32_SECONDS BF16_SECONDS: the faster precision, bf16 only when clearly faster.
pick() {
  python3 -c "import sys; f, b = float(sys.argv[1]), float(sys.argv[2]); print('bf16' if b * 1.25 < f else 'f32')" "$1" "$2"
}
steps_for() { python3 -c "import sys; print(max(20, int(float(sys.argv[1]) / float(sys.argv[2]) * 0.92)))" "$1" "$2"; }

[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
log "probing pretraining"
p32=$(probe pretrain f32 "${teacher_shape[@]}")
p16=$(probe pretrain bf16 "${teacher_shape[@]}" || echo 1e9)
dtype=$(pick "$p32" "$p16")
sps=$([ "$dtype" = bf16 ] && echo "$p16" || echo "$p32")
steps=$(steps_for "$PRETRAIN_S" "$sps")
log "pretrain: f32 ${p32}s/step, bf16 ${p16}s/step -> $dtype, $steps steps of $TOKENS tokens"
timeout $((PRETRAIN_S + 120)) "$BIN" --device "$DEVICE" pretrain "${data[@]}" "${teacher_shape[@]}" \
  --out "$WORK/teacher" --name plm-teacher-6x320 --steps "$steps" --warmup $((steps / 20)) \
  --lr "$LR" --eval-every $((steps / 4)) --save-every 200 --valid-sequences 500 --dtype "$dtype" \
  >"$WORK/teacher.log" 2>&1 || log "pretraining stopped early (exit $?); exporting its last checkpoint"
tail -3 "$WORK/teacher.log"
"$BIN" export --from "$WORK/teacher/last" --to "$WORK/teacher-model" >/dev/null

log "probing distillation"
student=(--teacher "$WORK/teacher-model" --student-layers 2)
dsps=$(probe distill "$dtype" "${student[@]}")
dsteps=$(steps_for "$DISTILL_S" "$dsps")
log "distill: ${dsps}s/step ($dtype) -> $dsteps steps"
timeout $((DISTILL_S + 90)) "$BIN" --device "$DEVICE" distill "${data[@]}" "${student[@]}" \
  --out "$WORK/student" --name plm-default --steps "$dsteps" --warmup $((dsteps / 20)) \
  --lr "$LR" --eval-every $((dsteps / 2)) --save-every 200 --valid-sequences 500 --dtype "$dtype" \
  >"$WORK/student.log" 2>&1 || log "distillation stopped early (exit $?); exporting its last checkpoint"
tail -3 "$WORK/student.log"
"$BIN" export --from "$WORK/student/last" --to "$WORK/student-model" >/dev/null

log "validation perplexity (2,000 sequences)"
for m in teacher-model student-model; do
  "$BIN" --device "$DEVICE" eval --model "$WORK/$m" --data "$VALID" | tee "$WORK/$m.eval.json"
done

mkdir -p "$WORK/bundle"
for r in teacher student; do
  cp -r "$WORK/$r-model" "$WORK/bundle/"
  mkdir -p "$WORK/bundle/$r-run"
  cp "$WORK/$r-model.eval.json" "$WORK/$r/metrics.jsonl" "$WORK/$r/last/trainer.json" "$WORK/$r/loss.png" \
    "$WORK/$r.log" "$WORK/bundle/$r-run/" 2>/dev/null || true
done
cp "$WORK"/probe-*.log "$WORK/bundle/" 2>/dev/null || true
tar -C "$WORK" -czf "$WORK/bundle.tar.gz" bundle
split -b 15M "$WORK/bundle.tar.gz" "$OUT/bundle.tar.gz.part-"
ls -la "$OUT"
log done
