//! The shared inference worker over a real Unix socket, on the committed tiny checkpoint:
//! results equal to in-process execution (bit for bit), requests of concurrent clients merged
//! into shared batches, errors kept to their own request, size limits, handshake checks,
//! and clients that go away.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use plm_model::{DeviceSpec, EmbeddingCache, ErrorClass, LongSequencePolicy, PlmError, Pooling};
use plm_serve::protocol::{read_frame, write_frame, Frame, Hello, Welcome};
use plm_serve::{
    execute, ExecOptions, ModelRef, ModelRegistry, Output, Request, RequestSettings, Server,
    ServerConfig, Task, WorkerClient,
};

fn tiny() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../model/tests/fixtures/esm_tiny")
}

fn model() -> ModelRef {
    ModelRef {
        dir: tiny(),
        name: "esm_tiny".into(),
        device: DeviceSpec::Cpu,
    }
}

fn settings() -> RequestSettings {
    RequestSettings {
        long_sequences: LongSequencePolicy::Error,
        max_length: 1022,
    }
}

fn embed(sequences: &[&str]) -> Request {
    Request::Compute {
        model: model(),
        settings: settings(),
        task: Task::Embed {
            sequences: sequences.iter().map(|s| s.to_string()).collect(),
            layer: None,
            pooling: Pooling::Mean,
        },
    }
}

fn start(dir: &Path, config: ServerConfig) -> Server {
    let registry = ModelRegistry::new(Arc::new(EmbeddingCache::new(0)));
    Server::start(&dir.join("plm.sock"), registry, config).unwrap()
}

fn connect(dir: &Path) -> WorkerClient {
    WorkerClient::connect(&dir.join("plm.sock"), Duration::from_secs(5), &mut || {}).unwrap()
}

/// The same request computed in this process.
fn local(request: &Request) -> Output {
    let registry = ModelRegistry::new(Arc::new(EmbeddingCache::new(0)));
    let Request::Compute {
        model,
        settings,
        task,
    } = request
    else {
        panic!("not a compute request")
    };
    let options = ExecOptions {
        max_tokens_per_batch: 8192,
        threads: 0,
        max_request_bytes: 1 << 30,
        interrupt_check: None,
    };
    execute(&registry, model, settings, task, &options).unwrap()
}

fn sequence(i: usize) -> String {
    let aa = b"ACDEFGHIKLMNPQRSTVWY";
    (0..(5 + 7 * i))
        .map(|k| aa[(k * 7 + i * 3) % 20] as char)
        .collect()
}

#[test]
fn answers_equal_in_process_results_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerConfig::default());
    let mode = std::fs::metadata(dir.path().join("plm.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut client = connect(dir.path());
    let seqs: Vec<String> = (0..6).map(sequence).collect();
    let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    let request = embed(&refs);
    assert_eq!(client.call(&request, &mut || {}).unwrap(), local(&request));
    let residues = Request::Compute {
        model: model(),
        settings: settings(),
        task: Task::EmbedResidues {
            sequences: vec![seqs[2].clone()],
            layers: vec![None, Some(0)],
        },
    };
    assert_eq!(
        client.call(&residues, &mut || {}).unwrap(),
        local(&residues)
    );
    let contacts = Request::Compute {
        model: model(),
        settings: settings(),
        task: Task::Contacts {
            sequence: seqs[3].clone(),
        },
    };
    assert_eq!(
        client.call(&contacts, &mut || {}).unwrap(),
        local(&contacts)
    );
    server.shutdown();
    assert!(!dir.path().join("plm.sock").exists());
}

#[test]
fn concurrent_clients_share_batches_and_keep_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        ServerConfig {
            batch_wait: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let handle = server.handle();
    // Warm up (loads the model) so that the concurrent requests arrive together.
    connect(dir.path())
        .call(&embed(&["MKT"]), &mut || {})
        .unwrap();
    let clients = 8;
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let barrier = barrier.clone();
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut client = connect(&path);
                let seq = if i == 5 {
                    "MKT1AY".to_string()
                } else {
                    sequence(i)
                };
                let request = embed(&[seq.as_str()]);
                barrier.wait();
                (i, request.clone(), client.call(&request, &mut || {}))
            })
        })
        .collect();
    for t in threads {
        let (i, request, got) = t.join().unwrap();
        if i == 5 {
            let err = got.unwrap_err();
            assert_eq!(err.class(), ErrorClass::InvalidInput, "{err}");
            assert!(err.to_string().contains("invalid residue '1'"), "{err}");
        } else {
            assert_eq!(got.unwrap(), local(&request), "client {i}");
        }
    }
    let stats = handle.stats();
    assert_eq!(stats.requests, 1 + clients as u64);
    assert!(
        stats.batches < stats.requests,
        "no request was merged: {stats:?}"
    );
    assert_eq!(stats.errors, 1);
    assert_eq!(stats.models, vec![tiny()]);
    server.shutdown();
}

#[test]
fn oversized_requests_and_foreign_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        ServerConfig {
            max_request_bytes: 1 << 20,
            ..Default::default()
        },
    );
    let mut client = connect(dir.path());
    let long = "A".repeat(2 << 20);
    match client.call(&embed(&[long.as_str()]), &mut || {}) {
        Err(PlmError::RequestTooLarge { bytes, limit }) => assert!(bytes > limit),
        other => panic!("{other:?}"),
    }
    assert!(client.call(&embed(&["MKT"]), &mut || {}).is_ok());

    let stream = std::os::unix::net::UnixStream::connect(dir.path().join("plm.sock")).unwrap();
    let mut hello = Hello::current();
    hello.protocol = 999;
    let payload = postcard::to_stdvec(&hello).unwrap();
    write_frame(&mut &stream, &payload).unwrap();
    match read_frame::<Welcome>(&mut &stream, 4096).unwrap() {
        Frame::Message(Welcome::Refused(why)) => assert!(why.contains("protocol 999"), "{why}"),
        other => panic!("{other:?}"),
    }
    server.shutdown();
}

#[test]
fn requests_over_the_memory_limit_are_refused_before_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        ServerConfig {
            max_request_bytes: 8 << 20,
            ..Default::default()
        },
    );
    let mut client = connect(dir.path());
    let many_layers = Request::Compute {
        model: model(),
        settings: settings(),
        task: Task::EmbedResidues {
            sequences: vec!["MKTAYIAKQRQISFVKSHFSRQ".repeat(40)],
            layers: vec![Some(-1); 5000],
        },
    };
    match client.call(&many_layers, &mut || {}) {
        Err(e) => {
            assert_eq!(e.class(), ErrorClass::TooLarge);
            let message = e.to_string();
            assert!(
                message.contains("5000 layer(s)") && message.contains("estimated"),
                "{message}"
            );
        }
        Ok(_) => panic!("a 5,000-layer request was computed"),
    }
    // The same connection answers the next, ordinary request.
    assert!(client.call(&embed(&["MKT"]), &mut || {}).is_ok());
    let stats = server.handle().stats();
    assert_eq!((stats.refused, stats.errors), (1, 1));
    server.shutdown();
}

#[test]
fn work_of_a_client_that_goes_away_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    // Small batches: the request takes many engine batches, between which the worker
    // notices that nobody waits for it any more.
    let server = start(
        dir.path(),
        ServerConfig {
            max_batch_tokens: 256,
            ..Default::default()
        },
    );
    let handle = server.handle();
    // 3,000 distinct sequences (a 4-residue tag spells the index), so the cache cannot
    // shorten the work.
    let tag = |i: usize| -> String {
        format!("{i:04}")
            .bytes()
            .map(|d| b"ACDEFGHIKL"[(d - b'0') as usize] as char)
            .collect()
    };
    let seqs: Vec<String> = (0..3000)
        .map(|i| sequence(20 + i % 20).repeat(2) + &tag(i))
        .collect();
    let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    let big = embed(&refs);
    // Cancel from inside the wait, as a backend does on query cancel: unwind out of `call`.
    let mut client = connect(dir.path());
    let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.call(&big, &mut || panic!("query cancelled"))
    }));
    assert!(cancelled.is_err());
    drop(client);
    let mut next = connect(dir.path());
    let answer = next.call(&embed(&["MKTAYIAK"]), &mut || {}).unwrap();
    assert_eq!(answer, local(&embed(&["MKTAYIAK"])));
    // The abandoned request may still be in the queue or at its first engine batch.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (handle.stats().cancelled, handle.stats().connections) != (1, 1)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = handle.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert_eq!(stats.connections, 1);
    server.shutdown();
}

#[test]
fn connecting_waits_for_a_starting_worker_then_gives_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plm.sock");
    let err = WorkerClient::connect(&path, Duration::from_millis(100), &mut || {}).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable);
    assert!(err.to_string().contains("plm.sock"), "{err}");
    let later = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            start(&dir, ServerConfig::default())
        })
    };
    let mut client = WorkerClient::connect(&path, Duration::from_secs(10), &mut || {}).unwrap();
    assert!(client.call(&embed(&["MKT"]), &mut || {}).is_ok());
    later.join().unwrap().shutdown();
}

#[test]
fn a_bulk_request_does_not_hold_up_a_small_one_and_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of one long sequence makes the bulk request below 150 slices.
    let server = start(
        dir.path(),
        ServerConfig {
            max_batch_tokens: 1024,
            ..Default::default()
        },
    );
    let handle = server.handle();
    connect(dir.path())
        .call(&embed(&["MKT"]), &mut || {})
        .unwrap();
    let bulk_sequences: Vec<String> = (0..150)
        .map(|i| sequence(i % 9).repeat(200)[..900 + i % 100].to_string())
        .collect();
    let bulk_refs: Vec<&str> = bulk_sequences.iter().map(String::as_str).collect();
    let bulk = embed(&bulk_refs);
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let bulk_thread = {
        let (path, bulk) = (path.clone(), bulk.clone());
        std::thread::spawn(move || {
            let answer = connect(&path).call(&bulk, &mut || {});
            (answer, started.elapsed())
        })
    };
    // Once the bulk request is queued, a one-sequence request arrives.
    while handle.stats().requests < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let small = embed(&["MKTAYIAKQRQISFVKSHFSRQ"]);
    let sent = Instant::now();
    let small_answer = connect(&path).call(&small, &mut || {});
    let small_latency = sent.elapsed();
    let (bulk_answer, bulk_time) = bulk_thread.join().unwrap();
    assert!(
        small_latency * 5 < bulk_time,
        "the small request took {small_latency:?}: it waited for the bulk one ({bulk_time:?})"
    );
    assert_eq!(small_answer.unwrap(), local(&small));
    // Slicing (shortest first) and reassembly give the unsliced answer, in request order.
    assert_eq!(bulk_answer.unwrap(), local(&bulk));
    // A bad sequence anywhere in a bulk request is named by its place in the whole request.
    let mut bad = bulk_sequences.clone();
    bad[120] = "MKT1AY".into();
    let bad_refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    let err = connect(&path)
        .call(&embed(&bad_refs), &mut || {})
        .unwrap_err();
    assert!(err.to_string().contains("sequence 121: "), "{err}");
    server.shutdown();
}
