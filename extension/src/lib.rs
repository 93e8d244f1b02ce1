//! `pg_plm`: protein language models in PostgreSQL.
//!
//! This crate only translates between SQL and the `plm-model`/`plm-serve` libraries: settings,
//! model names, error mapping, the supervisor of the isolated inference server, and the SQL
//! functions.

// The pgrx glue: FFI with PostgreSQL throughout (the libraries deny unsafe code).
#![allow(unsafe_code)]

use pgrx::prelude::*;

mod array2d;
mod errors;
mod functions;
mod inference;
mod model_name;
mod operators;
mod pg_compat;
mod registry;
mod server;
mod settings;
mod sync_worker;
mod tasks;
mod upgrade;

::pgrx::pg_module_magic!(name, version);

// Synced columns and table jobs: tables, triggers and PL/pgSQL over the functions above.
pgrx::extension_sql_file!("../sql/workflows.sql", name = "workflows", finalize);

/// Registers the settings, and the inference server's supervisor when preloaded. Nothing
/// heavy happens here: models load in the separate inference server process, never in the
/// postmaster or a backend (unless a superuser asks for in-backend inference).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    server::register();
    sync_worker::register();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    /// One-off initialisation when the test framework starts.
    pub fn setup(_options: Vec<&str>) {}

    /// Settings for the test server: none, the models are read from where
    /// `scripts/install-models.sh` put them (SHAREDIR/extension/pg_plm_models).
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
