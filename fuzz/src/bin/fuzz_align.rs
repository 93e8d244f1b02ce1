//! afl entry point of [`plm_fuzz::align`].
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| plm_fuzz::align(data));
}
