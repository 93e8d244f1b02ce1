-- One pgbench transaction: a random function of pg_plm on a random Swiss-Prot validation protein.
\set id random(1, 2000)
\set r random(1, 7)
\if :r = 1
SELECT plm_embed(seq) IS NOT NULL FROM soak_proteins WHERE id = :id;
\elif :r = 2
SELECT count(*) FROM plm_embed(ARRAY(SELECT seq FROM soak_proteins WHERE id BETWEEN :id AND :id + 15));
\elif :r = 3
SELECT array_length(plm_embed_residues(seq, 'plm-default', layers => ARRAY[1, -1]), 1) FROM soak_proteins WHERE id = :id;
\elif :r = 4
SELECT count(*) FROM soak_proteins s, plm_contacts(s.seq, 0.5) c WHERE s.id = :id;
\elif :r = 5
SELECT count(*) FROM soak_proteins s, plm_function(s.seq, 'go_mf', 5) f WHERE s.id = :id;
\elif :r = 6
SELECT plm_ppi(a.seq, b.seq) FROM soak_proteins a, soak_proteins b WHERE a.id = :id AND b.id = (:id * 7) % 2000 + 1;
\else
SELECT count(*) FROM soak_proteins s, plm_binding_sites(s.seq, threshold => 0.3) b WHERE s.id = :id;
\endif
