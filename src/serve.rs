//! `joypath replay --serve`: the replay kept alive as a gateway without a NIC — workers loop over the
//! captures while the management socket serves the versioned policy store.

use crate::out::outln;
use crate::plane::{open_policy, MgmtArgs, Plane};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use driver::live::WorkerShared;
use driver::replay::{self, Captured};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serves until SIGINT or SIGTERM; prints the final counters.
pub fn serve(
    config: Option<&Path>,
    frames: Vec<Captured>,
    m: &MgmtArgs,
    obs: &crate::plane::ObserveArgs,
    workers: usize,
    pps: u64,
) -> Result<()> {
    // Signals first: once the socket answers, a SIGHUP must find its handler.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing signal handlers")?;
    let (store, table) = open_policy(config, &m.state_dir, m.history)?;
    tracing::info!(version = table.version(), state_dir = %m.state_dir.display(), "policy loaded");
    let policy = Arc::new(ArcSwap::new(table.clone()));
    let shared: Vec<Arc<WorkerShared>> = (0..workers.max(1))
        .map(|i| Arc::new(WorkerShared::new(i)))
        .collect();
    let plane = Arc::new(Plane::new(policy.clone(), shared.clone()));
    let server = mgmt::Server::new(m.server_config()?, store, table, plane.clone());
    let handle = server
        .spawn()
        .with_context(|| format!("serving {}", m.socket.display()))?;
    let _fleet = m.start_fleet(&server)?;
    let metrics = obs
        .metrics_listen
        .map(|a| crate::metrics::spawn(a, server.clone()))
        .transpose()?;

    let frames = Arc::new(frames);
    let per_worker_pps = pps / shared.len() as u64;
    // One flow table for every worker: a flow's request and its replies may meet different ones.
    let flows = datapath::flow_table_for(&policy.load());
    let threads: Vec<_> = shared
        .iter()
        .map(|s| {
            let (frames, policy, s, stop, flows) = (
                frames.clone(),
                policy.clone(),
                s.clone(),
                stop.clone(),
                flows.clone(),
            );
            std::thread::Builder::new()
                .name(format!("worker-{}", s.id))
                .spawn(move || replay::serve(&frames, &policy, &s, &stop, per_worker_pps, flows))
        })
        .collect::<Result<_, _>>()?;
    eprintln!(
        "joypath: serving {} on {} (policy version {}, {} worker(s)); SIGINT/SIGTERM to stop",
        m.state_dir.display(),
        m.socket.display(),
        policy.load().version(),
        threads.len()
    );
    crate::metrics::notify(&[sd_notify::NotifyState::Ready]);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            // SIGHUP: the config file as a change on top of the current version, or refused when
            // the store holds changes the file does not (mgmt::Server::reload_file logs which).
            match config.map(policy::Document::load) {
                Some(Ok(doc)) => {
                    let source = config.map(|c| c.display().to_string()).unwrap_or_default();
                    if let Ok(Some(t)) = server.reload_file(doc, &source) {
                        tracing::info!(version = t.version(), "SIGHUP: config file applied");
                    }
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: the config file is invalid; nothing changed")
                }
                None => tracing::warn!("SIGHUP: no --config to re-read"),
            }
        }
    }
    crate::metrics::notify(&[sd_notify::NotifyState::Stopping]);
    drop(metrics);
    let mut total = datapath::Counters::default();
    for t in threads {
        if let Ok(w) = t.join() {
            total.add(&w.counters);
        }
    }
    drop(handle);
    let s = total.summary(&policy.load());
    outln!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
