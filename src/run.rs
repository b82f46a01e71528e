//! `joypath run`: the live gateway on AF_XDP sockets (driver::afxdp), until SIGINT/SIGTERM.

use crate::out::outln;
use anyhow::{bail, Context, Result};
use driver::afxdp::{self, PollMode, RunConfig, XdpMode, ZeroCopy};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The policy (TOML config); SIGHUP re-reads it.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Interface to take the overlay from (repeat, or comma-separate, for several: frames leave by the
    /// interface toward their destination VTEP).
    #[arg(long, short, required = true, value_delimiter = ',')]
    pub interface: Vec<String>,
    /// RX queues to serve, one worker each (default: all of the first interface's).
    #[arg(long, short)]
    pub queues: Option<u32>,
    /// Cores to pin workers on, e.g. "1" or "2,3" (round-robin; default: no pinning).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// spin: busy-poll; adaptive: spin while busy, back off to poll() when idle.
    #[arg(long, default_value = "adaptive", value_parser = ["spin", "adaptive"])]
    pub poll: String,
    /// auto: native (driver) XDP where supported, else generic.
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "generic"])]
    pub xdp_mode: String,
    /// auto: zero-copy where the driver offers it, else copy.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub zero_copy: String,
    /// Frames per RX batch (1–256).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Entries of each AF_XDP ring (power of two).
    #[arg(long, default_value_t = 2048)]
    pub ring_size: u32,
    /// Log the counters' deltas (frames, drops, driver) every N seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
    /// Print the final counters as JSON (default: a short text report).
    #[arg(long)]
    pub json: bool,
    /// Benchmark reference only: a null AF_XDP reflector (no pipeline; each frame out of the next
    /// interface toward the first VTEP routed there).
    #[arg(long, hide = true)]
    pub null: bool,
    /// No management socket or policy store: run --config as is, SIGHUP re-reads it.
    #[arg(long)]
    pub no_mgmt: bool,
    #[command(flatten)]
    pub mgmt: crate::plane::MgmtArgs,
    #[command(flatten)]
    pub observe: crate::plane::ObserveArgs,
}

pub fn cmd_run(a: RunArgs) -> Result<()> {
    if a.batch == 0 || a.batch > afxdp::MAX_BATCH {
        bail!("--batch must be within 1..={}", afxdp::MAX_BATCH);
    }
    let cfg = RunConfig {
        config: a.config.clone(),
        interfaces: a.interface.clone(),
        queues: a.queues,
        cores: a.cores.clone(),
        poll: if a.poll == "spin" {
            PollMode::Spin
        } else {
            PollMode::Adaptive
        },
        xdp_mode: match a.xdp_mode.as_str() {
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            _ => XdpMode::Auto,
        },
        zero_copy: match a.zero_copy.as_str() {
            "on" => ZeroCopy::On,
            "off" => ZeroCopy::Off,
            _ => ZeroCopy::Auto,
        },
        batch: a.batch,
        ring_size: a.ring_size,
        stats_every: Duration::from_secs(a.stats_every),
        null: a.null,
    };
    let mut control = crate::plane::MgmtControl::new(a.mgmt.clone(), a.config.clone())
        .with_metrics(a.observe.metrics_listen);
    let control: Option<&mut dyn afxdp::Control> = if a.no_mgmt || a.null {
        None
    } else {
        Some(&mut control)
    };
    let report = afxdp::run_with(&cfg, control)
        .with_context(|| format!("joypath run on {}", a.interface.join(",")))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.summary;
        let dropped: u64 = s.dropped.values().sum();
        outln!(
            "stopped after {:.1}s on policy version {} ({} reloads, {} failed)",
            report.uptime_secs,
            report.policy_version,
            report.reloads,
            report.reload_errors
        );
        outln!(
            "{} frames: {} forwarded, {} ARP replied, {} dropped by the pipeline",
            s.frames,
            s.forwarded,
            s.arp_replied,
            dropped
        );
        for (r, n) in s.dropped.iter().filter(|(_, n)| **n > 0) {
            outln!("  {r:<18} {n}");
        }
        let d = &report.driver;
        outln!(
            "driver: rx {} tx {} unresolved_next_hop {} tx_ring_full {} (kernel: rx_dropped {} rx_ring_full {} fill_ring_empty {})",
            d.rx, d.tx, d.unresolved_next_hop, d.tx_ring_full, d.xsk_rx_dropped, d.xsk_rx_ring_full, d.xsk_fill_ring_empty
        );
        for (name, t) in &s.tenants {
            outln!(
                "  tenant {name:<12} in {:>8} out {:>8} denied {:>6}",
                t.frames_in,
                t.forwarded,
                t.denied
            );
        }
    }
    Ok(())
}
