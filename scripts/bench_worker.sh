#!/usr/bin/env bash
# Shared worker vs in-backend inference, side by side on the same preloaded server
# (scripts/pg-local.sh), switching with plm.use_worker per connection:
#   1. first call on a brand-new connection (pgbench -C: connect + one plm_embed);
#   2. throughput with 1, 4 and 16 concurrent clients (pgbench, custom script);
#   3. server memory (PSS of all server processes) with 16 open connections that have each
#      made one call.
# Every call embeds a distinct random 128-residue sequence (no cache hits).
# Usage: scripts/bench_worker.sh [seconds per throughput run, default 15] [model, default: the default]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
SECONDS_PER_RUN="${1:-15}"
MODEL="${2:-}"
MODEL_ARG=""
[ -n "$MODEL" ] && MODEL_ARG=", model => '$MODEL'"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/embed.sql" <<SQL
\\set r random(1, 1000000000)
SELECT plm_embed(translate(md5(:r::text) || md5((:r + 1)::text) || md5((:r + 2)::text) || md5((:r + 3)::text), '0123456789abcdef', 'ACDEFGHIKLMNPQRS')$MODEL_ARG);
SQL
psql -X -q -c "SELECT plm_cache_clear()" >/dev/null
[ "$(psql -X -A -t -c "SHOW shared_preload_libraries")" = pg_plm ] || { echo "pg_plm is not preloaded" >&2; exit 1; }

pss_total() { # PSS of the postmaster and all its children, MiB
  local pm
  pm="$(head -1 "$(psql -X -A -t -c "SHOW data_directory")/postmaster.pid")"
  # Children of the postmaster and theirs (the inference server is a child of its supervisor).
  { echo "$pm"; pgrep -P "$pm"; pgrep -P "$(pgrep -d, -P "$pm")"; } | while read -r pid; do
    awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true
  done | awk '{s += $1} END {printf "%.0f", s / 1024}'
}

printf '%-10s %-28s %12s\n' mode measurement value
for mode in on off; do
  export PGOPTIONS="-c plm.use_worker=$mode"
  name=$([ $mode = on ] && echo worker || echo in-backend)
  # 1. first call on new connections
  out="$(pgbench -n -C -c 1 -j 1 -t 30 -f "$WORK/embed.sql" 2>&1)"
  lat="$(echo "$out" | awk -F'= ' '/latency average/ {print $2}')"
  conn="$(echo "$out" | awk -F'= ' '/average connection time/ {print $2}')"
  printf '%-10s %-28s %12s\n' "$name" "first call: latency" "$lat"
  printf '%-10s %-28s %12s\n' "$name" "first call: connection time" "$conn"
  # 2. throughput
  for clients in 1 4 16; do
    out="$(pgbench -n -c "$clients" -j "$((clients < 2 ? 1 : 2))" -T "$SECONDS_PER_RUN" -f "$WORK/embed.sql" 2>&1)"
    tps="$(echo "$out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}')"
    lat="$(echo "$out" | awk -F'= ' '/latency average/ {print $2}')"
    printf '%-10s %-28s %12s   (latency %s)\n' "$name" "$clients clients: calls/s" "$tps" "$lat"
  done
  # 3. memory with 16 connections that each made one call
  base="$(pss_total)"
  for i in $(seq 1 16); do
    psql -X -q -c "SELECT plm_embed('MKTAYIAKQRQISFVKSHFSRQ' || repeat('W', $i)$MODEL_ARG) IS NOT NULL" -c "SELECT pg_sleep(6)" >/dev/null &
  done
  sleep 4
  with16="$(pss_total)"
  wait
  printf '%-10s %-28s %9s MiB   (idle server %s MiB)\n' "$name" "memory, 16 connections" "$with16" "$base"
done
