-- Adversarial inputs across every SQL function: each gives a clean error (with its SQLSTATE)
-- or a result, never a crash. scripts/test.sh checks afterwards that PostgreSQL did not
-- crash-restart (checkpointer start time, server log).
\set VERBOSITY terse
-- Every column of every row is computed (max over the row's text), and sizes in messages,
-- which depend on the machine's memory, are masked.
CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE n bigint; width bigint;
BEGIN
  EXECUTE 'SELECT count(*), max(length(s::text)) FROM (' || q || ') s' INTO n, width;
  RETURN 'ok: ' || n || ' row(s)';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || left(regexp_replace(SQLERRM, '[0-9]+ MB', 'N MB', 'g'), 160);
END $$;
\set ubq 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'
SELECT q AS call, pg_temp.outcome(q) AS outcome FROM (VALUES
  -- Huge arrays and many layers.
  ('SELECT * FROM plm_embed(ARRAY(SELECT ''MKT'' || translate(g::text, ''0123456789'', ''ACDEFGHIKL'') FROM generate_series(1, 20000) g))'),
  ('SELECT * FROM plm_embed(ARRAY(SELECT ''MKTAYIAK'' FROM generate_series(1, 20000)))'),
  ('SELECT * FROM plm_embed(ARRAY[]::text[])'),
  ('SELECT * FROM plm_embed(ARRAY[NULL, NULL]::text[])'),
  ('SELECT plm_embed_residues(repeat(''MKTAYIAKQR'', 102), layers => array_fill(-1, ARRAY[5000]))'),
  ('SELECT plm_embed_residues(''MKTAYIAKQR'', layers => array_fill(-1, ARRAY[40]))'),
  ('SELECT plm_embed_residues(''MKTAYIAKQR'', layers => ARRAY[NULL, 2147483647]::int[])'),
  ('SELECT plm_embed(''MKT'', layer => -2147483648)'),
  ('SELECT plm_embed(''MKT'', layer => 2147483647)'),
  -- Long sequences, windows and their cap.
  ('SELECT plm_embed(repeat(''A'', 1023))'),
  ('SELECT plm_embed(repeat(''A'', 1000001))'),
  ('SELECT plm_contacts(repeat(''ACDEFGHIKL'', 103))'),
  -- NaN, infinities and out-of-range numbers.
  ('SELECT * FROM plm_contacts(''MKTAYIAKQR'', ''NaN''::real)'),
  ('SELECT * FROM plm_contacts(''MKTAYIAKQR'', ''-Infinity''::real)'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', threshold => ''Infinity''::real)'),
  ('SELECT * FROM plm_function(''MKTAYIAKQR'', min_score => ''NaN''::real)'),
  ('SELECT * FROM plm_function(''MKTAYIAKQR'', top_k => 2147483647)'),
  ('SELECT * FROM plm_function(''MKTAYIAKQR'', top_k => -2147483648)'),
  ('SELECT * FROM plm_function(''MKTAYIAKQR'', repeat(''x'', 10000))'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', repeat(''Z'', 10000))'),
  -- Odd model names.
  ('SELECT plm_embed(''MKT'', model => '''')'),
  ('SELECT plm_embed(''MKT'', model => repeat(''x'', 1000))'),
  ('SELECT plm_embed(''MKT'', model => ''plm-default/../plm-default'')'),
  ('SELECT plm_embed(''MKT'', model => ''/etc'')'),
  ('SELECT plm_embed(''MKT'', model => E''\x01\x02'')'),
  ('SELECT plm_embed(''MKT'', model => ''ünïcödé'')'),
  ('SELECT plm_embed(''MKT'', model => NULL::text)'),
  ('SELECT plm_ppi(''MKT'', ''MKT'', model => ''.hidden'')'),
  -- Unicode and odd characters in sequences.
  ('SELECT plm_embed(''MKT🙂A'')'),
  ('SELECT plm_embed(''ＭＫＴ'')'),
  ('SELECT plm_embed(E''MK\u200BT'')'),
  ('SELECT plm_embed(E''MKT\u0301'')'),
  ('SELECT plm_embed(E''mkt\n  aYi\t'')'),
  ('SELECT plm_embed(repeat(E''\u00a0'', 5))'),
  ('SELECT plm_ppi(''MKTAYIAK'', ''MK*'')'),
  ('SELECT plm_ppi(repeat(''A'', 5000), ''MKT'')'),
  -- Malformed and enormous structures.
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => '''')'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => repeat(''HETATM garbage '', 1000))'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => ''ATOM      1  CA  ALA A   1         nan     nan     nan  1.00 20.00           C'')'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => ''data_x' || chr(10) || 'loop_' || chr(10) || '_atom_site.id' || chr(10) || '_atom_site.Cartn_x' || chr(10) || '1'')'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => repeat(''ATOM      1  CA  ALA A   1      11.104  13.207   2.100  1.00 20.00           C' || chr(10) || ''', 100000))'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', structure => repeat(''X'', 200000000))'),
  ('SELECT * FROM plm_binding_sites(''MKTAYIAKQR'', chain => repeat(''A'', 100))')
) v(q);
-- Long inputs under the window policy: windows of the model's length, within the caps.
SET plm.long_sequence_policy = 'window';
SELECT q AS call, pg_temp.outcome(q) AS outcome FROM (VALUES
  ('SELECT array_length(plm_embed(repeat(''ACDEFGHIKLMNPQRSTVWY'', 250)), 1)'),
  ('SELECT * FROM plm_contacts(repeat(''ACDEFGHIKLMNPQRSTVWY'', 3000), 0.99)'),
  ('SELECT plm_embed(repeat(''A'', 100001))'),
  ('SELECT plm_ppi(repeat(''ACDEFGHIKL'', 300), ''MKTAYIAKQR'')')
) v(q);
RESET plm.long_sequence_policy;
-- Still usable after all of it.
SELECT array_length(plm_embed(:'ubq'), 1) > 0 AS usable;
