#!/usr/bin/env bash
# The isolated inference server (plm-serve, supervised by the pg_plm background worker) against
# a real server with pg_plm in shared_preload_libraries (the local cluster of
# scripts/pg-local.sh): answers equal to in-backend inference bit for bit (also when concurrent
# sessions share batches); kill -9 and an abort of the inference server during a request cause
# no PostgreSQL crash restart, the request gets 08006 and a transaction interrupted that way
# loses nothing; falling back to in-backend inference by setting; cancelling a long request
# (statement_timeout) in time; refusing an oversized one. Then the same fault and cancel checks
# without preloading (the supervisor started on demand as a dynamic background worker).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
export PGDATABASE=plm_worker_test PGOPTIONS="-c client_min_messages=warning"
. "$ROOT/tests/lib.sh"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_worker_test" -c "CREATE DATABASE plm_worker_test"
q -c "CREATE EXTENSION pg_plm"
[ "$(q -c "SHOW shared_preload_libraries")" = pg_plm ] || fail "pg_plm is not preloaded"

worker_pid() { q -c "SELECT pid FROM plm_worker_stats()"; }
. "$ROOT/tests/crash_check.sh"
PGLOG="$CRASH_CHECK_LOG"
crash_check_mark
pid0="$(worker_pid)"
[ -n "$pid0" ] || fail "no inference server statistics"
ok "inference server running (pid $pid0, supervised by pid $(q -c "SELECT supervisor_pid FROM plm_worker_stats()"))"
sock="${PLM_PGHOME:-/var/lib/postgresql/pg_plm}/data/pg_plm_server.sock"
[ "$(stat -c '%a %U' "$sock")" = "600 postgres" ] || fail "socket permissions: $(stat -c '%a %U' "$sock")"
[ "$(cat "/proc/$pid0/oom_score_adj")" = 1000 ] || fail "oom_score_adj of the server: $(cat "/proc/$pid0/oom_score_adj")"
[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid0")" = 0 ] || fail "the server is a PostgreSQL process"
ok "socket mode 600 owned by postgres; server outside PostgreSQL's processes, first in line for the OOM killer"

# A long, real-looking protein for long requests.
q <<'SQL'
CREATE TABLE seqs AS
SELECT i AS id,
       substr(repeat('MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACRETVEAYRP', 3), 1 + (i * 37) % 200, 3 + (i * 13) % 120) AS seq
FROM generate_series(1, 48) i;
CREATE FUNCTION long_batch(n int) RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(substr(repeat('MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACRETVEAYRP', 6), i, 1000))
  FROM generate_series(1, n) i $$;
SQL

# 1. Same answers through the worker and in the backend, for every function.
compare() { # $1: label, $2: query producing rows
  local diff
  diff="$(q <<SQL
CREATE TEMP TABLE via_worker AS $2;
SET plm.use_worker = off;
CREATE TEMP TABLE in_backend AS $2;
SELECT (SELECT count(*) FROM via_worker) || ' ' ||
       (SELECT count(*) FROM (SELECT * FROM via_worker EXCEPT ALL SELECT * FROM in_backend) a) || ' ' ||
       (SELECT count(*) FROM (SELECT * FROM in_backend EXCEPT ALL SELECT * FROM via_worker) b);
SQL
)"
  set -- "$1" $diff
  [ "$2" -gt 0 ] || fail "$1: no rows"
  [ "$3" = 0 ] && [ "$4" = 0 ] || fail "$1: worker and in-backend answers differ ($3/$4 of $2 rows)"
  ok "$1: $2 rows identical through the worker and in the backend"
}
compare "plm_embed" "SELECT id, plm_embed(seq) AS e, plm_embed(seq, layer => 1, pooling => 'max') AS m FROM seqs"
compare "plm_embed(text[])" "SELECT * FROM plm_embed(ARRAY(SELECT seq FROM seqs ORDER BY id), pooling => 'cls')"
compare "plm_embed_residues" "SELECT id, plm_embed_residues(seq, layers => ARRAY[-1, 1]) AS r FROM seqs WHERE id <= 12"
compare "plm_contacts" "SELECT id, c.* FROM seqs, plm_contacts(seq, 0.0) c WHERE id <= 6"
compare "plm_binding_sites" "SELECT id, b.* FROM seqs, plm_binding_sites(seq, threshold => 0.0) b WHERE id <= 6"
if q -c "SELECT 'ec' = ANY(heads) FROM plm_models() WHERE name = 'plm-default'" | grep -q t; then
  compare "plm_function" "SELECT id, f.* FROM seqs, plm_function(seq, 'go_mf', 10) f WHERE id <= 8"
  compare "plm_ppi" "SELECT a.id AS a, b.id AS b, plm_ppi(a.seq, b.seq) AS p FROM seqs a, seqs b WHERE a.id <= 4 AND b.id <= 4"
fi

# 2. Concurrent sessions, row by row: their requests share worker batches; answers unchanged.
q -c "CREATE TABLE concurrent (id int, e real[])"
before="$(q -c "SELECT batches || ' ' || requests FROM plm_worker_stats()")"
for k in 0 1 2 3; do
  q -c "INSERT INTO concurrent SELECT id, plm_embed(seq, layer => 2) FROM seqs WHERE id % 4 = $k" &
done
wait
after="$(q -c "SELECT batches || ' ' || requests FROM plm_worker_stats()")"
differ="$(q -c "SET plm.use_worker = off; SELECT count(*) FROM concurrent c JOIN seqs s USING (id) WHERE c.e IS DISTINCT FROM plm_embed(s.seq, layer => 2)")"
[ "$differ" = 0 ] || fail "concurrent answers differ from in-backend ones for $differ rows"
set -- $before $after
ok "4 concurrent sessions: 48 answers identical to in-backend ones ($(( $4 - $2 )) requests in $(( $3 - $1 )) worker batches)"

# 3. Kill the inference server with SIGKILL, then with SIGABRT (what a failed allocation or a
#    Rust abort does), each during a long request: the request gets 08006 naming what
#    happened, PostgreSQL does not restart, the next query is answered by a new server.
fault() { # $1: signal name
  local before after
  q -c "SELECT plm_cache_clear()" >/dev/null # long requests must not come from the cache
  before="$(worker_pid)"
  ( psql -X -q -A -t -v VERBOSITY=verbose -c "SELECT count(*) FROM plm_embed(long_batch(150))" >/tmp/plm_fault.out 2>&1 || true ) &
  sleep 2
  kill "-$1" "$before"
  wait
  grep -q "08006" /tmp/plm_fault.out && grep -q "inference server (pid $before) was killed by signal" /tmp/plm_fault.out \
    || fail "in-flight request after SIG$1: $(cat /tmp/plm_fault.out)"
  ok "SIG$1 of the inference server: $(grep -o 'ERROR.*' /tmp/plm_fault.out | head -1 | cut -c1-160)"
  [ "$(q -c "SELECT array_length(plm_embed('MKTAYIAKQRQISFVKSHFSRQ'), 1)")" -gt 0 ] || fail "no answer after SIG$1"
  after="$(worker_pid)"
  [ "$after" != "$before" ] || fail "server pid unchanged after SIG$1"
  crash_check_verify
  ok "no PostgreSQL restart; next query answered by a new server (pid $before -> $after)"
}
fault KILL
fault ABRT
[ "$(q -c "SELECT restarts >= 2 AND last_exit LIKE '%signal 6%' FROM plm_worker_stats()")" = t ] \
  || fail "plm_worker_stats does not report the restarts: $(q -c "SELECT state, restarts, last_exit FROM plm_worker_stats()")"
ok "plm_worker_stats reports the restarts and the last exit"

# 4. A transaction whose UPDATE is interrupted by the server's death rolls back: nothing lost.
q -c "SELECT plm_cache_clear()" >/dev/null
q -c "CREATE TABLE txn AS SELECT s.id * 100 + k AS id, substr(repeat(s.seq, 8), k, 600) AS seq, NULL::real[] AS emb, 'kept'::text AS note FROM seqs s, generate_series(1, 20) k"
before="$(worker_pid)"
( psql -X -q -A -t -c "BEGIN" -c "UPDATE txn SET emb = plm_embed(seq), note = 'changed'" -c "COMMIT" >/tmp/plm_txn.out 2>&1 || true ) &
sleep 2
kill -KILL "$before"
wait
grep -q "08006\|inference server" /tmp/plm_txn.out || fail "interrupted UPDATE: $(cat /tmp/plm_txn.out)"
[ "$(q -c "SELECT count(*) FILTER (WHERE emb IS NULL AND note = 'kept') || '/' || count(*) FROM txn")" = "960/960" ] \
  || fail "the interrupted UPDATE left changes behind"
crash_check_verify
ok "UPDATE interrupted by the server's death rolled back: 960 rows unchanged"

# 5. With plm.worker_fallback = local, the in-flight request is computed in the backend.
q -c "SELECT plm_cache_clear()" >/dev/null
( q -c "SET client_min_messages = notice" -c "SET plm.worker_fallback = local" \
    -c "SELECT count(*) FROM plm_embed(long_batch(40))" >/tmp/plm_worker_fallback.out 2>&1 || true ) &
sleep 1
kill -TERM "$(worker_pid)"
wait
grep -qx "40" /tmp/plm_worker_fallback.out && grep -q "computing in this backend" /tmp/plm_worker_fallback.out \
  || fail "fallback: $(cat /tmp/plm_worker_fallback.out)"
ok "in-flight request computed in the backend after the server ended (plm.worker_fallback = local)"

# 6. Cancel: statement_timeout = 1s on a batch of 10,000 sequences returns within 2 s, and the
#    server abandons the work.
cancel_check() { # $1: label
  local out start elapsed cancelled0
  q -c "SELECT plm_cache_clear()" >/dev/null
  cancelled0="$(q -c "SELECT cancelled FROM plm_worker_stats()")"
  start=$(date +%s%N)
  out="$(q -c "SET statement_timeout = '1s'" -c "SELECT count(*) FROM plm_embed(ARRAY(SELECT repeat(translate(md5(g::text), '0123456789abcdef', 'ACDEFGHIKLMNPQRS'), 10) FROM generate_series(1, 10000) g))" 2>&1 || true)"
  elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$out" | grep -q "canceling statement due to statement timeout" || fail "$1 cancel: $out"
  [ "$elapsed" -lt 2000 ] || fail "$1: statement_timeout of 1 s returned after $elapsed ms"
  for _ in $(seq 1 60); do
    [ "$(q -c "SELECT cancelled FROM plm_worker_stats()")" -gt "$cancelled0" ] && break
    sleep 0.5
  done
  [ "$(q -c "SELECT cancelled FROM plm_worker_stats()")" -gt "$cancelled0" ] || fail "$1: the server did not abandon the cancelled request"
  [ "$(q -c "SELECT array_length(plm_embed('MKTAYIAKQRQISFVKSHFSRQ'), 1)")" -gt 0 ] || fail "$1: no answer after cancel"
  ok "$1: statement_timeout = 1s on 10,000 sequences returned in $elapsed ms; the server abandoned the work"
}
cancel_check "preloaded"

# 7. Oversized requests: refused with a clear error (54000), nothing computed.
out="$(psql -X -q -A -t -v VERBOSITY=verbose -c "SELECT plm_embed_residues(repeat('MKTAYIAKQR', 102), layers => array_fill(-1, ARRAY[5000]))" 2>&1 || true)"
echo "$out" | grep -q "54000" && echo "$out" | grep -q "estimated" || fail "5,000 layers: $out"
ok "5,000-layer request refused: $(echo "$out" | grep -o 'per-residue.*MB (plm' | head -1)"
crash_check_verify

# 8. Without preloading: the first query starts the supervisor as a dynamic background worker;
#    the same isolation and cancel guarantees hold.
"$ROOT/scripts/pg-local.sh" stop
PGDATA_LOCAL="${PLM_PGHOME:-/var/lib/postgresql/pg_plm}/data"
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi; }
as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$PGDATA_LOCAL" -l "$PGLOG" -w -t 60 \
  -o "-c shared_preload_libraries=" start >/dev/null
trap '"$ROOT/scripts/pg-local.sh" restart >/dev/null' EXIT
[ -z "$(q -c "SHOW shared_preload_libraries")" ] || fail "still preloaded"
crash_check_mark
[ "$(q -c "SELECT array_length(plm_embed('MKTAYIAKQRQISFVKSHFSRQ'), 1)")" -gt 0 ] || fail "no answer without preloading"
[ "$(q -c "SELECT state FROM plm_worker_stats()")" = running ] || fail "no supervised server without preloading"
ok "without preloading: server started on demand (pid $(worker_pid))"
fault KILL
cancel_check "not preloaded"

psql -X -q -d postgres -c "DROP DATABASE plm_worker_test"
echo "worker tests: all passed"
