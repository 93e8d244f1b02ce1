//! afl entry point of [`plm_fuzz::structure`].
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| plm_fuzz::structure(data));
}
