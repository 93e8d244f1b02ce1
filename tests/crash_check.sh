# Sourced by the test scripts: did PostgreSQL crash-restart? A crash restart replaces the
# checkpointer and is logged ("terminated by signal", "reinitializing"); pg_postmaster_start_time()
# does not change on one, so it cannot tell. Needs PGHOST/PGPORT/PGUSER (scripts/pg-local.sh env).
#
#   crash_check_mark      # remember the checkpointer's start and the end of the server log
#   crash_check_verify    # exits 1 if PostgreSQL crash-restarted since the mark
CRASH_CHECK_LOG="${PLM_PGHOME:-/var/lib/postgresql/pg_plm}/server.log"

crash_check_checkpointer() {
  psql -X -A -t -d postgres -c "SELECT backend_start FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
}

crash_check_mark() {
  CRASH_CHECK_CKPT="$(crash_check_checkpointer)"
  CRASH_CHECK_POS="$(stat -c %s "$CRASH_CHECK_LOG")"
}

crash_check_verify() {
  if [ "$(crash_check_checkpointer)" != "$CRASH_CHECK_CKPT" ] ||
    tail -c +$((CRASH_CHECK_POS + 1)) "$CRASH_CHECK_LOG" | grep -E "terminated by signal|reinitializing"; then
    echo "FAIL: PostgreSQL crash-restarted (checkpointer restarted or crash in the server log)" >&2
    exit 1
  fi
}
