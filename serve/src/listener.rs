//! The server: a Unix-socket listener with one thread per client connection, feeding the
//! [`Queue`] that the [executor](crate::executor) thread drains.

use std::io::{BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plm_model::{PlmError, Result};

use crate::execute::ExecOptions;
use crate::executor;
use crate::protocol::{
    peer_closed, read_frame, send, Frame, Hello, ModelRef, Output, RemoteError, Request,
    RequestSettings, Response, Task, Welcome, WorkerStats, MAGIC, MAX_HANDSHAKE_BYTES,
    PROTOCOL_VERSION,
};
use crate::queue::{BatchLimits, Job, Queue};
use crate::registry::ModelRegistry;
use crate::stats::Counters;

/// Server settings, fixed for the life of the server (the supervisor restarts the server to
/// apply new ones).
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Longest wait for more requests to fill a batch.
    pub batch_wait: Duration,
    /// Residue budget of a merged batch (also the engine's token budget).
    pub max_batch_tokens: usize,
    /// Most memory one request may need (its frame, working memory and answer), bytes.
    pub max_request_bytes: usize,
    /// Compute threads of a newly loaded engine (0: all cores).
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            batch_wait: Duration::from_millis(2),
            max_batch_tokens: 16_384,
            max_request_bytes: 1 << 30,
            threads: 0,
        }
    }
}

struct Shared {
    registry: ModelRegistry,
    config: ServerConfig,
    queue: Queue,
    counters: Counters,
    started: Instant,
}

impl Shared {
    fn config(&self) -> ServerConfig {
        self.config
    }

    fn stats(&self) -> WorkerStats {
        self.counters.snapshot(&self.registry, self.started)
    }

    /// Batch limits and execution options of the current configuration.
    fn exec_settings(&self) -> (BatchLimits, ExecOptions) {
        let config = self.config();
        (
            BatchLimits {
                wait: config.batch_wait,
                max_tokens: config.max_batch_tokens,
            },
            ExecOptions {
                max_tokens_per_batch: config.max_batch_tokens.max(64),
                threads: config.threads,
                max_request_bytes: config.max_request_bytes,
                interrupt_check: None,
            },
        )
    }
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    socket: PathBuf,
    acceptor: JoinHandle<()>,
}

/// A cheap handle to read counters of a running [`Server`] and reach its models.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
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
        // Bind under a temporary name and rename into place once the mode is right, so that
        // the socket is never reachable with looser permissions.
        let staging = socket.with_extension("binding");
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(io)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::rename(&staging, socket).map_err(io)?;
        let shared = Arc::new(Shared {
            registry,
            config,
            queue: Queue::default(),
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
            spawn(
                "plm-executor",
                Box::new(move || {
                    let settings = || shared.exec_settings();
                    executor::run(&executor::Context {
                        registry: &shared.registry,
                        queue: &shared.queue,
                        counters: &shared.counters,
                        settings: &settings,
                    })
                }),
            )?;
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
    /// already running is not waited for (the process exits right after this).
    pub fn shutdown(self) {
        self.shared.queue.shut_down();
        // Wake the acceptor blocked in accept().
        let _ = UnixStream::connect(&self.socket);
        let _ = self.acceptor.join();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.queue.is_shut_down() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("plm-client".into())
            .spawn(move || {
                shared.counters.connection(true);
                // A broken connection only ends this client's thread.
                let _ = catch_unwind(AssertUnwindSafe(|| serve_client(stream, &shared)));
                shared.counters.connection(false);
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
            "protocol {} requested, this server speaks {PROTOCOL_VERSION} (library {}); \
             restart the database server after upgrading the extension",
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
                shared.counters.refused();
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
    shared.counters.request();
    shared.queue.push(Job {
        model,
        settings,
        task,
        enqueued: Instant::now(),
        cancelled: cancelled.clone(),
        reply,
    });
    loop {
        match answer.recv_timeout(Duration::from_millis(20)) {
            Ok(response) => return Some(response),
            Err(RecvTimeoutError::Timeout) => {
                if peer_closed(stream) {
                    cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
                    return None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}
