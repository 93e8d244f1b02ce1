#!/usr/bin/env bash
# Runs every test: library and trainer unit tests, ESM-2 parity against PyTorch transformers,
# the extension's in-server tests (cargo pgrx test), the pg_regress SQL suites in tests/, the
# upgrade from every released version, the shared-worker tests and the examples in sql/examples/,
# against a real PostgreSQL 15 with pgvector; then the in-server tests, the SQL suites and the
# upgrade again against PostgreSQL 17 and 18, the release artifacts installed on clean 15, 17 and
# 18, and a compile check of the CUDA build (run in the background from the start). In-server
# tests run without preloading (the inference server is started on demand); the local server
# preloads pg_plm. Inference always runs in the isolated plm-serve process.
# Idempotent and non-interactive; reuses what scripts/setup.sh installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PG_REGRESS="$($PG_CONFIG --pkglibdir)/pgxs/src/test/regress/pg_regress"
cd "$ROOT"
# A target directory outside the checkout, so repeated runs on one machine (CI in fresh
# clones included) reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# cargo-pgrx's --no-gc-sections rustflag would recompile every dependency apart from cargo test's
# build; extension/build.rs passes it to the cdylib's link alone.
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1
step() { printf '\n==== %s [%s, %dm%02ds in] ====\n' "$*" "$(date +%T)" $((SECONDS / 60)) $((SECONDS % 60)); }
passed=0

step "dependencies"
scripts/install-deps.sh

step "one feature set per dependency across the builds below (scripts/check-features.sh)"
scripts/check-features.sh
passed=$((passed + 1))

step "GPU build check started in the background (scripts/check-cuda.sh, reported at the end)"
# Mostly nvcc on candle's kernels (minutes) and independent of everything below: at the lowest
# priority, in its own session (so that it can be stopped as a whole), it takes only the CPU the
# steps below leave idle. With autogroup scheduling (Linux's default) a new session competes as
# an equal of this one whatever its nice value, so it nices its autogroup as well.
cuda_log="$(mktemp)"
setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 scripts/check-cuda.sh 15' \
  >"$cuda_log" 2>&1 &
cuda_pid=$!
trap 'kill -TERM -- "-$cuda_pid" 2>/dev/null || true' EXIT
echo "pid $cuda_pid, log $cuda_log"

step "ESM-2 8M parity fixture (PyTorch transformers reference)"
FIXTURE=model/tests/fixtures/generated/esm2_t6_8M
PY="${PLM_VENV:-$HOME/.cache/pg_plm/venv}/bin/python"
if [ -x "$PY" ] && "$PY" -c "import torch, transformers" 2>/dev/null; then
  [ -f "$FIXTURE/reference.safetensors" ] || "$PY" scripts/make_parity_fixtures.py 8M "$FIXTURE"
else
  echo "Python reference stack unavailable: the 8M parity test will report SKIPPED"
fi

step "model, alignment, server, fuzz-corpus and trainer tests"
# The trainer's object-storage tests start this S3 server (installed by install-deps.sh); set,
# a missing server fails them instead of skipping.
export PLM_S3_SERVER="$HOME/.cache/pg_plm/s3s/bin/s3s-fs"
# Every build of this script uses the release profile and, through plm-workspace-hack, one set
# of features per dependency: the dependency tree is compiled once for the tests, plm-serve, and
# the extension's test and install builds (workspace-hack/README.md).
cargo test --release -p plm-model -p plm-align -p plm-serve -p plm-fuzz -p plm-train --features plm-train/mpi
passed=$((passed + 1))

step "extension in-server tests (cargo pgrx test)"
# pgrx test and install rewrite pg_plm.so in place: a running server that preloads it (and so
# maps it) must be stopped first.
scripts/pg-local.sh stop
scripts/install-server.sh
scripts/install-models.sh
PGRX_TEST_HOME=/var/lib/postgresql/pg_plm-pgrx-test
mkdir -p "$PGRX_TEST_HOME" && chown postgres:postgres "$PGRX_TEST_HOME"
(cd extension && cargo pgrx test --release pg15 --runas postgres --pgdata "$PGRX_TEST_HOME/data")
passed=$((passed + 1))

step "install the extension into PostgreSQL 15 and start the local server"
# The release profile: tests/package/run.sh packages the same build (cargo pgrx package reuses it)
# instead of compiling every dependency once more.
(cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" --no-default-features --features pg15)
scripts/pg-local.sh restart
eval "$(scripts/pg-local.sh env)"

# No test may take PostgreSQL down.
. tests/crash_check.sh
crash_check_mark

suites=$(cd tests/sql && ls *.sql | sed 's/\.sql$//' | sort | tr '\n' ' ')
run_regress() { # the pg_regress suites against the server in PGHOST/PGPORT, with that pg_regress
  local outdir
  outdir="$(mktemp -d)"
  chmod 777 "$outdir"
  if ! "$1" --bindir="$2" --host="$PGHOST" --port="$PGPORT" --user=postgres \
      --dbname=plm_regress --load-extension=vector --load-extension=pg_plm \
      --inputdir=tests --outputdir="$outdir" $suites; then
    cat "$outdir/regression.diffs" 2>/dev/null || true
    exit 1
  fi
  passed=$((passed + $(echo $suites | wc -w)))
}

step "pg_regress suites (tests/sql, tests/expected)"
run_regress "$PG_REGRESS" "$($PG_CONFIG --bindir)"

step "ALTER EXTENSION pg_plm UPDATE from every released version (tests/upgrade/run.sh)"
tests/upgrade/run.sh
passed=$((passed + 1))

step "sql/examples and docs/TUTORIAL.md"
for example in sql/examples/*.sql; do
  echo "-- $example"
  scripts/pg-local.sh psql -X -q -v ON_ERROR_STOP=1 -d plm -f "$example" >/dev/null
  passed=$((passed + 1))
done
tests/tutorial.sh
passed=$((passed + 1))

step "no crash restart during the SQL suites and examples"
crash_check_verify
echo "checkpointer unchanged since $CRASH_CHECK_CKPT; no crash restart in the server log"
passed=$((passed + 1))

step "isolated inference server: faults, cancel, no preloading (tests/worker/run.sh)"
# Runs last: it restarts the local server (without, then again with, preloading).
tests/worker/run.sh
passed=$((passed + 1))

step "synced columns under faults (tests/workflows/run.sh)"
# Terminates the sync worker and stops the server immediately mid-batch.
tests/workflows/run.sh
passed=$((passed + 1))

step "soak (scripts/soak.sh, short; the 10-minute run is recorded in docs/BENCHMARKS.md)"
scripts/soak.sh 30
passed=$((passed + 1))

# PostgreSQL 17 and 18, built from Debian's source packages by install-deps.sh
# (scripts/install-pg.sh), each with its own cluster (port 54MAJOR) beside the 15 one.
PG15_CONFIG="$PG_CONFIG"
PG_SOURCE_MAJORS="${PLM_PG_EXTRA-17 18}"
source_built_major() { # MAJOR: in-server tests, pg_regress suites and upgrade against that version
  local major="$1" config bin
  config="$(scripts/install-pg.sh "$major" | tail -1)"
  bin="$("$config" --bindir)"
  # Installing rewrites pg_plm.so in place: a server left running by an interrupted run must stop.
  PG_BIN="$bin" PLM_PGHOME="/var/lib/postgresql/pg_plm$major" scripts/pg-local.sh stop
  PG_CONFIG="$config" scripts/install-server.sh
  PG_CONFIG="$config" scripts/install-models.sh >/dev/null
  mkdir -p "$PGRX_TEST_HOME-$major" && chown postgres:postgres "$PGRX_TEST_HOME-$major"
  (cd extension && cargo pgrx test --release "pg$major" --runas postgres --pgdata "$PGRX_TEST_HOME-$major/data")
  # After the in-server tests: they install a test build (with its tests schema) in the same place.
  (cd extension && cargo pgrx install --release --pg-config "$config" --no-default-features --features "pg$major")
  (
    export PG_BIN="$bin" PLM_PGHOME="/var/lib/postgresql/pg_plm$major" PLM_PGPORT="54$major" PG_CONFIG="$config"
    PATH="$bin:$PATH" scripts/pg-local.sh restart
    eval "$(scripts/pg-local.sh env)"
    run_regress "$("$config" --pkglibdir)/pgxs/src/test/regress/pg_regress" "$bin"
    PATH="$bin:$PATH" tests/upgrade/run.sh
    scripts/pg-local.sh stop
  )
}
for major in $PG_SOURCE_MAJORS; do
  step "PostgreSQL $major: in-server tests, pg_regress suites, upgrade"
  source_built_major "$major"
  passed=$((passed + 2 + $(echo $suites | wc -w)))
done

step "release artifacts on clean PostgreSQL 15${PG_SOURCE_MAJORS:+, ${PG_SOURCE_MAJORS// /, }} (tests/package/run.sh)"
tests/package/run.sh "$PG15_CONFIG"
passed=$((passed + 1))
for major in $PG_SOURCE_MAJORS; do
  tests/package/run.sh "$(scripts/install-pg.sh "$major" | tail -1)"
  passed=$((passed + 1))
done

step "GPU build compiles without a GPU (scripts/check-cuda.sh: --features cuda)"
cuda_status=0
wait "$cuda_pid" || cuda_status=$?
trap - EXIT
cat "$cuda_log" && rm -f "$cuda_log"
[ "$cuda_status" = 0 ] || { echo "scripts/check-cuda.sh failed (exit $cuda_status)" >&2; exit 1; }
passed=$((passed + 1))

echo
echo "summary: $passed passed, 0 failed ($((SECONDS / 60))m$((SECONDS % 60))s)"
