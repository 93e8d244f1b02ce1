-- Task heads of the default model. Binding sites: one row per residue and ligand.
\set ubq 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'
SELECT p.proname, p.provolatile, p.proparallel, p.procost
FROM pg_proc p WHERE p.proname IN ('plm_function', 'plm_ppi', 'plm_binding_sites') ORDER BY 1;
SELECT count(*) = length(:'ubq') * 11 AS every_residue_and_ligand FROM plm_binding_sites(:'ubq', threshold => 0);
SELECT DISTINCT ligand FROM plm_binding_sites(:'ubq', threshold => 0) ORDER BY 1;
SELECT bool_and(score BETWEEN 0 AND 1) AS bounded,
       bool_and(residue = substr(:'ubq', position, 1)) AS residues_match
FROM plm_binding_sites(:'ubq', 'ZN', threshold => 0);
SELECT count(*) AS null_rows FROM plm_binding_sites(NULL);
SELECT plm_ppi(NULL, :'ubq') IS NULL AS null_ppi;
-- Errors list the valid values.
SELECT * FROM plm_function(:'ubq', 'pfam');
SELECT * FROM plm_binding_sites(:'ubq', 'heme');
SELECT * FROM plm_binding_sites(:'ubq', structure => 'HEADER    nothing here');
SELECT * FROM plm_binding_sites(:'ubq', threshold => 1.5);
