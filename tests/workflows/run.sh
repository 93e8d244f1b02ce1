#!/usr/bin/env bash
# Synced columns under faults, against the local server (pg_plm preloaded, so the sync launcher
# starts the sync workers with the server): a 1,200-row table is synced by the background
# worker while the worker is terminated mid-batch three times and the server is stopped
# immediately (no shutdown checkpoint) mid-batch and started again. Afterwards, row by row:
# every embedding present, equal to plm_embed of the row's sequence, written exactly once, and
# the sync's done counter equals the row count (no batch counted twice). Then a one-off
# plm_embed_table run is terminated and resumed where it stopped. New heads installed under a
# model's name re-queue its function syncs (plm_sync_alter, and the worker after a restart); a
# removed model leaves the specs alone. No PostgreSQL crash restart.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
export PGDATABASE=plm_sync_test PGOPTIONS="-c client_min_messages=warning"
. "$ROOT/tests/lib.sh"
ROWS=1200

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_sync_test WITH (FORCE)" -c "CREATE DATABASE plm_sync_test"
q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION pg_plm"
[ "$(q -c "SHOW shared_preload_libraries")" = pg_plm ] || fail "pg_plm is not preloaded"
. "$ROOT/tests/crash_check.sh"

# Natural-length fragments (40-440 residues) of real proteins; a write counter per row.
q <<SQL
CREATE TABLE proteins (id int PRIMARY KEY, seq text NOT NULL, emb vector(320),
                       writes int NOT NULL DEFAULT 0);
CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF NEW.emb IS DISTINCT FROM OLD.emb THEN NEW.writes := OLD.writes + 1; END IF;
    RETURN NEW;
END \$\$;
CREATE TRIGGER count_writes BEFORE UPDATE ON proteins FOR EACH ROW EXECUTE FUNCTION count_writes();
INSERT INTO proteins (id, seq)
SELECT i, substr(repeat(p, 4), 1 + (i * 37) % 300, 40 + (i * 53) % 400)
FROM generate_series(1, $ROWS) i,
     (VALUES ('MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACRETVEAYRP')) v(p);
SQL
crash_check_mark
queued="$(q -c "SELECT plm_sync_create('proteins', 'seq', 'emb', batch_rows => 16)")"
[ "$queued" = "$ROWS" ] || fail "queued $queued rows, expected $ROWS"
ok "sync created, $queued rows queued"

active_worker() { # waits for the sync worker to be in a batch; prints its pid
  local pid=""
  for _ in $(seq 1 600); do
    pid="$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_plm sync'
                 AND datname = current_database() AND state = 'active'")"
    [ -n "$pid" ] && { echo "$pid"; return; }
    sleep 0.05
  done
  fail "the sync worker never ran a batch"
}
done_rows() { q -c "SELECT done FROM plm_sync_status WHERE name = 'proteins_emb'"; }

# 1. The worker terminated mid-batch: its batch rolls back, it restarts and goes on.
for i in 1 2 3; do
  pid="$(active_worker)"
  before="$(done_rows)"
  q -c "SELECT pg_terminate_backend($pid)" >/dev/null
  ok "sync worker $pid terminated mid-batch ($before rows done)"
  sleep 0.5
done
for _ in $(seq 1 300); do
  [ "$(done_rows)" -gt "$before" ] && break
  sleep 0.1
done
[ "$(done_rows)" -gt "$before" ] || fail "the sync worker did not come back"
ok "the sync worker came back and went on ($(done_rows) rows done)"
crash_check_verify

# 2. The server stopped immediately mid-batch (crash recovery at start); the launcher
# starts the sync worker again, nobody calls a sync function.
pid="$(active_worker)"
before="$(done_rows)"
"$ROOT/scripts/pg-local.sh" stop-immediate
"$ROOT/scripts/pg-local.sh" start >/dev/null
crash_check_mark # the immediate stop itself replaced the checkpointer
ok "server stopped immediately while worker $pid ran a batch ($before rows done), started again"
[ "$(q -c "SELECT plm_sync_wait('proteins_emb', '15 min')")" = t ] || fail "the sync did not catch up"
ok "caught up after the restart"

# 3. Row by row: nothing lost, nothing done twice, every value right.
read -r embedded once done wrong <<<"$(q -F ' ' <<'SQL'
SELECT count(p.emb), count(*) FILTER (WHERE p.writes = 1), s.done,
       count(*) FILTER (WHERE NOT (p.emb <-> e.embedding::vector) < 1e-5)
FROM proteins p
JOIN plm_embed((SELECT array_agg(seq ORDER BY id) FROM proteins), model => 'plm-default') e
  ON e.ordinality = p.id
CROSS JOIN plm_sync_status s
GROUP BY s.done
SQL
)"
[ "$embedded" = "$ROWS" ] || fail "$embedded of $ROWS rows embedded"
[ "$once" = "$ROWS" ] || fail "$once of $ROWS rows written exactly once"
[ "$done" = "$ROWS" ] || fail "the sync counted $done rows done, expected $ROWS"
[ "$wrong" = 0 ] || fail "$wrong embeddings differ from plm_embed"
ok "row by row: $embedded embedded, $once written exactly once, all equal to plm_embed, done = $done"
[ "$(q -c "SELECT count(*) FROM plm_internal.queue")" = 0 ] || fail "queue not empty"

# 4. Changes while the worker runs: only the changed rows are computed again.
q -c "UPDATE proteins SET seq = seq || 'W' WHERE id % 100 = 0"
[ "$(q -c "SELECT plm_sync_wait('proteins_emb', '5 min')")" = t ] || fail "the sync did not catch up"
read -r twice others <<<"$(q -F ' ' -c "SELECT count(*) FILTER (WHERE writes = 2), count(*) FILTER (WHERE writes <> 1 AND id % 100 <> 0) FROM proteins")"
[ "$twice" = $((ROWS / 100)) ] && [ "$others" = 0 ] || fail "after 12 updates: $twice rows written twice, $others others rewritten"
ok "12 sequences changed: those 12 recomputed by the worker, no other row"
q -c "SELECT plm_sync_drop('proteins_emb')" >/dev/null

# 5. A one-off job terminated mid-run resumes after the last committed key.
q -c "UPDATE proteins SET emb = NULL" -c "UPDATE proteins SET writes = 0" -c "DELETE FROM plm_internal.provenance"
q -c "CALL plm_embed_table('proteins', 'seq', 'emb', batch_rows => 32)" >/dev/null 2>&1 &
job=$!
for _ in $(seq 1 600); do
  [ "$(q -c "SELECT coalesce(max(rows_processed), 0) FROM plm_job_progress")" -ge 200 ] && break
  sleep 0.05
done
q -c "SELECT pg_terminate_backend(pid) FROM plm_job_progress WHERE state = 'running'" >/dev/null
wait "$job" 2>/dev/null && fail "the job was not interrupted"
read -r state processed <<<"$(q -F ' ' -c "SELECT state, rows_processed FROM plm_job_progress")"
[ "$state" = interrupted ] || fail "job state after termination: $state"
ok "job terminated after $processed rows: shown as interrupted"
q -c "CALL plm_embed_table('proteins', 'seq', 'emb', batch_rows => 32)" >/dev/null
read -r jobs state computed skipped <<<"$(q -F ' ' -c "SELECT count(*) OVER (), state, rows_computed, rows_skipped FROM plm_job_progress")"
[ "$jobs" = 1 ] && [ "$state" = finished ] || fail "resume: $jobs jobs, state $state"
read -r embedded once <<<"$(q -F ' ' -c "SELECT count(emb), count(*) FILTER (WHERE writes = 1) FROM proteins")"
[ "$embedded" = "$ROWS" ] && [ "$once" = "$ROWS" ] || fail "after resume: $embedded embedded, $once written once"
ok "resumed the same job: $computed rows computed in all, every row written exactly once"

# 6. Wider than pgvector's 2,000-dimension index limit for vector: a 2,560-wide model (ESM-2
# 3B's width, one random block) synced into halfvec(2560) and indexed with HNSW.
PY="${PLM_VENV:-$HOME/.cache/pg_plm/venv}/bin/python"
WIDE="$ROOT/model/tests/fixtures/generated/esm2_wide"
MODEL_DIR="$(pg_config --sharedir)/extension/pg_plm_models"
if [ -x "$PY" ] && "$PY" -c "import torch, transformers" 2>/dev/null; then
  [ -f "$WIDE/model.safetensors" ] || "$PY" "$ROOT/scripts/make_parity_fixtures.py" wide "$WIDE" >/dev/null 2>&1
  rm -rf "$MODEL_DIR/esm2-wide-test" && mkdir -p "$MODEL_DIR/esm2-wide-test"
  cp "$WIDE/config.json" "$WIDE/model.safetensors" "$WIDE/vocab.txt" "$MODEL_DIR/esm2-wide-test/"
  chmod -R a+rX "$MODEL_DIR/esm2-wide-test"
  trap 'rm -rf "$MODEL_DIR/esm2-wide-test"' EXIT
  [ "$(q -c "SELECT embedding_dim FROM plm_model_info('esm2-wide-test')")" = 2560 ] || fail "wide model"
  q -c "CREATE TABLE wide (id int PRIMARY KEY, seq text NOT NULL, emb halfvec(2560))" \
    -c "INSERT INTO wide SELECT id, seq FROM proteins WHERE id <= 60"
  q -c "SELECT plm_sync_create('wide', 'seq', 'emb', model => 'esm2-wide-test', batch_rows => 16)" >/dev/null
  [ "$(q -c "SELECT plm_sync_wait('wide_emb', '10 min')")" = t ] || fail "the wide sync did not catch up"
  read -r embedded close <<<"$(q -F ' ' -c "SELECT count(emb), bool_and((emb::vector <=> plm_embed(seq, model => 'esm2-wide-test')::vector) < 1e-5) FROM wide")"
  [ "$embedded" = 60 ] && [ "$close" = t ] || fail "wide sync: $embedded embedded, equal to plm_embed: $close"
  q -c "CREATE INDEX ON wide USING hnsw (emb halfvec_cosine_ops)"
  self="$(q -c "SET enable_seqscan = off" -c "SELECT bool_and((SELECT w2.id FROM wide w2 ORDER BY w2.emb <=> w.emb LIMIT 1) = w.id) FROM wide w")"
  [ "$self" = t ] || fail "halfvec HNSW: a row's nearest neighbour is not itself"
  if q -c "CREATE TABLE wide_f32 AS SELECT id, emb::vector(2560) AS emb FROM wide" \
       -c "CREATE INDEX ON wide_f32 USING hnsw (emb vector_cosine_ops)" 2>/dev/null; then
    fail "pgvector indexed vector(2560): the halfvec advice is out of date"
  fi
  ok "2,560-dimension embeddings synced into halfvec(2560), HNSW-indexed (vector(2560) cannot be)"
  q -c "SELECT plm_sync_drop('wide_emb')" >/dev/null
else
  echo "SKIPPED - halfvec over 2,000 dimensions: the Python stack that builds the wide test model is unavailable"
fi

# 7. A sync created in a transaction that commits only after its worker started: the worker
# must wait for that transaction instead of exiting because it saw no active sync.
q -c "SELECT plm_sync_drop(name) FROM plm_sync_status" >/dev/null
for _ in $(seq 1 100); do
  [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_plm sync' AND datname = current_database()")" = 0 ] && break
  sleep 0.1
done
q -c "CREATE TABLE late (id int PRIMARY KEY, seq text NOT NULL, emb vector(320))" \
  -c "INSERT INTO late SELECT id, seq FROM proteins WHERE id <= 20"
q <<'SQL' >/dev/null
BEGIN;
SELECT plm_sync_create('late', 'seq', 'emb');
SELECT pg_sleep(2);
COMMIT;
SQL
[ "$(q -c "SELECT plm_sync_wait('late_emb', '60 s')")" = t ] || fail "the sync created in a slow transaction was never processed"
ok "a sync committed after its worker started is processed"
q -c "SELECT plm_sync_drop('late_emb')" >/dev/null

# 8. New heads under the same model name: a synced function column is re-queued by
# plm_sync_alter with unchanged arguments (the spec holds the heads' fingerprint), an embedding
# column is not (its values depend on the weights only).
# New heads without new weights: a refitted EC blend (weight halved) in heads-test's heads.json.
refit_ec_blend() {
  python3 - "$MODEL_DIR/heads-test/heads.json" <<'PY'
import json, sys
heads = json.load(open(sys.argv[1]))
heads["blend"]["ec"]["alpha"] = heads["blend"]["ec"]["alpha"] / 2
json.dump(heads, open(sys.argv[1], "w"))
PY
}
rm -rf "$MODEL_DIR/heads-test" && cp -r "$MODEL_DIR/plm-default" "$MODEL_DIR/heads-test"
chmod -R a+rX "$MODEL_DIR/heads-test"
trap 'rm -rf "$MODEL_DIR/esm2-wide-test" "$MODEL_DIR/heads-test"' EXIT
q -c "CREATE TABLE annotated (id int PRIMARY KEY, seq text NOT NULL, emb vector(320))" \
  -c "INSERT INTO annotated SELECT id, seq FROM proteins WHERE id <= 8" \
  -c "SELECT plm_sync_create('annotated', 'seq', 'annotated_ec', name => 'ec', task => 'function', model => 'heads-test')" \
  -c "SELECT plm_sync_create('annotated', 'seq', 'emb', name => 'emb', model => 'heads-test')" >/dev/null
[ "$(q -c "SELECT plm_sync_wait('ec', '5 min') AND plm_sync_wait('emb', '5 min')")" = t ] || fail "heads-test syncs did not catch up"
q -c "SELECT plm_sync_pause('ec')" -c "SELECT plm_sync_pause('emb')" >/dev/null
before="$(q -c "SELECT plm_task_fingerprint('ec', 'heads-test')")"
[ "$(q -c "SELECT plm_sync_alter('ec') + plm_sync_alter('emb')")" = 0 ] || fail "alter without changes re-queued rows"
refit_ec_blend
[ "$(q -c "SELECT plm_task_fingerprint('ec', 'heads-test')")" != "$before" ] || fail "plm_task_fingerprint did not change with heads.json"
requeued="$(q -c "SELECT plm_sync_alter('ec')")"
[ "$requeued" = 8 ] || fail "new heads: plm_sync_alter('ec') re-queued $requeued rows, expected 8"
[ "$(q -c "SELECT plm_sync_alter('emb')")" = 0 ] || fail "new heads re-queued an embedding column"
ok "new heads under the same model name: plm_sync_alter re-queued the function sync's 8 rows, the embedding sync's none"
# Without a call: new heads again, then a restart; the sync worker checks the specs when it starts.
q -c "DELETE FROM plm_internal.queue WHERE sync = 'ec'"
specs() { q -c "SELECT string_agg(name || '=' || spec, ' ' ORDER BY name) FROM plm_internal.sync WHERE name IN ('ec', 'emb')"; }
before="$(specs)"
refit_ec_blend
crash_check_verify
logpos="$(stat -c %s "$CRASH_CHECK_LOG")"
"$ROOT/scripts/pg-local.sh" restart >/dev/null
crash_check_mark # a clean restart replaces the checkpointer too
for _ in $(seq 1 300); do
  [ "$(q -c "SELECT count(*) FROM plm_internal.queue WHERE sync = 'ec'")" = 8 ] && break
  sleep 0.1
done
after="$(specs)"
[ "$(q -c "SELECT count(*) FROM plm_internal.queue WHERE sync = 'ec'")" = 8 ] || fail "after new heads and a restart, the function sync's rows were not re-queued"
[ "${before#* }" = "${after#* }" ] || fail "a restart with new heads changed the embedding sync's spec"
[ "${before%% *}" != "${after%% *}" ] || fail "a restart with new heads left the function sync's spec"
[ "$(q -c "SELECT plm_sync_alter('ec') + plm_sync_alter('emb')")" = 0 ] || fail "the refreshed spec differs from plm_sync_alter's"
tail -c +$((logpos + 1)) "$CRASH_CHECK_LOG" | grep -q "model heads-test of sync ec changed (weights, heads or reference set); 8 rows queued again" ||
  fail "the server log does not say why the function sync was re-queued"
ok "new heads and a restart: the sync worker re-queued the function sync's 8 rows by itself, the embedding sync kept its spec"
# The model removed: the worker keeps the specs, says why, and PostgreSQL carries on.
before="$(specs)"
rm -rf "$MODEL_DIR/heads-test"
crash_check_verify
logpos="$(stat -c %s "$CRASH_CHECK_LOG")"
"$ROOT/scripts/pg-local.sh" restart >/dev/null
crash_check_mark
for _ in $(seq 1 300); do
  tail -c +$((logpos + 1)) "$CRASH_CHECK_LOG" | grep -q "sync emb could not be checked against model heads-test" && break
  sleep 0.1
done
tail -c +$((logpos + 1)) "$CRASH_CHECK_LOG" | grep -q "sync ec could not be checked against model heads-test" ||
  fail "a sync whose model was removed: no warning in the server log"
[ "$(specs)" = "$before" ] || fail "a sync whose model was removed changed its spec"
q -c "SELECT plm_sync_drop('ec')" -c "SELECT plm_sync_drop('emb')" >/dev/null
ok "model removed and a restart: both syncs keep their specs, the server log says why"

crash_check_verify
ok "no PostgreSQL crash restart since the immediate stop"
psql -X -q -d postgres -c "DROP DATABASE plm_sync_test WITH (FORCE)"
