-- Synced columns and table jobs (sql/workflows.sql). Syncs are created paused and drained in
-- this session with plm_sync_drain, so every step is deterministic; the background worker is
-- exercised at the end and in tests/workflows/run.sh.
\set SHOW_CONTEXT never
\set hbb 'MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSE'
CREATE TABLE sync_proteins (
    id int PRIMARY KEY,
    seq text,
    emb vector(320),
    note text,
    writes int NOT NULL DEFAULT 0
);
-- Counts the writes of each row's embedding: nothing may be computed twice.
CREATE FUNCTION sync_count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.emb IS DISTINCT FROM OLD.emb THEN
        NEW.writes := OLD.writes + 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER count_writes BEFORE UPDATE ON sync_proteins
    FOR EACH ROW EXECUTE FUNCTION sync_count_writes();
INSERT INTO sync_proteins (id, seq)
SELECT g, substr(:'hbb', g, 20 + g) FROM generate_series(1, 12) g;
INSERT INTO sync_proteins (id, seq) VALUES (13, NULL);

-- What cannot work is refused with a clear error.
CREATE TABLE sync_nokey (seq text, emb vector);
SELECT plm_sync_create('sync_nokey', 'seq', 'emb');
CREATE TABLE sync_wrong (id int PRIMARY KEY, seq int, emb vector(8), txt text, e2 text);
SELECT plm_sync_create('sync_wrong', 'seq', 'emb');
SELECT plm_sync_create('sync_wrong', 'txt', 'emb');
SELECT plm_sync_create('sync_wrong', 'txt', 'e2');
SELECT plm_sync_create('sync_wrong', 'txt', 'missing');
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', pooling => 'median');
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', model => 'no-such-model');
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', task => 'fold');
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', task => NULL);
-- Options of another task are refused, not dropped (22023).
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', ontology => 'go_mf', top_k => 3);
SELECT plm_sync_create('sync_proteins', 'seq', 'sync_functions', task => 'function', pooling => 'max', layer => 2);
SELECT plm_sync_create('sync_proteins', 'seq', 'sync_residues', task => 'residues', pooling => 'mean');
SELECT plm_sync_drain('no_such_sync');
DROP TABLE sync_nokey, sync_wrong;

-- Create: the 12 rows with a sequence are queued (the NULL one is not).
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', name => 'prot', paused => true) AS queued;
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', name => 'again');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'sync_proteins'::regclass AND tgname LIKE 'plm_sync%' ORDER BY 1;
SELECT name, "table", sequence, target, task, model, state, pending, failed, done FROM plm_sync_status;

-- Drain: each row computed once, in batches; the engine sees the 12 sequences once.
SELECT sequences AS seqs_before FROM plm_worker_stats() \gset
SELECT plm_sync_drain('prot', max_rows => 5) AS first_five;
SELECT plm_sync_drain('prot') AS the_rest;
SELECT (SELECT sequences FROM plm_worker_stats()) - :seqs_before AS engine_sequences;
SELECT count(emb) AS embedded, sum(writes) AS writes, bool_and(writes <= 1) AS at_most_once FROM sync_proteins;
SELECT bool_and((emb <-> plm_embed(seq, model => 'plm-default')::vector) < 1e-5) AS equal_to_plm_embed
FROM sync_proteins WHERE seq IS NOT NULL;
SELECT state, pending, failed, done, rows_per_second > 0 AS has_rate FROM plm_sync_status;

-- Only sequence changes are queued: another column, or the same sequence, queues nothing.
UPDATE sync_proteins SET note = 'reviewed';
UPDATE sync_proteins SET seq = seq WHERE id <= 6;
SELECT count(*) AS queued_after_unrelated_updates FROM plm_internal.queue WHERE sync = 'prot';
UPDATE sync_proteins SET seq = seq || 'K' WHERE id IN (2, 3);
INSERT INTO sync_proteins (id, seq) VALUES (14, 'MKTAYIAKQRQISFVKSHFSRQ');
DELETE FROM sync_proteins WHERE id = 3;
SELECT key FROM plm_internal.queue WHERE sync = 'prot' ORDER BY key::int;
SELECT sequences AS seqs_before FROM plm_worker_stats() \gset
SELECT plm_sync_drain('prot');
SELECT (SELECT sequences FROM plm_worker_stats()) - :seqs_before AS engine_sequences;
SELECT id, writes FROM sync_proteins WHERE id IN (1, 2, 14) ORDER BY id;

-- A bad sequence fails alone; the rest of its batch proceeds. It is retried with backoff and
-- given up after five attempts; a new sequence or plm_sync_retry queues it again.
INSERT INTO sync_proteins (id, seq) VALUES (15, 'MKV1XX'), (16, 'MSTNPKPQRKTKRNTNRRPQDVKFPGG');
SELECT plm_sync_drain('prot');
SELECT id, emb IS NOT NULL AS embedded FROM sync_proteins WHERE id IN (15, 16) ORDER BY id;
SELECT sync, key, attempts, gave_up, sqlstate, message FROM plm_sync_errors;
SELECT pending, failed, last_error FROM plm_sync_status;
-- (The retry delays, 1 to 8 seconds, are skipped here.)
DO $$
BEGIN
    FOR i IN 2..5 LOOP
        UPDATE plm_internal.queue SET not_before = '-infinity' WHERE sync = 'prot';
        PERFORM plm_sync_drain('prot');
    END LOOP;
END $$;
SELECT key, attempts, gave_up FROM plm_sync_errors;
SELECT pending, failed FROM plm_sync_status;
SELECT plm_sync_retry('prot') AS requeued;
SELECT pending, failed FROM plm_sync_status;
UPDATE sync_proteins SET seq = 'MKVLAAGIVGLLLA' WHERE id = 15;
SELECT plm_sync_drain('prot');
SELECT count(*) AS errors_left FROM plm_sync_errors;
SELECT count(*) AS unembedded FROM sync_proteins WHERE seq IS NOT NULL AND emb IS NULL;

-- Alter: another layer re-queues every row; the same options re-queue nothing.
SELECT plm_sync_alter('prot', layer => 1) AS requeued;
SELECT plm_sync_drain('prot');
SELECT bool_and((emb <-> plm_embed(seq, model => 'plm-default', layer => 1)::vector) < 1e-5) AS layer_1
FROM sync_proteins WHERE seq IS NOT NULL;
SELECT plm_sync_alter('prot', layer => 1) AS requeued_again;
SELECT plm_sync_alter('prot', ontology => 'go_mf');
SELECT plm_sync_alter('prot', top_k => 10);
SELECT layer, pending FROM plm_sync_status;

-- Drop removes triggers and state, and keeps the values.
SELECT plm_sync_drop('prot');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'sync_proteins'::regclass AND tgname LIKE 'plm_sync%';
SELECT (SELECT count(*) FROM plm_internal.queue) + (SELECT count(*) FROM plm_internal.errors)
     + (SELECT count(*) FROM plm_internal.provenance) + (SELECT count(*) FROM plm_internal.sync) AS state_rows;
SELECT count(emb) AS values_kept FROM sync_proteins;

-- Adoption: values made outside (no provenance) are recomputed unless adopt => true.
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', name => 'prot', layer => 1, paused => true) AS queued_without_adopt;
SELECT plm_sync_drop('prot');
SELECT plm_sync_create('sync_proteins', 'seq', 'emb', name => 'prot', layer => 1, adopt => true, paused => true) AS queued_with_adopt;
SELECT plm_sync_drop('prot');

-- One-off job: computes what is not current, commits per batch, reports progress, skips
-- rows whose sequence and model are unchanged, and a sync created after it adopts its values.
CREATE TABLE job_proteins (acc text PRIMARY KEY, seq text, emb halfvec(320));
INSERT INTO job_proteins SELECT 'P' || lpad(g::text, 3, '0'), substr(:'hbb', g, 15 + g % 20) FROM generate_series(1, 40) g;
INSERT INTO job_proteins VALUES ('Z000', 'MKV*1');
CALL plm_embed_table('job_proteins', 'seq', 'emb', batch_rows => 8, notice_every => 16);
SELECT state, rows_total, rows_processed, rows_computed, rows_skipped, rows_failed, last_key FROM plm_job_progress;
SELECT key, sqlstate FROM plm_job_errors;
SELECT count(emb) AS embedded,
       bool_and((emb::vector <-> plm_embed(seq, model => 'plm-default')::vector) < 1e-2) AS halfvec_close
FROM job_proteins WHERE acc <> 'Z000';
UPDATE job_proteins SET seq = seq || 'W' WHERE acc IN ('P001', 'P002');
CALL plm_embed_table('job_proteins', 'seq', 'emb', batch_rows => 8, notice_every => 0);
SELECT job, state, rows_computed, rows_skipped, rows_failed FROM plm_job_progress ORDER BY job;
SELECT plm_sync_create('job_proteins', 'seq', 'emb', name => 'jobs', paused => true) AS queued_after_job;
SELECT key FROM plm_internal.queue WHERE sync = 'jobs';
TRUNCATE job_proteins;
SELECT (SELECT count(*) FROM plm_internal.queue WHERE sync = 'jobs')
     + (SELECT count(*) FROM plm_internal.provenance WHERE relid = 'job_proteins'::regclass) AS state_after_truncate;
SELECT plm_sync_drop('jobs');

-- Function terms in a side table (top terms per protein), kept current the same way.
SELECT plm_sync_create('sync_proteins', 'seq', 'sync_functions', name => 'prot_mf', task => 'function',
                       ontology => 'go_mf', top_k => 3, paused => true) AS queued;
\d sync_functions
SELECT plm_sync_drain('prot_mf') > 0 AS drained;
SELECT count(DISTINCT id) = (SELECT count(*) FROM sync_proteins WHERE seq IS NOT NULL) AS every_protein,
       bool_and(rank BETWEEN 1 AND 3) AS top_3, bool_and(ontology = 'go_mf') AS go_mf
FROM sync_functions;
SELECT bool_and(f.term = p.term) AS same_as_plm_function
FROM sync_functions f JOIN sync_proteins s USING (id),
     LATERAL (SELECT term FROM plm_function(s.seq, model => 'plm-default', ontology => 'go_mf', top_k => 3)
              ORDER BY score DESC, term OFFSET f.rank - 1 LIMIT 1) p;
DELETE FROM sync_proteins WHERE id = 1;
SELECT count(*) AS deleted_protein_rows FROM sync_functions WHERE id = 1;
SELECT plm_sync_alter('prot_mf', pooling => 'max');

-- Per-residue vectors: one row per residue in a side table (halfvec), written by a job.
SELECT position, residue, array_length(embedding, 1) AS width
FROM plm_residue_embeddings('MKTAY', model => 'plm-default') WHERE position <= 2;
CALL plm_embed_residues_table('sync_proteins', 'seq', 'sync_residues', batch_rows => 4, notice_every => 0);
\d sync_residues
SELECT count(*) = (SELECT sum(length(seq)) FROM sync_proteins) AS every_residue,
       bool_and(r.residue = substr(p.seq, r.position, 1)) AS letters_match
FROM sync_residues r JOIN sync_proteins p USING (id);
SELECT bool_and((r.embedding::vector <-> e.embedding::vector) < 1e-2) AS equal_to_plm_residue_embeddings
FROM sync_residues r JOIN sync_proteins p USING (id),
     LATERAL plm_residue_embeddings(p.seq, model => 'plm-default') e
WHERE e.position = r.position AND p.id = 4;

-- The background worker: resume, and the queue drains without this session.
UPDATE sync_proteins SET seq = 'MAEGEITTFTALTEKFNLPPGNYKKPKLLYCSNG' WHERE id = 2;
SELECT plm_sync_resume('prot_mf');
SELECT plm_sync_wait('prot_mf', '60 s') AS caught_up;
SELECT state, pending, failed FROM plm_sync_status;
SELECT p.sequence_sha256 = sha256(convert_to(s.seq, 'UTF8')) AS recomputed_by_worker,
       (SELECT count(*) FROM sync_functions f WHERE f.id = 2) AS terms
FROM plm_internal.provenance p JOIN sync_proteins s ON s.id::text = p.key
WHERE s.id = 2 AND p.target = 'public.sync_functions';
SELECT plm_sync_pause('prot_mf');
SELECT state FROM plm_sync_status;

-- Dropping the table takes its syncs along.
DROP TABLE sync_proteins;
SELECT count(*) AS syncs_left FROM plm_internal.sync;
DROP TABLE sync_functions, sync_residues, job_proteins;
DROP FUNCTION sync_count_writes();
