//! The backend's side: one connection to the worker, used for one request at a time.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use plm_model::{PlmError, Result};

use crate::protocol::{
    encode, peer_closed, read_frame, read_payload, send, write_frame, Frame, Hello, Output,
    Request, Response, Welcome, MAX_HANDSHAKE_BYTES,
};

/// The message of the [`PlmError::WorkerUnavailable`] a call returns when the server ended
/// while computing it (the caller may then find out how, see `plm_serve::process`).
pub const SERVER_ENDED: &str = "the server ended while serving this request";

/// How often a waiting client gives its caller a chance to cancel.
const POLL: Duration = Duration::from_millis(50);

/// An open, greeted connection to the worker.
#[derive(Debug)]
pub struct WorkerClient {
    stream: UnixStream,
    worker_pid: u32,
    max_request_bytes: usize,
}

fn unavailable(what: impl std::fmt::Display) -> PlmError {
    PlmError::WorkerUnavailable(what.to_string())
}

impl WorkerClient {
    /// Connects to the worker's socket, retrying for up to `patience` while it is absent or
    /// not yet listening (the worker is starting or restarting), then greets it.
    /// `poll` runs between attempts and may abort (query cancel).
    pub fn connect(socket: &Path, patience: Duration, poll: &mut dyn FnMut()) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < patience => {
                    poll();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "cannot connect to {} within {} ms: {e} (is the inference server running? see the server log)",
                        socket.display(),
                        patience.as_millis()
                    )))
                }
            }
        };
        send(&mut BufWriter::new(&stream), &Hello::current()).map_err(unavailable)?;
        let welcome: Welcome = match read_frame(&mut BufReader::new(&stream), MAX_HANDSHAKE_BYTES) {
            Ok(Frame::Message(w)) => w,
            Ok(_) => {
                return Err(unavailable(
                    "the inference server closed the connection during the handshake",
                ))
            }
            Err(e) => return Err(unavailable(format!("handshake failed: {e}"))),
        };
        match welcome {
            Welcome::Accepted {
                pid,
                max_request_bytes,
            } => Ok(Self {
                stream,
                worker_pid: pid,
                max_request_bytes: max_request_bytes as usize,
            }),
            Welcome::Refused(why) => {
                Err(unavailable(format!("the inference server refused: {why}")))
            }
        }
    }

    /// Whether the worker is still at the other end (an idle connection of a worker that
    /// has since restarted reads as closed).
    pub fn is_alive(&self) -> bool {
        !peer_closed(&self.stream)
    }

    /// Process id of the worker this connection talks to.
    pub fn worker_pid(&self) -> u32 {
        self.worker_pid
    }

    /// Sends `request` and waits for the answer, calling `poll` about every 50 ms while
    /// waiting. If `poll` unwinds (query cancel), the connection must be dropped: the worker
    /// notices and discards the request.
    pub fn call(&mut self, request: &Request, poll: &mut dyn FnMut()) -> Result<Output> {
        let payload = encode(request)?;
        if payload.len() > self.max_request_bytes {
            return Err(PlmError::RequestTooLarge {
                bytes: payload.len(),
                limit: self.max_request_bytes,
            });
        }
        write_frame(&mut BufWriter::new(&self.stream), &payload).map_err(|e| {
            unavailable(format!(
                "the inference server went away before the request was sent ({e})"
            ))
        })?;
        poll();
        self.stream
            .set_read_timeout(Some(POLL))
            .map_err(unavailable)?;
        // Read the length prefix with polling, then the body without.
        let mut len = [0u8; 4];
        let mut have = 0;
        while have < 4 {
            match std::io::Read::read(&mut self.stream, &mut len[have..]) {
                Ok(0) => return Err(unavailable(SERVER_ENDED)),
                Ok(n) => have += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    poll()
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => poll(),
                Err(e) => return Err(unavailable(format!("reading the answer: {e}"))),
            }
        }
        self.stream.set_read_timeout(None).map_err(unavailable)?;
        let size = u32::from_le_bytes(len) as usize;
        match read_payload::<Response>(&mut self.stream, size, usize::MAX) {
            Ok(Frame::Message(response)) => response.map_err(PlmError::from),
            Ok(_) => Err(unavailable("the worker closed the connection mid-answer")),
            Err(e) => Err(unavailable(format!("reading the answer: {e}"))),
        }
    }
}
