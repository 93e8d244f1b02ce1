#!/usr/bin/env bash
# Throughput of a prediction function through SQL on natural-length proteins, by method, side by
# side in one run: 'model' (the head alone: what the function computed before homology
# transfer), 'homology' and 'combined' (the default). Proteins: the first N sequences of the
# Swiss-Prot validation file (natural lengths; some, 58 of the first 500, are also in the GO/EC
# reference sets, as users' tables hold annotated proteins too), annotated in one statement (a
# nightly annotation job); the embedding cache is cleared before each run. TASK is an ontology
# (plm_function, top 5 terms), `ppi` (plm_ppi of each protein with the next one: N pairs) or
# `binding` (plm_binding_sites, every ligand, threshold 0.5).
# Usage: scripts/bench_methods.sh [proteins, default 500] [task, default go_mf]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${PLM_DATA:-$ROOT/../shared/data}"
N="${1:-500}"
TASK="${2:-go_mf}"
case "$TASK" in
  ppi) query() { echo "SELECT p.id, plm_ppi(p.sequence, q.sequence, method => '$1') AS p FROM bench_proteins p JOIN bench_proteins q ON q.id = p.id % $N + 1"; } ;;
  binding) query() { echo "SELECT p.id, b.* FROM bench_proteins p CROSS JOIN LATERAL plm_binding_sites(p.sequence, threshold => 0.5, method => '$1') b"; } ;;
  *) query() { echo "SELECT p.id, f.* FROM bench_proteins p CROSS JOIN LATERAL plm_function(p.sequence, '$TASK', top_k => 5, method => '$1') f"; } ;;
esac
# shellcheck source=scripts/bench_table.sh
source "$ROOT/scripts/bench_table.sh"
psql -X -q -A -t -d plm -c "SELECT count(*), round(avg(length(sequence))) FROM bench_proteins" |
  awk -F'|' '{printf "%s proteins, mean length %s residues, task '"$TASK"'\n", $1, $2}'
# Warm the model and the reference set so the timings compare steady states.
psql -X -q -d plm -c "SELECT count(*) FROM ($(query combined) LIMIT 1) w" >/dev/null
printf '%-10s %12s %14s %10s\n' method seconds proteins/s ratio
base=""
for method in model homology combined; do
  psql -X -q -d plm -c "SELECT plm_cache_clear()" >/dev/null
  start=$(date +%s.%N)
  psql -X -q -d plm -c "CREATE TEMP TABLE out AS $(query "$method")" >/dev/null
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')
  [ -z "$base" ] && base=$secs
  awk -v m="$method" -v s="$secs" -v n="$N" -v b="$base" 'BEGIN {printf "%-10s %12.1f %14.1f %10.2f\n", m, s, n / s, s / b}'
done
psql -X -q -d plm -c "DROP TABLE bench_proteins"
