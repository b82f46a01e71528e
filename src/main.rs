//! The `joypath` binary: wires vtep, policy and datapath together behind a clap CLI.
//! Errors get their context here, once, at the edge.

mod ctl;
mod plane;
mod serve;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use datapath::counters::Summary;
use datapath::replay::{self, Captured};
use datapath::Disposition;
use policy::{Document, Table};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

mod run;

#[derive(Parser)]
#[command(
    name = "joypath",
    version,
    about = "A userspace, poll-mode VXLAN gateway enforcing tenant isolation as policy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run captures through the gateway's pipeline and report what it would do with each frame.
    Replay(ReplayArgs),
    /// Validate a config file and print what it defines.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Who may reach whom under a config: the reachability audit.
    Audit {
        #[arg(long, short)]
        config: PathBuf,
        /// Graphviz DOT instead of JSON.
        #[arg(long)]
        dot: bool,
        /// Judge validity windows at this RFC 3339 instant (default: now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Talk to a running gateway's management socket.
    Ctl(ctl::CtlArgs),
    /// Generate a deterministic synthetic workload: DIR/synth.toml and DIR/synth.pcap.
    Synth(SynthArgs),
    /// Run the live gateway on AF_XDP sockets until SIGINT/SIGTERM (SIGHUP reloads the policy).
    Run(run::RunArgs),
}

#[derive(clap::Args)]
struct SynthArgs {
    #[arg(long, default_value_t = 10_000)]
    tenants: u32,
    #[arg(long, default_value_t = 100_000)]
    endpoints: u32,
    #[arg(long, default_value_t = 10_000)]
    rules: u32,
    #[arg(long, default_value_t = 10_000)]
    flows: u32,
    #[arg(long, default_value_t = 100_000)]
    frames: u32,
    /// Inner Ethernet frame length in bytes (at least the headers: 54 for TCP, 42 for UDP).
    #[arg(long, default_value_t = 64)]
    inner_size: usize,
    /// Fraction of frames that are cross-tenant and allowed.
    #[arg(long, default_value_t = 0.5)]
    allowed: f64,
    /// Fraction of frames that are cross-tenant and denied (the rest is intra-tenant).
    #[arg(long, default_value_t = 0.1)]
    denied: f64,
    /// Underlay VTEPs (1–4096).
    #[arg(long, default_value_t = 64)]
    vteps: u32,
    /// Address spaces (0: as few as keep each under 50 000 endpoints).
    #[arg(long, default_value_t = 0)]
    spaces: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory to write synth.toml and synth.pcap into.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The policy (TOML config).
    #[arg(long, short)]
    config: PathBuf,
    /// Write every transmitted frame (forwarded and ARP replies) to this pcap.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also replay from memory N times and report the rate beside a null forwarder's.
    #[arg(long)]
    repeat: Option<u32>,
    /// List every frame's outcome.
    #[arg(long)]
    frames: bool,
    /// Keep running: loop over the captures as a gateway without a NIC and serve the management socket.
    #[arg(long)]
    serve: bool,
    /// With --serve: worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// With --serve: frames per second over all workers (0: as fast as they go).
    #[arg(long, default_value_t = 100_000)]
    pps: u64,
    #[command(flatten)]
    mgmt: plane::MgmtArgs,
    /// pcap or pcapng captures, replayed in order.
    #[arg(required = true)]
    captures: Vec<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JOYPATH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        // Output cut short by a closed pipe (`joypath … | head`) is not an error.
        if e.chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        eprintln!("joypath: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Replay(a) => cmd_replay(a),
        Cmd::Synth(a) => cmd_synth(a),
        Cmd::Run(a) => run::cmd_run(a),
        Cmd::Ctl(a) => {
            let code = ctl::run(a)?;
            std::process::exit(code)
        }
        Cmd::Check { config } => {
            let doc = load(&config)?;
            println!(
                "{}: valid: {} segments, {} tenants, {} endpoints, {} rules",
                config.display(),
                doc.segments.len(),
                doc.tenants.len(),
                doc.endpoints.len(),
                doc.rules.len()
            );
            Ok(())
        }
        Cmd::Audit { config, dot, at } => {
            let table = compile(load(&config)?)?;
            let now = match at {
                Some(t) => policy::time::parse_rfc3339(&t).map_err(anyhow::Error::msg)?,
                None => unix_now(),
            };
            let r = policy::reachability(&table, now);
            if dot {
                print!("{}", r.to_dot());
            } else {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            Ok(())
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn load(path: &std::path::Path) -> Result<Document> {
    Ok(Document::load(path)?)
}

fn compile(doc: Document) -> Result<Table> {
    Ok(Table::compile(Arc::new(doc), 1, None)?)
}

fn cmd_replay(a: ReplayArgs) -> Result<()> {
    let mut frames: Vec<Captured> = Vec::new();
    for p in &a.captures {
        frames.extend(replay::read_capture(p)?);
    }
    if a.serve {
        return serve::serve(Some(&a.config), frames, &a.mgmt, a.workers, a.pps);
    }
    let table = compile(load(&a.config)?)?;
    let out = replay::replay(&table, &frames);
    if let Some(path) = &a.output {
        replay::write_pcap(
            path,
            out.transmitted.iter().map(|(_, ts, d)| (*ts, d.as_slice())),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = out.worker.counters.summary(&table);
    let dropped: u64 = summary.dropped.values().sum();
    if summary.forwarded + summary.arp_replied + summary.nd_replied + dropped != summary.frames {
        bail!("internal error: outcomes do not add up to the frames replayed");
    }
    let rate = match a.repeat {
        Some(0) => bail!("--repeat must be at least 1"),
        Some(n) if !frames.is_empty() => Some(replay::measure(&table, &frames, n)),
        _ => None,
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        v["flows"] = serde_json::json!({
            "stats": out.worker.flows.stats(),
            "replies_tracked": out.worker.counters.replies_tracked,
        });
        v["decision_cache"] = serde_json::json!({
            "hits": out.worker.cache_hits,
            "misses": out.worker.cache_misses,
        });
        if let Some(r) = rate {
            v["rate"] = serde_json::to_value(r)?;
        }
        if a.frames {
            v["frame_outcomes"] = frame_list(&table, &out.outcomes).into();
        }
        writeln!(w, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        if a.frames {
            for (i, line) in frame_list(&table, &out.outcomes).iter().enumerate() {
                writeln!(w, "#{i:<5} {}", line.as_str().unwrap_or_default())?;
            }
            writeln!(w)?;
        }
        print_table(&mut w, &summary)?;
        if let Some(r) = rate {
            writeln!(
                w,
                "\nrate over {} frames: pipeline {:.2} Mpps ({:.1} ns/frame), null forwarder {:.2} Mpps ({:.1} ns/frame): {:.0}% of null",
                r.frames, r.mpps, r.ns_per_frame, r.null_mpps, r.null_ns_per_frame, r.ratio * 100.0
            )?;
        }
        if let Some(p) = &a.output {
            writeln!(
                w,
                "\nwrote {} transmitted frames to {}",
                out.transmitted.len(),
                p.display()
            )?;
        }
    }
    Ok(())
}

fn cmd_synth(a: SynthArgs) -> Result<()> {
    use datapath::synth;
    let p = synth::Params {
        tenants: a.tenants,
        endpoints: a.endpoints,
        rules: a.rules,
        flows: a.flows,
        frames: a.frames,
        inner_size: a.inner_size,
        seed: a.seed,
        vteps: a.vteps,
        spaces: a.spaces,
        allowed: a.allowed,
        denied: a.denied,
        ..synth::Params::default()
    };
    let w = synth::generate(&p)?;
    let (config, pcap) =
        synth::write(&a.out, &w).with_context(|| format!("writing into {}", a.out.display()))?;
    println!(
        "wrote {} ({} segments, {} tenants, {} endpoints, {} rules, {} address spaces) and {} ({} frames of {} flows)",
        config.display(),
        w.doc.segments.len(),
        w.doc.tenants.len(),
        w.doc.endpoints.len(),
        w.doc.rules.len(),
        w.spaces,
        pcap.display(),
        w.frames.len(),
        w.flows.len()
    );
    println!(
        "expected: {} forwarded ({} intra-tenant, {} cross-tenant allowed), {} policy_denied",
        w.expect.intra + w.expect.allowed,
        w.expect.intra,
        w.expect.allowed,
        w.expect.denied
    );
    Ok(())
}

fn frame_list(table: &Table, outcomes: &[datapath::Outcome]) -> Vec<serde_json::Value> {
    outcomes
        .iter()
        .map(|o| {
            let what = match o.disposition {
                Disposition::Forward => "forward".to_string(),
                Disposition::ArpReply => "arp_reply".to_string(),
                Disposition::NdReply => "nd_reply".to_string(),
                Disposition::Drop(r) => format!("drop {r}"),
                Disposition::Pending => "pending".to_string(),
            };
            let tenant = o
                .tenant
                .map(|t| table.tenant(t).name.to_string())
                .unwrap_or_else(|| "-".into());
            let rule = o.rule.map(|r| format!(" rule {r}")).unwrap_or_default();
            serde_json::Value::String(format!("{tenant:<12} {what}{rule}"))
        })
        .collect()
}

pub(crate) fn print_table(w: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let dropped: u64 = s.dropped.values().sum();
    writeln!(
        w,
        "{} frames: {} forwarded, {} ARP replied, {} dropped",
        s.frames, s.forwarded, s.arp_replied, dropped
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "{:<16} {:>8} {:>10} {:>9} {:>10} {:>5} {:>7}  drops",
        "tenant", "frames", "bytes", "forwarded", "bytes_out", "arp", "denied"
    )?;
    for (name, t) in &s.tenants {
        let drops: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
        writeln!(
            w,
            "{:<16} {:>8} {:>10} {:>9} {:>10} {:>5} {:>7}  {}",
            name,
            t.frames_in,
            t.bytes_in,
            t.forwarded,
            t.bytes_out,
            t.arp_replied,
            t.denied,
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(" ")
            }
        )?;
    }
    writeln!(w)?;
    writeln!(w, "drop reasons:")?;
    for (r, n) in &s.dropped {
        writeln!(w, "  {r:<18} {n}")?;
    }
    Ok(())
}
