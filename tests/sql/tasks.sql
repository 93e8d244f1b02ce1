-- Task heads of the default model: function terms, interaction, binding sites.
\set ubq 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'
\set lyz 'KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKIVSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL'
SELECT p.proname, p.provolatile, p.proparallel, p.procost
FROM pg_proc p WHERE p.proname IN ('plm_function', 'plm_ppi', 'plm_binding_sites') ORDER BY 1;
-- Ranked, bounded, named.
SELECT count(*) AS n, bool_and(score BETWEEN 0 AND 1) AS bounded, bool_and(term ~ '^[0-9n.-]+$') AS ec_like
FROM plm_function(:'lyz', 'ec', top_k => 5);
SELECT count(*) AS n, bool_and(term LIKE 'GO:%') AS go_ids, bool_and(name <> '') AS named
FROM plm_function(:'lyz', 'go_cc', top_k => 3);
-- A GO term never scores below its descendants (true-path rule), so a propagated parent
-- such as "cellular anatomical entity" outranks or ties specific children.
SELECT count(*) FILTER (WHERE score > 1 OR score < 0) AS out_of_range FROM plm_function(:'ubq', 'go_bp', top_k => 50);
-- Symmetric interaction score.
SELECT plm_ppi(:'ubq', :'lyz') = plm_ppi(:'lyz', :'ubq') AS symmetric,
       plm_ppi(:'ubq', :'lyz') BETWEEN 0 AND 1 AS bounded;
-- One row per residue and ligand at threshold 0; NULL in, nothing out.
SELECT count(*) = length(:'ubq') * 11 AS every_residue_and_ligand FROM plm_binding_sites(:'ubq', threshold => 0);
SELECT DISTINCT ligand FROM plm_binding_sites(:'ubq', threshold => 0) ORDER BY 1;
SELECT count(*) AS null_rows FROM plm_binding_sites(NULL);
SELECT plm_ppi(NULL, :'ubq') IS NULL AS null_ppi;
-- Errors list the valid values.
SELECT * FROM plm_function(:'ubq', 'pfam');
SELECT * FROM plm_binding_sites(:'ubq', 'heme');
SELECT * FROM plm_binding_sites(:'ubq', structure => 'HEADER    nothing here');
