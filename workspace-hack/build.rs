// Build dependencies are unified too: cargo considers them only for a crate with a build script.
fn main() {}
