//! The executor thread: takes batches from the [`Queue`] and runs them on the models, one at
//! a time (the engine parallelises inside a batch). A merged batch that fails is re-run
//! request by request, so that one bad sequence does not fail its neighbours; work whose
//! clients have all gone is abandoned at the engine's next internal batch. A bulk embedding
//! request (more residues than one batch's budget) runs in slices of that budget, and the
//! requests that arrived meanwhile are served between slices: a 10,000-row `UPDATE` delays a
//! one-sequence query by one slice, not by its whole run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use plm_model::{ErrorClass, PlmError};

use crate::execute::{admit, execute, ExecOptions};
use crate::memory::release_free_memory;
use crate::protocol::{ModelRef, Output, RemoteError, RequestSettings, Response, Task};
use crate::queue::{BatchLimits, Job, Queue};
use crate::registry::ModelRegistry;
use crate::stats::Counters;

/// What the executor needs from the server.
pub struct Context<'a> {
    /// The models.
    pub registry: &'a ModelRegistry,
    /// The queue to drain.
    pub queue: &'a Queue,
    /// Counters.
    pub counters: &'a Counters,
    /// Current settings (read before each batch).
    pub settings: &'a dyn Fn() -> (BatchLimits, ExecOptions),
}

/// Runs batches until the queue shuts down. Whenever the queue runs empty, the memory the
/// finished requests freed goes back to the system ([`crate::memory`]).
pub fn run(cx: &Context<'_>) {
    loop {
        let (limits, _) = (cx.settings)();
        let Some(batch) = cx.queue.next_batch(limits, cx.counters) else {
            return;
        };
        run_batch(cx, batch, limits);
        if cx.queue.is_empty() {
            release_free_memory();
        }
    }
}

thread_local! {
    /// Cancel flags of the requests the executor is computing.
    static RUNNING: std::cell::RefCell<Vec<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The engine's between-batches check on the executor thread: `true` (stop, and fail with
/// [`PlmError::Cancelled`]) when every client of the running work has gone.
fn every_client_gone() -> bool {
    RUNNING.with(|r| {
        let r = r.borrow();
        !r.is_empty() && r.iter().all(|c| c.load(Ordering::SeqCst))
    })
}

fn run_one(
    cx: &Context<'_>,
    jobs: &[&Job],
    model: &ModelRef,
    settings: &RequestSettings,
    task: &Task,
) -> Response {
    let (_, mut options) = (cx.settings)();
    options.interrupt_check = Some(every_client_gone);
    RUNNING.with(|r| *r.borrow_mut() = jobs.iter().map(|j| j.cancelled.clone()).collect());
    // A panic is a bug; it fails this request, not the server.
    let result = catch_unwind(AssertUnwindSafe(|| {
        execute(cx.registry, model, settings, task, &options)
    }));
    RUNNING.with(|r| r.borrow_mut().clear());
    let result = result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(PlmError::Internal(format!(
            "the inference server failed: {what}"
        )))
    });
    if matches!(result, Err(PlmError::Cancelled)) {
        cx.counters.cancelled(jobs.len() as u64);
        return Err(RemoteError::from(&PlmError::WorkerUnavailable(
            "request abandoned by its client".into(),
        )));
    }
    if matches!(&result, Err(e) if e.class() == ErrorClass::TooLarge) {
        cx.counters.refused();
    }
    result.map_err(|e| RemoteError::from(&e))
}

fn reply(cx: &Context<'_>, job: Job, response: Response) {
    if response.is_err() && !job.is_cancelled() {
        cx.counters.error();
    }
    // The client may have gone: nothing to do then.
    let _ = job.reply.send(response);
}

fn run_batch(cx: &Context<'_>, mut jobs: Vec<Job>, limits: BatchLimits) {
    let before = jobs.len();
    jobs.retain(|j| !j.is_cancelled());
    cx.counters.cancelled((before - jobs.len()) as u64);
    if jobs.is_empty() {
        return;
    }
    cx.counters.batch(&jobs);
    if jobs.len() == 1 {
        let job = jobs.remove(0);
        let bulk = job
            .task
            .embedding_sequences()
            .is_some_and(|s| s.len() > 1 && job.task.residues() > limits.max_tokens);
        if bulk {
            return run_sliced(cx, job, limits);
        }
        let response = run_one(cx, &[&job], &job.model, &job.settings, &job.task);
        return reply(cx, job, response);
    }
    // Merge the sequences of all jobs into one task, run it, and hand each job its share.
    let parts: Vec<&[String]> = jobs
        .iter()
        .map(|j| j.task.embedding_sequences().unwrap_or_default())
        .collect();
    let counts: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let all: Vec<String> = parts.concat();
    let merged = match &jobs[0].task {
        Task::Embed { layer, pooling, .. } => Task::Embed {
            sequences: all,
            layer: *layer,
            pooling: *pooling,
        },
        Task::EmbedResidues { layers, .. } => Task::EmbedResidues {
            sequences: all,
            layers: layers.clone(),
        },
        // Only embedding tasks are merged (see the queue's merge rule): run them one by one.
        _ => {
            for job in jobs {
                let response = run_one(cx, &[&job], &job.model, &job.settings, &job.task);
                reply(cx, job, response);
            }
            return;
        }
    };
    let first = &jobs[0];
    let all_jobs: Vec<&Job> = jobs.iter().collect();
    match run_one(cx, &all_jobs, &first.model, &first.settings, &merged) {
        Ok(output) => {
            let mut parts = split(output, &counts).into_iter();
            for job in jobs {
                let part = parts.next().unwrap_or(Ok(Output::Vectors(Vec::new())));
                reply(cx, job, part);
            }
        }
        // One bad sequence must not fail its neighbours: run each job on its own.
        Err(_) => {
            for job in jobs {
                if job.is_cancelled() {
                    continue;
                }
                let response = run_one(cx, &[&job], &job.model, &job.settings, &job.task);
                reply(cx, job, response);
            }
        }
    }
}

/// Runs a bulk embedding request in slices of at most `limits.max_tokens` residues (shortest
/// sequences first, as the engine would batch them), serving one waiting batch after each slice.
/// The whole request is admitted first (memory, answer size, sequence validity), so that its
/// errors are the ones it would get unsliced.
fn run_sliced(cx: &Context<'_>, job: Job, limits: BatchLimits) {
    let (_, options) = (cx.settings)();
    if let Err(e) = admit(cx.registry, &job.model, &job.settings, &job.task, &options) {
        return reply(cx, job, Err(RemoteError::from(&e)));
    }
    let sequences = job.task.embedding_sequences().unwrap_or_default();
    let mut answers = Vec::new();
    for slice in slices(sequences, limits.max_tokens) {
        let task = job
            .task
            .with_sequences(slice.iter().map(|&i| sequences[i].clone()).collect());
        match run_one(cx, &[&job], &job.model, &job.settings, &task) {
            Ok(output) => answers.push((slice, output)),
            Err(e) => return reply(cx, job, Err(e)),
        }
        if let Some(waiting) = cx.queue.try_next_batch(limits, cx.counters) {
            run_batch(cx, waiting, limits);
        }
    }
    let response = match job.task {
        Task::Embed { .. } => in_order(sequences.len(), answers, |o| match o {
            Output::Vectors(v) => Some(v),
            _ => None,
        })
        .map(Output::Vectors),
        _ => in_order(sequences.len(), answers, |o| match o {
            Output::Matrices(m) => Some(m),
            _ => None,
        })
        .map(Output::Matrices),
    }
    .ok_or_else(|| {
        RemoteError::from(&PlmError::Internal(
            "the slices of a bulk request did not answer every sequence once".into(),
        ))
    });
    reply(cx, job, response);
}

/// The items of the slices' answers (each with its sequence indices) in request order, or
/// `None` unless every one of the `count` sequences got exactly one item.
fn in_order<T>(
    count: usize,
    answers: Vec<(Vec<usize>, Output)>,
    items: fn(Output) -> Option<Vec<T>>,
) -> Option<Vec<T>> {
    let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for (indices, output) in answers {
        let items = items(output)?;
        if indices.len() != items.len() {
            return None;
        }
        for (i, item) in indices.into_iter().zip(items) {
            if slots[i].replace(item).is_some() {
                return None;
            }
        }
    }
    slots.into_iter().collect()
}

/// Sequence indices in runs of at most `budget` residues (one sequence at least), shortest first.
fn slices(sequences: &[String], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| sequences[i].len());
    let mut runs = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let mut residues = 0;
    for i in order {
        let n = sequences[i].len();
        if !run.is_empty() && residues + n > budget {
            runs.push(std::mem::take(&mut run));
            residues = 0;
        }
        run.push(i);
        residues += n;
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

fn split(output: Output, counts: &[usize]) -> Vec<Response> {
    fn chunks<T>(items: Vec<T>, counts: &[usize]) -> Vec<Vec<T>> {
        let mut items = items.into_iter();
        counts
            .iter()
            .map(|&n| items.by_ref().take(n).collect())
            .collect()
    }
    match output {
        Output::Vectors(v) => chunks(v, counts)
            .into_iter()
            .map(|c| Ok(Output::Vectors(c)))
            .collect(),
        Output::Matrices(m) => chunks(m, counts)
            .into_iter()
            .map(|c| Ok(Output::Matrices(c)))
            .collect(),
        other => vec![Ok(other)],
    }
}
