//! Empty: this crate exists for its dependency list (see Cargo.toml).
