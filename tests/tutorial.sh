#!/usr/bin/env bash
# Runs every ```sql block of docs/TUTORIAL.md, in order, in a fresh database of the local
# server (scripts/pg-local.sh), from the repository root; any error fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$ROOT/scripts/pg-local.sh" env)"
cd "$ROOT"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS plm_tutorial WITH (FORCE)" -c "CREATE DATABASE plm_tutorial"
script="$(mktemp)"
trap 'rm -f "$script"' EXIT
awk '/^```sql$/ {on = 1; next} /^```$/ {on = 0} on' docs/TUTORIAL.md >"$script"
chmod 644 "$script"
blocks="$(grep -c '^```sql$' docs/TUTORIAL.md)"
psql -X -v ON_ERROR_STOP=1 -d plm_tutorial -f "$script" >/dev/null
echo "ok - docs/TUTORIAL.md: $blocks SQL blocks ran without error"
psql -X -q -d postgres -c "DROP DATABASE plm_tutorial WITH (FORCE)"
