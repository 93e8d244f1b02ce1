//! afl entry point of [`plm_fuzz::Checkpoints::protocol`]: decoded computations run on the
//! seed checkpoint.
fn main() {
    let scratch = plm_fuzz::Checkpoints::new().expect("seed checkpoint");
    afl::fuzz_nohook!(|data: &[u8]| scratch.protocol(data));
}
