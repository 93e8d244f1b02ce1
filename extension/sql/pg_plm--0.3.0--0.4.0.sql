-- pg_plm 0.3.0 -> 0.4.0 (ALTER EXTENSION pg_plm UPDATE TO '0.4.0'). Written by hand; frozen
-- once released. The result must equal a fresh install of 0.4.0 (checked by tests/upgrade/run.sh).
--
-- plm_sync_create and plm_sync_alter refuse options that do not apply to the sync's task
-- (22023) instead of setting them to NULL: embed takes layer and pooling, residues takes layer,
-- function takes ontology, top_k and method (plm_internal.check_options). plm_sync_create's
-- pooling defaults to NULL, which an embedding sync reads as 'mean' as before. A NULL task is an
-- error (it made a function sync).
\echo Use "ALTER EXTENSION pg_plm UPDATE TO '0.4.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION plm_internal.describe(
    tbl regclass, sequence name, target text, task text, model text, layer int,
    pooling text, ontology text, top_k int, method text, batch_rows int
) RETURNS plm_internal.sync
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s plm_internal.sync;
    info record;
    key_count int;
    seq_type text;
    dims int;
BEGIN
    IF tbl IS NULL OR sequence IS NULL OR target IS NULL OR task IS NULL THEN
        RAISE EXCEPTION 'pg_plm: table, sequence, target and task must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF task NOT IN ('embed', 'function', 'residues') THEN
        RAISE EXCEPTION 'pg_plm: unknown task ''%''', task
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''embed'', ''function'' or ''residues''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = tbl AND relkind IN ('r', 'p')) THEN
        RAISE EXCEPTION 'pg_plm: % is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT count(*) INTO key_count
    FROM pg_index i WHERE i.indrelid = tbl AND i.indisprimary;
    SELECT a.attname, format_type(a.atttypid, NULL) AS type INTO info
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = tbl AND i.indisprimary AND i.indnkeyatts = 1;
    IF info IS NULL THEN
        RAISE EXCEPTION 'pg_plm: % needs a single-column primary key', tbl
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Rows are tracked by their key, e.g. ALTER TABLE ... ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY.';
    END IF;
    s.key_column := info.attname;
    s.key_type := info.type;
    SELECT format_type(a.atttypid, NULL) INTO seq_type FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = sequence AND a.attnum > 0 AND NOT a.attisdropped;
    IF seq_type IS NULL THEN
        RAISE EXCEPTION 'pg_plm: % has no column "%"', tbl, sequence
            USING ERRCODE = 'undefined_column';
    ELSIF seq_type NOT IN ('text', 'character varying', 'character') THEN
        RAISE EXCEPTION 'pg_plm: sequence column "%" is %, not text', sequence, seq_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    SELECT i.name, i.fingerprint, i.embedding_dim INTO info FROM @extschema@.plm_model_info(model) i;
    s.model := info.name;
    dims := info.embedding_dim;
    IF task = 'embed' THEN
        SELECT format_type(a.atttypid, a.atttypmod) INTO s.target_type FROM pg_attribute a
        WHERE a.attrelid = tbl AND a.attname = target AND a.attnum > 0 AND NOT a.attisdropped;
        IF s.target_type IS NULL THEN
            RAISE EXCEPTION 'pg_plm: % has no column "%"', tbl, target
                USING ERRCODE = 'undefined_column',
                      HINT = format('Add it first, e.g. ALTER TABLE %s ADD COLUMN %I vector(%s).', tbl, target, dims);
        END IF;
        IF s.target_type !~ '^("?\w+"?\.)?(vector|halfvec)(\(\d+\))?$' AND s.target_type NOT IN ('real[]', 'double precision[]') THEN
            RAISE EXCEPTION 'pg_plm: target column "%" is %; embeddings go to vector, halfvec or real[]', target, s.target_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF s.target_type ~ '\(\d+\)' AND substring(s.target_type FROM '\((\d+)\)')::int <> dims THEN
            RAISE EXCEPTION 'pg_plm: target column "%" is %, but model % gives % dimensions', target, s.target_type, s.model, dims
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF sequence = target THEN
            RAISE EXCEPTION 'pg_plm: the target column cannot be the sequence column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        pooling := coalesce(pooling, 'mean');
        IF pooling NOT IN ('mean', 'cls', 'max') THEN
            RAISE EXCEPTION 'pg_plm: unknown pooling ''%''', pooling
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use mean, cls or max.';
        END IF;
        ontology := NULL; top_k := NULL; method := NULL;
    ELSIF task = 'residues' THEN
        s.target_type := format('halfvec(%s)', dims);
        pooling := NULL; ontology := NULL; top_k := NULL; method := NULL;
    ELSE
        ontology := coalesce(ontology, 'ec');
        top_k := coalesce(top_k, 5);
        method := coalesce(method, 'combined');
        IF ontology NOT IN ('ec', 'go_mf', 'go_bp', 'go_cc') THEN
            RAISE EXCEPTION 'pg_plm: unknown ontology ''%''', ontology
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ec, go_mf, go_bp or go_cc.';
        END IF;
        IF top_k NOT BETWEEN 1 AND 1000 THEN
            RAISE EXCEPTION 'pg_plm: top_k must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        layer := NULL; pooling := NULL;
    END IF;
    s.relid := tbl;
    s.owner := (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = tbl);
    s.sequence_column := sequence;
    s.task := task;
    s.target := target;
    s.layer := layer;
    s.pooling := pooling;
    s.ontology := ontology;
    s.top_k := top_k;
    s.method := method;
    s.batch_rows := coalesce(batch_rows, 64);
    IF s.batch_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'pg_plm: batch_rows must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Function terms also depend on the model's heads and reference set, which can change under
    -- the same weights (and model name) from one release of the model to the next.
    s.spec := plm_internal.spec(
        CASE WHEN task = 'function'
             THEN info.fingerprint || '+' || @extschema@.plm_task_fingerprint(ontology, s.model)
             ELSE info.fingerprint END,
        task, layer, pooling, ontology, top_k, method);
    RETURN s;
END $$;

CREATE FUNCTION plm_internal.check_options(task text, layer int, pooling text, ontology text,
                                           top_k int, method text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    unused text[] := '{}';
BEGIN
    IF task IN ('embed', 'residues') THEN
        IF ontology IS NOT NULL THEN unused := unused || 'ontology'::text; END IF;
        IF top_k IS NOT NULL THEN unused := unused || 'top_k'::text; END IF;
        IF method IS NOT NULL THEN unused := unused || 'method'::text; END IF;
    END IF;
    IF task IN ('residues', 'function') AND pooling IS NOT NULL THEN
        unused := unused || 'pooling'::text;
    END IF;
    IF task = 'function' AND layer IS NOT NULL THEN
        unused := unused || 'layer'::text;
    END IF;
    IF cardinality(unused) > 0 THEN
        RAISE EXCEPTION 'pg_plm: % % not apply to task ''%''', array_to_string(unused, ', '),
            CASE cardinality(unused) WHEN 1 THEN 'does' ELSE 'do' END, task
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE task WHEN 'embed' THEN 'Task embed takes model, layer and pooling.'
                                   WHEN 'residues' THEN 'Task residues takes model and layer.'
                                   ELSE 'Task function takes model, ontology, top_k and method.' END;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.plm_sync_create(
    tbl regclass,
    sequence name,
    target text,
    name text DEFAULT NULL,
    task text DEFAULT 'embed',
    model text DEFAULT NULL,
    layer int DEFAULT NULL,
    pooling text DEFAULT NULL,
    ontology text DEFAULT NULL,
    top_k int DEFAULT NULL,
    method text DEFAULT NULL,
    batch_rows int DEFAULT 64,
    adopt boolean DEFAULT false,
    paused boolean DEFAULT false
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync;
    queued bigint;
BEGIN
    PERFORM plm_internal.check_owner(tbl);
    s := plm_internal.describe(tbl, sequence, target, task, model, layer, pooling, ontology, top_k, method, batch_rows);
    PERFORM plm_internal.check_options(task, layer, pooling, ontology, top_k, method);
    IF s.task <> 'embed' THEN
        -- A side table: one row per protein and term, or per residue, keyed like the source.
        s.target := plm_internal.side_table(s, target);
    END IF;
    s.name := coalesce(name, left(regexp_replace(format('%s_%s', (SELECT relname FROM pg_class WHERE oid = tbl),
                                    (parse_ident(s.target))[cardinality(parse_ident(s.target))]), '\W', '_', 'g'), 40));
    IF EXISTS (SELECT 1 FROM plm_internal.sync y WHERE y.name = s.name) THEN
        RAISE EXCEPTION 'pg_plm: a sync named ''%'' exists', s.name
            USING ERRCODE = 'duplicate_object', HINT = 'Change it with plm_sync_alter, or pass another name.';
    END IF;
    IF EXISTS (SELECT 1 FROM plm_internal.sync y WHERE y.relid = s.relid AND y.target = s.target
               AND y.ontology IS NOT DISTINCT FROM s.ontology) THEN
        RAISE EXCEPTION 'pg_plm: % is already synced to %', s.target, s.relid
            USING ERRCODE = 'duplicate_object';
    END IF;
    s.paused := coalesce(paused, false);
    s.created_at := now();
    s.done := 0;
    s.run_rows := 0;
    s.backoff_attempts := 0;
    INSERT INTO plm_internal.sync SELECT s.*;
    PERFORM plm_internal.install_triggers(s);
    queued := plm_internal.enqueue_stale(s, coalesce(adopt, false));
    PERFORM @extschema@.plm_sync_start_worker();
    RETURN queued;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.plm_sync_alter(
    name text,
    model text DEFAULT NULL,
    layer int DEFAULT NULL,
    pooling text DEFAULT NULL,
    ontology text DEFAULT NULL,
    top_k int DEFAULT NULL,
    method text DEFAULT NULL,
    batch_rows int DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old plm_internal.sync := plm_internal.get(name);
    queued bigint;
BEGIN
    PERFORM plm_internal.check_owner(old.relid);
    PERFORM plm_internal.check_options(old.task, layer, pooling, NULL, top_k, method);
    IF ontology IS NOT NULL AND ontology IS DISTINCT FROM old.ontology THEN
        RAISE EXCEPTION 'pg_plm: the ontology of a sync cannot change'
            USING ERRCODE = 'feature_not_supported', HINT = 'Create another sync for the other ontology.';
    END IF;
    queued := plm_internal.store(old,
        plm_internal.redescribe(old, model, layer, pooling, top_k, method, batch_rows));
    PERFORM @extschema@.plm_sync_start_worker();
    RETURN queued;
END $$;
