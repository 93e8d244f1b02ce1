#!/usr/bin/env bash
# pgvector HNSW over real ESM-2 embeddings of Swiss-Prot proteins: embeds N sequences of the
# pretraining corpus with plm_embed_table (resumable: run the script again after an
# interruption and the job goes on), builds an HNSW index (cosine), and measures recall@10
# against exact search and the mean query time at several hnsw.ef_search values, for Q query
# proteins from the held-out validation file. Prints a Markdown table.
# Usage: scripts/bench_hnsw.sh [N=100000] [CROP=128] [Q=200] [model=plm-default]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
N="${1:-100000}"; CROP="${2:-128}"; Q="${3:-200}"; MODEL="${4:-plm-default}"
DATA="${PLM_DATA:-$ROOT/../shared/data}/pretrain"
export PGDATABASE=plm_bench_hnsw
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE plm_bench_hnsw" 2>/dev/null || true
q -c "CREATE EXTENSION IF NOT EXISTS vector" -c "CREATE EXTENSION IF NOT EXISTS pg_plm"
dim="$(q -c "SELECT embedding_dim FROM plm_model_info('$MODEL')")"
if [ "$(q -c "SELECT to_regclass('corpus') IS NULL")" = t ]; then
  q -c "CREATE TABLE corpus (id int PRIMARY KEY, seq text NOT NULL, emb vector($dim))"
  q -c "\\copy corpus (id, seq) FROM PROGRAM 'python3 $ROOT/scripts/fasta_rows.py $DATA/swissprot2014_train.fasta.gz $N $CROP'"
  q -c "CREATE TABLE queries (id int PRIMARY KEY, seq text NOT NULL, emb vector($dim))"
  q -c "\\copy queries (id, seq) FROM PROGRAM 'python3 $ROOT/scripts/fasta_rows.py $DATA/swissprot2014_valid.fasta.gz $Q $CROP'"
fi
start=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 -c "CALL plm_embed_table('corpus', 'seq', 'emb', model => '$MODEL', batch_rows => 512, notice_every => 10000)"
q -c "CALL plm_embed_table('queries', 'seq', 'emb', model => '$MODEL', notice_every => 0)" 2>/dev/null
embed_s=$(echo "$(date +%s.%N) - $start" | bc)
rows="$(q -c "SELECT count(emb) FROM corpus")"
residues="$(q -c "SELECT sum(length(seq)) FROM corpus")"
q -c "DROP INDEX IF EXISTS corpus_hnsw"
build="$(q <<'SQL'
SET maintenance_work_mem = '2GB';
SET max_parallel_maintenance_workers = 1;
SELECT clock_timestamp() AS t0 \gset
CREATE INDEX corpus_hnsw ON corpus USING hnsw (emb vector_cosine_ops);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 1);
SQL
)"
size="$(q -c "SELECT pg_size_pretty(pg_relation_size('corpus_hnsw'))")"
echo "corpus: $rows embeddings ($residues residues, cropped to $CROP) of $MODEL, dimension $dim"
echo "this run's embedding: ${embed_s%.*} s (0 if already embedded); HNSW build (m 16, ef_construction 64, 2 cores): $build s, index $size"
echo
echo "| hnsw.ef_search | recall@10 | mean query ms | exact-search query ms |"
echo "|---|---|---|---|"
q <<'SQL'
-- Exact neighbours by sequential scan.
SET enable_indexscan = off;
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE exact AS
SELECT q.id AS qid, n.id FROM queries q CROSS JOIN LATERAL (
    SELECT c.id FROM corpus c ORDER BY c.emb <=> q.emb LIMIT 10) n;
SELECT extract(epoch FROM clock_timestamp() - :'t0') * 1000 / (SELECT count(*) FROM queries) AS exact_ms \gset
RESET enable_indexscan;
SET enable_seqscan = off;
CREATE TEMP TABLE results (ef int, recall numeric, ms numeric);
DO $$
DECLARE
    ef int;
    t0 timestamptz;
    r numeric;
BEGIN
    FOREACH ef IN ARRAY ARRAY[10, 20, 40, 80, 160, 320] LOOP
        PERFORM set_config('hnsw.ef_search', ef::text, true);
        t0 := clock_timestamp();
        CREATE TEMP TABLE approx AS
        SELECT q.id AS qid, n.id FROM queries q CROSS JOIN LATERAL (
            SELECT c.id FROM corpus c ORDER BY c.emb <=> q.emb LIMIT 10) n;
        INSERT INTO results SELECT ef,
            (SELECT count(*) FROM approx a JOIN exact e USING (qid, id))::numeric / (SELECT count(*) FROM exact),
            extract(epoch FROM clock_timestamp() - t0) * 1000 / (SELECT count(*) FROM queries);
        DROP TABLE approx;
    END LOOP;
END $$;
SELECT format('| %s | %s | %s | %s |', ef, round(recall, 3), round(ms, 2), round(:exact_ms, 1)) FROM results ORDER BY ef;
SQL
