//! Counters of the inference server, updated lock-free at every stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::protocol::{Task, WorkerStats};
use crate::queue::Job;
use crate::registry::ModelRegistry;

/// Counters of one server.
#[derive(Default)]
pub struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    sequences: AtomicU64,
    cancelled: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    queue_wait_us: AtomicU64,
    max_queue_wait_us: AtomicU64,
    connections: AtomicU64,
}

impl Counters {
    /// A compute request arrived.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused before it ran (too large for the memory limit).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` requests were dropped because their clients went away.
    pub fn cancelled(&self, n: u64) {
        self.cancelled.fetch_add(n, Ordering::Relaxed);
    }

    /// A request was answered with an error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connected (`+1`) or left (`-1`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A batch of `jobs` starts running: counts it, its sequences and their queue waits.
    pub fn batch(&self, jobs: &[Job]) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        for job in jobs {
            let waited = job.enqueued.elapsed().as_micros() as u64;
            self.queue_wait_us.fetch_add(waited, Ordering::Relaxed);
            self.max_queue_wait_us.fetch_max(waited, Ordering::Relaxed);
            let sequences = match (&job.task, job.task.embedding_sequences()) {
                (_, Some(sequences)) => sequences.len(),
                (Task::Ppi { pairs, .. }, None) => 2 * pairs.len(),
                _ => 1,
            };
            self.sequences
                .fetch_add(sequences as u64, Ordering::Relaxed);
        }
    }

    /// A snapshot, with the registry's cache and models.
    pub fn snapshot(&self, registry: &ModelRegistry, started: Instant) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            pid: std::process::id(),
            uptime_s: started.elapsed().as_secs_f64(),
            requests: get(&self.requests),
            batches: get(&self.batches),
            sequences: get(&self.sequences),
            cancelled: get(&self.cancelled),
            errors: get(&self.errors),
            refused: get(&self.refused),
            queue_wait_us: get(&self.queue_wait_us),
            max_queue_wait_us: get(&self.max_queue_wait_us),
            connections: get(&self.connections),
            cache: registry.cache().stats(),
            models: registry.loaded(),
            resident_bytes: resident_bytes(),
        }
    }
}

/// Resident memory of this process (0 where `/proc` is unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
