-- Function markings that let PostgreSQL run predictions in parallel query and let
-- distributed planners push them down: IMMUTABLE, PARALLEL SAFE, high COST.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, p.provolatile, p.proparallel, p.procost
FROM pg_proc p JOIN pg_extension e ON e.oid = (SELECT oid FROM pg_extension WHERE extname = 'pg_plm')
JOIN pg_depend d ON d.objid = p.oid AND d.refobjid = e.oid
WHERE p.proname IN ('plm_embed', 'plm_embed_residues', 'plm_contacts')
ORDER BY 1, 2;
SELECT plm_version() LIKE 'pg_plm %' AS version_ok;
SELECT name, loaded IS NOT NULL AS has_loaded, length(fingerprint) AS fingerprint_hex, error
FROM plm_models() ORDER BY name;
-- What a task's answers depend on besides the weights: heads and the task's reference set.
SELECT length(plm_task_fingerprint('go_mf')) AS task_fingerprint_hex,
       plm_task_fingerprint('go_mf') = plm_task_fingerprint('go_mf', 'plm-default') AS default_model,
       plm_task_fingerprint('go_mf') <> plm_task_fingerprint('go_bp') AS per_reference_set;
SELECT plm_cache_clear() >= 0 AS cleared;
SELECT plm_embed('MKTAYIAKQR') IS NOT NULL, plm_embed('MKTAYIAKQR') IS NOT NULL;
SELECT hits >= 1 AS hit, entries >= 1 AS stored, bytes <= capacity_bytes AS bounded FROM plm_cache_stats();
