#!/usr/bin/env bash
# The shared inference worker against a real server with pg_plm in shared_preload_libraries
# (the local cluster of scripts/pg-local.sh): answers equal to in-backend inference bit for
# bit (also when concurrent sessions share batches), killing the worker during a request and
# recovering, falling back to in-backend inference by setting, cancelling a long request, and
# refusing an oversized one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
export PGDATABASE=plm_worker_test PGOPTIONS="-c client_min_messages=warning"
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_worker_test" -c "CREATE DATABASE plm_worker_test"
q -c "CREATE EXTENSION pg_plm"
[ "$(q -c "SHOW shared_preload_libraries")" = pg_plm ] || fail "pg_plm is not preloaded"

worker_pid() { q -c "SELECT pid FROM plm_worker_stats()"; }
pid0="$(worker_pid)"
[ -n "$pid0" ] || fail "no worker statistics"
ok "worker running (pid $pid0)"

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

# 3. Kill the worker (SIGTERM: it is not a backend, pg_terminate_backend cannot signal it)
#    while a request is in flight: a clear error, then it comes back.
q -c "SELECT plm_cache_clear()" >/dev/null # long requests must not come from the cache
( q -c "SELECT count(*) FROM plm_embed(long_batch(150))" >/tmp/plm_worker_kill.out 2>&1 || true ) &
sleep 2
kill -TERM "$(worker_pid)"
wait
grep -q "worker unavailable: the worker ended while serving this request" /tmp/plm_worker_kill.out \
  || fail "in-flight request after the kill: $(cat /tmp/plm_worker_kill.out)"
ok "request in flight when the worker was killed: $(grep -o 'ERROR.*' /tmp/plm_worker_kill.out | head -1)"
[ "$(q -c "SELECT array_length(plm_embed('MKTAYIAKQRQISFVKSHFSRQ'), 1)")" -gt 0 ] || fail "no answer after restart"
pid1="$(worker_pid)"
[ "$pid1" != "$pid0" ] || fail "worker pid unchanged after the kill"
ok "next query answered by the restarted worker (pid $pid0 -> $pid1)"

# 4. With plm.worker_fallback = local, the in-flight request is computed in the backend.
q -c "SELECT plm_cache_clear()" >/dev/null
( q -c "SET client_min_messages = notice" -c "SET plm.worker_fallback = local" \
    -c "SELECT count(*) FROM plm_embed(long_batch(40))" >/tmp/plm_worker_fallback.out 2>&1 || true ) &
sleep 1
kill -TERM "$(worker_pid)"
wait
grep -qx "40" /tmp/plm_worker_fallback.out && grep -q "computing in this backend" /tmp/plm_worker_fallback.out \
  || fail "fallback: $(cat /tmp/plm_worker_fallback.out)"
ok "in-flight request computed in the backend after the kill (plm.worker_fallback = local)"

# 5. Cancel a long request: the session gets the timeout, the worker abandons the work.
q -c "SELECT plm_cache_clear()" >/dev/null
out="$(q -c "SET statement_timeout = '500ms'" -c "SELECT count(*) FROM plm_embed(long_batch(60))" 2>&1 || true)"
echo "$out" | grep -q "canceling statement due to statement timeout" || fail "cancel: $out"
for _ in $(seq 1 60); do
  [ "$(q -c "SELECT cancelled FROM plm_worker_stats()")" -ge 1 ] && break
  sleep 0.5
done
[ "$(q -c "SELECT cancelled FROM plm_worker_stats()")" -ge 1 ] || fail "the worker did not abandon the cancelled request"
[ "$(q -c "SELECT array_length(plm_embed('MKTAYIAKQRQISFVKSHFSRQ'), 1)")" -gt 0 ] || fail "no answer after cancel"
ok "cancelled request abandoned by the worker; next query answered"

# 6. Oversized request: refused with a clear error, nothing sent.
out="$(psql -X -q -A -t -v VERBOSITY=verbose -c "SELECT count(*) FROM plm_embed(ARRAY(SELECT repeat('A', 1000) FROM generate_series(1, 70000)))" 2>&1 || true)"
echo "$out" | grep -q "54000" && echo "$out" | grep -q "exceeds the worker's limit" || fail "oversized: $out"
ok "oversized request refused: $(echo "$out" | grep -o 'request of.*' | head -1)"

psql -X -q -d postgres -c "DROP DATABASE plm_worker_test"
echo "worker tests: all passed"
