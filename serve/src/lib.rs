//! `plm-serve`: the pg_plm inference server and its client.
//!
//! PostgreSQL runs a process per connection. The models live in one separate process, the
//! inference server (`plm-serve`, started and supervised by the extension's background worker
//! with fork + exec), which PostgreSQL does not count as one of its own: whatever happens in
//! it (an allocation failure, a native crash, the OOM killer, `kill -9`) ends that process
//! only, never the database server.
//!
//! - [`protocol`]: the wire types and framing (versioned handshake, length-prefixed frames);
//! - [`listener`]: the socket, one thread per client connection;
//! - [`queue`]: queued requests and the rule that merges them into shared batches;
//! - [`executor`]: the thread that runs batches on the models;
//! - [`stats`]: the counters at every stage;
//! - [`client`]: the backend side of a connection;
//! - [`execute`]: the one code path that computes a request (server and in-backend alike);
//! - [`limits`]: the memory a request needs, estimated from its shape before anything runs;
//! - [`registry`]: the models loaded in a process;
//! - [`memory`]: freed request memory given back to the system when the server goes idle;
//! - [`process`]: starting, supervising and restarting the server process.

pub mod client;
pub mod execute;
pub mod executor;
pub mod limits;
pub mod listener;
pub mod memory;
pub mod process;
pub mod protocol;
pub mod queue;
pub mod registry;
pub mod stats;

pub use client::WorkerClient;
pub use execute::{execute, ExecOptions};
pub use listener::{Server, ServerConfig, ServerHandle};
pub use protocol::{ModelRef, Output, Request, RequestSettings, Task, WorkerStats};
pub use registry::{LoadedModel, ModelRegistry};

/// Version of this library (the same as the model library's and the extension's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
