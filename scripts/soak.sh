#!/usr/bin/env bash
# Soak test of the local server (scripts/pg-local.sh): 16 pgbench clients for DURATION seconds
# (default 600) mixing every SQL function (tests/soak/mix.sql) on the 2,000 real Swiss-Prot
# validation proteins, cropped to 1,000 residues. The load runs in one-minute segments (one
# segment for runs under two minutes); between segments the server is idle for a few seconds.
# Checks: zero failed transactions, no PostgreSQL crash restart, and (for runs of 5 minutes or
# more) the inference server's resident memory, sampled idle after each segment, within ±5 % of
# its value after warm-up (the first fifth of the segments; the embedding cache is full by then).
# Idle samples leave out the working memory of the requests in flight, which is not a leak; the
# memory outside the cache and the per-minute medians under load are printed as well. Prints transactions/s, p50/p99
# latency and the memory series.
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

( while :; do echo "$(date +%s) $(rss) $(cache_kb)"; sleep 5; done ) >"$OUT/rss.txt" &
sampler=$!
segments=$((DURATION >= 120 ? DURATION / 60 : 1))
for s in $(seq 1 "$segments"); do
  seconds=$((DURATION / segments + (s <= DURATION % segments ? 1 : 0)))
  /usr/lib/postgresql/15/bin/pgbench -n -c "$CLIENTS" -j 4 -T "$seconds" -f "$ROOT/tests/soak/mix.sql" \
    -l --log-prefix="$OUT/tx$s" -d plm_soak >>"$OUT/pgbench.txt" 2>&1 || true
  # Every client has its answer: the server is idle (and has returned freed memory) once the
  # executor sees its queue empty.
  sleep 3
  echo "$s $(rss) $(cache_kb)" >>"$OUT/idle.txt"
done
kill "$sampler" 2>/dev/null || true
wait 2>/dev/null || true
grep -E "transactions|failed|latency|tps" "$OUT/pgbench.txt" || true

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
    print("soak: under load, per-minute medians after warm-up (minute: RSS / outside the cache / "
          "cache, MB): " + ", ".join(f"{m}: {a/1024:.0f}/{b/1024:.0f}/{c/1024:.0f}" for m, a, b, c in series))
    print(f"soak: peak RSS {max(r[1] for r in rows)/1024:.0f} MB (requests in flight included)")
idle = [tuple(map(int, l.split())) for l in open(f"{out}/idle.txt") if len(l.split()) == 3]
print("soak: idle after each segment (segment: RSS / outside the cache / cache, MB): " +
      ", ".join(f"{s}: {r/1024:.0f}/{(r-c)/1024:.0f}/{c/1024:.0f}" for s, r, c in idle))
after = idle[max(1, (len(idle) + 4) // 5):]
moved = False
for name, values, checked in (("resident memory", [r for _, r, _ in after], True),
                              ("memory outside the cache", [r - c for _, r, c in after], False)):
    if not values:
        continue
    base, lo, hi = values[0], min(values), max(values)
    print(f"soak: idle {name} {base/1024:.0f} MB after warm-up, range {lo/1024:.0f}-{hi/1024:.0f} MB "
          f"({100*(lo-base)/base:+.1f}% / {100*(hi-base)/base:+.1f}%)" + ("" if checked else " (reported)"))
    moved |= checked and (hi > base * 1.05 or lo < base * 0.95)
if duration >= 300 and moved:
    sys.exit("soak: the idle server's resident memory moved more than 5% after warm-up")
PY

total() { grep -oE "$1: [0-9]+" "$OUT/pgbench.txt" | grep -oE "[0-9]+$" | awk '{s += $1} END {print s + 0}'; }
failed="$(total "number of failed transactions")"
processed="$(total "number of transactions actually processed")"
grep -q "ERROR\|error" "$OUT/pgbench.txt" && { grep -m5 "ERROR\|error" "$OUT/pgbench.txt"; exit 1; }
[ "$processed" -gt 0 ] && [ "${failed:-0}" = 0 ] || { echo "soak: $processed processed, $failed failed" >&2; exit 1; }
crash_check_verify
echo "soak: $processed transactions, 0 failed, no crash restart"
psql -X -q -d postgres -c "DROP DATABASE plm_soak"
