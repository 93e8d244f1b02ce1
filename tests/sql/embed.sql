-- Embeddings: shapes, determinism, layers, pooling, batch form, per-residue features.
\set ubq 'MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG'
SELECT array_length(plm_embed(:'ubq'), 1) = (SELECT embedding_dim FROM plm_models() WHERE name = 'plm-default') AS width_ok;
SELECT plm_embed(:'ubq') = plm_embed(lower(:'ubq')) AS case_insensitive;
SELECT plm_embed(E'MQIFV\nKTLTG  ') = plm_embed('MQIFVKTLTG') AS whitespace_removed;
SELECT plm_embed(:'ubq', layer => -1) = plm_embed(:'ubq') AS minus_one_is_last,
       plm_embed(:'ubq', layer => 0) <> plm_embed(:'ubq') AS layer0_differs;
SELECT p, array_length(plm_embed(:'ubq', pooling => p), 1) > 0 AS ok
FROM unnest(ARRAY['mean', 'cls', 'max']) p;
-- Batch form: same vectors as single calls, NULL elements keep their place.
WITH input AS (SELECT ARRAY[:'ubq', NULL, 'MKTAYIAKQR'] AS seqs)
SELECT b.ordinality, b.embedding IS NULL AS is_null,
       (SELECT coalesce(bool_and(abs(x - y) < 1e-5), true)
        FROM unnest(b.embedding, plm_embed(input.seqs[b.ordinality])) AS t(x, y)) AS equals_single
FROM input, plm_embed(input.seqs) AS b
ORDER BY 1;
-- Per-residue features: residues x hidden, and several layers side by side.
SELECT array_ndims(r) AS ndims, array_length(r, 1) AS residues
FROM (SELECT plm_embed_residues(:'ubq') AS r) s;
SELECT array_length(plm_embed_residues(:'ubq', layers => ARRAY[0, 1, -1]), 2)
     = 3 * array_length(plm_embed_residues(:'ubq'), 2) AS multiscale_width;
-- Contacts: upper triangle, 1-based, probabilities.
SELECT count(*) = 76 * 75 / 2 AS all_pairs,
       bool_and(i < j AND i >= 1 AND j <= 76 AND probability BETWEEN 0 AND 1) AS valid
FROM plm_contacts(:'ubq', 0.0);
-- NULL in, NULL out.
SELECT plm_embed(NULL::text) IS NULL AS null_embed, plm_embed_residues(NULL) IS NULL AS null_residues;
