//! `pg_plm`: protein language models in PostgreSQL.
//!
//! This crate only translates between SQL and the `plm-model` library: settings, model names,
//! error mapping, the shared inference worker's process plumbing, and the SQL functions.

use pgrx::prelude::*;

mod array2d;
mod errors;
mod functions;
mod inference;
mod operators;
mod registry;
mod settings;
mod tasks;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// Registers the settings, and the shared inference worker when preloaded. Nothing heavy
/// happens here: models load on first use in the worker (or in the backend that needs them),
/// never in the postmaster, whose state is inherited by `fork()`.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    worker::register();
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
