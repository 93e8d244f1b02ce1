//! `pg_plm`: protein language models in PostgreSQL.
//!
//! This crate only translates between SQL and the `plm-model` library: settings, the
//! per-backend model registry, error mapping, and the SQL functions.

use pgrx::prelude::*;

mod array2d;
mod errors;
mod functions;
mod operators;
mod registry;
mod settings;
mod tasks;

::pgrx::pg_module_magic!(name, version);

/// Registers the settings. Nothing heavy happens here: models load on first use, in the
/// backend that needs them (never in the postmaster, whose state is inherited by `fork()`).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
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
