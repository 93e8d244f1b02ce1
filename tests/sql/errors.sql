-- Bad input: clear errors with SQLSTATE, and the session stays usable.
\set VERBOSITY default
CREATE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE q; RETURN 'no error';
EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$;
SELECT plm_embed('MKT1A');
SELECT plm_embed('MKTé');
SELECT plm_embed(' ');
SELECT plm_embed('MKT', pooling => 'sum');
SELECT plm_embed('MKT', layer => 42);
SELECT plm_embed(repeat('A', 1100));
SELECT plm_embed('MKT', model => 'no-such-model');
-- Arguments that would otherwise be ignored.
SELECT plm_embed_residues('MKT', layer => 1, layers => ARRAY[1, 2]);
SELECT * FROM plm_binding_sites('MKT', chain => 'A');
-- Bad setting values and misspelled names fail at SET, not at the next query.
SET plm.long_sequence_policy = 'sometimes';
SET plm.max_lenght = 10;
SHOW plm.long_sequence_policy;
SELECT q, pg_temp.sqlstate_of(q) FROM (VALUES
  ('SELECT plm_embed(''MKT1A'')'),
  ('SELECT plm_embed('''')'),
  ('SELECT plm_embed(''MKT'', model => ''no-such-model'')'),
  ('SELECT plm_embed(''MKT'', model => ''../../etc'')'),
  ('SELECT plm_embed(repeat(''A'', 1100))'),
  ('SELECT * FROM plm_function(''MKT'', method => ''blast'')'),
  ('SELECT * FROM plm_function(''MKT'', ''go_mf'', method => '''')'),
  ('SELECT plm_ppi(''MKT'', ''MKT'', method => ''interolog'')'),
  ('SELECT * FROM plm_binding_sites(''MKT'', method => ''templates'')'),
  ('SELECT plm_task_fingerprint(''kinase'')'),
  ('SELECT plm_task_fingerprint(''ec'', ''no-such-model'')')) v(q);
-- Still usable after errors.
SELECT array_length(plm_embed('MKT'), 1) > 0 AS usable;
-- Superuser-only settings.
CREATE ROLE plm_regress_user NOSUPERUSER;
SET ROLE plm_regress_user;
SET plm.model_dir = '/tmp';
SET plm.device = 'cuda:0';
SET plm.cache_size_mb = 1;
SET plm.max_tokens_per_batch = 4096;
RESET ROLE;
DROP ROLE plm_regress_user;
-- statement_timeout (and query cancel) are honoured between batches (or, with the shared worker,
-- while waiting for it); the session stays usable. 4,000 distinct sequences: about a million residues.
SET plm.max_tokens_per_batch = 64;
SET statement_timeout = '300ms';
\set VERBOSITY terse
SELECT count(*) FROM plm_embed(ARRAY(
  SELECT repeat(translate(md5(g::text), '0123456789abcdef', 'ACDEFGHIKLMNPQRS'), 8)
  FROM generate_series(1, 4000) g));
\set VERBOSITY default
RESET statement_timeout;
RESET plm.max_tokens_per_batch;
SELECT array_length(plm_embed('MKTAYIAKQR'), 1) > 0 AS usable_after_timeout;
