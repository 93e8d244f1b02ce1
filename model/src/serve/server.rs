//! The worker's side: a Unix-socket listener, one thread per client connection, and one
//! executor thread that merges concurrent embedding requests into shared batches.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::registry::ModelRegistry;
use crate::{PlmError, Result};

use super::execute::{execute, ExecOptions};
use super::protocol::{
    peer_closed, read_frame, send, Frame, Hello, ModelRef, Output, RemoteError, Request,
    RequestSettings, Response, Task, Welcome, WorkerStats, MAGIC, MAX_HANDSHAKE_BYTES,
    PROTOCOL_VERSION,
};

/// Worker settings; may change while it runs (see [`ServerHandle::set_config`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Longest wait for more requests to fill a batch.
    pub batch_wait: Duration,
    /// Residue budget of a merged batch (also the engine's token budget).
    pub max_batch_tokens: usize,
    /// Largest request frame accepted.
    pub max_request_bytes: usize,
    /// Compute threads of a newly loaded engine (0: all cores).
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            batch_wait: Duration::from_millis(2),
            max_batch_tokens: 16_384,
            max_request_bytes: 64 << 20,
            threads: 0,
        }
    }
}

/// One queued compute request.
struct Job {
    model: ModelRef,
    settings: RequestSettings,
    task: Task,
    enqueued: Instant,
    cancelled: Arc<AtomicBool>,
    reply: mpsc::Sender<Response>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    sequences: AtomicU64,
    cancelled: AtomicU64,
    errors: AtomicU64,
    queue_wait_us: AtomicU64,
    max_queue_wait_us: AtomicU64,
    connections: AtomicU64,
}

struct Shared {
    registry: ModelRegistry,
    config: RwLock<ServerConfig>,
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    shutdown: AtomicBool,
    counters: Counters,
    started: Instant,
}

impl Shared {
    fn config(&self) -> ServerConfig {
        *self.config.read().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        WorkerStats {
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            requests: c.requests.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            sequences: c.sequences.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            queue_wait_us: c.queue_wait_us.load(Ordering::Relaxed),
            max_queue_wait_us: c.max_queue_wait_us.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            cache: self.registry.cache().stats(),
            models: self.registry.loaded(),
            resident_bytes: resident_bytes(),
        }
    }
}

/// Resident memory of this process (0 where `/proc` is unavailable).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// A running worker server.
pub struct Server {
    shared: Arc<Shared>,
    socket: PathBuf,
    acceptor: JoinHandle<()>,
}

/// A cheap handle to change settings or read counters of a running [`Server`].
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Replaces the settings (after a configuration reload).
    pub fn set_config(&self, config: ServerConfig) {
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Current counters.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats()
    }

    /// The registry (to load models ahead of the first request).
    pub fn registry(&self) -> &ModelRegistry {
        &self.shared.registry
    }
}

impl Server {
    /// Binds `socket` (a stale file there is replaced; mode 0600) and starts serving.
    pub fn start(socket: &Path, registry: ModelRegistry, config: ServerConfig) -> Result<Self> {
        let io = |e: std::io::Error| PlmError::Io {
            path: socket.to_path_buf(),
            source: e,
        };
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(socket).map_err(io)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let shared = Arc::new(Shared {
            registry,
            config: RwLock::new(config),
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
            started: Instant::now(),
        });
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(io)
        };
        {
            let shared = shared.clone();
            spawn("plm-executor", Box::new(move || executor_loop(&shared)))?;
        }
        let acceptor = {
            let shared = shared.clone();
            spawn(
                "plm-acceptor",
                Box::new(move || accept_loop(listener, shared)),
            )?
        };
        Ok(Self {
            shared,
            socket: socket.to_path_buf(),
            acceptor,
        })
    }

    /// A handle for settings and counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting connections and starting batches, and removes the socket file. A batch
    /// already running is not waited for (the worker process exits right after this).
    pub fn shutdown(self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
        // Wake the acceptor blocked in accept().
        let _ = UnixStream::connect(&self.socket);
        let _ = self.acceptor.join();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("plm-client".into())
            .spawn(move || {
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                // A broken connection only ends this client's thread.
                let _ = catch_unwind(AssertUnwindSafe(|| serve_client(stream, &shared)));
                shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
            });
    }
}

fn handshake(stream: &UnixStream, shared: &Shared) -> std::io::Result<bool> {
    let hello: Hello = match read_frame(&mut BufReader::new(stream), MAX_HANDSHAKE_BYTES)? {
        Frame::Message(h) => h,
        _ => return Ok(false),
    };
    let welcome = if hello.magic != MAGIC {
        Welcome::Refused("not a pg_plm client".into())
    } else if hello.protocol != PROTOCOL_VERSION {
        Welcome::Refused(format!(
            "protocol {} requested, this worker speaks {PROTOCOL_VERSION} (library {}); \
             restart the server after upgrading the extension",
            hello.protocol,
            crate::VERSION
        ))
    } else {
        Welcome::Accepted {
            pid: std::process::id(),
            max_request_bytes: shared.config().max_request_bytes as u64,
        }
    };
    send(&mut BufWriter::new(stream), &welcome)?;
    Ok(matches!(welcome, Welcome::Accepted { .. }))
}

fn serve_client(stream: UnixStream, shared: &Shared) {
    if !matches!(handshake(&stream, shared), Ok(true)) {
        return;
    }
    let mut reader = BufReader::new(&stream);
    loop {
        let limit = shared.config().max_request_bytes;
        let request: Request = match read_frame(&mut reader, limit) {
            Ok(Frame::Message(r)) => r,
            Ok(Frame::TooLarge(bytes)) => {
                // The body is not read: answer, then drop the connection.
                let e = PlmError::RequestTooLarge { bytes, limit };
                let refusal: Response = Err(RemoteError::from(&e));
                let _ = send(&mut BufWriter::new(&stream), &refusal);
                return;
            }
            Ok(Frame::Closed) | Err(_) => return,
        };
        let response = match request {
            Request::Stats => Ok(Output::Stats(Box::new(shared.stats()))),
            Request::ClearCache => {
                let cache = shared.registry.cache();
                let n = cache.stats().entries;
                cache.clear();
                Ok(Output::Cleared(n))
            }
            Request::Compute {
                model,
                settings,
                task,
            } => match compute(&stream, shared, model, settings, task) {
                Some(r) => r,
                None => return,
            },
        };
        if send(&mut BufWriter::new(&stream), &response).is_err() {
            return;
        }
    }
}

/// Queues a compute request and waits for its answer; `None` when the client went away.
fn compute(
    stream: &UnixStream,
    shared: &Shared,
    model: ModelRef,
    settings: RequestSettings,
    task: Task,
) -> Option<Response> {
    let (reply, answer) = mpsc::channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    {
        let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(Job {
            model,
            settings,
            task,
            enqueued: Instant::now(),
            cancelled: cancelled.clone(),
            reply,
        });
    }
    shared.ready.notify_one();
    loop {
        match answer.recv_timeout(Duration::from_millis(20)) {
            Ok(response) => return Some(response),
            Err(RecvTimeoutError::Timeout) => {
                if peer_closed(stream) {
                    cancelled.store(true, Ordering::SeqCst);
                    return None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Requests whose embedding work can share one engine call.
#[derive(PartialEq)]
enum MergeKey<'a> {
    Pooled(
        &'a ModelRef,
        &'a RequestSettings,
        Option<i64>,
        crate::Pooling,
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

fn executor_loop(shared: &Shared) {
    while let Some(batch) = next_batch(shared) {
        run_batch(shared, batch);
    }
}

/// Waits for work, then gathers the requests that can join the first one, until the batch
/// budget is met or the batch wait has passed. `None` at shutdown.
fn next_batch(shared: &Shared) -> Option<Vec<Job>> {
    let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        queue.retain(|j| live(shared, j));
        if !queue.is_empty() {
            break;
        }
        queue = shared
            .ready
            .wait_timeout(queue, Duration::from_millis(200))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let config = shared.config();
    let first = queue.pop_front()?;
    let mut batch = vec![first];
    if merge_key(&batch[0]).is_none() {
        return Some(batch);
    }
    let deadline = batch[0].enqueued + config.batch_wait;
    let mut residues = batch[0].task.residues();
    loop {
        let mut i = 0;
        while i < queue.len() && residues < config.max_batch_tokens {
            let joins = merge_key(&queue[i]) == merge_key(&batch[0])
                && residues + queue[i].task.residues() <= config.max_batch_tokens;
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
        if residues >= config.max_batch_tokens || now >= deadline {
            return Some(batch);
        }
        queue = shared
            .ready
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Whether a job still has a client waiting; a cancelled one is counted (and dropped by the
/// caller's `retain`).
fn live(shared: &Shared, job: &Job) -> bool {
    let cancelled = job.cancelled.load(Ordering::SeqCst);
    if cancelled {
        shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    !cancelled
}

fn exec_options(shared: &Shared) -> ExecOptions {
    let config = shared.config();
    ExecOptions {
        max_tokens_per_batch: config.max_batch_tokens.max(64),
        threads: config.threads,
        interrupt_check: Some(abandon_if_cancelled),
    }
}

/// Unwinding payload that stops a batch whose clients have all gone.
struct Abandoned;

thread_local! {
    /// Cancel flags of the requests the executor is computing.
    static RUNNING: std::cell::RefCell<Vec<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The engine's between-batches check on the executor thread: stops work nobody waits for.
fn abandon_if_cancelled() {
    let abandoned = RUNNING.with(|r| {
        let r = r.borrow();
        !r.is_empty() && r.iter().all(|c| c.load(Ordering::SeqCst))
    });
    if abandoned {
        // resume_unwind: no panic message, caught in `run_one`.
        std::panic::resume_unwind(Box::new(Abandoned));
    }
}

fn run_one(
    shared: &Shared,
    jobs: &[&Job],
    model: &ModelRef,
    settings: &RequestSettings,
    task: &Task,
) -> Response {
    let options = exec_options(shared);
    RUNNING.with(|r| *r.borrow_mut() = jobs.iter().map(|j| j.cancelled.clone()).collect());
    let result = catch_unwind(AssertUnwindSafe(|| {
        execute(&shared.registry, model, settings, task, &options)
    }));
    RUNNING.with(|r| r.borrow_mut().clear());
    let result = result.unwrap_or_else(|panic| {
        if panic.is::<Abandoned>() {
            shared
                .counters
                .cancelled
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            return Err(PlmError::WorkerUnavailable(
                "request abandoned by its client".into(),
            ));
        }
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(PlmError::Remote {
            class: crate::ErrorClass::Internal,
            message: format!("internal error in the inference worker: {what}"),
        })
    });
    result.map_err(|e| RemoteError::from(&e))
}

fn record(shared: &Shared, jobs: &[Job]) {
    let c = &shared.counters;
    c.batches.fetch_add(1, Ordering::Relaxed);
    for job in jobs {
        let waited = job.enqueued.elapsed().as_micros() as u64;
        c.queue_wait_us.fetch_add(waited, Ordering::Relaxed);
        c.max_queue_wait_us.fetch_max(waited, Ordering::Relaxed);
        let sequences = match (&job.task, job.task.embedding_sequences()) {
            (_, Some(sequences)) => sequences.len(),
            (Task::Ppi { pairs }, None) => 2 * pairs.len(),
            _ => 1,
        };
        c.sequences.fetch_add(sequences as u64, Ordering::Relaxed);
    }
}

fn reply(shared: &Shared, job: Job, response: Response) {
    if response.is_err() && !job.cancelled.load(Ordering::SeqCst) {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    // The client may have gone: nothing to do then.
    let _ = job.reply.send(response);
}

fn run_batch(shared: &Shared, mut jobs: Vec<Job>) {
    jobs.retain(|j| live(shared, j));
    if jobs.is_empty() {
        return;
    }
    record(shared, &jobs);
    if jobs.len() == 1 {
        let job = jobs.remove(0);
        let response = run_one(shared, &[&job], &job.model, &job.settings, &job.task);
        return reply(shared, job, response);
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
        _ => unreachable!("only embedding tasks are merged"),
    };
    let first = &jobs[0];
    let all_jobs: Vec<&Job> = jobs.iter().collect();
    match run_one(shared, &all_jobs, &first.model, &first.settings, &merged) {
        Ok(output) => {
            let mut parts = split(output, &counts).into_iter();
            for job in jobs {
                let part = parts.next().unwrap_or(Ok(Output::Vectors(Vec::new())));
                reply(shared, job, part);
            }
        }
        // One bad sequence must not fail its neighbours: run each job on its own.
        Err(_) => {
            for job in jobs {
                if job.cancelled.load(Ordering::SeqCst) {
                    continue;
                }
                let response = run_one(shared, &[&job], &job.model, &job.settings, &job.task);
                reply(shared, job, response);
            }
        }
    }
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
