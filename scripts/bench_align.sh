#!/usr/bin/env bash
# Benchmark plm-align (align/examples/bench.rs) against MMseqs2 on the shared function data.
#
#   scripts/bench_align.sh [go|ec|all] [extra bench options...]
#
# go: reference = function/go/mf_18000.tsv (18,000 proteins), queries = the first 300
#     proteins of function/go/cc_18000.tsv that are not in the reference (GO has no test split).
# ec: reference = function/ec/train.tsv (7,757), queries = function/ec/test_new392.tsv (392).
# MMseqs2 easy-search runs with default sensitivity and with -s 7.5, one thread each; our engine
# runs single-threaded. Work files go to ~/.cache/pg_plm/bench/align.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/function}
WORK=${WORK:-$HOME/.cache/pg_plm/bench/align}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/align-target}
which=${1:-all}; shift || true
mkdir -p "$WORK"
nice -n 10 cargo build --release -j 1 -p plm-align --example bench
BENCH=$CARGO_TARGET_DIR/release/examples/bench

tsv_to_fasta() { awk -F'\t' 'NR > 1 { print ">" $1; print $NF }' "$1"; }

run_set() {
    local name=$1 ref=$2 queries=$3 n=$4
    shift 4
    tsv_to_fasta "$ref" > "$WORK/$name.ref.fasta"
    # The same queries as the bench binary: not in the reference, first $n.
    awk -F'\t' 'NR == FNR { if (FNR > 1) seen[$1] = 1; next }
                FNR > 1 && !($1 in seen) && n < '"$n"' { print $1 "\t" $NF; n++ }' "$ref" "$queries" \
        | awk -F'\t' 'BEGIN { print "id\tsequence" } { print }' > "$WORK/$name.queries.tsv"
    tsv_to_fasta "$WORK/$name.queries.tsv" > "$WORK/$name.queries.fasta"
    for s in default 7.5; do
        local out=$WORK/$name.mmseqs.s$s.m8 sens=()
        [ "$s" = default ] || sens=(-s "$s")
        if [ ! -s "$out" ]; then
            local t0=$(date +%s.%N)
            mmseqs easy-search "$WORK/$name.queries.fasta" "$WORK/$name.ref.fasta" "$out" "$WORK/tmp.$name" \
                --threads 1 "${sens[@]}" \
                --format-output query,target,fident,alnlen,qstart,qend,tstart,tend,evalue,bits >/dev/null
            echo "mmseqs $name -s $s: $(echo "$(date +%s.%N) - $t0" | bc) s wall for $n queries (1 thread)" \
                | tee "$out.time"
        else
            cat "$out.time"
        fi
        echo "== plm-align vs mmseqs ($name, -s $s)"
        "$BENCH" "$WORK/$name.ref.tsv" "$WORK/$name.queries.tsv" "$out" --queries "$n" "$@" 2> "$WORK/$name.s$s.missed.txt"
        echo "(missed top hits listed in $WORK/$name.s$s.missed.txt)"
    done
}

prepare_ref_tsv() { awk -F'\t' 'BEGIN { print "id\tsequence" } NR > 1 { print $1 "\t" $NF }' "$1" > "$2"; }

if [ "$which" = go ] || [ "$which" = all ]; then
    prepare_ref_tsv "$DATA/go/mf_18000.tsv" "$WORK/go.ref.tsv"
    run_set go "$DATA/go/mf_18000.tsv" "$DATA/go/cc_18000.tsv" 300 "$@"
fi
if [ "$which" = ec ] || [ "$which" = all ]; then
    prepare_ref_tsv "$DATA/ec/train.tsv" "$WORK/ec.ref.tsv"
    run_set ec "$DATA/ec/train.tsv" "$DATA/ec/test_new392.tsv" 392 "$@"
fi
