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
-- The EC head is a nearest neighbour among the training enzymes: an enzyme of its bank
-- (P62877, RBX1, two EC numbers) finds itself.
\set p62877 'MAAAMDVDTPSGTNSGAGKKRFEVKKWNAVALWAWDIVVDNCAICRNHIMDLCIECQANQASATSEECTVAWGVCNHAFHFHCISRWLKTRQVCPLDNREWEFQKYGH'
SELECT term, round(score::numeric, 3) AS score, evidence, template
FROM plm_function(:'p62877', 'ec', method => 'model') ORDER BY term;
SELECT term, name, round(score::numeric, 3) AS score FROM plm_function(:'ubq', 'go_cc', top_k => 3);
SELECT count(*) AS ten_terms, bool_and(term LIKE 'GO:%' AND name <> '') AS named
FROM plm_function(:'ubq', 'mf', top_k => 10);
SELECT (SELECT count(*) FROM plm_function(:'ubq', 'go_bp', top_k => 50, min_score => 0.5))
    <= (SELECT count(*) FROM plm_function(:'ubq', 'go_bp', top_k => 50)) AS min_score_filters;
-- Homology transfer: an annotated protein of the shipped GO reference (Q8RGH3: catalytic
-- activity, uridylate kinase, lyase) finds itself and transfers its own terms.
\set q8rgh3 'MNEKLEKMRNGKGFIAALDQSGGSTPKALKLYGVNENEYSNDKEMFDLIHKMRTRIIKSPAFNESKILGAILFEQTMDSKIDGKYTADFLWEEKKVLPFLKIDKGLNDLDADGVQTMKPNPTLADLLKRANERHIFGTKMRSVIKKASPAGIARVVEQQFEVAAQVVAAGLIPIIEPEVDINNVDKVQCEEILRDEIRKHLNALPETSNVMLKLTLPTVENLYEEFTKHPRVVRVVALSGGYSREKANDILSKNKGVIAS'
SELECT t.term, f.evidence, f.template, round(f.template_identity::numeric, 2) AS identity
FROM unnest(ARRAY['GO:0003824', 'GO:0004332', 'GO:0016829']) AS t(term)
LEFT JOIN plm_function(:'q8rgh3', 'go_mf', top_k => 1000, method => 'homology') f USING (term)
ORDER BY 1;
-- Combined rows say what supports them; model rows never name a template.
SELECT bool_and(evidence IN ('model', 'homology', 'model+homology')) AS evidence_named,
       bool_and((template IS NULL) = (evidence = 'model')) AS template_iff_homology,
       bool_and(score > 0 AND score <= 1) AS bounded
FROM plm_function(:'q8rgh3', 'go_mf', top_k => 1000);
SELECT count(*) > 0 AS has_rows, bool_and(evidence = 'model' AND template IS NULL) AS model_only
FROM plm_function(:'q8rgh3', 'go_mf', method => 'model');
-- Nothing similar: homology says nothing and the combined answer is the model's.
\set nothing 'WCHWCMWHCWMCHWWCMHCWHWMCWHCMWCHWMCHWCWMHCW'
SELECT count(*) AS homology_rows FROM plm_function(:'nothing', 'go_mf', method => 'homology');
SELECT array_agg(term ORDER BY score DESC, term) = (SELECT array_agg(term ORDER BY score DESC, term)
         FROM plm_function(:'nothing', 'go_mf', method => 'model')) AS combined_is_model
FROM plm_function(:'nothing', 'go_mf', method => 'combined');
-- For EC, validation (NEW-392) preferred no answer to the head's where homology has nothing
-- (the blend's model_without_hits is false): the head answers alone, the default does not.
SELECT (SELECT count(*) FROM plm_function(:'nothing', 'ec', method => 'model')) AS model_rows,
       (SELECT count(*) FROM plm_function(:'nothing', 'ec')) AS combined_rows;
SELECT * FROM plm_function(:'ubq', 'go_mf', method => 'blast');
-- Interaction: a probability, exactly symmetric.
SELECT round(plm_ppi(:'ubq', 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ')::numeric, 3) AS p,
       plm_ppi(:'ubq', 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ')
     = plm_ppi('MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ', :'ubq') AS symmetric;
-- Interolog transfer: a known interacting pair of the shipped interaction reference
-- (D-SCRIPT yeast YOR045W–YPR133W-A) finds itself, in either order; pairs with a protein that
-- has no homolog there keep the model's order (both are calibrated by increasing maps).
\set tom6 'MDGMFAMPGAAAGAASPQQPKSRFQAFKESPLYTIALNGAFFVAGVAFIQSPLMDMLAPQL'
\set tom5 'MFGLPQQEVSEEEKRAHQEQTEKTLKQAAYVAAFLWVSPMIWHLVKKQWK'
SELECT round(plm_ppi(:'tom6', :'tom5', method => 'homology')::numeric, 3) AS known_pair,
       round(plm_ppi(:'tom5', :'tom6', method => 'homology')::numeric, 3) AS reversed,
       plm_ppi(:'tom6', :'tom5') > plm_ppi(:'tom6', :'tom5', method => 'model') AS combined_raises_it;
SELECT plm_ppi(:'tom6', :'nothing', method => 'homology') AS no_homolog,
       (plm_ppi(:'tom6', :'nothing') < plm_ppi(:'tom5', :'nothing'))
     = (plm_ppi(:'tom6', :'nothing', method => 'model') < plm_ppi(:'tom5', :'nothing', method => 'model'))
       AS model_order_kept;
SELECT plm_ppi(:'tom6', :'tom5', method => 'blast');
-- Template transfer of binding sites: a zinc-binding chain of the shipped binding reference
-- (6imq_B, BioLiP) recovers its own zinc ligands; the method argument works with every form.
\set zf 'SRQIVDAQAVCTRCKESADFWCFECEQLLCAKCFEAHQWFLKHEARPLAE'
SELECT array_agg(position ORDER BY position) @> ARRAY[11, 14, 22, 25, 30, 33, 37, 43] AS own_sites,
       bool_and(residue IN ('C', 'H', 'D', 'E')) AS zinc_ligand_residues
FROM plm_binding_sites(:'zf', 'ZN', threshold => 0.5, method => 'homology');
SELECT count(*) = length(:'zf') * 11 AS every_residue_and_ligand
FROM plm_binding_sites(:'zf', threshold => 0, method => 'combined');
SELECT count(*) AS homology_rows FROM plm_binding_sites(:'nothing', threshold => 0.01, method => 'homology');
-- Without a template, each ligand's residues keep the network's order.
SELECT count(*) AS ligands, bool_and(c.ranked = m.ranked) AS model_order_kept
FROM (SELECT ligand, array_agg(position ORDER BY score, position) AS ranked
      FROM plm_binding_sites(:'nothing', threshold => 0) GROUP BY ligand) c
JOIN (SELECT ligand, array_agg(position ORDER BY score, position) AS ranked
      FROM plm_binding_sites(:'nothing', threshold => 0, method => 'model') GROUP BY ligand) m
  USING (ligand);
SELECT * FROM plm_binding_sites(:'zf', method => 'blast');
-- Errors list the valid values.
SELECT * FROM plm_function(:'ubq', 'pfam');
SELECT * FROM plm_binding_sites(:'ubq', 'heme');
SELECT * FROM plm_binding_sites(:'ubq', structure => 'HEADER    nothing here');
SELECT * FROM plm_binding_sites(:'ubq', threshold => 1.5);
