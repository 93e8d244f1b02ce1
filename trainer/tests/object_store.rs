//! Training against an S3-compatible server on loopback (`s3s-fs`, a file-system-backed
//! implementation of the S3 protocol from crates.io, installed by `scripts/install-deps.sh`):
//! pretraining reads its corpus from a bucket and checkpoints to it, is killed, resumes from the
//! bucket and ends bit-identical to the same run on local files; a teacher is read from the
//! bucket; a missing bucket, a missing key, a truncated object and bad credentials each fail
//! with the URL in the message. With the `mpi` feature, two ranks with sharded optimizer state
//! do the same.
//!
//! The server is found at `PLM_S3_SERVER`, else `~/.cache/pg_plm/s3s/bin/s3s-fs`; without one
//! the test skips with a message, unless `PLM_S3_SERVER` is set (then a missing server fails).

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

mod common;
use common::motif_sequences;

const BIN: &str = env!("CARGO_BIN_EXE_plm-train");
const ACCESS: &str = "plmtestaccess";
const SECRET: &str = "plmtestsecret0123456789";

/// An `s3s-fs` server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PLM_S3_SERVER") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PLM_S3_SERVER={} does not exist", p.display());
        return Some(p);
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".cache/pg_plm/s3s/bin/s3s-fs");
    p.is_file().then_some(p)
}

impl S3Server {
    fn start(root: &Path) -> Option<Self> {
        let Some(bin) = server_binary() else {
            eprintln!(
                "SKIPPED: no S3 server (s3s-fs): scripts/install-deps.sh installs it into \
                 ~/.cache/pg_plm/s3s"
            );
            return None;
        };
        std::fs::create_dir_all(root).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = common::spawn(
            Command::new(bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS, "--secret-key", SECRET])
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("starting s3s-fs");
        let server = Self {
            child,
            port,
            root: root.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// Creates a bucket (a directory of the server's root).
    fn bucket(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `plm-train` with this server's endpoint and credentials and its own staging directory.
    fn command(&self, staging: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        self.env(&mut cmd, staging);
        cmd
    }

    fn env(&self, cmd: &mut Command, staging: &Path) {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("PLM_TRAIN_STAGING", staging)
            .env("RAYON_NUM_THREADS", "1");
    }
}

/// The corpus, as plain FASTA and gzip.
fn corpus(dir: &Path) -> (PathBuf, PathBuf) {
    let mut text = String::new();
    for (i, seq) in motif_sequences(120, 0).iter().enumerate() {
        text.push_str(&format!(">s{i}\n{seq}\n"));
    }
    let plain = dir.join("train.fasta");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.join("train.fasta.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    (plain, gz)
}

/// Arguments of a tiny pretraining run.
fn pretrain_args(cmd: &mut Command, train: &str, out: &str, steps: usize) {
    cmd.args(["pretrain", "--train", train, "--out", out])
        .args(["--hidden", "32", "--layers", "2", "--heads", "4"])
        .args(["--intermediate", "64", "--lr", "3e-3", "--warmup", "2"])
        .args(["--max-tokens", "1024", "--max-len", "64", "--buffer", "64"])
        .args(["--save-every", "2", "--eval-every", "1000", "--seed", "11"])
        .args(["--steps", &steps.to_string()]);
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = common::output(cmd).expect("running plm-train");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_err(cmd: &mut Command) -> String {
    let out = common::output(cmd).expect("running plm-train");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn weights(file: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()
}

fn assert_identical(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (name, x) in a {
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name} differs"
        );
    }
}

/// The checkpoint a run in the bucket publishes (read through the server's file system).
fn published(bucket: &Path, run: &str) -> (PathBuf, u64) {
    let pointer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bucket.join(run).join("last.json")).unwrap())
            .unwrap();
    (
        bucket
            .join(run)
            .join(pointer["checkpoint"].as_str().unwrap()),
        pointer["step"].as_u64().unwrap(),
    )
}

/// A temporary directory with a server on its `s3/` and the corpus; `None` (skipped) without
/// a server.
fn setup() -> Option<(tempfile::TempDir, S3Server, PathBuf, (PathBuf, PathBuf))> {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"))?;
    let staging = tmp.path().join("staging");
    let files = corpus(tmp.path());
    Some((tmp, server, staging, files))
}

#[test]
fn pretraining_reads_and_checkpoints_to_a_bucket_and_resumes_bit_identically() {
    let Some((tmp, server, staging, (plain, gz))) = setup() else {
        return;
    };
    let bucket = server.bucket("corpora");
    std::fs::create_dir_all(bucket.join("swissprot")).unwrap();
    std::fs::copy(&gz, bucket.join("swissprot/train.fasta.gz")).unwrap();
    const STEPS: usize = 30;

    // The reference: the same run on local files.
    let local = tmp.path().join("local");
    let mut cmd = Command::new(BIN);
    cmd.env("RAYON_NUM_THREADS", "1");
    pretrain_args(
        &mut cmd,
        plain.to_str().unwrap(),
        local.to_str().unwrap(),
        STEPS,
    );
    run_ok(&mut cmd);

    // From the bucket to the bucket, killed after its first published checkpoint...
    let train = "s3://corpora/swissprot/train.fasta.gz";
    let out = "s3://corpora/runs/mlm";
    let mut cmd = server.command(&staging);
    pretrain_args(&mut cmd, train, out, STEPS);
    let mut child = common::spawn(cmd.stdout(Stdio::null()).stderr(Stdio::piped())).unwrap();
    let pointer = bucket.join("runs/mlm/last.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pointer.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before publishing a checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint published");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, killed_at) = published(&bucket, "runs/mlm");
    assert!(killed_at < STEPS as u64, "killed at step {killed_at}");
    eprintln!("killed after the checkpoint of step {killed_at}");

    // ...and resumed from the bucket on a machine with nothing staged.
    std::fs::remove_dir_all(&staging).ok();
    let mut cmd = server.command(&staging);
    pretrain_args(&mut cmd, train, out, STEPS);
    cmd.arg("--resume");
    let stderr = String::from_utf8_lossy(&run_ok(&mut cmd).stderr).into_owned();
    assert!(
        stderr.contains("resuming s3://corpora/runs/mlm at step"),
        "{stderr}"
    );

    let (checkpoint, step) = published(&bucket, "runs/mlm");
    assert_eq!(step, STEPS as u64);
    assert_identical(
        &weights(&local.join("last/model.safetensors")),
        &weights(&checkpoint.join("model.safetensors")),
    );
    // One checkpoint is kept (the server leaves deleted prefixes as empty directories); the
    // log and the plot are published beside it.
    let kept: Vec<_> = std::fs::read_dir(bucket.join("runs/mlm/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|dir| std::fs::read_dir(dir).unwrap().next().is_some())
        .collect();
    assert_eq!(kept, std::slice::from_ref(&checkpoint));
    let metrics = std::fs::read_to_string(bucket.join("runs/mlm/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), STEPS, "{metrics}");
    assert!(bucket.join("runs/mlm/loss.png").is_file());

    // A checkpoint in the bucket serves as a teacher (RUN/last follows the pointer) and as a
    // model to evaluate.
    let mut cmd = server.command(&staging);
    cmd.args(["distill", "--teacher", "s3://corpora/runs/mlm/last"])
        .args(["--train", train, "--out", "s3://corpora/runs/student"])
        .args(["--student-layers", "1", "--steps", "2", "--warmup", "1"])
        .args(["--max-tokens", "1024", "--max-len", "64", "--buffer", "64"]);
    run_ok(&mut cmd);
    let (student, _) = published(&bucket, "runs/student");
    assert!(student.join("model.safetensors").is_file());
    let mut cmd = server.command(&staging);
    cmd.args([
        "eval",
        "--model",
        "s3://corpora/runs/mlm/last",
        "--data",
        train,
    ])
    .args(["--sequences", "20"]);
    let report: serde_json::Value =
        serde_json::from_slice(&run_ok(&mut cmd).stdout).expect("eval prints JSON");
    assert!(report["perplexity"].as_f64().unwrap() > 1.0, "{report}");
}

#[test]
fn object_store_errors_name_the_url() {
    let Some((tmp, server, staging, (_, gz))) = setup() else {
        return;
    };
    let bucket = server.bucket("data");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(bucket.join("cut.fasta.gz"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(bucket.join("train.fasta.gz"), &bytes).unwrap();

    let attempt = |train: &str, out: &str, env: &[(&str, &str)]| {
        let mut cmd = server.command(&staging);
        pretrain_args(&mut cmd, train, out, 2);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_err(&mut cmd)
    };
    let local_out = tmp.path().join("run");
    let local_out = local_out.to_str().unwrap();

    let e = attempt("s3://no-such-bucket/train.fasta.gz", local_out, &[]);
    assert!(
        e.contains("s3://no-such-bucket/train.fasta.gz") && e.contains("not found"),
        "{e}"
    );
    let e = attempt("s3://data/missing.fasta.gz", local_out, &[]);
    assert!(
        e.contains("s3://data/missing.fasta.gz") && e.contains("not found"),
        "{e}"
    );
    let e = attempt("s3://data/cut.fasta.gz", local_out, &[]);
    assert!(e.contains("s3://data/cut.fasta.gz"), "{e}");
    assert!(e.contains("truncated or corrupt gzip"), "{e}");
    let e = attempt(
        "s3://data/train.fasta.gz",
        local_out,
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
    );
    assert!(
        e.contains("s3://data/train.fasta.gz") && e.contains("access denied"),
        "{e}"
    );
    // A run the credentials cannot write fails before training, naming it.
    let local_train = gz.to_str().unwrap();
    let e = attempt(
        local_train,
        "s3://data/run",
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
    );
    assert!(
        e.contains("cannot write the run s3://data/run") && e.contains("access denied"),
        "{e}"
    );
    assert!(!e.contains("step 1"), "{e}");
    let e = attempt("gs://data/train.fasta.gz", local_out, &[]);
    assert!(
        e.contains("gs://data/train.fasta.gz") && e.contains("s3://"),
        "{e}"
    );
}

/// Several ranks (mpirun) with sharded optimizer state read from and write to the bucket.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_with_sharded_state_train_from_and_to_a_bucket() {
    let Some(mpirun) = common::mpirun_or_skip() else {
        return;
    };
    let Some((tmp, server, staging, (plain, gz))) = setup() else {
        return;
    };
    let bucket = server.bucket("corpora");
    std::fs::copy(&gz, bucket.join("train.fasta.gz")).unwrap();
    let bin = common::private_copy(BIN, tmp.path());

    // One process with the doubled batch on local files...
    let local = tmp.path().join("local");
    let mut cmd = Command::new(&bin);
    cmd.env("RAYON_NUM_THREADS", "1");
    pretrain_args(
        &mut cmd,
        plain.to_str().unwrap(),
        local.to_str().unwrap(),
        6,
    );
    cmd.args(["--accumulate", "2"]);
    run_ok(&mut cmd);
    // ...and two sharded ranks on the bucket, in two launches.
    for (steps, resume) in [(3, false), (6, true)] {
        let mut cmd = Command::new(&mpirun);
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"]);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_ALLOW_HTTP",
            "AWS_REGION",
            "PLM_TRAIN_STAGING",
            "RAYON_NUM_THREADS",
        ] {
            cmd.args(["-x", var]);
        }
        cmd.arg(&bin);
        server.env(&mut cmd, &staging);
        pretrain_args(
            &mut cmd,
            "s3://corpora/train.fasta.gz",
            "s3://corpora/runs/dp",
            steps,
        );
        cmd.args(["--accumulate", "1", "--shard-optimizer"]);
        if resume {
            cmd.arg("--resume");
        }
        run_ok(&mut cmd);
    }
    let (checkpoint, step) = published(&bucket, "runs/dp");
    assert_eq!(step, 6);
    let a = weights(&local.join("last/model.safetensors"));
    let b = weights(&checkpoint.join("model.safetensors"));
    for (name, x) in &a {
        let diff = common::max_abs_diff(x, &b[name]);
        assert!(diff <= 1e-5, "{name}: {diff}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["training"]["ranks"], 2);
    assert_eq!(manifest["training"]["shard_optimizer"], true);
}
