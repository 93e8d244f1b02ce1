-- pg_plm workflows: columns that stay in sync with their sequence column, and one-off table
-- jobs that resume. Everything a sync needs is a table, so a crash or restart loses nothing:
--
--   plm_internal.sync        one row per synced column (or function side table)
--   plm_internal.queue       rows waiting for (re)computation, filled by statement triggers
--   plm_internal.errors      the last error of each row that failed (retried with backoff)
--   plm_internal.provenance  which sequence (SHA-256) and model spec produced a stored value
--   plm_internal.job         progress of plm_embed_table runs
--
-- The per-database sync worker (src/sync_worker.rs) only calls plm_internal.work() in a
-- transaction per batch; all the logic is here, so it can also run in a session
-- (plm_sync_drain) and be tested without the worker.

CREATE SCHEMA plm_internal;
GRANT USAGE ON SCHEMA plm_internal TO PUBLIC;

CREATE TABLE plm_internal.sync (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,39}$'),
    relid regclass NOT NULL,
    owner name NOT NULL,
    key_column name NOT NULL,
    key_type text NOT NULL,
    sequence_column name NOT NULL,
    task text NOT NULL CHECK (task IN ('embed', 'function', 'residues')),
    target text NOT NULL,
    target_type text,
    model text NOT NULL,
    layer int,
    pooling text,
    ontology text,
    top_k int,
    method text,
    spec text NOT NULL,
    batch_rows int NOT NULL CHECK (batch_rows BETWEEN 1 AND 10000),
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    altered_at timestamptz,
    done bigint NOT NULL DEFAULT 0,
    run_started_at timestamptz,
    run_rows bigint NOT NULL DEFAULT 0,
    last_batch_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    backoff_attempts int NOT NULL DEFAULT 0,
    backoff_until timestamptz
);

CREATE TABLE plm_internal.queue (
    sync text NOT NULL,
    key text NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts int NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (sync, key)
);
CREATE INDEX queue_order ON plm_internal.queue (sync, enqueued_at);

CREATE TABLE plm_internal.errors (
    sync text NOT NULL,
    key text NOT NULL,
    attempts int NOT NULL,
    sqlstate text NOT NULL,
    message text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (sync, key)
);

CREATE TABLE plm_internal.provenance (
    relid oid NOT NULL,
    target text NOT NULL,
    key text NOT NULL,
    sequence_sha256 bytea,
    spec text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (relid, target, key)
);

CREATE TABLE plm_internal.job (
    id bigserial PRIMARY KEY,
    relid regclass NOT NULL,
    target text NOT NULL,
    spec text NOT NULL,
    pid int,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'finished')),
    rows_total bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_skipped bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    last_key text,
    started_at timestamptz NOT NULL DEFAULT now(),
    resumed_at timestamptz NOT NULL DEFAULT now(),
    rows_since_resume bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- pg_dump keeps the workflow state with the data it describes.
SELECT pg_catalog.pg_extension_config_dump('plm_internal.sync', '');
SELECT pg_catalog.pg_extension_config_dump('plm_internal.queue', '');
SELECT pg_catalog.pg_extension_config_dump('plm_internal.errors', '');
SELECT pg_catalog.pg_extension_config_dump('plm_internal.provenance', '');
SELECT pg_catalog.pg_extension_config_dump('plm_internal.job', '');
SELECT pg_catalog.pg_extension_config_dump('plm_internal.job_id_seq', '');

-- A failed row is retried after 1, 2, 4 and 8 seconds; after the fifth failure it waits for
-- a new sequence or plm_sync_retry().
CREATE FUNCTION plm_internal.max_attempts() RETURNS int
LANGUAGE sql IMMUTABLE AS 'SELECT 5';

CREATE FUNCTION plm_internal.retry_delay(attempts int) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT make_interval(secs => least(60, 2 ^ greatest(attempts - 1, 0)))
$$;

-- Errors that say nothing about the row: the server, the model or the table is unavailable.
-- They pause the whole sync with backoff instead of counting against rows.
CREATE FUNCTION plm_internal.is_systemic(state text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT left(state, 2) IN ('08', '40', '42', '53', '55', '57', '58', 'XX')
$$;

-- Identifies the model and options that produce a value: two values with the same spec and
-- sequence are the same value.
CREATE FUNCTION plm_internal.spec(fingerprint text, task text, layer int, pooling text,
                                  ontology text, top_k int, method text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT md5(format('%s|%s|%s|%s|%s|%s|%s', fingerprint, task, layer, pooling, ontology, top_k, method))
$$;

-- Validates a table, its key, sequence and target, and describes them as a sync row (not
-- stored). Raises clear errors for what cannot work.
CREATE FUNCTION plm_internal.describe(
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

-- Options given for a task that does not use them are errors rather than dropped: embed takes
-- layer and pooling, residues takes layer, function takes ontology, top_k and method.
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

-- The session user needs `privilege` on `tbl` (the SECURITY DEFINER helpers of jobs check it).
CREATE FUNCTION plm_internal.check_privilege(tbl regclass, privilege text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT has_table_privilege(session_user, tbl, privilege) THEN
        RAISE EXCEPTION 'pg_plm: no % privilege on %', privilege, tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- The caller must own the table (or be a superuser) to manage its syncs.
CREATE FUNCTION plm_internal.check_owner(tbl regclass) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'pg_plm: must be the owner of table %', tbl
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE FUNCTION plm_internal.get(sync_name text) RETURNS plm_internal.sync
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    SELECT * INTO s FROM plm_internal.sync WHERE name = sync_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_plm: no sync named ''%''', sync_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM plm_sync_status lists them.';
    END IF;
    RETURN s;
END $$;

-- The statement that queues the keys `select_keys` yields (its columns: sync name, key)
-- again: a key already queued counts as new, with its failed attempts forgotten. One
-- INSERT ... SELECT, so queueing a whole table never builds an array of its keys.
CREATE FUNCTION plm_internal.enqueue_sql(select_keys text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'INSERT INTO plm_internal.queue (sync, key) ' || select_keys || '
            ON CONFLICT (sync, key) DO UPDATE
              SET enqueued_at = excluded.enqueued_at, attempts = 0, not_before = ''-infinity'''
$$;

-- The condition, over the source row `t` and its provenance row `p` (joined on the key; $2,
-- $3 and $4 bound to relid, target and spec), under which a row of sync `s` needs computing:
-- a sequence, and no provenance with this sequence and spec or (for embeddings) a NULL target.
CREATE FUNCTION plm_internal.needs_work_sql(s plm_internal.sync) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format(
        't.%1$I IS NOT NULL
         AND NOT (%2$s AND p.spec IS NOT DISTINCT FROM $4
                  AND p.sequence_sha256 IS NOT DISTINCT FROM sha256(convert_to(t.%1$I, ''UTF8'')))',
        s.sequence_column,
        CASE WHEN s.task = 'embed' THEN format('t.%I IS NOT NULL', s.target) ELSE 'true' END)
$$;

-- Queue the rows whose stored value is not current: no provenance with this sequence and
-- spec, or (for embeddings) a NULL target. With adopt, non-NULL values without provenance
-- count as current and are recorded as such.
CREATE FUNCTION plm_internal.enqueue_stale(s plm_internal.sync, adopt boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    queued bigint;
BEGIN
    IF adopt AND s.task = 'embed' THEN
        EXECUTE format(
            'INSERT INTO plm_internal.provenance (relid, target, key, sequence_sha256, spec)
             SELECT $1, $2, t.%1$I::text, sha256(convert_to(t.%2$I, ''UTF8'')), $3
             FROM %3$s t
             WHERE t.%4$I IS NOT NULL AND t.%2$I IS NOT NULL
             ON CONFLICT (relid, target, key) DO NOTHING',
            s.key_column, s.sequence_column, s.relid, s.target)
        USING s.relid::oid, s.target, s.spec;
    END IF;
    EXECUTE plm_internal.enqueue_sql(format(
        'SELECT $1, t.%1$I::text FROM %2$s t
         LEFT JOIN plm_internal.provenance p
           ON p.relid = $2 AND p.target = $3 AND p.key = t.%1$I::text
         WHERE %3$s',
        s.key_column, s.relid, plm_internal.needs_work_sql(s)))
    USING s.name, s.relid::oid, s.target, s.spec;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END $$;

-- Statement triggers with transition tables: one INSERT ... SELECT per statement, so a bulk
-- COPY enqueues in one go. Only rows whose sequence changed are queued (an update of any
-- other column, including the sync's own writes, queues nothing).
CREATE FUNCTION plm_internal.on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    SELECT * INTO s FROM plm_internal.sync WHERE name = TG_ARGV[0];
    IF FOUND THEN
        EXECUTE plm_internal.enqueue_sql(format(
            'SELECT $1, n.%I::text FROM new_rows n WHERE n.%I IS NOT NULL',
            s.key_column, s.sequence_column))
        USING s.name;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION plm_internal.on_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    SELECT * INTO s FROM plm_internal.sync WHERE name = TG_ARGV[0];
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE plm_internal.enqueue_sql(format(
        'SELECT $1, n.%1$I::text FROM new_rows n LEFT JOIN old_rows o ON o.%1$I = n.%1$I
         WHERE o.%1$I IS NULL OR n.%2$I IS DISTINCT FROM o.%2$I',
        s.key_column, s.sequence_column))
    USING s.name;
    -- Keys that an update changed: their old rows are gone.
    EXECUTE format(
        'SELECT plm_internal.forget($1, array_agg(o.%1$I::text))
         FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.%1$I = o.%1$I)
         HAVING count(*) > 0',
        s.key_column)
    USING s;
    RETURN NULL;
END $$;

CREATE FUNCTION plm_internal.on_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    SELECT * INTO s FROM plm_internal.sync WHERE name = TG_ARGV[0];
    IF FOUND THEN
        EXECUTE format('SELECT plm_internal.forget($1, array_agg(o.%I::text)) FROM old_rows o', s.key_column)
        USING s;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION plm_internal.on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    SELECT * INTO s FROM plm_internal.sync WHERE name = TG_ARGV[0];
    IF FOUND THEN
        DELETE FROM plm_internal.queue WHERE sync = s.name;
        DELETE FROM plm_internal.errors WHERE sync = s.name;
        DELETE FROM plm_internal.provenance WHERE relid = s.relid AND target = s.target;
        PERFORM plm_internal.delete_side_rows(s, NULL);
    END IF;
    RETURN NULL;
END $$;

-- Removes pending work, errors, provenance and side-table rows of deleted keys.
CREATE FUNCTION plm_internal.forget(s plm_internal.sync, keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF keys IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM plm_internal.queue WHERE sync = s.name AND key = ANY (keys);
    DELETE FROM plm_internal.errors WHERE sync = s.name AND key = ANY (keys);
    DELETE FROM plm_internal.provenance WHERE relid = s.relid AND target = s.target AND key = ANY (keys);
    PERFORM plm_internal.delete_side_rows(s, keys);
END $$;

-- Removes the side-table rows (function terms, residue vectors) of `keys` (NULL: all).
CREATE FUNCTION plm_internal.delete_side_rows(s plm_internal.sync, keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF s.task = 'embed' OR to_regclass(s.target) IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('DELETE FROM %s WHERE ($1::text[] IS NULL OR %I = ANY ($1::%s[])) %s',
                   s.target, s.key_column, s.key_type,
                   CASE WHEN s.task = 'function' THEN 'AND ontology = $2' ELSE '' END)
    USING keys, s.ontology;
END $$;

-- Creates the side table of a 'function' or 'residues' sync unless it exists; returns its
-- qualified name. Unqualified names go beside the source table.
CREATE FUNCTION plm_internal.side_table(s plm_internal.sync, target text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(parse_ident(target)) = 1 THEN
        target := format('%I.%I', (SELECT nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE c.oid = s.relid), target);
    END IF;
    IF to_regclass(target) IS NULL THEN
        IF s.task = 'function' THEN
            EXECUTE format(
                'CREATE TABLE %s (%I %s NOT NULL, ontology text NOT NULL, rank int NOT NULL,
                    term text NOT NULL, name text, score real NOT NULL, evidence text,
                    template text, template_identity real,
                    PRIMARY KEY (%2$I, ontology, term))',
                target, s.key_column, s.key_type);
        ELSE
            EXECUTE format(
                'CREATE TABLE %s (%I %s NOT NULL, position int NOT NULL, residue text NOT NULL,
                    embedding %s NOT NULL, PRIMARY KEY (%2$I, position))',
                target, s.key_column, s.key_type, s.target_type);
        END IF;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', target, s.owner);
    END IF;
    -- Spelled the same whatever the search_path: provenance is matched on it.
    RETURN (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(target));
END $$;

CREATE FUNCTION plm_internal.install_triggers(s plm_internal.sync) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := 'plm_sync_' || s.name;
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION plm_internal.on_insert(%L)',
                   prefix || '_insert', s.relid, s.name);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION plm_internal.on_update(%L)',
                   prefix || '_update', s.relid, s.name);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION plm_internal.on_delete(%L)',
                   prefix || '_delete', s.relid, s.name);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION plm_internal.on_truncate(%L)',
                   prefix || '_truncate', s.relid, s.name);
END $$;

CREATE FUNCTION plm_internal.drop_triggers(s plm_internal.sync) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    suffix text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = s.relid) THEN
        RETURN;
    END IF;
    FOREACH suffix IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'plm_sync_' || s.name || '_' || suffix, s.relid);
    END LOOP;
END $$;

-- Computes and stores the values of `keys` in one statement (one engine request), as the
-- table's owner, and records their provenance. Rows whose sequence changed since it was read
-- are left alone (their new sequence is queued again by the trigger).
CREATE FUNCTION plm_internal.apply(s plm_internal.sync, keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    written text[];
    hashes bytea[];
    as_owner boolean := s.owner <> current_user
        AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    source text := format(
        'SELECT k.ord, t.%1$I AS key, t.%2$I AS seq
         FROM unnest($1::text[]) WITH ORDINALITY k(key, ord)
         JOIN %3$s t ON t.%1$I = k.key::%4$s',
        s.key_column, s.sequence_column, s.relid, s.key_type);
BEGIN
    IF as_owner THEN
        PERFORM set_config('role', s.owner, true);
    END IF;
    IF s.task = 'embed' THEN
        EXECUTE format(
            'WITH src AS (%1$s),
                  emb AS (SELECT src.key, src.seq, e.embedding
                          FROM src JOIN @extschema@.plm_embed(
                              ARRAY(SELECT seq FROM src ORDER BY ord), model => $2,
                              layer => $3, pooling => $4) e ON e.ordinality = src.ord),
                  w AS (UPDATE %2$s t SET %3$I = emb.embedding::%4$s FROM emb
                        WHERE t.%5$I = emb.key AND t.%6$I IS NOT DISTINCT FROM emb.seq
                        RETURNING t.%5$I::text AS key, sha256(convert_to(emb.seq, ''UTF8'')) AS hash)
             SELECT array_agg(key), array_agg(hash) FROM w',
            source, s.relid, s.target, s.target_type, s.key_column, s.sequence_column)
        INTO written, hashes
        USING keys, s.model, s.layer, s.pooling;
    ELSIF s.task = 'residues' THEN
        PERFORM plm_internal.delete_side_rows(s, keys);
        EXECUTE format(
            'WITH src AS (%1$s),
                  w AS (INSERT INTO %2$s (%3$I, position, residue, embedding)
                        SELECT src.key, r.position, r.residue, r.embedding::%4$s
                        FROM src CROSS JOIN LATERAL @extschema@.plm_residue_embeddings(
                            src.seq, model => $2, layer => $3) r)
             SELECT array_agg(src.key::text), array_agg(sha256(convert_to(src.seq, ''UTF8'')))
             FROM src',
            source, s.target, s.key_column, s.target_type)
        INTO written, hashes
        USING keys, s.model, s.layer;
    ELSE
        PERFORM plm_internal.delete_side_rows(s, keys);
        EXECUTE format(
            'WITH src AS (%1$s),
                  w AS (INSERT INTO %2$s (%3$I, ontology, rank, term, name, score, evidence,
                                          template, template_identity)
                        SELECT src.key, $3, f.rank, f.term, f.name, f.score, f.evidence,
                               f.template, f.template_identity
                        FROM src CROSS JOIN LATERAL (
                            SELECT row_number() OVER (ORDER BY x.score DESC, x.term)::int AS rank, x.*
                            FROM @extschema@.plm_function(src.seq, model => $2, ontology => $3,
                                                          top_k => $4, method => $5) x) f)
             SELECT array_agg(src.key::text), array_agg(sha256(convert_to(src.seq, ''UTF8'')))
             FROM src',
            source, s.target, s.key_column)
        INTO written, hashes
        USING keys, s.model, s.ontology, s.top_k, s.method;
    END IF;
    IF as_owner THEN
        PERFORM set_config('role', 'none', true);
    END IF;
    PERFORM plm_internal.record(s, written, hashes);
END $$;

CREATE FUNCTION plm_internal.record(s plm_internal.sync, keys text[], hashes bytea[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM plm_internal.check_privilege(s.relid, 'UPDATE');
    INSERT INTO plm_internal.provenance AS p (relid, target, key, sequence_sha256, spec)
    SELECT s.relid, s.target, k, h, s.spec FROM unnest(keys, hashes) u(k, h)
    ON CONFLICT (relid, target, key) DO UPDATE
      SET sequence_sha256 = excluded.sequence_sha256, spec = excluded.spec,
          computed_at = excluded.computed_at;
END $$;

-- Computes `keys` as one batch; when the batch fails for a reason of its rows, each row on its
-- own, so one bad sequence does not hold back the others. `halted` is set (and the remaining
-- keys are neither done nor failed) when an error says nothing about rows (see is_systemic).
CREATE FUNCTION plm_internal.process(
    s plm_internal.sync, keys text[],
    OUT done text[], OUT failed text[], OUT states text[], OUT messages text[],
    OUT halted_state text, OUT halted_message text
) LANGUAGE plpgsql AS $$
DECLARE
    k text;
    st text;
    msg text;
BEGIN
    done := '{}'; failed := '{}'; states := '{}'; messages := '{}';
    BEGIN
        PERFORM plm_internal.apply(s, keys);
        done := keys;
        RETURN;
    EXCEPTION WHEN query_canceled THEN
        RAISE;
    WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        IF plm_internal.is_systemic(st) OR cardinality(keys) = 1 THEN
            IF plm_internal.is_systemic(st) THEN
                halted_state := st; halted_message := msg;
            ELSE
                failed := keys; states := ARRAY[st]; messages := ARRAY[msg];
            END IF;
            RETURN;
        END IF;
    END;
    FOREACH k IN ARRAY keys LOOP
        BEGIN
            PERFORM plm_internal.apply(s, ARRAY[k]);
            done := done || k;
        EXCEPTION WHEN query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            IF plm_internal.is_systemic(st) THEN
                halted_state := st; halted_message := msg;
                RETURN;
            END IF;
            failed := failed || k; states := states || st; messages := messages || msg;
        END;
    END LOOP;
END $$;

-- One batch of sync `s`: claims queued rows up to batch_rows and the token budget, computes
-- them and commits the result with the queue changes (the caller's transaction). Returns the
-- rows processed (done or failed).
CREATE FUNCTION plm_internal.step(s plm_internal.sync) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    claimed text[];
    claimed_at timestamptz[];
    keys text[];
    r record;
    started timestamptz := clock_timestamp();
    budget int := coalesce(nullif(current_setting('plm.sync_batch_tokens', true), '')::int, 32768);
BEGIN
    -- One batch of a sync at a time, whoever runs it (the worker or plm_sync_drain).
    IF NOT pg_try_advisory_xact_lock(hashtext('pg_plm sync ' || s.name)) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(q.key ORDER BY q.enqueued_at, q.key), array_agg(q.enqueued_at ORDER BY q.enqueued_at, q.key)
    INTO claimed, claimed_at
    FROM (SELECT key, enqueued_at FROM plm_internal.queue
          WHERE sync = s.name AND attempts < plm_internal.max_attempts() AND not_before <= now()
          ORDER BY enqueued_at, key LIMIT s.batch_rows) q;
    IF claimed IS NULL THEN
        RETURN 0;
    END IF;
    -- Within the token budget (at least one row), and without rows gone from the table.
    EXECUTE format(
        'SELECT array_agg(key ORDER BY ord) FROM (
             SELECT k.key, k.ord, sum(coalesce(length(t.%1$I), 0)) OVER (ORDER BY k.ord) AS tokens
             FROM unnest($1::text[]) WITH ORDINALITY k(key, ord)
             LEFT JOIN %2$s t ON t.%3$I = k.key::%4$s) c
         WHERE ord = 1 OR tokens <= $2',
        s.sequence_column, s.relid, s.key_column, s.key_type)
    INTO keys USING claimed, budget;
    SELECT * INTO r FROM plm_internal.process(s, keys);
    IF r.halted_state IS NOT NULL THEN
        UPDATE plm_internal.sync
        SET last_error = format('%s (SQLSTATE %s)', r.halted_message, r.halted_state),
            last_error_at = clock_timestamp(),
            backoff_attempts = backoff_attempts + 1,
            backoff_until = clock_timestamp() + plm_internal.retry_delay(backoff_attempts + 1)
        WHERE name = s.name;
    END IF;
    -- Done rows leave the queue unless their sequence changed again meanwhile.
    DELETE FROM plm_internal.queue q
    USING unnest(claimed, claimed_at) c(key, at)
    WHERE q.sync = s.name AND q.key = c.key AND c.key = ANY (r.done) AND q.enqueued_at <= c.at;
    DELETE FROM plm_internal.errors WHERE sync = s.name AND key = ANY (r.done);
    UPDATE plm_internal.queue q
    SET attempts = q.attempts + 1,
        not_before = clock_timestamp() + plm_internal.retry_delay(q.attempts + 1)
    WHERE q.sync = s.name AND q.key = ANY (r.failed);
    INSERT INTO plm_internal.errors AS e (sync, key, attempts, sqlstate, message)
    SELECT s.name, f.key, q.attempts, f.st, f.msg
    FROM unnest(r.failed, r.states, r.messages) f(key, st, msg)
    JOIN plm_internal.queue q ON q.sync = s.name AND q.key = f.key
    ON CONFLICT (sync, key) DO UPDATE
      SET attempts = excluded.attempts, sqlstate = excluded.sqlstate,
          message = excluded.message, failed_at = excluded.failed_at;
    IF cardinality(r.done) + cardinality(r.failed) > 0 THEN
        UPDATE plm_internal.sync
        SET done = done + cardinality(r.done),
            -- A run is a stretch of batches without an idle gap; its rows per second are shown.
            run_started_at = CASE WHEN last_batch_at IS NULL OR last_batch_at < started - interval '10 seconds'
                                  THEN started ELSE run_started_at END,
            run_rows = CASE WHEN last_batch_at IS NULL OR last_batch_at < started - interval '10 seconds'
                            THEN 0 ELSE run_rows END + cardinality(r.done),
            last_batch_at = clock_timestamp(),
            last_error = CASE WHEN cardinality(r.failed) > 0
                              THEN format('%s (SQLSTATE %s)', r.messages[cardinality(r.messages)], r.states[cardinality(r.states)])
                              WHEN r.halted_state IS NULL THEN NULL ELSE last_error END,
            last_error_at = CASE WHEN cardinality(r.failed) > 0 THEN clock_timestamp() ELSE last_error_at END,
            backoff_attempts = CASE WHEN r.halted_state IS NULL THEN 0 ELSE backoff_attempts END,
            backoff_until = CASE WHEN r.halted_state IS NULL THEN NULL ELSE backoff_until END
        WHERE name = s.name;
    END IF;
    RETURN cardinality(r.done) + cardinality(r.failed);
END $$;

-- Called by the sync worker in a transaction of its own: one batch of the active sync that
-- waited longest. Returns the rows processed, 0 when there is nothing to do now, NULL when
-- no sync is active (the worker then exits).
CREATE FUNCTION plm_internal.work() RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM plm_internal.sync WHERE NOT paused) THEN
        RETURN NULL;
    END IF;
    FOR s IN
        SELECT * FROM plm_internal.sync y
        WHERE NOT y.paused AND (y.backoff_until IS NULL OR y.backoff_until <= clock_timestamp())
          AND EXISTS (SELECT 1 FROM plm_internal.queue q
                      WHERE q.sync = y.name AND q.attempts < plm_internal.max_attempts()
                        AND q.not_before <= now())
        ORDER BY y.last_batch_at NULLS FIRST
    LOOP
        RETURN plm_internal.step(s);
    END LOOP;
    RETURN 0;
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

------------------------------------------------------------------------------------------
-- The user-facing API.
------------------------------------------------------------------------------------------

-- Declares that `target` follows `sequence` of `tbl`: an embedding column (task 'embed'), or
-- a side table of function terms (task 'function', created here). Existing rows are queued
-- unless their stored value is current (provenance), or, with adopt, present at all.
CREATE FUNCTION @extschema@.plm_sync_create(
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

-- Changes a sync's model or options; rows whose value no longer matches are queued again.
CREATE FUNCTION @extschema@.plm_sync_alter(
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

CREATE FUNCTION @extschema@.plm_sync_pause(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
BEGIN
    PERFORM plm_internal.check_owner(s.relid);
    UPDATE plm_internal.sync SET paused = true WHERE sync.name = s.name;
END $$;

CREATE FUNCTION @extschema@.plm_sync_resume(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
BEGIN
    PERFORM plm_internal.check_owner(s.relid);
    UPDATE plm_internal.sync SET paused = false, backoff_attempts = 0, backoff_until = NULL
    WHERE sync.name = s.name;
    PERFORM @extschema@.plm_sync_start_worker();
END $$;

-- Queues the rows that failed too often again (they are also retried when their sequence
-- changes). Returns how many.
CREATE FUNCTION @extschema@.plm_sync_retry(name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
    n bigint;
BEGIN
    PERFORM plm_internal.check_owner(s.relid);
    UPDATE plm_internal.queue SET attempts = 0, not_before = '-infinity' WHERE sync = s.name AND attempts > 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE plm_internal.sync SET backoff_attempts = 0, backoff_until = NULL WHERE sync.name = s.name;
    PERFORM @extschema@.plm_sync_start_worker();
    RETURN n;
END $$;

-- Removes a sync: its triggers, queue, errors and provenance. The values already stored (the
-- target column, or the side table) stay.
CREATE FUNCTION @extschema@.plm_sync_drop(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = s.relid) THEN
        PERFORM plm_internal.check_owner(s.relid);
    END IF;
    PERFORM plm_internal.drop_triggers(s);
    DELETE FROM plm_internal.queue WHERE sync = s.name;
    DELETE FROM plm_internal.errors WHERE sync = s.name;
    DELETE FROM plm_internal.provenance WHERE relid = s.relid AND target = s.target
        AND NOT EXISTS (SELECT 1 FROM plm_internal.sync y WHERE y.relid = s.relid
                        AND y.target = s.target AND y.name <> s.name);
    DELETE FROM plm_internal.sync WHERE sync.name = s.name;
END $$;

-- Processes a sync's queue in this session, up to max_rows rows (NULL: until it is empty or
-- only rows waiting for a retry remain), paused or not. Returns the rows processed.
-- Runs with the caller's rights: superusers only, unless granted.
CREATE FUNCTION @extschema@.plm_sync_drain(name text, max_rows bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
    total bigint := 0;
    n int;
BEGIN
    PERFORM plm_internal.check_owner(s.relid);
    LOOP
        EXIT WHEN max_rows IS NOT NULL AND total >= max_rows;
        SELECT * INTO s FROM plm_internal.sync WHERE sync.name = s.name;
        IF max_rows IS NOT NULL THEN
            s.batch_rows := least(s.batch_rows, max_rows - total);
        END IF;
        n := plm_internal.step(s);
        EXIT WHEN n = 0;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
REVOKE EXECUTE ON FUNCTION @extschema@.plm_sync_drain(text, bigint) FROM PUBLIC;

-- Waits until a sync has no queued rows left (failed rows aside), at most `timeout`.
-- Returns whether it caught up.
CREATE FUNCTION @extschema@.plm_sync_wait(name text, timeout interval DEFAULT '10 minutes') RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s plm_internal.sync := plm_internal.get(name);
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM plm_internal.queue
                       WHERE sync = s.name AND attempts < plm_internal.max_attempts()) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

-- One row per sync. pending: rows waiting (retries included), failed: rows that failed
-- max_attempts times, done: rows computed since the sync was created, rows_per_second: over
-- the current (or last) stretch of work.
CREATE VIEW @extschema@.plm_sync_status AS
SELECT y.name,
       y.relid AS "table",
       y.sequence_column AS sequence,
       y.target,
       y.task,
       y.model,
       y.layer,
       y.pooling,
       y.ontology,
       CASE WHEN y.paused THEN 'paused'
            WHEN y.backoff_until > clock_timestamp() THEN 'backing off'
            WHEN q.pending > 0 AND w.pid IS NULL THEN 'no worker'
            WHEN q.pending > 0 THEN 'working'
            ELSE 'idle' END AS state,
       coalesce(q.pending, 0) AS pending,
       coalesce(q.failed, 0) AS failed,
       y.done,
       CASE WHEN y.last_batch_at > y.run_started_at
            THEN round((y.run_rows / extract(epoch FROM y.last_batch_at - y.run_started_at))::numeric, 1)
       END AS rows_per_second,
       y.last_batch_at,
       y.last_error,
       y.last_error_at,
       w.pid AS worker_pid
FROM plm_internal.sync y
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE attempts < plm_internal.max_attempts()) AS pending,
           count(*) FILTER (WHERE attempts >= plm_internal.max_attempts()) AS failed
    FROM plm_internal.queue WHERE sync = y.name) q ON true
LEFT JOIN LATERAL (
    SELECT a.pid FROM pg_stat_activity a
    WHERE a.backend_type = 'pg_plm sync' AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
    LIMIT 1) w ON true
WHERE has_table_privilege(y.relid, 'SELECT');

-- The last error of each row that failed, with its key; rows leave when they succeed.
CREATE VIEW @extschema@.plm_sync_errors AS
SELECT e.sync, e.key, e.attempts, e.attempts >= plm_internal.max_attempts() AS gave_up,
       e.sqlstate, e.message, e.failed_at
FROM plm_internal.errors e
JOIN plm_internal.sync y ON y.name = e.sync
WHERE has_table_privilege(y.relid, 'SELECT');

------------------------------------------------------------------------------------------
-- One-off jobs.
------------------------------------------------------------------------------------------

CREATE FUNCTION plm_internal.job_start(s plm_internal.sync) RETURNS plm_internal.job
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j plm_internal.job;
    total bigint;
BEGIN
    PERFORM plm_internal.check_privilege(s.relid, 'UPDATE');
    SELECT reltuples::bigint INTO total FROM pg_class WHERE oid = s.relid;
    IF total < 0 THEN
        EXECUTE format('SELECT count(*) FROM %s', s.relid) INTO total;
    END IF;
    -- An interrupted run of the same job resumes where it stopped.
    UPDATE plm_internal.job
    SET pid = pg_backend_pid(), resumed_at = now(), rows_since_resume = 0, updated_at = now(),
        rows_total = total
    WHERE id = (SELECT id FROM plm_internal.job
                WHERE relid = s.relid AND target = s.target AND spec = s.spec AND state = 'running'
                  AND (pid IS NULL OR pid NOT IN (SELECT a.pid FROM pg_stat_activity a))
                ORDER BY id DESC LIMIT 1)
    RETURNING * INTO j;
    IF FOUND THEN
        RAISE NOTICE 'pg_plm: resuming job % on % after key % (% rows done)', j.id, s.relid, j.last_key, j.rows_done;
        RETURN j;
    END IF;
    IF EXISTS (SELECT 1 FROM plm_internal.job WHERE relid = s.relid AND target = s.target AND state = 'running'
               AND pid IN (SELECT a.pid FROM pg_stat_activity a)) THEN
        RAISE EXCEPTION 'pg_plm: a job on %.% is running', s.relid, s.target
            USING ERRCODE = 'lock_not_available', HINT = 'See plm_job_progress.';
    END IF;
    INSERT INTO plm_internal.job (relid, target, spec, pid, rows_total)
    VALUES (s.relid, s.target, s.spec, pg_backend_pid(), total)
    RETURNING * INTO j;
    RETURN j;
END $$;

CREATE FUNCTION plm_internal.job_advance(job_id bigint, last_key text, done bigint, skipped bigint,
                                         failed text[], states text[], messages text[]) RETURNS plm_internal.job
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j plm_internal.job;
BEGIN
    UPDATE plm_internal.job
    SET last_key = job_advance.last_key, rows_done = rows_done + done,
        rows_skipped = rows_skipped + skipped, rows_failed = rows_failed + cardinality(failed),
        rows_since_resume = rows_since_resume + done + skipped + cardinality(failed),
        updated_at = clock_timestamp()
    WHERE id = job_id AND pid = pg_backend_pid()
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_plm: job % is not run by this session', job_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO plm_internal.errors AS e (sync, key, attempts, sqlstate, message)
    SELECT 'job ' || job_id, f.key, 1, f.st, f.msg FROM unnest(failed, states, messages) f(key, st, msg)
    ON CONFLICT (sync, key) DO UPDATE
      SET attempts = e.attempts + 1, sqlstate = excluded.sqlstate, message = excluded.message,
          failed_at = excluded.failed_at;
    RETURN j;
END $$;

CREATE FUNCTION plm_internal.job_finish(job_id bigint) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE plm_internal.job SET state = 'finished', finished_at = clock_timestamp(), pid = NULL,
                                updated_at = clock_timestamp()
    WHERE id = job_id AND pid = pg_backend_pid()
$$;

-- Keys among `keys` whose value is not current (see enqueue_stale).
CREATE FUNCTION plm_internal.stale(s plm_internal.sync, keys text[]) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text[];
BEGIN
    PERFORM plm_internal.check_privilege(s.relid, 'SELECT');
    EXECUTE format(
        'SELECT coalesce(array_agg(k.key ORDER BY k.ord), ''{}'')
         FROM unnest($1::text[]) WITH ORDINALITY k(key, ord)
         JOIN %1$s t ON t.%2$I = k.key::%3$s
         LEFT JOIN plm_internal.provenance p ON p.relid = $2 AND p.target = $3 AND p.key = k.key
         WHERE %4$s',
        s.relid, s.key_column, s.key_type, plm_internal.needs_work_sql(s))
    INTO result USING keys, s.relid::oid, s.target, s.spec;
    RETURN result;
END $$;

-- Runs a one-off job for the rows of s.relid whose value is not current, in key order,
-- committing every s.batch_rows rows; see plm_embed_table.
CREATE PROCEDURE plm_internal.run_job(s plm_internal.sync, notice_every bigint)
LANGUAGE plpgsql AS $$
DECLARE
    j plm_internal.job;
    chunk text[];
    todo text[];
    last text;
    r record;
    noticed bigint := 0;
    seen bigint;
BEGIN
    s.name := 'job';
    j := plm_internal.job_start(s);
    COMMIT;
    LOOP
        EXECUTE format(
            'SELECT array_agg(k::text ORDER BY k), max(k)::text FROM (
                 SELECT %1$I AS k FROM %2$s WHERE $1::%3$s IS NULL OR %1$I > $1::%3$s
                 ORDER BY %1$I LIMIT $2) c',
            s.key_column, s.relid, s.key_type)
        INTO chunk, last USING j.last_key, s.batch_rows;
        EXIT WHEN chunk IS NULL;
        todo := plm_internal.stale(s, chunk);
        IF cardinality(todo) > 0 THEN
            SELECT * INTO r FROM plm_internal.process(s, todo);
            IF r.halted_state IS NOT NULL THEN
                RAISE EXCEPTION 'pg_plm: job % stopped: % (SQLSTATE %)', j.id, r.halted_message, r.halted_state
                    USING ERRCODE = r.halted_state,
                          HINT = 'Call it again with the same arguments to resume.';
            END IF;
        ELSE
            SELECT '{}'::text[] AS done, '{}'::text[] AS failed, '{}'::text[] AS states, '{}'::text[] AS messages INTO r;
        END IF;
        j := plm_internal.job_advance(j.id, last, cardinality(r.done),
                                      cardinality(chunk) - cardinality(todo), r.failed, r.states, r.messages);
        seen := j.rows_done + j.rows_skipped + j.rows_failed;
        IF notice_every > 0 AND seen / notice_every > noticed THEN
            noticed := seen / notice_every;
            RAISE NOTICE 'pg_plm: job %: % of about % rows (% computed, % current, % failed)',
                j.id, seen, j.rows_total, j.rows_done, j.rows_skipped, j.rows_failed;
        END IF;
        COMMIT;
    END LOOP;
    PERFORM plm_internal.job_finish(j.id);
    RAISE NOTICE 'pg_plm: job % finished: % computed, % already current, % failed',
        j.id, j.rows_done, j.rows_skipped, j.rows_failed;
    COMMIT;
END $$;

-- Fills `target` with embeddings of `sequence` for every row of `tbl` whose value is not
-- current, in key order, committing every batch_rows rows. Progress is in plm_job_progress
-- and a NOTICE every notice_every rows; an interrupted run resumes after the last committed
-- key when called again with the same arguments, and rows already current are skipped.
-- Failed rows are listed in plm_job_errors; the rest proceed.
CREATE PROCEDURE @extschema@.plm_embed_table(
    tbl regclass,
    sequence name,
    target name,
    model text DEFAULT NULL,
    layer int DEFAULT NULL,
    pooling text DEFAULT 'mean',
    batch_rows int DEFAULT 256,
    notice_every bigint DEFAULT 10000
) LANGUAGE plpgsql AS $$
BEGIN
    CALL plm_internal.run_job(
        plm_internal.describe(tbl, sequence, target, 'embed', model, layer, pooling, NULL, NULL, NULL, batch_rows),
        notice_every);
END $$;

-- Per-residue vectors of `sequence` for every row of `tbl`, one row per residue in the side
-- table `target` (created unless it exists: key, position, residue, embedding halfvec), as a
-- resumable job like plm_embed_table.
CREATE PROCEDURE @extschema@.plm_embed_residues_table(
    tbl regclass,
    sequence name,
    target text,
    model text DEFAULT NULL,
    layer int DEFAULT NULL,
    batch_rows int DEFAULT 32,
    notice_every bigint DEFAULT 1000
) LANGUAGE plpgsql AS $$
DECLARE
    s plm_internal.sync;
BEGIN
    s := plm_internal.describe(tbl, sequence, target, 'residues', model, layer, NULL, NULL, NULL, NULL, batch_rows);
    s.target := plm_internal.side_table(s, target);
    COMMIT;
    CALL plm_internal.run_job(s, notice_every);
END $$;

-- Progress of plm_embed_table runs, in the manner of pg_stat_progress_*: a running job shows
-- its backend; one whose backend is gone is 'interrupted' and resumes when called again.
CREATE VIEW @extschema@.plm_job_progress AS
SELECT j.id AS job,
       j.pid,
       j.relid AS "table",
       j.target,
       CASE WHEN j.state = 'finished' THEN 'finished'
            WHEN j.pid IN (SELECT a.pid FROM pg_stat_activity a) THEN 'running'
            ELSE 'interrupted' END AS state,
       j.rows_total,
       j.rows_done + j.rows_skipped + j.rows_failed AS rows_processed,
       j.rows_done AS rows_computed,
       j.rows_skipped,
       j.rows_failed,
       CASE WHEN j.updated_at > j.resumed_at
            THEN round((j.rows_since_resume / extract(epoch FROM j.updated_at - j.resumed_at))::numeric, 1)
       END AS rows_per_second,
       j.last_key,
       j.started_at,
       j.updated_at,
       j.finished_at
FROM plm_internal.job j
WHERE has_table_privilege(j.relid, 'SELECT');

CREATE VIEW @extschema@.plm_job_errors AS
SELECT j.id AS job, e.key, e.sqlstate, e.message, e.failed_at
FROM plm_internal.errors e
JOIN plm_internal.job j ON e.sync = 'job ' || j.id
WHERE has_table_privilege(j.relid, 'SELECT');

-- A dropped table takes its syncs along.
CREATE FUNCTION plm_internal.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN SELECT objid FROM pg_event_trigger_dropped_objects()
                   WHERE object_type = 'table' LOOP
        DELETE FROM plm_internal.queue WHERE sync IN (SELECT name FROM plm_internal.sync WHERE relid = dropped.objid);
        DELETE FROM plm_internal.errors WHERE sync IN (SELECT name FROM plm_internal.sync WHERE relid = dropped.objid);
        DELETE FROM plm_internal.sync WHERE relid = dropped.objid;
        DELETE FROM plm_internal.provenance WHERE relid = dropped.objid;
        DELETE FROM plm_internal.errors WHERE sync IN (SELECT 'job ' || id FROM plm_internal.job WHERE relid = dropped.objid);
        DELETE FROM plm_internal.job WHERE relid = dropped.objid;
    END LOOP;
END $$;

CREATE EVENT TRIGGER plm_sync_on_sql_drop ON sql_drop
EXECUTE FUNCTION plm_internal.on_sql_drop();
