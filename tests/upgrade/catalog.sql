-- Everything pg_plm puts in a database, one line per object, without OIDs: functions (with
-- volatility, parallel safety, cost, rows, strictness, security, body, settings and ACL),
-- schemas, tables and views (columns, defaults, constraints, indexes, triggers, view text, ACL),
-- types, event triggers, the extension's dumped tables and its settings. Two databases hold the
-- same pg_plm exactly when this prints the same lines in both.
WITH ext AS (
    SELECT oid, extversion, extconfig, extcondition FROM pg_extension WHERE extname = 'pg_plm'
), members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rels AS (
    SELECT c.oid, c.relname, c.relkind, c.relacl, n.nspname
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
      JOIN pg_namespace n ON n.oid = c.relnamespace
)
SELECT line FROM (
    SELECT 'extension ' || extversion || ' config ' ||
           coalesce((SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text) FROM unnest(extconfig) c), '') ||
           ' conditions ' || coalesce(array_to_string(extcondition, ','), '') AS line
      FROM ext
    UNION ALL
    SELECT format('function %s(%s) returns %s volatility=%s parallel=%s cost=%s rows=%s strict=%s '
                  'security_definer=%s leakproof=%s language=%s body=%s library=%s config=%s acl=%s owner_is_super=%s',
                  p.pronamespace::regnamespace, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                  p.provolatile, p.proparallel, p.procost, p.prorows, p.proisstrict, p.prosecdef,
                  p.proleakproof, l.lanname,
                  CASE WHEN p.prosqlbody IS NOT NULL THEN md5(pg_get_function_sqlbody(p.oid)) ELSE md5(p.prosrc) END,
                  p.probin, p.proconfig, p.proacl, r.rolsuper) || ' ' || p.proname
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
      JOIN pg_language l ON l.oid = p.prolang JOIN pg_roles r ON r.oid = p.proowner
    UNION ALL
    SELECT format('schema %s acl=%s', n.nspname, n.nspacl)
      FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    UNION ALL
    SELECT format('type %s.%s type=%s', t.typnamespace::regnamespace, t.typname, t.typtype)
      FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
    UNION ALL
    SELECT format('event trigger %s on %s enabled=%s function=%s tags=%s', e.evtname, e.evtevent,
                  e.evtenabled, e.evtfoid::regprocedure, e.evttags)
      FROM members m JOIN pg_event_trigger e ON m.classid = 'pg_event_trigger'::regclass AND e.oid = m.objid
    UNION ALL
    SELECT format('relation %s.%s kind=%s acl=%s', nspname, relname, relkind, relacl) FROM rels
    UNION ALL
    SELECT format('column %s.%s.%s %s notnull=%s default=%s generated=%s identity=%s', r.nspname, r.relname,
                  a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attgenerated, a.attidentity)
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
      FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
      FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s.%s %s', r.nspname, r.relname, md5(pg_get_viewdef(r.oid)))
      FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('setting %s context=%s type=%s default=%s unit=%s min=%s max=%s values=%s', name,
                  context, vartype, boot_val, unit, min_val, max_val, enumvals)
      FROM pg_settings WHERE name LIKE 'plm.%'
) lines
ORDER BY line COLLATE "C";
