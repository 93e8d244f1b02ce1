-- Annotating a protein table in SQL: top EC numbers and GO terms of proteins without an
-- annotation, a pairwise interaction screen, and zinc-binding residues.
-- Run: psql -v ON_ERROR_STOP=1 -f sql/examples/function_annotation.sql
CREATE EXTENSION IF NOT EXISTS pg_plm;
DROP TABLE IF EXISTS example_proteins;
CREATE TABLE example_proteins (accession text PRIMARY KEY, sequence text NOT NULL, annotation text);
INSERT INTO example_proteins VALUES
  ('P0CG48-UBQ', 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG', 'ubiquitin'),
  ('P00698-LYZ', 'KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKIVSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL', NULL),
  ('P03023-ZF', 'MSEEKKSGRPKYTCDACGKGFSRSDHLTRHRRIHTGEKPFKCDICGRAFSRSDHLNRHKRIHTGEKP', NULL);

-- Nearest annotated enzyme's EC numbers (score: its cosine similarity), for every protein.
SELECT p.accession, f.term AS ec_number, round(f.score::numeric, 3) AS similarity
FROM example_proteins p CROSS JOIN LATERAL plm_function(p.sequence, 'ec', top_k => 2) f
ORDER BY p.accession, f.score DESC;

-- Predicted GO molecular function of the unannotated proteins, best terms first.
SELECT p.accession, f.term, f.name, round(f.score::numeric, 3) AS score
FROM example_proteins p
CROSS JOIN LATERAL plm_function(p.sequence, 'go_mf', top_k => 3) f
WHERE p.annotation IS NULL
ORDER BY p.accession, f.score DESC;

-- Every pair once: interaction probabilities (the score is symmetric).
SELECT a.accession AS protein_a, b.accession AS protein_b,
       round(plm_ppi(a.sequence, b.sequence)::numeric, 3) AS p_interaction
FROM example_proteins a JOIN example_proteins b ON a.accession < b.accession
ORDER BY p_interaction DESC;

-- Residues most likely to bind zinc in the zinc-finger fragment.
SELECT position, residue, round(score::numeric, 3) AS score
FROM example_proteins p, plm_binding_sites(p.sequence, 'ZN', threshold => 0) b
WHERE p.accession = 'P03023-ZF'
ORDER BY score DESC LIMIT 8;

-- Checks (run by the test suite).
DO $$
BEGIN
  ASSERT (SELECT count(DISTINCT p.accession) FROM example_proteins p
          CROSS JOIN LATERAL plm_function(p.sequence, 'ec', top_k => 2) f) = 3,
         'every protein gets the EC numbers of its nearest training enzyme';
  ASSERT (SELECT count(*) FROM example_proteins p
          CROSS JOIN LATERAL plm_function(p.sequence, 'go_mf', top_k => 3) f) = 9,
         'three GO terms per protein expected';
  ASSERT (SELECT bool_and(plm_ppi(a.sequence, b.sequence) = plm_ppi(b.sequence, a.sequence))
          FROM example_proteins a, example_proteins b), 'interaction score not symmetric';
  ASSERT (SELECT count(*) FROM example_proteins p, plm_binding_sites(p.sequence, 'ZN', threshold => 0) b
          WHERE p.accession = 'P03023-ZF') = 67, 'one zinc score per residue expected';
END $$;
DROP TABLE example_proteins;
