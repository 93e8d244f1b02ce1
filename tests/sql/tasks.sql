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
-- Function: EC numbers of the nearest training enzyme, GO terms ranked by the MLP heads.
SELECT count(*) BETWEEN 1 AND 5 AS has_ec_terms,
       bool_and(term ~ '^[0-9]+\.[0-9n-]+\.[0-9n-]+\.[0-9n-]+$') AS ec_format,
       bool_and(score > 0 AND score <= 1) AS bounded
FROM plm_function(:'ubq', 'ec');
SELECT term, name, round(score::numeric, 3) AS score FROM plm_function(:'ubq', 'go_cc', top_k => 3);
SELECT count(*) AS ten_terms, bool_and(term LIKE 'GO:%' AND name <> '') AS named
FROM plm_function(:'ubq', 'mf', top_k => 10);
SELECT (SELECT count(*) FROM plm_function(:'ubq', 'go_bp', top_k => 50, min_score => 0.5))
    <= (SELECT count(*) FROM plm_function(:'ubq', 'go_bp', top_k => 50)) AS min_score_filters;
-- Interaction: a probability, exactly symmetric.
SELECT round(plm_ppi(:'ubq', 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ')::numeric, 3) AS p,
       plm_ppi(:'ubq', 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ')
     = plm_ppi('MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ', :'ubq') AS symmetric;
-- Errors list the valid values.
SELECT * FROM plm_function(:'ubq', 'pfam');
SELECT * FROM plm_binding_sites(:'ubq', 'heme');
SELECT * FROM plm_binding_sites(:'ubq', structure => 'HEADER    nothing here');
SELECT * FROM plm_binding_sites(:'ubq', threshold => 1.5);
