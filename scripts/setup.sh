#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a first query: installs the dependencies,
# builds and installs pg_plm and its default model into PostgreSQL 15, starts a local server
# and embeds a protein. Idempotent and non-interactive.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
cd "$ROOT"
# A target directory outside the checkout, so repeated runs on one machine (CI in fresh
# clones included) reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_plm/target}"
# cargo-pgrx's --no-gc-sections rustflag would recompile every dependency apart from cargo test's
# build; extension/build.rs passes it to the cdylib's link alone.
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1
# PostgreSQL 18 is built only for the tests (scripts/test.sh).
PLM_PG_EXTRA="${PLM_PG_EXTRA-}" PLM_SKIP_PYTHON="${PLM_SKIP_PYTHON:-1}" \
  PLM_SKIP_TEST_TOOLS="${PLM_SKIP_TEST_TOOLS:-1}" scripts/install-deps.sh
# Inference runs in plm-serve, which install-server.sh builds with the release profile. The
# extension library itself only translates SQL (and computes in-backend only when a superuser
# turns plm.use_worker off, for debugging), so the dev profile, shared with the test suite,
# serves it; PLM_RELEASE=1 builds it with the release profile too.
profile_flag=""
[ "${PLM_RELEASE:-0}" = "1" ] && profile_flag="--release"
echo "[setup] building and installing the extension ${profile_flag:-(dev profile, optimised dependencies)}"
# Installing rewrites pg_plm.so in place: stop a local server that preloads (maps) it first.
scripts/pg-local.sh stop
(cd extension && cargo pgrx install $profile_flag --pg-config "$PG_CONFIG")
scripts/install-server.sh
scripts/install-models.sh
scripts/pg-local.sh start
echo "[setup] first query:"
scripts/pg-local.sh psql -X -v ON_ERROR_STOP=1 <<'SQL'
SELECT plm_version();
SELECT name, parameters, embedding_dim, layers FROM plm_models();
SELECT array_length(e, 1) AS dims, e[1:4] AS first_values
FROM (SELECT plm_embed('MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG') AS e) s;
SQL
echo "[setup] done. Connect with: $(scripts/pg-local.sh env); psql"
