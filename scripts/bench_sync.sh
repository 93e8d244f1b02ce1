#!/usr/bin/env bash
# Keeping a table's embeddings current, side by side on one machine and checkpoint:
#   sync    plm_sync_create on a table of N rows without embeddings, until plm_sync_wait says
#           the background worker caught up (default batch_rows, plm.sync_batch_tokens);
#   job     CALL plm_embed_table on the same rows;
#   python  scripts/bench_pipeline.py: psycopg reads the rows, PyTorch transformers embeds them
#           in length-sorted batches, COPY back and one UPDATE (model load not timed).
# Rows are natural-length Swiss-Prot sequences (pretraining corpus, cropped to the model's
# 1,022 residues). The embedding cache is cleared before each run. For each model, prints
# rows/s per pipeline, their ratios to python, and the largest distance between the engine's
# and PyTorch's vectors (a check that both computed the same thing).
# Usage: scripts/bench_sync.sh [N=20000] [models: default plm-default and the 8M-shape fixture]
# The models esm2-8m-shape-bf16 and esm2-8m-shape-int8 are made here from the fixture with
# plm-train quantize; where the random weights fail its gates (int8: perplexity drift), an
# unchecked copy is timed and the script says so, as scripts/bench_sql.py does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
N="${1:-20000}"; shift || true
MODELS=("${@:-plm-default esm2-8m-shape}")
read -r -a MODELS <<<"${MODELS[*]}"
PY="${PLM_VENV:-$HOME/.cache/pg_plm/venv}/bin/python"
DATA="${PLM_DATA:-$ROOT/../shared/data}/pretrain"
MODEL_DIR="$(psql -X -A -t -c "SHOW plm.model_dir" 2>/dev/null || true)"
[ -n "$MODEL_DIR" ] || MODEL_DIR="$(pg_config --sharedir)/extension/pg_plm_models"
FIXTURE="$ROOT/model/tests/fixtures/generated/esm2_t6_8M"
# The 8M-shape model is installed for this run only (the test suites list the models).
trap 'rm -rf "$MODEL_DIR"/esm2-8m-shape "$MODEL_DIR"/esm2-8m-shape-*' EXIT
if [ ! -d "$MODEL_DIR/esm2-8m-shape" ]; then
  [ -f "$FIXTURE/model.safetensors" ] || "$PY" "$ROOT/scripts/make_parity_fixtures.py" 8M "$FIXTURE"
  mkdir -p "$MODEL_DIR/esm2-8m-shape"
  cp "$FIXTURE"/config.json "$FIXTURE"/model.safetensors "$FIXTURE"/vocab.txt "$MODEL_DIR/esm2-8m-shape/"
  chmod -R a+rX "$MODEL_DIR/esm2-8m-shape"
fi
for model in "${MODELS[@]}"; do
  case "$model" in esm2-8m-shape-bf16 | esm2-8m-shape-int8) ;; *) continue ;; esac
  precision="${model##*-}"
  rm -rf "${MODEL_DIR:?}/$model"
  gates="$(mktemp)"
  python3 "$ROOT/scripts/fasta_rows.py" "$DATA/swissprot2014_valid.fasta.gz" 64 1022 | awk -F'\t' '{print ">g" NR "\n" $2}' >"$gates"
  if ! "${CARGO_TARGET_DIR:-$ROOT/target}/release/plm-train" quantize --model "$MODEL_DIR/esm2-8m-shape" \
       --to "$MODEL_DIR/$model" --precision "$precision" --data "$gates" --sequences 64 >/dev/null 2>"$gates.err"; then
    echo "$model: $(head -1 "$gates.err" | sed 's/^Error: //; s/; nothing was written://') on these random weights; timed anyway (unchecked copy)"
    cp -r "$MODEL_DIR/esm2-8m-shape" "$MODEL_DIR/$model"
    echo "{\"name\": \"$model\", \"precision\": \"$precision\"}" >"$MODEL_DIR/$model/manifest.json"
  fi
  rm -f "$gates" "$gates.err"
  chmod -R a+rX "$MODEL_DIR/$model"
done
export PGDATABASE=plm_bench_sync
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_bench_sync WITH (FORCE)" -c "CREATE DATABASE plm_bench_sync"
q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION pg_plm"
q -c "CREATE TABLE corpus (id int PRIMARY KEY, seq text NOT NULL)"
q -c "\\copy corpus FROM PROGRAM 'python3 $ROOT/scripts/fasta_rows.py $DATA/swissprot2014_train.fasta.gz $N 1022'"
residues="$(q -c "SELECT sum(length(seq)) FROM corpus")"
now() { date +%s.%N; }
rate() { echo "scale=1; $N / ($2 - $1)" | bc; }
reset() { # $1: table
  q -c "UPDATE $1 SET emb = NULL" -c "DELETE FROM plm_internal.provenance" -c "SELECT plm_cache_clear()" >/dev/null
}
echo "$N rows, $residues residues (mean $((residues / N))), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | sync worker rows/s | plm_embed_table rows/s | Python pipeline rows/s | sync ÷ Python | job ÷ Python | max distance |"
echo "|---|---|---|---|---|---|---|"
for model in "${MODELS[@]}"; do
  dim="$(q -c "SELECT embedding_dim FROM plm_model_info('$model')")"
  table="proteins_${model//[^a-z0-9]/_}"
  q -c "CREATE TABLE $table (id int PRIMARY KEY, seq text NOT NULL, emb vector($dim), emb_engine vector($dim))" \
    -c "INSERT INTO $table (id, seq) SELECT id, seq FROM corpus"
  q -c "SELECT plm_embed('MKTAYIAKQRQ', model => '$model') IS NOT NULL" >/dev/null # load the model
  reset "$table"
  t0=$(now)
  q -c "SELECT plm_sync_create('$table', 'seq', 'emb', name => 'bench', model => '$model')" >/dev/null
  [ "$(q -c "SELECT plm_sync_wait('bench', '3 hours')")" = t ] || { echo "sync did not finish" >&2; exit 1; }
  t1=$(now)
  q -c "SELECT plm_sync_drop('bench')" >/dev/null
  sync_rate=$(rate "$t0" "$t1")
  reset "$table"
  t0=$(now)
  q -c "CALL plm_embed_table('$table', 'seq', 'emb', model => '$model', notice_every => 0)" 2>/dev/null
  t1=$(now)
  job_rate=$(rate "$t0" "$t1")
  q -c "UPDATE $table SET emb_engine = emb"
  reset "$table"
  py="$("$PY" "$ROOT/scripts/bench_pipeline.py" "$MODEL_DIR/$model" "$table")"
  py_rate="$(echo "$py" | "$PY" -c "import json,sys; print(round(json.load(sys.stdin)['rows_per_s'], 1))")"
  dist="$(q -c "SELECT round(max(emb <-> emb_engine)::numeric, 6) FROM $table")"
  printf '| %s | %s | %s | %s | %.2f | %.2f | %s |\n' "$model" "$sync_rate" "$job_rate" "$py_rate" \
    "$(echo "$sync_rate / $py_rate" | bc -l)" "$(echo "$job_rate / $py_rate" | bc -l)" "$dist"
done
psql -X -q -d postgres -c "DROP DATABASE plm_bench_sync WITH (FORCE)"
