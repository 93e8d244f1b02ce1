//! Giving freed memory back to the operating system when the server goes idle.
//!
//! A request's working memory (per-residue features, attention maps for contacts, the graph of
//! a binding-site prediction) is freed when it ends, but glibc keeps freed heap pages in its
//! arenas for reuse, so after a burst the server's resident memory stays at the burst's peak.
//! When the queue empties, [`release_free_memory`] asks glibc to return those pages
//! (`malloc_trim`), so the resident memory of an idle server is its models, reference sets
//! and embedding cache, whatever ran before.

#![allow(unsafe_code)] // One libc call.

/// Returns the allocator's free pages to the operating system (a no-op off glibc).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::resident_bytes;

    const MIB: u64 = 1024 * 1024;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_request_memory_leaves_the_resident_set() {
        // 32 MiB in blocks below the mmap threshold (so they live in the heap), touched, then
        // freed while the last block pins the top of the heap: free() alone cannot shrink the
        // heap past it, so the pages stay resident until the trim.
        let start = resident_bytes();
        let mut blocks: Vec<Vec<u8>> = (0..512)
            .map(|i| vec![(i as u8).wrapping_add(1); 64 * 1024])
            .collect();
        let pin = blocks.pop().unwrap_or_default();
        let touched = blocks.iter().map(|b| b[b.len() - 1] as u64).sum::<u64>();
        drop(blocks);
        let freed = resident_bytes();
        release_free_memory();
        let trimmed = resident_bytes();
        assert_eq!(
            (touched, pin[0]),
            ((0..511u64).map(|i| (1 + i) % 256).sum(), 0)
        );
        assert!(
            freed > start + 16 * MIB,
            "the freed blocks were not kept ({start} -> {freed} bytes): the test shows nothing"
        );
        assert!(
            trimmed + 16 * MIB < freed,
            "the trim left {trimmed} of {freed} resident bytes"
        );
    }
}
