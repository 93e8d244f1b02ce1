# Helpers of the shell test suites (sourced): a quiet psql that stops at the first error and
# prints bare values, and TAP-like result lines.
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
