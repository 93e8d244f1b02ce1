#!/usr/bin/env bash
# Throughput of every SQL function on a table of natural-length proteins (issue 15, item 5):
# the first N proteins of the Swiss-Prot validation file (`plm.long_sequence_policy = window` for
# the few over 1,022 residues), each function over the whole table in one statement through the
# preloaded local server (scripts/pg-local.sh), `plm-default`, embedding cache cleared before each.
#
#   scripts/bench_functions.sh [N, default 2000] [functions, default all]
#
# Functions (comma-separated): embed (plm_embed per row), embed_array (one plm_embed(text[]) call),
# residues (plm_residue_embeddings, rows counted), contacts (plm_contacts), ec, go_mf, go_bp, go_cc
# (plm_function, top 5), ppi (plm_ppi of each protein with the next: N pairs), binding
# (plm_binding_sites, every ligand, threshold 0.5). On 2 cores `binding` takes about 25 minutes
# for 2,000 proteins, the whole list about an hour.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${PLM_DATA:-$ROOT/../shared/data}"
N="${1:-2000}"
FUNCTIONS="${2:-embed,embed_array,residues,contacts,ec,go_mf,go_bp,go_cc,ppi,binding}"
query() {
  case "$1" in
    embed) echo "SELECT id, plm_embed(sequence) AS e FROM bench_proteins" ;;
    embed_array) echo "SELECT * FROM plm_embed((SELECT array_agg(sequence ORDER BY id) FROM bench_proteins))" ;;
    residues) echo "SELECT p.id, count(*) AS n FROM bench_proteins p CROSS JOIN LATERAL plm_residue_embeddings(p.sequence) r GROUP BY p.id" ;;
    contacts) echo "SELECT p.id, c.* FROM bench_proteins p CROSS JOIN LATERAL plm_contacts(p.sequence) c" ;;
    ec | go_mf | go_bp | go_cc) echo "SELECT p.id, f.* FROM bench_proteins p CROSS JOIN LATERAL plm_function(p.sequence, '$1', top_k => 5) f" ;;
    ppi) echo "SELECT p.id, plm_ppi(p.sequence, q.sequence) AS p FROM bench_proteins p JOIN bench_proteins q ON q.id = p.id % $N + 1" ;;
    binding) echo "SELECT p.id, b.* FROM bench_proteins p CROSS JOIN LATERAL plm_binding_sites(p.sequence, threshold => 0.5) b" ;;
    *) echo "unknown function '$1'" >&2; exit 2 ;;
  esac
}
unit() { [ "$1" = ppi ] && echo pairs || echo proteins; }
# shellcheck source=scripts/bench_table.sh
source "$ROOT/scripts/bench_table.sh"
psql -X -q -A -t -d plm -c "SELECT count(*), round(avg(length(sequence))), sum(length(sequence)) FROM bench_proteins" |
  awk -F'|' -v d="$(date '+%Y-%m-%d %H:%M')" '{printf "%s proteins, mean length %s, %s residues; %s\n", $1, $2, $3, d}'
# Load the model and the reference sets first (on two proteins), so each row is a steady state.
psql -X -q -d plm -c "DROP TABLE IF EXISTS bench_warm; CREATE TABLE bench_warm AS SELECT * FROM bench_proteins WHERE id <= 2"
for f in ${FUNCTIONS//,/ }; do
  psql -X -q -d plm -c "SELECT count(*) FROM ($(query "$f" | sed 's/bench_proteins/bench_warm/g')) w" >/dev/null
done
psql -X -q -d plm -c "DROP TABLE bench_warm"
printf '| function | seconds | per second | residues/s |\n|---|---|---|---|\n'
residues=$(psql -X -q -A -t -d plm -c "SELECT sum(length(sequence)) FROM bench_proteins")
for f in ${FUNCTIONS//,/ }; do
  psql -X -q -d plm -c "SELECT plm_cache_clear()" >/dev/null
  start=$(date +%s.%N)
  psql -X -q -d plm -c "CREATE TEMP TABLE out AS $(query "$f")" >/dev/null
  end=$(date +%s.%N)
  factor=1
  [ "$f" = ppi ] && factor=2   # two proteins per pair
  awk -v f="$f" -v s="$start" -v e="$end" -v n="$N" -v u="$(unit "$f")" -v r="$residues" -v k="$factor" \
    'BEGIN {t = e - s; printf "| %s | %.1f | %.1f %s | %.0f |\n", f, t, n / t, u, k * r / t}'
done
psql -X -q -d plm -c "DROP TABLE bench_proteins"
