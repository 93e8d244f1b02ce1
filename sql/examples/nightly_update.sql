-- A nightly batch job: embed new or changed proteins in chunks, recording which model
-- (by fingerprint) produced each embedding so a model change is visible and re-runnable.
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/nightly_update.sql
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_proteins;
CREATE TABLE example_proteins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sequence text NOT NULL,
    embedding vector,
    embedding_model text,
    embedded_at timestamptz
);
-- 40 proteins: fragments of real sequences (the nightly job sees new rows every day).
INSERT INTO example_proteins (sequence)
SELECT substr(s, 1 + (g % 5) * 3, 30 + g)
FROM generate_series(1, 40) g,
     (VALUES ('MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHVDPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH')) v(s);

-- The job: process rows without a current embedding in chunks of 16; each chunk is one
-- statement that sends its sequences through the engine as one length-bucketed batch.
DO $$
DECLARE
  current_model text := (SELECT fingerprint FROM plm_models() WHERE name = 'plm-default');
  done int;
BEGIN
  LOOP
    WITH chunk AS (
      SELECT array_agg(id ORDER BY id) AS ids, array_agg(sequence ORDER BY id) AS seqs
      FROM (SELECT id, sequence FROM example_proteins
            WHERE embedding_model IS DISTINCT FROM current_model
            ORDER BY id LIMIT 16 FOR UPDATE SKIP LOCKED) c
    ), embedded AS (
      SELECT chunk.ids[e.ordinality] AS id, e.embedding
      FROM chunk, plm_embed(chunk.seqs) AS e
      WHERE chunk.ids IS NOT NULL
    )
    UPDATE example_proteins p
    SET embedding = embedded.embedding::vector, embedding_model = current_model, embedded_at = now()
    FROM embedded WHERE p.id = embedded.id;
    GET DIAGNOSTICS done = ROW_COUNT;
    RAISE NOTICE 'embedded % proteins', done;
    EXIT WHEN done = 0;
  END LOOP;
END $$;

SELECT count(*) AS proteins, count(embedding) AS embedded, count(DISTINCT embedding_model) AS models
FROM example_proteins;

-- Check (run by the test suite): every row embedded, and equal to the single-call result.
DO $$
BEGIN
  ASSERT (SELECT count(*) FROM example_proteins WHERE embedding IS NULL) = 0, 'rows left unembedded';
  ASSERT (SELECT bool_and((embedding <-> plm_embed(sequence)::vector) < 1e-4) FROM example_proteins),
         'batched embeddings differ from single calls';
END $$;
DROP TABLE example_proteins;
