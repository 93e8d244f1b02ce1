#!/usr/bin/env bash
# Pretrains the shipped default model with the project's own trainer (resumable: re-run the
# same command to continue). Runs in the foreground; use nohup/setsid to keep it in the background.
#
#   scripts/train-default-model.sh [extra plm-train flags]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${PLM_DATA:-$ROOT/../shared/data}"
RUN="${PLM_RUN:-$ROOT/runs/default-pretrain}"
cd "$ROOT"
cargo build --release -q -p plm-train
exec ./target/release/plm-train pretrain --resume \
  --train "$DATA/pretrain/swissprot2014_train.fasta.gz" \
  --valid "$DATA/pretrain/swissprot2014_valid.fasta.gz" \
  --out "$RUN" --name plm-default \
  --hidden 256 --layers 4 --heads 8 --intermediate 1024 \
  --max-len 256 --max-tokens 4096 --lr 1e-3 --warmup 200 --steps 4000 \
  --eval-every 250 --save-every 100 --valid-sequences 300 "$@"
