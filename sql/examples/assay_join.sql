-- Joining predictions against an assay table: rank measured compounds by how similar their
-- target is to a new protein of interest (targets with similar embeddings often share ligands).
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/assay_join.sql
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_assays, example_targets;
CREATE TABLE example_targets (target_id text PRIMARY KEY, name text, sequence text NOT NULL);
CREATE TABLE example_assays (compound text, target_id text REFERENCES example_targets, ic50_nm real);
INSERT INTO example_targets VALUES
  ('HBA', 'haemoglobin alpha', 'MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR'),
  ('HBB', 'haemoglobin beta', 'MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHVDPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH'),
  ('UBQ', 'ubiquitin', 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG');
INSERT INTO example_assays VALUES
  ('CPD-1', 'HBA', 120), ('CPD-2', 'HBA', 3400), ('CPD-3', 'HBB', 85),
  ('CPD-4', 'UBQ', 15000), ('CPD-5', 'HBB', 640);

-- New protein of interest: myoglobin-like query. Rank assay results by target similarity.
WITH query AS (
  SELECT plm_embed('MGLSDGEWQLVLNVWGKVEADIPGHGQEVLIRLFKGHPETLEKFDKFKHLKSEDEMKASEDLKKHGATVLTALGGILKKKGHHEAELKPLAQSHATKHKIPVKYLEFISEAIIQVLQSKHPGDFGADAQGAMNKALELFRKDMASNYKELGFQG')::vector AS e
)
SELECT a.compound, t.name AS target, a.ic50_nm,
       round((1 - (plm_embed(t.sequence)::vector <=> query.e))::numeric, 3) AS target_similarity
FROM example_assays a JOIN example_targets t USING (target_id), query
ORDER BY target_similarity DESC, a.ic50_nm;

-- Check (run by the test suite): every assay row joined, similarities are valid cosines.
DO $$
BEGIN
  ASSERT (SELECT count(*) FROM example_assays a JOIN example_targets t USING (target_id)
          WHERE (plm_embed(t.sequence)::vector <=> plm_embed(t.sequence)::vector) < 1e-5) = 5,
         'assay join lost rows';
END $$;
DROP TABLE example_assays, example_targets;
