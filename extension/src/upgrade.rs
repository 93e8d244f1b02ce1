//! C symbols of earlier versions' SQL functions that the current version removed or re-signed.
//!
//! Between installing a new library and running `ALTER EXTENSION pg_plm UPDATE`, the SQL
//! objects of the old version still name their old C symbols (`AS 'MODULE_PATHNAME', 'x'`). A
//! symbol that vanished would make those functions fail to load; one that was reused with
//! other arguments would read them wrongly. So every symbol a released version's install script
//! names either keeps its meaning or is kept here as a stub that tells the user to update. The
//! stubs read no arguments and never return. The upgrade scripts in `sql/` drop or replace the
//! functions that name them (see `docs/UPGRADING.md`).

use pgrx::prelude::*;

/// Raises the error every removed symbol raises.
fn removed(function: &str, version: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "pg_plm: {function} is an SQL object of pg_plm {version}, and the installed library is {}",
            env!("CARGO_PKG_VERSION")
        ),
        "Run ALTER EXTENSION pg_plm UPDATE in this database."
    );
}

/// Declares stubs for symbols of `version`'s install script: `sql = false` keeps them out of
/// the current install script, and no argument list means no argument is read.
macro_rules! removed_symbols {
    ($version:literal: $($symbol:ident => $function:literal),* $(,)?) => {$(
        #[pg_extern(sql = false)]
        fn $symbol() {
            removed($function, $version)
        }
    )*};
}

// 0.1.0's forms that took the model as an optional `text` argument (0.2.0 split each into a
// STABLE form without `model` and an IMMUTABLE form with `model name`), and `plm_worker_stats`,
// whose rows gained the supervisor's columns.
removed_symbols!("0.1.0":
    plm_embed => "plm_embed(text, text, integer, text)",
    plm_embed_batch => "plm_embed(text[], text, integer, text)",
    plm_embed_residues => "plm_embed_residues(text, text, integer, integer[])",
    plm_contacts => "plm_contacts(text, real, text)",
    plm_function => "plm_function(text, text, integer, real, text)",
    plm_ppi => "plm_ppi(text, text, text)",
    plm_binding_sites => "plm_binding_sites(text, text, real, text, text, text)",
    plm_worker_stats => "plm_worker_stats()",
);
