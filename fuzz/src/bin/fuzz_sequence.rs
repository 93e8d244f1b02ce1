//! afl entry point of [`plm_fuzz::sequence`].
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| plm_fuzz::sequence(data));
}
