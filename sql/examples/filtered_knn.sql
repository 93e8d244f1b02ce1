-- Filtered k-nearest neighbours joined with an assay table: the proteins most similar to a
-- query among those with a potent compound, from embeddings kept current by a sync. With a
-- selective filter a plain HNSW scan can return fewer rows than LIMIT asks for; pgvector 0.8's
-- iterative index scans go on until the LIMIT is met.
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/filtered_knn.sql
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_assay, example_targets;
CREATE TABLE example_targets (id int PRIMARY KEY, sequence text NOT NULL, embedding vector(320));
-- 300 related sequences: fragments of human haemoglobin beta and ubiquitin.
INSERT INTO example_targets (id, sequence)
SELECT g, substr(CASE WHEN g % 2 = 0
                      THEN 'MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHVDPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH'
                      ELSE 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGGMQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG' END,
                 1 + g % 40, 60 + g % 50)
FROM generate_series(1, 300) g;
CREATE TABLE example_assay (compound text, target_id int REFERENCES example_targets, ic50_nm real);
INSERT INTO example_assay SELECT 'CPD-' || g, 1 + (g * 37) % 300, (g * 7919) % 10000 FROM generate_series(1, 600) g;

-- Embeddings follow the sequences; wait for the background worker to catch up.
SELECT plm_sync_create('example_targets', 'sequence', 'embedding', name => 'example_targets');
SELECT plm_sync_wait('example_targets', '10 minutes');
CREATE INDEX ON example_targets USING hnsw (embedding vector_cosine_ops);

-- The 5 targets nearest to a query protein among those with an IC50 under 100 nM.
SET hnsw.iterative_scan = relaxed_order;
SET enable_seqscan = off; -- this example table is small; large ones use the index by themselves
CREATE TEMP TABLE hits AS
SELECT t.id, round((1 - (t.embedding <=> q.e))::numeric, 3) AS similarity
FROM example_targets t,
     (SELECT plm_embed('MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFF', model => 'plm-default')::vector AS e) q
WHERE t.id IN (SELECT target_id FROM example_assay WHERE ic50_nm < 100)
ORDER BY t.embedding <=> q.e
LIMIT 5;
SELECT h.id, h.similarity, a.compound, a.ic50_nm
FROM hits h JOIN example_assay a ON a.target_id = h.id AND a.ic50_nm < 100
ORDER BY h.similarity DESC, a.ic50_nm;

-- Check (run by the test suite): 5 rows, all passing the filter, equal to exact search.
DO $$
BEGIN
  ASSERT (SELECT count(*) FROM hits) = 5, 'the iterative scan returned fewer rows than LIMIT';
  ASSERT (SELECT array_agg(id ORDER BY similarity DESC, id) FROM hits) =
         (SELECT array_agg(id ORDER BY s DESC, id) FROM (
            SELECT t.id, round((1 - (t.embedding <=> plm_embed('MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFF', model => 'plm-default')::vector))::numeric, 3) AS s
            FROM example_targets t
            WHERE t.id IN (SELECT target_id FROM example_assay WHERE ic50_nm < 100)
            ORDER BY s DESC, t.id LIMIT 5) exact),
         'filtered HNSW differs from exact search';
END $$;
RESET enable_seqscan;
RESET hnsw.iterative_scan;
SELECT plm_sync_drop('example_targets');
DROP TABLE example_assay, example_targets;
