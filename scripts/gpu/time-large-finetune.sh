#!/usr/bin/env bash
# Times heads for a large ESM-2 on one GPU: a random-weight snapshot of the shape of
# esm2_t33_650M_UR50D (written by transformers, as a user's Hugging Face snapshot would be), then
#   1. `plm-train eval` (masked-LM forward passes over VALID),
#   2. `plm-train finetune --tasks ec` (embed every EC protein, fit, evaluate, write the model
#      directory),
# each on --device cuda, recording the wall time, the GPU's peak memory (nvidia-smi every
# 250 ms), the host's peak RSS and, for finetune, the features' residues/s at each progress
# line. Prints a JSON summary and writes it, with the logs, into OUT_DIR.
#
#   PLM_TRAIN=path/to/plm-train-cuda scripts/gpu/time-large-finetune.sh DATA VALID OUT_DIR [SIZE]
#
# DATA: a task data directory holding function/ec/{train,test_new392}.tsv (a subset does: the
# rate is what this measures). VALID: a FASTA (.gz allowed). SIZE: a size of
# scripts/make_parity_fixtures.py (default 650M). DEVICE=cpu runs it without a GPU (a dry run
# with a small SIZE). Needs python3 with torch and transformers.
set -euo pipefail
DATA=$1 VALID=$2 OUT=$3 SIZE=${4:-650M}
BIN=${PLM_TRAIN:?set PLM_TRAIN to a plm-train built with the cuda feature}
DEVICE=${DEVICE:-cuda}
EVAL_SEQUENCES=${EVAL_SEQUENCES:-500}
WORK=${WORK:-/tmp/plm-finetune-$SIZE}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
log() { echo "[$(date +%T)] $*" >&2; }

# timed NAME CMD...: runs CMD with its stderr in $WORK/NAME.log; writes $WORK/NAME.json with
# the exit status, wall seconds and the peak RSS (MiB) of the command.
timed() {
  local name=$1
  shift
  python3 - "$WORK/$name" "$@" <<'PY'
import json, resource, subprocess, sys, time
base, cmd = sys.argv[1], sys.argv[2:]
t = time.time()
with open(base + ".log", "w") as err:
    rc = subprocess.run(cmd, stderr=err).returncode
wall = time.time() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
json.dump({"rc": rc, "wall_s": round(wall, 1), "host_peak_rss_mib": round(rss)}, open(base + ".json", "w"))
PY
  tail -4 "$WORK/$name.log" >&2
}

log "random-weight $SIZE snapshot (transformers)"
python3 "$HERE/../make_parity_fixtures.py" "$SIZE" "$WORK/snapshot" --hub-layout --checkpoint-only >&2

poller=
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/gpu.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$WORK/gpu-mem.log" &
  poller=$!
fi
mark() { [ -z "$poller" ] || wc -l <"$WORK/gpu-mem.log"; }

log "eval: $EVAL_SEQUENCES sequences"
e0=$(mark)
timed eval "$BIN" --device "$DEVICE" eval --model "$WORK/snapshot" --data "$VALID" --sequences "$EVAL_SEQUENCES"
e1=$(mark)
log "finetune --tasks ec"
timed finetune "$BIN" --device "$DEVICE" finetune --model "$WORK/snapshot" --data "$DATA" --tasks ec \
  --out "$WORK/heads/$SIZE"
f1=$(mark)
[ -z "$poller" ] || kill "$poller"

python3 - "$WORK" "$DATA" "$SIZE" "$DEVICE" "${e0:-0}" "${e1:-0}" "${f1:-0}" <<'PY' | tee "$OUT/summary.json"
import json, os, re, sys
work, data, size, device = sys.argv[1:5]
e0, e1, f1 = (int(x) for x in sys.argv[5:8])
def peak(a, b):
    path = os.path.join(work, "gpu-mem.log")
    if not os.path.exists(path):
        return None
    rows = [int(x) for x in open(path).read().split()[a:b] if x.strip().isdigit()]
    return max(rows) if rows else None
def lengths(path):
    rows = open(path).read().splitlines()[1:]
    return [len(r.split("\t")[-1]) for r in rows if r]
ec = sorted(lengths(f"{data}/function/ec/train.tsv") + lengths(f"{data}/function/ec/test_new392.tsv"))
progress = []
for line in open(os.path.join(work, "finetune.log")):
    m = re.match(r"EC features: (\d+)/(\d+) proteins, (\d+) s", line)
    if m:
        done, secs = int(m[1]), int(m[3])
        residues = sum(ec[:done])  # proteins are embedded in length order
        progress.append({"proteins": done, "residues": residues, "s": secs,
                         "residues_per_s": round(residues / secs) if secs else None})
summary = {
    "size": size, "device": device,
    "gpu": open(os.path.join(work, "gpu.txt")).read().strip() if os.path.exists(os.path.join(work, "gpu.txt")) else None,
    "eval": {**json.load(open(os.path.join(work, "eval.json"))), "gpu_peak_mib": peak(e0, e1)},
    "finetune_ec": {**json.load(open(os.path.join(work, "finetune.json"))), "gpu_peak_mib": peak(e1, f1),
                    "proteins": len(ec), "residues": sum(ec), "features_progress": progress},
}
print(json.dumps(summary, indent=1))
PY
cp "$WORK"/*.log "$OUT/" 2>/dev/null || true
[ ! -f "$WORK/heads/$SIZE/results.json" ] || cp "$WORK/heads/$SIZE/results.json" "$OUT/"
