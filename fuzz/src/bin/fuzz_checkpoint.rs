//! afl entry point of [`plm_fuzz::Checkpoints`]: one scratch copy of the seed checkpoint per
//! process, one file of it replaced per input.
fn main() {
    let scratch = plm_fuzz::Checkpoints::new().expect("seed checkpoint");
    afl::fuzz_nohook!(|data: &[u8]| scratch.run(data));
}
