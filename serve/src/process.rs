//! The server process: its command line ([`ServeOptions`]), and the [`Supervisor`] that starts
//! it with fork + exec, restarts it with backoff when it ends, stops it, and publishes its
//! state in a small JSON file that any process can read ([`SupervisorState`]).
//!
//! The server is a child of the supervisor (the extension's background worker), not of the
//! PostgreSQL postmaster, and it never attaches PostgreSQL's shared memory: the postmaster
//! does not see it end, so a crash there never restarts the database. It dies with its
//! supervisor (`PR_SET_PDEATHSIG`), inherits no descriptor but standard error (the server
//! log), and offers itself first to the kernel's OOM killer.

#![allow(unsafe_code)] // fork/exec set-up (prctl, close_range), kill, flock

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The server's command line; the supervisor builds it from the `plm.*` settings.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "plm-serve",
    version,
    about = "pg_plm inference server: holds the models and serves PostgreSQL backends over a Unix socket.\n\
             Started and supervised by the pg_plm background worker; run by hand only for debugging."
)]
pub struct ServeOptions {
    /// Unix socket to listen on (created with mode 0600).
    #[arg(long)]
    pub socket: PathBuf,
    /// Directory of model checkpoints, for loading the default model at start.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Model to load at start (a sub-directory of --model-dir).
    #[arg(long)]
    pub default_model: Option<String>,
    /// Device of the default model: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Embedding cache budget, MB (0 disables it).
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    /// Compute threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Longest wait for concurrent requests to fill a batch, milliseconds.
    #[arg(long, default_value_t = 2)]
    pub batch_wait_ms: u64,
    /// Residue budget of one batch.
    #[arg(long, default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Most memory one request may need, MB.
    #[arg(long, default_value_t = 1024)]
    pub max_request_mb: u64,
}

impl ServeOptions {
    /// The arguments that [`clap::Parser::parse_from`] turns back into `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--socket".to_string(), self.socket.display().to_string()];
        if let Some(dir) = &self.model_dir {
            args.extend(["--model-dir".into(), dir.display().to_string()]);
        }
        if let Some(model) = &self.default_model {
            args.extend(["--default-model".into(), model.clone()]);
        }
        args.extend([
            "--device".into(),
            self.device.clone(),
            "--cache-mb".into(),
            self.cache_mb.to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--batch-wait-ms".into(),
            self.batch_wait_ms.to_string(),
            "--max-batch-tokens".into(),
            self.max_batch_tokens.to_string(),
            "--max-request-mb".into(),
            self.max_request_mb.to_string(),
        ]);
        args
    }
}

/// What the supervisor is doing, as published in its state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorState {
    /// `running`, `restarting` (waiting out its backoff), or `stopped`.
    pub state: String,
    /// Process id of the supervisor.
    pub supervisor_pid: u32,
    /// Process id of the running server (0 when none).
    pub server_pid: u32,
    /// Times the server was restarted after ending unexpectedly.
    pub restarts: u64,
    /// How the last server process ended (`None` before the first end).
    pub last_exit: Option<String>,
    /// Why the server could not be started last time, if it could not.
    pub last_error: Option<String>,
    /// When the state last changed, seconds since the Unix epoch.
    pub since: f64,
}

impl SupervisorState {
    /// Reads a state file.
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// One line for error messages, e.g. "restarting after it was killed by signal 9 (3 restarts)".
    pub fn summary(&self) -> String {
        let mut s = self.state.clone();
        if let Some(exit) = &self.last_exit {
            s.push_str(&format!(" after the server {exit}"));
        }
        if let Some(err) = &self.last_error {
            s.push_str(&format!(" ({err})"));
        }
        if self.restarts > 0 {
            s.push_str(&format!("; {} restart(s) so far", self.restarts));
        }
        s
    }
}

/// How a process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!(
            "was killed by signal {signal}{}",
            match signal {
                libc::SIGKILL => " (SIGKILL: kill -9 or the kernel's OOM killer)",
                libc::SIGABRT => " (SIGABRT: an abort, e.g. a failed allocation)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS: a memory-mapped file changed under it?)",
                _ => "",
            }
        ),
        _ => "ended".into(),
    }
}

/// An exclusive lock on a file, held for the life of the value: at most one supervisor per
/// data directory.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock without waiting; `Ok(None)` when another process holds it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<Self>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            Ok(Some(Self { _file: file }))
        } else {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// Shortest and longest wait before restarting a server that ended.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// A server that ran this long before ending restarts after the shortest wait again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a stopping server gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Starts, watches and restarts the server process.
pub struct Supervisor {
    program: PathBuf,
    options: ServeOptions,
    state_file: PathBuf,
    child: Option<(Child, Instant)>,
    next_start: Instant,
    backoff: Duration,
    state: SupervisorState,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Supervisor {
    /// A supervisor of `program` with `options`, publishing its state to `state_file`. Nothing
    /// starts before the first [`Supervisor::tick`].
    pub fn new(program: PathBuf, options: ServeOptions, state_file: PathBuf) -> Self {
        Self {
            program,
            options,
            state_file,
            child: None,
            next_start: Instant::now(),
            backoff: BACKOFF.0,
            state: SupervisorState {
                state: "starting".into(),
                supervisor_pid: std::process::id(),
                server_pid: 0,
                restarts: 0,
                last_exit: None,
                last_error: None,
                since: now_s(),
            },
        }
    }

    /// The published state.
    pub fn state(&self) -> &SupervisorState {
        &self.state
    }

    /// Reaps an ended server and starts one when due. Call every few hundred milliseconds.
    pub fn tick(&mut self) {
        if let Some((child, started)) = &mut self.child {
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    let ran = started.elapsed();
                    self.child = None;
                    self.backoff = if ran >= HEALTHY_RUN {
                        BACKOFF.0
                    } else {
                        (self.backoff * 2).min(BACKOFF.1)
                    };
                    self.next_start = Instant::now() + self.backoff;
                    self.state.restarts += 1;
                    self.state.last_exit = Some(describe_exit(status));
                    self.publish("restarting", 0);
                    let _ = std::fs::remove_file(&self.options.socket);
                }
                Err(e) => {
                    self.state.last_error = Some(format!("cannot wait for the server: {e}"));
                    return;
                }
            }
        }
        if Instant::now() >= self.next_start {
            self.start();
        }
    }

    fn start(&mut self) {
        match spawn(&self.program, &self.options) {
            Ok(child) => {
                let pid = child.id();
                self.child = Some((child, Instant::now()));
                self.state.last_error = None;
                self.publish("running", pid);
            }
            Err(e) => {
                self.backoff = (self.backoff * 2).min(BACKOFF.1);
                self.next_start = Instant::now() + self.backoff;
                self.state.last_error =
                    Some(format!("cannot start {}: {e}", self.program.display()));
                self.publish("restarting", 0);
            }
        }
    }

    /// Applies a new program and options: a running server started otherwise is stopped and
    /// started again at once. Returns whether anything changed.
    pub fn reconfigure(&mut self, program: PathBuf, options: ServeOptions) -> bool {
        if program == self.program && options == self.options {
            return false;
        }
        self.program = program;
        self.options = options;
        if self.child.is_some() {
            self.stop_child();
            self.next_start = Instant::now();
            self.tick();
        }
        true
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period) and publishes `stopped`.
    pub fn stop(&mut self) {
        self.stop_child();
        self.publish("stopped", 0);
    }

    fn stop_child(&mut self) {
        if let Some((mut child, _)) = self.child.take() {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.options.socket);
    }

    fn publish(&mut self, state: &str, server_pid: u32) {
        self.state.state = state.into();
        self.state.server_pid = server_pid;
        self.state.since = now_s();
        let staging = self.state_file.with_extension("tmp");
        let written = serde_json::to_vec(&self.state)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                let mut f = File::create(&staging)?;
                f.write_all(&json)?;
                std::fs::rename(&staging, &self.state_file)
            });
        if let Err(e) = written {
            eprintln!(
                "pg_plm supervisor: cannot write {}: {e}",
                self.state_file.display()
            );
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_child();
    }
}

/// Starts `program` with `options`: standard input from /dev/null, output to our standard
/// error, no other inherited descriptor, killed when its parent ends.
fn spawn(program: &Path, options: &ServeOptions) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new(program);
    command
        .args(options.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
        .stderr(Stdio::inherit())
        .env("RUST_BACKTRACE", "0")
        // One malloc arena per client thread would keep freed request memory spread over many
        // arenas; two keep the server's resident memory close to what it uses.
        .env("MALLOC_ARENA_MAX", "2");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            close_descriptors_from(3);
            Ok(())
        });
    }
    command.spawn()
}

/// Closes every descriptor from `first` on (all of PostgreSQL's: sockets, files, pipes).
fn close_descriptors_from(first: u32) {
    // SAFETY: plain syscalls on this process's descriptor table, between fork and exec.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) != 0 {
            let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(1024, 65_536) as i32;
            for fd in first as i32..max {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn options_round_trip_through_the_command_line() {
        let options = ServeOptions {
            socket: "/tmp/x.sock".into(),
            model_dir: Some("/models".into()),
            default_model: Some("plm-default".into()),
            device: "cuda:1".into(),
            cache_mb: 12,
            threads: 3,
            batch_wait_ms: 7,
            max_batch_tokens: 999,
            max_request_mb: 2048,
        };
        let mut argv = vec!["plm-serve".to_string()];
        argv.extend(options.to_args());
        assert_eq!(ServeOptions::parse_from(argv), options);
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = InstanceLock::try_acquire(&path).unwrap();
        assert!(first.is_some());
        assert!(InstanceLock::try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(InstanceLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn supervisor_restarts_a_killed_child_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        // `sleep` ignores our arguments' meaning but stands in for a long-running server.
        let script = dir.path().join("fake-serve");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let options = ServeOptions::parse_from([
            "plm-serve",
            "--socket",
            dir.path().join("s.sock").to_str().unwrap(),
        ]);
        let mut sup = Supervisor::new(script, options, state_file.clone());
        sup.tick();
        let first = SupervisorState::read(&state_file).unwrap();
        assert_eq!(first.state, "running");
        assert!(first.server_pid > 0);
        // SAFETY: killing the child we just started.
        unsafe { libc::kill(first.server_pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            sup.tick();
            let s = sup.state().clone();
            if s.state == "running" && s.server_pid != first.server_pid {
                assert_eq!(s.restarts, 1);
                assert!(
                    s.last_exit.as_deref().unwrap_or("").contains("signal 9"),
                    "{s:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "not restarted: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // A new program (an upgrade: `plm.server_path` and a reload) replaces the running one;
        // the same program and options leave it alone.
        let upgraded = dir.path().join("fake-serve-2");
        std::fs::write(&upgraded, "#!/bin/sh\nexec sleep 31\n").unwrap();
        std::fs::set_permissions(&upgraded, std::fs::Permissions::from_mode(0o755)).unwrap();
        let before = sup.state().server_pid;
        let options = sup.options.clone();
        assert!(sup.reconfigure(upgraded.clone(), options.clone()));
        let pid = sup.state().server_pid;
        assert_ne!(pid, before, "not restarted with the new program");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The script execs `sleep 31`: wait for the exec to show in its command line.
        while !String::from_utf8_lossy(
            &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        )
        .contains("31")
        {
            assert!(Instant::now() < deadline, "the new program did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!sup.reconfigure(upgraded, options));
        assert_eq!(sup.state().server_pid, pid, "restarted without a change");
        sup.stop();
        assert_eq!(SupervisorState::read(&state_file).unwrap().state, "stopped");
        // SAFETY: signal 0 only checks whether the process exists.
        assert_ne!(
            unsafe { libc::kill(pid as i32, 0) },
            0,
            "server still running"
        );
    }
}
