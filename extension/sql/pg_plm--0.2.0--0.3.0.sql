-- pg_plm 0.2.0 -> 0.3.0 (ALTER EXTENSION pg_plm UPDATE TO '0.3.0'). Written by hand; frozen
-- once released. The result must equal a fresh install of 0.3.0 (checked by tests/upgrade/run.sh).
--
-- A synced function column's spec now also holds the fingerprint of the model's task heads and
-- reference set (plm_task_fingerprint), and the sync worker checks every sync against its model
-- when it starts (plm_internal.refresh): new weights, heads or reference sets installed under a
-- sync's model name re-queue its rows after a restart, or at once with plm_sync_alter(name).
-- Existing function syncs get the new spec here, which queues their rows once: nothing records
-- which heads computed them. plm_sync_alter's describe-and-store steps move into
-- plm_internal.redescribe and plm_internal.store, which the worker's check uses too.
\echo Use "ALTER EXTENSION pg_plm UPDATE TO '0.3.0'" to load this file. \quit

-- pg_plm::operators::plm_task_fingerprint
CREATE  FUNCTION "plm_task_fingerprint"(
	"task" TEXT, /* & str */
	"model" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'plm_task_fingerprint_wrapper';

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
    IF tbl IS NULL OR sequence IS NULL OR target IS NULL THEN
        RAISE EXCEPTION 'pg_plm: table, sequence and target must not be NULL'
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

-- Sync `old` described again with its model as installed now and the given changes (NULL: as
-- before); the ontology and, for residues, the width of the side table cannot change.
CREATE FUNCTION plm_internal.redescribe(old plm_internal.sync, model text, layer int,
                                        pooling text, top_k int, method text, batch_rows int)
RETURNS plm_internal.sync
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    s := plm_internal.describe(old.relid, old.sequence_column,
        CASE WHEN old.task = 'embed' THEN old.target ELSE 'x' END, old.task,
        coalesce(model, old.model), coalesce(layer, old.layer), coalesce(pooling, old.pooling),
        old.ontology, coalesce(top_k, old.top_k), coalesce(method, old.method),
        coalesce(batch_rows, old.batch_rows));
    IF old.task = 'residues' AND s.target_type IS DISTINCT FROM old.target_type THEN
        RAISE EXCEPTION 'pg_plm: model % gives vectors of another width than the side table holds', s.model
            USING ERRCODE = 'feature_not_supported', HINT = 'Create a sync into another side table.';
    END IF;
    RETURN s;
END $$;

-- Stores `s`, sync `old` described again (plm_internal.redescribe); when its spec changed, the
-- rows whose value no longer matches are queued. Returns the rows queued.
CREATE FUNCTION plm_internal.store(old plm_internal.sync, s plm_internal.sync) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE plm_internal.sync y
    SET model = s.model, layer = s.layer, pooling = s.pooling, top_k = s.top_k, method = s.method,
        target_type = coalesce(s.target_type, y.target_type), spec = s.spec,
        batch_rows = s.batch_rows, altered_at = now(), owner = s.owner,
        backoff_attempts = 0, backoff_until = NULL
    WHERE y.name = old.name
    RETURNING * INTO s;
    IF s.spec IS DISTINCT FROM old.spec THEN
        RETURN plm_internal.enqueue_stale(s, false);
    END IF;
    RETURN 0;
END $$;

-- Checks every sync against its model as installed now: a sync whose model got new weights,
-- heads or reference sets under the same name since its spec was recorded gets the new spec
-- and its stale rows queued again (paused syncs too; they are processed once resumed). The
-- sync worker runs this when it starts, which is after every PostgreSQL restart: installing
-- new models and restarting is enough. A sync whose model cannot be read now (removed, or of
-- another width than its column) keeps its spec. Each change is a WARNING. Returns the rows
-- queued.
CREATE FUNCTION plm_internal.refresh() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    old plm_internal.sync;
    s plm_internal.sync;
    queued bigint;
    total bigint := 0;
BEGIN
    FOR old IN SELECT * FROM plm_internal.sync ORDER BY name LOOP
        BEGIN
            s := plm_internal.redescribe(old, NULL, NULL, NULL, NULL, NULL, NULL);
            CONTINUE WHEN s.spec IS NOT DISTINCT FROM old.spec;
            queued := plm_internal.store(old, s);
            total := total + queued;
            RAISE WARNING 'pg_plm: model % of sync % changed (weights, heads or reference set); % rows queued again',
                old.model, old.name, queued;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_plm: sync % could not be checked against model %: %', old.name, old.model, SQLERRM
                USING HINT = format('Its values stay as they are; run SELECT plm_sync_alter(%L) once the model can be read.', old.name);
        END;
    END LOOP;
    RETURN total;
END $$;

-- Changes a sync's model or options; rows whose value no longer matches are queued again.
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
    IF ontology IS NOT NULL AND ontology IS DISTINCT FROM old.ontology THEN
        RAISE EXCEPTION 'pg_plm: the ontology of a sync cannot change'
            USING ERRCODE = 'feature_not_supported', HINT = 'Create another sync for the other ontology.';
    END IF;
    queued := plm_internal.store(old,
        plm_internal.redescribe(old, model, layer, pooling, top_k, method, batch_rows));
    PERFORM @extschema@.plm_sync_start_worker();
    RETURN queued;
END $$;

-- Function syncs: the new spec. Syncs whose model cannot be read now (removed, or the
-- server's model directory unreadable) keep their old spec and are named in a WARNING.
DO $respec$
DECLARE
    s record;
    queued bigint;
BEGIN
    FOR s IN SELECT name FROM plm_internal.sync WHERE task = 'function' ORDER BY name LOOP
        BEGIN
            queued := @extschema@.plm_sync_alter(s.name);
            -- A WARNING: extension scripts run with client_min_messages raised to WARNING.
            RAISE WARNING 'pg_plm: function sync % re-queued its % rows (0.3.0 records the heads they come from)', s.name, queued;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_plm: function sync % keeps its 0.2.0 spec: %', s.name, SQLERRM
                USING HINT = format('Run SELECT plm_sync_alter(%L) once its model can be read.', s.name);
        END;
    END LOOP;
END $respec$;
