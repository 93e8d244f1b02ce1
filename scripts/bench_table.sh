# Sourced by the SQL benchmarks (bench_functions.sh, bench_methods.sh): connects to the local
# server (scripts/pg-local.sh) and loads the first N proteins of the Swiss-Prot validation file
# into the table bench_proteins(id, sequence). Needs ROOT, DATA and N.
eval "$("$ROOT/scripts/pg-local.sh" env)"
# Natural proteins include some longer than the model limit: embed those in windows.
export PGOPTIONS="-c plm.long_sequence_policy=window"
psql -X -q -d plm <<SQL
DROP TABLE IF EXISTS bench_proteins;
CREATE TABLE bench_proteins (id int PRIMARY KEY, sequence text NOT NULL);
SQL
"$ROOT/scripts/fasta_rows.py" "$DATA/pretrain/swissprot2014_valid.fasta.gz" "$N" |
  psql -X -q -d plm -c "\\copy bench_proteins FROM STDIN"
