-- A nightly bulk load: new proteins arrive every day; a one-off job embeds whatever is not
-- current (resumable: called again after an interruption it goes on after the last committed
-- batch, and rows whose sequence and model are unchanged are skipped), then a sync keeps the
-- column current between loads, adopting the job's values without recomputing them.
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/nightly_update.sql
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_proteins;
CREATE TABLE example_proteins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sequence text NOT NULL,
    embedding vector(320)
);
-- 40 proteins: fragments of real sequences (the nightly load).
INSERT INTO example_proteins (sequence)
SELECT substr(s, 1 + (g % 5) * 3, 30 + g)
FROM generate_series(1, 40) g,
     (VALUES ('MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHVDPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH')) v(s);

-- The job: batches of 16 rows, each committed; progress in plm_job_progress.
CALL plm_embed_table('example_proteins', 'sequence', 'embedding', batch_rows => 16, notice_every => 16);
SELECT state, rows_computed, rows_skipped, rows_failed FROM plm_job_progress
WHERE "table" = 'example_proteins'::regclass ORDER BY job DESC LIMIT 1;
-- The next night: a few changed sequences; only those are computed again.
UPDATE example_proteins SET sequence = sequence || 'K' WHERE id <= 3;
CALL plm_embed_table('example_proteins', 'sequence', 'embedding', batch_rows => 16, notice_every => 0);

-- From now on the column follows the sequences; the job's values are adopted (0 queued).
SELECT plm_sync_create('example_proteins', 'sequence', 'embedding', name => 'example_nightly') AS queued;

-- Check (run by the test suite): every row embedded once per sequence, equal to single calls.
DO $$
BEGIN
  ASSERT (SELECT rows_computed FROM plm_job_progress WHERE "table" = 'example_proteins'::regclass
          ORDER BY job DESC LIMIT 1) = 3, 'the second night recomputed more than the 3 changed rows';
  ASSERT (SELECT queued FROM (SELECT count(*) AS queued FROM plm_sync_status s
          WHERE s.name = 'example_nightly' AND s.pending > 0) c) = 0, 'the sync did not adopt the job''s values';
  ASSERT (SELECT count(*) FROM example_proteins WHERE embedding IS NULL) = 0, 'rows left unembedded';
  ASSERT (SELECT bool_and((embedding <-> plm_embed(sequence)::vector) < 1e-4) FROM example_proteins),
         'job embeddings differ from single calls';
END $$;
SELECT plm_sync_drop('example_nightly');
DROP TABLE example_proteins;
