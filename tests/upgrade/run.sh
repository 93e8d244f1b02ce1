#!/usr/bin/env bash
# Upgrading pg_plm with ALTER EXTENSION UPDATE, against the local server with the current library
# installed (as after upgrading the package, before updating the SQL objects):
#   1. the install script of the current version is the frozen one in extension/sql/install/;
#   2. every released version installs from its frozen script (extension/sql/install), its SQL
#      objects fail cleanly with the new library (no crash), objects that depend on the
#      extension are created (a generated column, an expression index, views), and
#      ALTER EXTENSION pg_plm UPDATE brings the catalog to exactly that of a fresh install
#      (tests/upgrade/catalog.sql), with and without dependent objects;
#   3. the dependent objects still work and give the answers of the new functions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
EXTDIR="$("$PG_CONFIG" --sharedir)/extension"
export PGOPTIONS="-c client_min_messages=warning"
. "$ROOT/tests/lib.sh"
normalize() { # an install script without comments and blank lines
  python3 -c 'import re,sys; s=re.sub(r"/\*.*?\*/", "", open(sys.argv[1]).read(), flags=re.S)
print("\n".join(l.rstrip() for l in s.splitlines() if l.strip() and not l.lstrip().startswith("--")))' "$1"
}
CURRENT="$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$EXTDIR/pg_plm.control")"
WORK="$(mktemp -d)"
installed=()
cleanup() {
  for f in "${installed[@]}"; do rm -f "$f"; done
  for db in plm_upgrade_old plm_upgrade_bare plm_upgrade_new; do
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# 1. The generated install script is the frozen one: a change to the SQL surface needs a new
# version (and an upgrade script), never a silent edit of a released one.
frozen="$ROOT/extension/sql/install/pg_plm--$CURRENT.sql"
[ -f "$frozen" ] || fail "no frozen install script $frozen for version $CURRENT"
if ! diff <(normalize "$frozen") <(normalize "$EXTDIR/pg_plm--$CURRENT.sql") >"$WORK/frozen.diff"; then
  head -40 "$WORK/frozen.diff"
  fail "the installed pg_plm--$CURRENT.sql differs from $frozen (regenerate it with cargo pgrx schema while $CURRENT is unreleased)"
fi
ok "pg_plm--$CURRENT.sql equals the frozen install script"

psql -X -q -d postgres -c "CREATE DATABASE plm_upgrade_new"
q -d plm_upgrade_new -c "CREATE EXTENSION vector" -c "CREATE EXTENSION pg_plm"
q -d plm_upgrade_new -f "$ROOT/tests/upgrade/catalog.sql" >"$WORK/fresh.txt"
[ -s "$WORK/fresh.txt" ] || fail "empty catalog listing"

for script in "$ROOT"/extension/sql/install/pg_plm--*.sql; do
  from="$(basename "$script" .sql)"; from="${from#pg_plm--}"
  [ "$from" = "$CURRENT" ] && continue
  cp "$script" "$EXTDIR/" && installed+=("$EXTDIR/$(basename "$script")")
  echo "-- from $from to $CURRENT"

  # 2a. No dependent objects: the update gives exactly a fresh install.
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_upgrade_bare" -c "CREATE DATABASE plm_upgrade_bare"
  q -d plm_upgrade_bare -c "CREATE EXTENSION pg_plm VERSION '$from'"
  q -d plm_upgrade_bare -c "ALTER EXTENSION pg_plm UPDATE"
  q -d plm_upgrade_bare -f "$ROOT/tests/upgrade/catalog.sql" >"$WORK/bare.txt"
  diff "$WORK/fresh.txt" "$WORK/bare.txt" || fail "$from -> $CURRENT without dependents: catalog differs from a fresh install"
  ok "$from -> $CURRENT: catalog identical to a fresh install ($(wc -l <"$WORK/fresh.txt") objects)"
done

# 2b/3. From 0.1.0 with objects that depend on the functions 0.2.0 re-signs.
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_upgrade_old" -c "CREATE DATABASE plm_upgrade_old"
export PGDATABASE=plm_upgrade_old
q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION pg_plm VERSION '0.1.0'"
# The 0.1.0 objects name C symbols the new library keeps only as stubs: a clear error, no crash.
err="$(psql -X -q -A -t -v VERBOSITY=verbose -c "SELECT plm_embed('MKTAYIAKQR')" 2>&1 || true)"
echo "$err" | grep -q "ERROR:  55000: pg_plm: plm_embed(text, text, integer, text) is an SQL object of pg_plm 0.1.0" ||
  fail "0.1.0 function with the new library: $err"
ok "0.1.0 objects with the $CURRENT library: SQLSTATE 55000, 'Run ALTER EXTENSION pg_plm UPDATE'"
q <<'SQL'
CREATE TABLE proteins (
    id int PRIMARY KEY,
    seq text NOT NULL,
    emb real[] GENERATED ALWAYS AS (plm_embed(seq, 'plm-default')) STORED);
CREATE INDEX proteins_self_ppi ON proteins ((plm_ppi(seq, seq, 'plm-default') > 0.5));
CREATE VIEW protein_ec AS
    SELECT p.id, f.term, f.score FROM proteins p, plm_function(p.seq, 'ec', 3, 0.0, 'plm-default') f;
CREATE VIEW protein_residues AS
    SELECT id, plm_embed_residues(seq, 'plm-default', -1) AS residues FROM proteins;
CREATE VIEW model_list AS SELECT name, embedding_dim FROM plm_models();
SQL
notices="$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "ALTER EXTENSION pg_plm UPDATE" 2>&1)"
echo "$notices" | grep -q "plm_embed(text,text,integer,text), which .*column emb of table proteins.* is kept as plm_embed_v0_1" ||
  fail "no warning naming the generated column: $notices"
[ "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_plm'")" = "$CURRENT" ] || fail "not updated"
q -f "$ROOT/tests/upgrade/catalog.sql" >"$WORK/old.txt"
diff "$WORK/fresh.txt" "$WORK/old.txt" || fail "0.1.0 -> $CURRENT with dependents: catalog differs from a fresh install"
ok "0.1.0 -> $CURRENT with a generated column, an expression index and views: catalog identical to a fresh install"
kept="$(q -c "SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY 1) FROM pg_proc p
              WHERE proname LIKE 'plm\_%\_v0\_1' AND pronamespace = 'public'::regnamespace")"
[ "$kept" = "plm_embed_residues_v0_1(text,text,integer,integer[]) plm_embed_v0_1(text,text,integer,text) plm_function_v0_1(text,text,integer,real,text) plm_ppi_v0_1(text,text,text)" ] ||
  fail "kept 0.1.0 functions: $kept"
ok "the four functions with dependents kept as SQL functions outside the extension: $kept"

# The dependent objects work, with the answers of the 0.2.0 functions.
q -c "INSERT INTO proteins (id, seq) VALUES (1, 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ'), (2, 'GSHMLEDPVDAFQVLAKTVKQ')"
same="$(q -c "SELECT bool_and(emb = plm_embed(seq, 'plm-default'::name)) FROM proteins")"
[ "$same" = t ] || fail "generated column after the update differs from plm_embed(seq, model)"
ok "generated column computed through the kept function, equal to plm_embed(seq, 'plm-default')"
# The index expression now names the kept function (in 0.2.0 a third positional text argument
# of plm_ppi is the method): queries that want the index name it too.
plan="$(q -c "SET enable_seqscan = off" -c "EXPLAIN (COSTS OFF) SELECT id FROM proteins WHERE plm_ppi_v0_1(seq, seq, 'plm-default') > 0.5")"
echo "$plan" | grep -q proteins_self_ppi || fail "expression index not used: $plan"
q -c "REINDEX INDEX proteins_self_ppi"
ok "expression index usable and rebuildable"
diff <(q -c "SELECT id, term, score FROM protein_ec ORDER BY 1, 2") \
     <(q -c "SELECT p.id, f.term, f.score FROM proteins p, plm_function(p.seq, 'plm-default', 'ec', 3, 0.0, 'model') f ORDER BY 1, 2") ||
  fail "view over plm_function differs from plm_function(..., method => 'model')"
[ "$(q -c "SELECT count(*) FROM protein_residues WHERE residues = plm_embed_residues(
        (SELECT seq FROM proteins p WHERE p.id = protein_residues.id), 'plm-default'::name, -1)")" = 2 ] ||
  fail "view over plm_embed_residues"
[ "$(q -c "SELECT count(*) > 0 FROM model_list WHERE name = 'plm-default'")" = t ] || fail "view over plm_models"
ok "views give the answers of the $CURRENT functions"

# Moving a dependent to the new form frees the kept function, which can then be dropped.
q -c "DROP VIEW protein_residues" -c "DROP FUNCTION plm_embed_residues_v0_1(text,text,integer,integer[])"
ok "a kept function is dropped once nothing uses it"

# 4. From 0.2.0 with synced columns: the update gives a function sync the spec of 0.3.0 (which
# also covers the model's heads), queueing its rows once; an embedding sync is left alone.
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_upgrade_old WITH (FORCE)" -c "CREATE DATABASE plm_upgrade_old"
q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION pg_plm VERSION '0.2.0'"
q <<'SQL' >/dev/null
CREATE TABLE synced (id int PRIMARY KEY, seq text NOT NULL, emb vector(320));
INSERT INTO synced VALUES (1, 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ', NULL), (2, 'GSHMLEDPVDAFQVLAKTVKQ', NULL);
SELECT plm_sync_create('synced', 'seq', 'synced_ec', name => 'ec', task => 'function');
SELECT plm_sync_create('synced', 'seq', 'emb', name => 'emb');
SQL
[ "$(q -c "SELECT plm_sync_wait('ec', '2 min') AND plm_sync_wait('emb', '2 min')")" = t ] || fail "0.2.0 syncs did not catch up"
q -c "SELECT plm_sync_pause('ec')" -c "SELECT plm_sync_pause('emb')" >/dev/null
before="$(q -c "SELECT string_agg(name || '=' || spec, ' ' ORDER BY name) FROM plm_internal.sync")"
q -c "ALTER EXTENSION pg_plm UPDATE"
queued="$(q -c "SELECT count(*) FROM plm_internal.queue WHERE sync = 'ec'"),$(q -c "SELECT count(*) FROM plm_internal.queue WHERE sync = 'emb'")"
[ "$queued" = 2,0 ] || fail "0.2.0 -> $CURRENT: queued rows of the function and embedding syncs: $queued, expected 2,0"
after="$(q -c "SELECT string_agg(name || '=' || spec, ' ' ORDER BY name) FROM plm_internal.sync")"
[ "${before#* }" = "${after#* }" ] || fail "the embedding sync's spec changed: $before / $after"
[ "${before%% *}" != "${after%% *}" ] || fail "the function sync's spec did not change"
[ "$(q -c "SELECT plm_sync_alter('ec')")" = 0 ] || fail "the upgraded spec differs from the one plm_sync_alter computes"
q -c "SELECT plm_sync_drop(name) FROM plm_sync_status" >/dev/null
ok "0.2.0 -> $CURRENT with synced columns: the function sync re-queued once for the heads' fingerprint, the embedding sync untouched"
echo "upgrade tests passed"
