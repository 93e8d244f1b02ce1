#!/usr/bin/env bash
# Soak test of the local server (scripts/pg-local.sh): 16 pgbench clients for DURATION seconds
# (default 600) mixing every SQL function (tests/soak/mix.sql) on the 2,000 real Swiss-Prot
# validation proteins, cropped to 1,000 residues. Checks: zero failed transactions, no PostgreSQL
# crash restart, and (for runs of 5 minutes or more) the inference server's resident memory
# outside its embedding cache (RSS minus the cache's bytes, per-minute medians, so that requests
# in flight do not count) within ±5 % of its value after warm-up (the first fifth of the run).
# Prints transactions/s, p50/p99 latency and the memory series.
#
#   scripts/soak.sh          # 10 minutes, as recorded in docs/BENCHMARKS.md
#   scripts/soak.sh 20       # the short run of scripts/test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${1:-600}"
CLIENTS="${PLM_SOAK_CLIENTS:-16}"
DATA="${PLM_DATA:-$ROOT/../shared/data}/pretrain/swissprot2014_valid.fasta.gz"
eval "$("$ROOT/scripts/pg-local.sh" env)"
export PGDATABASE=plm_soak PGOPTIONS="-c client_min_messages=warning"
OUT="$(mktemp -d)"
chmod 777 "$OUT"
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_soak" -c "CREATE DATABASE plm_soak"
q -c "CREATE EXTENSION pg_plm" -c "CREATE TABLE soak_proteins (id int PRIMARY KEY, seq text NOT NULL)"
"$ROOT/scripts/fasta_rows.py" "$DATA" 2000 1000 | q -c "COPY soak_proteins FROM STDIN"
[ "$(q -c "SELECT count(*) FROM soak_proteins")" = 2000 ] || { echo "soak: could not load 2,000 proteins" >&2; exit 1; }

. "$ROOT/tests/crash_check.sh"
crash_check_mark
server_pid="$(q -c "SELECT pid FROM plm_worker_stats()")"
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0; }
cache_kb() { q -c "SELECT coalesce(cache_bytes, 0) / 1024 FROM plm_worker_stats()" 2>/dev/null || echo 0; }

( for _ in $(seq 1 $((DURATION / 5))); do echo "$(date +%s) $(rss) $(cache_kb)"; sleep 5; done ) >"$OUT/rss.txt" &
sampler=$!
/usr/lib/postgresql/15/bin/pgbench -n -c "$CLIENTS" -j 4 -T "$DURATION" -f "$ROOT/tests/soak/mix.sql" \
  -l --log-prefix="$OUT/tx" -d plm_soak >"$OUT/pgbench.txt" 2>&1 || true
kill "$sampler" 2>/dev/null || true
wait 2>/dev/null || true
cat "$OUT/pgbench.txt" | grep -E "transactions|failed|latency|tps" || true

python3 - "$OUT" "$DURATION" <<'PY'
import glob, sys
out, duration = sys.argv[1], int(sys.argv[2])
lat = []
for path in glob.glob(f"{out}/tx*"):
    for line in open(path):
        f = line.split()
        if len(f) >= 3 and f[2].isdigit():
            lat.append(int(f[2]) / 1000.0)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"soak: {len(lat)} transactions in {duration} s: {len(lat)/duration:.1f} tx/s, "
      f"latency p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms")
import statistics
rows = [tuple(map(int, l.split())) for l in open(f"{out}/rss.txt") if len(l.split()) == 3 and l.split()[1] != "0"]
if rows:
    t0 = rows[0][0]
    warm = [r for r in rows if r[0] - t0 >= duration / 5]
    minutes = {}
    for t, rss, cache in warm:
        minutes.setdefault((t - t0) // 60, []).append((rss, rss - cache, cache))
    series = [(m, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
               statistics.median(x[2] for x in v)) for m, v in sorted(minutes.items())]
    print("soak: per-minute medians after warm-up (minute: RSS / RSS outside the cache / cache, MB): " +
          ", ".join(f"{m}: {a/1024:.0f}/{b/1024:.0f}/{c/1024:.0f}" for m, a, b, c in series))
    peak = max(r[1] for r in rows)
    print(f"soak: peak RSS {peak/1024:.0f} MB (requests in flight included)")
    base = series[0][2]
    lo, hi = min(s[2] for s in series), max(s[2] for s in series)
    print(f"soak: memory outside the cache {base/1024:.0f} MB after warm-up, per-minute range "
          f"{lo/1024:.0f}-{hi/1024:.0f} MB ({100*(lo-base)/base:+.1f}% / {100*(hi-base)/base:+.1f}%)")
    if duration >= 300 and (hi > base * 1.05 or lo < base * 0.95):
        sys.exit("soak: server memory outside the cache moved more than 5% after warm-up")
PY

failed="$(grep -oE "number of failed transactions: [0-9]+" "$OUT/pgbench.txt" | grep -oE "[0-9]+$" || echo 0)"
processed="$(grep -oE "number of transactions actually processed: [0-9]+" "$OUT/pgbench.txt" | grep -oE "[0-9]+$" || echo 0)"
grep -q "ERROR\|error" "$OUT/pgbench.txt" && { grep -m5 "ERROR\|error" "$OUT/pgbench.txt"; exit 1; }
[ "$processed" -gt 0 ] && [ "${failed:-0}" = 0 ] || { echo "soak: $processed processed, $failed failed" >&2; exit 1; }
crash_check_verify
echo "soak: $processed transactions, 0 failed, no crash restart"
psql -X -q -d postgres -c "DROP DATABASE plm_soak"
