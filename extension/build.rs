//! Keeps pgrx's schema section (`.pgrxsc`) in the extension's shared library.
//!
//! cargo-pgrx does this by passing `-C link-arg=-Wl,--no-gc-sections` as a rustflag to every
//! crate it builds for the cdylib. Those flags give every dependency a different fingerprint
//! from the one `cargo test` builds, so `cargo pgrx test` and `cargo pgrx install` compiled the
//! whole dependency tree twice. The project's scripts set
//! `CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1`, and this passes the same argument to the
//! cdylib's link alone (test binaries keep `--gc-sections`, as cargo-pgrx requires).

fn main() {
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if family.split(',').any(|f| f == "unix") && os != "macos" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--no-gc-sections");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
