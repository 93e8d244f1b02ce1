//! Serving models from one process to many: the shared inference worker.
//!
//! PostgreSQL runs a process per connection. With the extension preloaded, one worker process
//! holds the models (and the one embedding cache) and serves every backend over a Unix-domain
//! socket: [`protocol`] defines the messages and framing, [`server`] the worker side with
//! cross-client dynamic batching, [`client`] the backend side, and [`execute`] the one code
//! path that computes a request, used by the worker and by in-backend inference alike.

pub mod client;
pub mod execute;
pub mod protocol;
pub mod server;

pub use client::WorkerClient;
pub use execute::{execute, ExecOptions};
pub use protocol::{ModelRef, Output, Request, RequestSettings, Task, WorkerStats};
pub use server::{Server, ServerConfig, ServerHandle};
