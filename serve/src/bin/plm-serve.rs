//! `plm-serve`: the pg_plm inference server process (see the crate documentation).

#![allow(unsafe_code)] // signal mask and sigwait

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use plm_model::{DeviceSpec, EmbeddingCache, EngineOptions, LoadOptions};
use plm_serve::process::ServeOptions;
use plm_serve::{ModelRegistry, Server, ServerConfig};

fn log(message: impl std::fmt::Display) {
    eprintln!("plm-serve[{}]: {message}", std::process::id());
}

/// Lets the kernel's OOM killer pick this process before any database process.
fn offer_to_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "1000") {
        log(format!("cannot raise oom_score_adj: {e}"));
    }
}

/// Blocks the termination signals in every thread (threads inherit the mask), so that the
/// main thread receives them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGTERM or SIGINT.
fn wait_for_termination(set: &libc::sigset_t) {
    loop {
        let mut signal = 0;
        // SAFETY: `set` is an initialised signal set; `signal` is a valid out pointer.
        let rc = unsafe { libc::sigwait(set, &mut signal) };
        if rc == 0 && (signal == libc::SIGTERM || signal == libc::SIGINT) {
            return;
        }
        if rc == 0 && signal == libc::SIGHUP {
            log("SIGHUP ignored: the supervisor restarts the server with new settings");
        }
    }
}

fn main() -> Result<()> {
    let options = ServeOptions::parse();
    let signals = block_signals();
    offer_to_oom_killer();
    let config = ServerConfig {
        batch_wait: Duration::from_millis(options.batch_wait_ms),
        max_batch_tokens: options.max_batch_tokens.max(64),
        max_request_bytes: (options.max_request_mb.max(1) << 20) as usize,
        threads: options.threads,
    };
    let cache = Arc::new(EmbeddingCache::new((options.cache_mb << 20) as usize));
    let server = Server::start(&options.socket, ModelRegistry::new(cache), config)
        .with_context(|| format!("cannot listen on {}", options.socket.display()))?;
    match (&options.model_dir, &options.default_model) {
        (Some(dir), Some(name)) => {
            let device: DeviceSpec = options
                .device
                .parse()
                .with_context(|| format!("plm.device = '{}'", options.device))?;
            let loaded = server.handle().registry().get(
                &dir.join(name),
                name,
                LoadOptions {
                    device,
                    threads: config.threads,
                    ..LoadOptions::default()
                },
                EngineOptions {
                    max_tokens_per_batch: config.max_batch_tokens,
                    ..Default::default()
                },
            );
            match loaded {
                Ok(m) => log(format!(
                    "ready on {} with model '{name}' ({device}, fingerprint {})",
                    options.socket.display(),
                    &m.engine.fingerprint()[..16]
                )),
                Err(e) => log(format!(
                    "ready on {}; default model '{name}' not loaded: {e}",
                    options.socket.display()
                )),
            }
        }
        _ => log(format!(
            "ready on {} (no default model)",
            options.socket.display()
        )),
    }
    wait_for_termination(&signals);
    server.shutdown();
    log("stopped");
    Ok(())
}
