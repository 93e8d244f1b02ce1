//! Queued compute requests, and the rule that merges them into shared batches: embedding
//! requests for the same model, settings, layer(s) and pooling join the first queued one
//! until the residue budget is met or the batch wait has passed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::{ModelRef, RequestSettings, Response, Task};
use crate::stats::Counters;

/// One queued compute request.
pub struct Job {
    /// The model.
    pub model: ModelRef,
    /// Result-affecting settings.
    pub settings: RequestSettings,
    /// The work.
    pub task: Task,
    /// When it was queued.
    pub enqueued: Instant,
    /// Set when its client went away.
    pub cancelled: Arc<AtomicBool>,
    /// Where its answer goes.
    pub reply: mpsc::Sender<Response>,
}

impl Job {
    /// Whether its client went away.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Limits of batch gathering.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Longest wait for more requests after the first.
    pub wait: Duration,
    /// Residue budget of a merged batch.
    pub max_tokens: usize,
}

/// The queue shared by the connection threads (producers) and the executor (consumer).
#[derive(Default)]
pub struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    shutdown: AtomicBool,
}

/// Requests whose embedding work can share one engine call.
#[derive(PartialEq)]
enum MergeKey<'a> {
    Pooled(
        &'a ModelRef,
        &'a RequestSettings,
        Option<i64>,
        plm_model::Pooling,
    ),
    Residues(&'a ModelRef, &'a RequestSettings, &'a [Option<i64>]),
}

fn merge_key(job: &Job) -> Option<MergeKey<'_>> {
    match &job.task {
        Task::Embed { layer, pooling, .. } => Some(MergeKey::Pooled(
            &job.model,
            &job.settings,
            *layer,
            *pooling,
        )),
        Task::EmbedResidues { layers, .. } => {
            Some(MergeKey::Residues(&job.model, &job.settings, layers))
        }
        _ => None,
    }
}

impl Queue {
    /// Adds a job and wakes the executor.
    pub fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
        self.ready.notify_one();
    }

    /// Makes [`Queue::next_batch`] return `None` from now on.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.ready.notify_all();
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Whether [`Queue::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Waits for work, then gathers the requests that can join the first one, until the
    /// budget is met or the wait has passed. Jobs whose clients left are dropped (and counted).
    /// `None` at shutdown.
    pub fn next_batch(&self, limits: BatchLimits, counters: &Counters) -> Option<Vec<Job>> {
        let mut queue = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_shut_down() {
                return None;
            }
            drop_cancelled(&mut queue, counters);
            if !queue.is_empty() {
                break;
            }
            queue = self
                .ready
                .wait_timeout(queue, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.gather(queue, limits, true)
    }

    /// The batch [`Queue::next_batch`] would start with, without waiting: `None` when no
    /// request is queued. The executor serves such batches between the slices of a bulk request.
    pub fn try_next_batch(&self, limits: BatchLimits, counters: &Counters) -> Option<Vec<Job>> {
        let mut queue = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        drop_cancelled(&mut queue, counters);
        self.gather(queue, limits, false)
    }

    /// Takes the first queued request and the ones that can join it, waiting up to
    /// `limits.wait` for more when `wait` is set.
    fn gather(
        &self,
        mut queue: MutexGuard<'_, VecDeque<Job>>,
        limits: BatchLimits,
        wait: bool,
    ) -> Option<Vec<Job>> {
        let first = queue.pop_front()?;
        let mut batch = vec![first];
        if merge_key(&batch[0]).is_none() {
            return Some(batch);
        }
        let deadline = batch[0].enqueued + limits.wait;
        let mut residues = batch[0].task.residues();
        loop {
            let mut i = 0;
            while i < queue.len() && residues < limits.max_tokens {
                let joins = merge_key(&queue[i]) == merge_key(&batch[0])
                    && residues + queue[i].task.residues() <= limits.max_tokens;
                if joins {
                    if let Some(job) = queue.remove(i) {
                        residues += job.task.residues();
                        batch.push(job);
                    }
                } else {
                    i += 1;
                }
            }
            let now = Instant::now();
            if !wait || residues >= limits.max_tokens || now >= deadline {
                return Some(batch);
            }
            queue = self
                .ready
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Drops (and counts) the queued jobs whose clients went away.
fn drop_cancelled(queue: &mut VecDeque<Job>, counters: &Counters) {
    let before = queue.len();
    queue.retain(|j| !j.is_cancelled());
    counters.cancelled((before - queue.len()) as u64);
}
