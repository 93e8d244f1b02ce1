-- Similarity search over protein embeddings with pgvector (HNSW, cosine distance).
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/similarity_search.sql
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_library;
CREATE TABLE example_library (
    accession text PRIMARY KEY,
    description text,
    sequence text NOT NULL,
    embedding vector
);
INSERT INTO example_library (accession, description, sequence) VALUES
  ('P0CG48', 'ubiquitin (human, fragment)', 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'),
  ('P62988', 'ubiquitin variant', 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGGC'),
  ('P69905', 'haemoglobin alpha (human)', 'MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR'),
  ('P68871', 'haemoglobin beta (human)', 'MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHVDPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH'),
  ('P01308', 'insulin (human)', 'MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRRGREDLQVGQVELGGGPGAGSLQPLALEGSLQKRGIVEQCCTSICSLYQLENYCN');
-- Embed the whole library in one statement (the function is IMMUTABLE and PARALLEL SAFE).
UPDATE example_library SET embedding = plm_embed(sequence)::vector;
-- HNSW indexes need a fixed dimension: the model's embedding width.
DO $$ BEGIN
  EXECUTE format('ALTER TABLE example_library ALTER COLUMN embedding TYPE vector(%s)',
                 (SELECT embedding_dim FROM plm_models() WHERE name = 'plm-default'));
END $$;
CREATE INDEX example_library_hnsw ON example_library USING hnsw (embedding vector_cosine_ops);

-- The five nearest neighbours of a query protein.
SELECT accession, description,
       round((1 - (embedding <=> plm_embed('MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR')::vector))::numeric, 3) AS cosine_similarity
FROM example_library
ORDER BY embedding <=> plm_embed('MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR')::vector
LIMIT 5;

-- Check (run by the test suite): the query protein finds itself first.
DO $$
BEGIN
  ASSERT (SELECT accession FROM example_library
          ORDER BY embedding <=> plm_embed('MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR')::vector
          LIMIT 1) = 'P69905', 'nearest neighbour of P69905 should be itself';
END $$;
DROP TABLE example_library;
