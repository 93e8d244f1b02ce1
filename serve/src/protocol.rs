//! Messages between backends and the worker, and their framing.
//!
//! A frame is a little-endian `u32` byte length followed by a `postcard` payload. A connection
//! opens with [`Hello`] → [`Welcome`] (or an error), then carries one [`Request`] → one
//! [`Response`] at a time.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use plm_model::homology::Method;
use plm_model::predict::{BindingPrediction, FunctionPrediction};
use plm_model::{
    CacheStats, DeviceSpec, EngineOptions, ErrorClass, LongSequencePolicy, Matrix, PlmError,
    Pooling, Result,
};

/// Bumped whenever a message changes shape (the golden-bytes test below fails until it is).
pub const PROTOCOL_VERSION: u32 = 4;

/// Residues shared by neighbouring windows of a long sequence: fixed, so that results never
/// depend on session settings.
pub const WINDOW_OVERLAP: usize = 256;

/// First bytes of every [`Hello`].
pub const MAGIC: [u8; 4] = *b"PLMW";

/// Largest handshake frame either side accepts.
pub const MAX_HANDSHAKE_BYTES: usize = 4096;

/// The client's greeting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`PROTOCOL_VERSION`] of the client.
    pub protocol: u32,
    /// Library version of the client.
    pub library_version: String,
}

impl Hello {
    /// This build's greeting.
    pub fn current() -> Self {
        Self {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            library_version: crate::VERSION.to_string(),
        }
    }
}

/// The worker's answer to a compatible [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted.
    Accepted {
        /// Worker process id.
        pid: u32,
        /// Largest request frame the worker accepts.
        max_request_bytes: u64,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// Which model, where, on which device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// Name shown in messages.
    pub name: String,
    /// Device to run on.
    pub device: DeviceSpec,
}

/// The per-request settings. They decide whether a sequence is accepted, never what is
/// returned for it: windows always have the model's own length and [`WINDOW_OVERLAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestSettings {
    /// What happens to sequences over the model's own limit: an error, or windows.
    pub long_sequences: LongSequencePolicy,
    /// Longest sequence accepted, in residues, under either policy.
    pub max_length: u32,
}

impl RequestSettings {
    /// Engine options with these settings, a batch budget and a thread count.
    pub fn engine_options(
        &self,
        max_tokens_per_batch: usize,
        interrupt_check: Option<fn() -> bool>,
    ) -> EngineOptions {
        EngineOptions {
            max_tokens_per_batch,
            long_sequences: self.long_sequences,
            max_residues: None,
            max_length: Some(self.max_length as usize),
            window_overlap: WINDOW_OVERLAP,
            interrupt_check,
        }
    }
}

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Pooled embeddings.
    Embed {
        /// Sequences.
        sequences: Vec<String>,
        /// Layer (None: last; negative: from the end).
        layer: Option<i64>,
        /// Pooling.
        pooling: Pooling,
    },
    /// Per-residue features of one or more layers side by side.
    EmbedResidues {
        /// Sequences.
        sequences: Vec<String>,
        /// Layers.
        layers: Vec<Option<i64>>,
    },
    /// Contact probabilities.
    Contacts {
        /// Sequence.
        sequence: String,
    },
    /// Function terms.
    Function {
        /// Sequence.
        sequence: String,
        /// Ontology.
        ontology: String,
        /// Most terms returned.
        top_k: u32,
        /// Lowest score returned.
        min_score: f32,
        /// Model, homology transfer or both.
        method: Method,
    },
    /// Interaction probabilities of pairs.
    Ppi {
        /// Pairs of sequences.
        pairs: Vec<(String, String)>,
        /// Model, interolog transfer or both.
        method: Method,
    },
    /// Binding sites.
    BindingSites {
        /// Sequence.
        sequence: String,
        /// Ligand type (None: all).
        ligand: Option<String>,
        /// Lowest score returned.
        threshold: f32,
        /// PDB/mmCIF text (None: predicted contacts).
        structure: Option<String>,
        /// Chain of the structure.
        chain: Option<String>,
        /// Model, template transfer or both.
        method: Method,
    },
}

impl Task {
    /// The sequences of an embedding task (the tasks the worker merges), else `None`.
    pub fn embedding_sequences(&self) -> Option<&[String]> {
        match self {
            Task::Embed { sequences, .. } | Task::EmbedResidues { sequences, .. } => {
                Some(sequences)
            }
            _ => None,
        }
    }

    /// The same embedding task over other sequences (other tasks are returned unchanged).
    pub fn with_sequences(&self, sequences: Vec<String>) -> Task {
        match self {
            Task::Embed { layer, pooling, .. } => Task::Embed {
                sequences,
                layer: *layer,
                pooling: *pooling,
            },
            Task::EmbedResidues { layers, .. } => Task::EmbedResidues {
                sequences,
                layers: layers.clone(),
            },
            other => other.clone(),
        }
    }

    /// Residues to compute, for batch budgets.
    pub fn residues(&self) -> usize {
        match self {
            Task::Embed { sequences, .. } | Task::EmbedResidues { sequences, .. } => {
                sequences.iter().map(String::len).sum()
            }
            Task::Contacts { sequence }
            | Task::Function { sequence, .. }
            | Task::BindingSites { sequence, .. } => sequence.len(),
            Task::Ppi { pairs, .. } => pairs.iter().map(|(a, b)| a.len() + b.len()).sum(),
        }
    }
}

/// A request to the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Model work.
    Compute {
        /// The model.
        model: ModelRef,
        /// Result-affecting settings.
        settings: RequestSettings,
        /// The work.
        task: Task,
    },
    /// Counters.
    Stats,
    /// Empty the shared cache.
    ClearCache,
}

/// Counters of the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker process id.
    pub pid: u32,
    /// Seconds since the worker started.
    pub uptime_s: f64,
    /// Compute requests received.
    pub requests: u64,
    /// Model executions (merged requests count once).
    pub batches: u64,
    /// Sequences computed.
    pub sequences: u64,
    /// Requests dropped because their client went away.
    pub cancelled: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests refused before running (over the memory limit).
    pub refused: u64,
    /// Total time requests waited in the queue, microseconds.
    pub queue_wait_us: u64,
    /// Longest queue wait, microseconds.
    pub max_queue_wait_us: u64,
    /// Open client connections.
    pub connections: u64,
    /// Counters of the shared embedding cache.
    pub cache: CacheStats,
    /// Loaded model directories.
    pub models: Vec<PathBuf>,
    /// Resident memory of the worker process, bytes.
    pub resident_bytes: u64,
}

/// An error raised in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    /// Its kind.
    pub class: ErrorClass,
    /// Its message.
    pub message: String,
}

impl From<&PlmError> for RemoteError {
    fn from(e: &PlmError) -> Self {
        Self {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

impl From<RemoteError> for PlmError {
    fn from(e: RemoteError) -> Self {
        PlmError::Remote {
            class: e.class,
            message: e.message,
        }
    }
}

/// The worker's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Pooled embeddings.
    Vectors(Vec<Vec<f32>>),
    /// Matrices (per-residue features, contacts).
    Matrices(Vec<Matrix>),
    /// Function terms.
    Functions(Vec<FunctionPrediction>),
    /// Probabilities.
    Scores(Vec<f32>),
    /// Binding residues.
    Sites(Vec<BindingPrediction>),
    /// Counters.
    Stats(Box<WorkerStats>),
    /// Entries dropped from the cache.
    Cleared(u64),
}

/// A response: the output or the error.
pub type Response = std::result::Result<Output, RemoteError>;

/// Encodes a message.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(message)
        .map_err(|e| PlmError::WorkerUnavailable(format!("cannot encode a message: {e}")))
}

/// Encodes `message` and writes it as one frame.
pub fn send<T: Serialize>(w: &mut impl Write, message: &T) -> std::io::Result<()> {
    let payload = encode(message).map_err(|e| std::io::Error::other(e.to_string()))?;
    write_frame(w, &payload)
}

/// Writes one encoded frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// What reading a frame gave.
#[derive(Debug)]
pub enum Frame<T> {
    /// A message.
    Message(T),
    /// The peer closed the connection between frames.
    Closed,
    /// A frame over `max_bytes` (its body was not read).
    TooLarge(usize),
}

/// Reads one frame of at most `max_bytes` and decodes it.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
    max_bytes: usize,
) -> std::io::Result<Frame<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Frame::Closed),
        Err(e) => return Err(e),
    }
    read_payload(r, u32::from_le_bytes(len) as usize, max_bytes)
}

/// Reads and decodes the `len`-byte payload of a frame whose length prefix was already read.
pub fn read_payload<T: DeserializeOwned>(
    r: &mut impl Read,
    len: usize,
    max_bytes: usize,
) -> std::io::Result<Frame<T>> {
    if len > max_bytes {
        return Ok(Frame::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    postcard::from_bytes(&payload)
        .map(Frame::Message)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Whether the peer of an idle connection has closed it. Neither side sends anything while
/// the other owes it an answer, so anything readable means the end of the stream (or a peer
/// out of step, which ends the connection as well).
pub fn peer_closed(stream: &std::os::unix::net::UnixStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match std::io::Read::read(&mut &*stream, &mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let request = Request::Compute {
            model: ModelRef {
                dir: "/m/plm-default".into(),
                name: "plm-default".into(),
                device: DeviceSpec::Cpu,
            },
            settings: RequestSettings {
                long_sequences: LongSequencePolicy::Window,
                max_length: 1022,
            },
            task: Task::Embed {
                sequences: vec!["MKT".into(), "GG".into()],
                layer: Some(-2),
                pooling: Pooling::Max,
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &encode(&request).unwrap()).unwrap();
        let back: Request = match read_frame(&mut buf.as_slice(), 1 << 20).unwrap() {
            Frame::Message(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
        assert!(matches!(
            read_frame::<Request>(&mut buf.as_slice(), 8).unwrap(),
            Frame::TooLarge(n) if n == buf.len() - 4
        ));
        assert!(matches!(
            read_frame::<Request>(&mut [].as_slice(), 8).unwrap(),
            Frame::Closed
        ));
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read_frame::<Request>(&mut garbage.as_slice(), 8).is_err());
    }

    /// The encoding of fixed messages. When this fails, a message changed shape: bump
    /// [`PROTOCOL_VERSION`] (so that an old server refuses new clients with a clear message
    /// instead of misreading them), then update the expected bytes.
    #[test]
    fn golden_bytes_pin_the_protocol() {
        let hello = Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            library_version: "0.2.0".into(),
        };
        let request = Request::Compute {
            model: ModelRef {
                dir: "/m".into(),
                name: "m".into(),
                device: DeviceSpec::Cuda(1),
            },
            settings: RequestSettings {
                long_sequences: LongSequencePolicy::Window,
                max_length: 300,
            },
            task: Task::BindingSites {
                sequence: "MK".into(),
                ligand: Some("ZN".into()),
                threshold: 0.5,
                structure: None,
                chain: None,
                method: Method::Combined,
            },
        };
        let response: Response = Err(RemoteError {
            class: ErrorClass::TooLarge,
            message: "x".into(),
        });
        let function = Task::Function {
            sequence: "MK".into(),
            ontology: "ec".into(),
            top_k: 5,
            min_score: 0.25,
            method: Method::Homology,
        };
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(PROTOCOL_VERSION, 4);
        assert_eq!(hex(encode(&hello).unwrap()), "504c4d570405302e322e30");
        assert_eq!(
            hex(encode(&function).unwrap()),
            "03024d4b026563050000803e02"
        );
        assert_eq!(
            hex(encode(&request).unwrap()),
            "00022f6d016d010101ac0205024d4b01025a4e0000003f000000"
        );
        assert_eq!(hex(encode(&response).unwrap()), "01050178");
    }

    proptest::proptest! {
        /// Any bytes on the wire give a message, an error or a refusal: never a panic, and never
        /// an allocation larger than the frame limit.
        #[test]
        fn the_decoder_survives_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = read_frame::<Request>(&mut bytes.as_slice(), 256);
            let _ = read_frame::<Hello>(&mut bytes.as_slice(), 256);
            let _ = read_frame::<Response>(&mut bytes.as_slice(), 256);
        }

        /// Valid frames with flipped bytes decode or fail cleanly.
        #[test]
        fn corrupted_requests_decode_or_fail(flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 1..6)) {
            let request = Request::Compute {
                model: ModelRef { dir: "/m/plm-default".into(), name: "plm-default".into(), device: DeviceSpec::Cpu },
                settings: RequestSettings { long_sequences: LongSequencePolicy::Error, max_length: 1022 },
                task: Task::EmbedResidues { sequences: vec!["MKTAYIAK".into()], layers: vec![Some(-1), None] },
            };
            let mut frame = Vec::new();
            write_frame(&mut frame, &encode(&request).unwrap()).unwrap();
            for (at, byte) in flips {
                let i = 4 + at % (frame.len() - 4);
                frame[i] = byte;
            }
            let _ = read_frame::<Request>(&mut frame.as_slice(), 1 << 20);
        }
    }
}
