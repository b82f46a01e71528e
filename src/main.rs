//! The `joypath` binary: wires vtep, policy, datapath, driver and mgmt together behind a clap CLI.
//! Errors get their context here, once, at the edge.

/// mimalloc: size-classed small allocations (a 7-byte tenant name takes 8 bytes, not glibc's 32),
/// which a policy of millions of names and rules is made of, and freed memory given back to the OS.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod ctl;
mod metrics;
mod out;
mod plane;
mod serve;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use datapath::counters::Summary;
use datapath::Disposition;
use driver::replay::{self, Captured};
use out::{out, outln, usage};
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
    /// Log format on stderr: text (coloured only on a terminal) or json (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run captures through the gateway's pipeline and report what it would do with each frame.
    Replay(ReplayArgs),
    /// Validate a config file: every problem in one pass, with the bad value and a suggestion.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object: {"file", "valid", "issues": [{path, line, message, value, suggestion}], …}.
        #[arg(long)]
        json: bool,
    },
    /// Who may reach whom under a config: the reachability audit.
    Audit {
        /// The config file (TOML).
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
    /// Print a shell completion script (e.g. `joypath completions bash > /etc/bash_completion.d/joypath`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (joypath.1 and one per subcommand, e.g. joypath-ctl.1) into a directory.
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Tenants to define.
    #[arg(long, default_value_t = 10_000)]
    tenants: u32,
    /// Endpoints spread over the tenants.
    #[arg(long, default_value_t = 100_000)]
    endpoints: u32,
    /// Cross-tenant rules.
    #[arg(long, default_value_t = 10_000)]
    rules: u32,
    /// Distinct inner flows the frames are drawn from.
    #[arg(long, default_value_t = 10_000)]
    flows: u32,
    /// Frames to write into synth.pcap.
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
    /// Seed of the deterministic generator.
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
    #[command(flatten)]
    observe: plane::ObserveArgs,
    /// pcap or pcapng captures, replayed in order.
    #[arg(required = true)]
    captures: Vec<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                // Output cut short by a closed pipe (`joypath … | head`) is not an error.
                0
            } else {
                eprintln!("joypath: {e:#}");
                if e.downcast_ref::<out::Usage>().is_some() {
                    2
                } else {
                    1
                }
            }
        }
    };
    // Flush what is buffered before exiting; a closed pipe here is not an error either.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind())
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr: coloured only when stderr is a terminal, or one JSON object a line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOYPATH_LOG")
        .unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().with_current_span(false).init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Runs a command; returns the process's exit code.
fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Replay(a) => cmd_replay(a)?,
        Cmd::Synth(a) => cmd_synth(a)?,
        Cmd::Run(a) => run::cmd_run(a)?,
        Cmd::Ctl(a) => return ctl::run(a),
        Cmd::Check { config, json } => return check::cmd_check(&config, json),
        Cmd::Audit { config, dot, at } => {
            let table = compile(load(&config)?)?;
            let now = match at {
                Some(t) => {
                    policy::time::parse_rfc3339(&t).map_err(|e| usage(format!("--at: {e}")))?
                }
                None => unix_now(),
            };
            let r = policy::reachability(&table, now);
            if dot {
                out!("{}", r.to_dot());
            } else {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Cmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "joypath", &mut buf);
            std::io::stdout().lock().write_all(&buf)?;
        }
        Cmd::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let n = write_man_pages(Cli::command(), &dir)?;
            outln!("wrote {n} man pages into {}", dir.display());
        }
    }
    Ok(0)
}

/// Writes the page of `cmd` and, recursively, of each visible subcommand (`joypath-ctl-status.1`).
fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> Result<usize> {
    let mut cmd = cmd;
    cmd.build();
    write_man_page(&cmd, cmd.get_name().to_string(), dir)
}

fn write_man_page(cmd: &clap::Command, name: String, dir: &std::path::Path) -> Result<usize> {
    let page = cmd.clone().name(name.clone());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    let mut n = 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        n += write_man_page(sub, format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
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
        return serve::serve(
            Some(&a.config),
            frames,
            &a.mgmt,
            &a.observe,
            a.workers,
            a.pps,
        );
    }
    let table = compile(load(&a.config)?)?;
    // The transmitted frames are kept only to be written out.
    let out = if a.output.is_some() {
        replay::replay(&table, &frames)
    } else {
        replay::replay_outcomes(&table, &frames)
    };
    if let Some(path) = &a.output {
        replay::write_pcap(
            path,
            out.transmitted.iter().map(|(_, ts, d)| (*ts, d.as_slice())),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    // Both reports stream their tenants (see `ReplayReport` and `write_report`): at a million
    // tenants a map of them all would cost more memory than the compiled policy.
    let summary = out.worker.counters.totals();
    let dropped: u64 = summary.dropped.values().sum();
    if summary.forwarded + summary.arp_replied + summary.nd_replied + dropped != summary.frames {
        bail!("internal error: outcomes do not add up to the frames replayed");
    }
    let rate = match a.repeat {
        Some(0) => return Err(usage("--repeat must be at least 1")),
        Some(n) if !frames.is_empty() => Some(replay::measure(&table, &frames, n)),
        _ => None,
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if a.json {
        // Written straight out (keys in sorted order, as always): at a million tenants a JSON tree
        // of the report, then its text, would cost more memory than the compiled policy.
        let report = ReplayReport {
            arp_replied: summary.arp_replied,
            decision_cache: serde_json::json!({
                "hits": out.worker.cache_hits,
                "misses": out.worker.cache_misses,
            }),
            dropped: &summary.dropped,
            flows: serde_json::json!({
                "replies_tracked": out.worker.counters.replies_tracked,
                "stats": out.worker.flows.stats(),
            }),
            forwarded: summary.forwarded,
            frame_outcomes: a.frames.then(|| frame_list(&table, &out.outcomes)),
            frames: summary.frames,
            nd_replied: summary.nd_replied,
            rate: rate.as_ref(),
            tenants: TenantLines {
                counters: &out.worker.counters,
                table: &table,
            },
        };
        {
            let mut bw = std::io::BufWriter::with_capacity(1 << 16, &mut w);
            serde_json::to_writer_pretty(&mut bw, &report)?;
            bw.write_all(b"\n")?;
            bw.flush()?;
        }
    } else {
        if a.frames {
            for (i, line) in frame_list(&table, &out.outcomes).iter().enumerate() {
                writeln!(w, "#{i:<5} {}", line.as_str().unwrap_or_default())?;
            }
            writeln!(w)?;
        }
        write_report(&mut w, &summary, || {
            out.worker.counters.tenant_lines(&table)
        })?;
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
    outln!(
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
    outln!(
        "expected: {} forwarded ({} intra-tenant, {} cross-tenant allowed), {} policy_denied",
        w.expect.intra + w.expect.allowed,
        w.expect.intra,
        w.expect.allowed,
        w.expect.denied
    );
    Ok(())
}

/// `replay --json`: the run's [`datapath::Summary`] with the flow table's and the decision cache's
/// figures, the rate when measured and each frame's outcome when asked for.
#[derive(serde::Serialize)]
struct ReplayReport<'a> {
    arp_replied: u64,
    decision_cache: serde_json::Value,
    dropped: &'a std::collections::BTreeMap<String, u64>,
    flows: serde_json::Value,
    forwarded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_outcomes: Option<Vec<serde_json::Value>>,
    frames: u64,
    nd_replied: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<&'a replay::Rate>,
    tenants: TenantLines<'a>,
}

/// The report's tenants, one line at a time (`Counters::tenant_lines`), never all of them at once.
struct TenantLines<'a> {
    counters: &'a datapath::Counters,
    table: &'a Table,
}

impl serde::Serialize for TenantLines<'_> {
    /// Each tenant's figures with their keys in sorted order (as a JSON tree of the report printed
    /// them): one small JSON object at a time, never the whole report.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut m = s.serialize_map(None)?;
        for (name, t) in self.counters.tenant_lines(self.table) {
            m.serialize_entry(name, &serde_json::to_value(&t).map_err(S::Error::custom)?)?;
        }
        m.end()
    }
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
            let rule = o
                .rule
                .map(|r| {
                    format!(
                        " rule {}",
                        policy::names::rule_name(table.document(), r as usize)
                    )
                })
                .unwrap_or_default();
            serde_json::Value::String(format!("{tenant:<12} {what}{rule}"))
        })
        .collect()
}

pub(crate) fn print_table(w: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    write_report(w, s, || {
        s.tenants.iter().map(|(n, c)| (n.as_str(), c.clone()))
    })
}

/// A run's report as tables: its totals (`s`, whose own `tenants` are not read) and each tenant's
/// line from `tenants`, which is called twice and never held whole (see [`out::write_rows`]).
fn write_report<'a, I>(
    w: &mut impl Write,
    s: &Summary,
    tenants: impl Fn() -> I,
) -> std::io::Result<()>
where
    I: Iterator<Item = (&'a str, datapath::counters::TenantSummary)>,
{
    let dropped: u64 = s.dropped.values().sum();
    writeln!(
        w,
        "{} frames: {} forwarded, {} ARP replied, {} dropped",
        s.frames, s.forwarded, s.arp_replied, dropped
    )?;
    writeln!(w)?;
    let row = |(name, c): (&str, datapath::counters::TenantSummary)| {
        let drops: Vec<String> = c.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
        vec![
            name.to_string(),
            c.frames_in.to_string(),
            c.bytes_in.to_string(),
            c.forwarded.to_string(),
            c.bytes_out.to_string(),
            c.arp_replied.to_string(),
            c.denied.to_string(),
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(" ")
            },
        ]
    };
    out::write_rows(
        w,
        &[
            "tenant",
            "frames",
            "bytes",
            "forwarded",
            "bytes_out",
            "arp",
            "denied",
            "drops",
        ],
        &[1, 2, 3, 4, 5, 6],
        || tenants().map(row),
    )?;
    writeln!(w)?;
    let mut t = out::table(&["drop reason", "frames"], &[1]);
    for (r, n) in &s.dropped {
        t.add_row(vec![r.to_string(), n.to_string()]);
    }
    out::write_table(w, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() && !cmd.is_hide_set() {
            out.push(format!("{path}: no about"));
        }
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            if !builtin && !a.is_hide_set() && a.get_help().is_none() {
                out.push(format!("{path} {}: no help", a.get_id()));
            }
        }
        for s in cmd.get_subcommands() {
            undocumented(s, &path, out);
        }
    }

    #[test]
    fn every_command_and_option_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        undocumented(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn global_flags_anywhere_on_the_line() {
        let c =
            Cli::try_parse_from(["joypath", "ctl", "stats", "--json", "--socket", "/x"]).unwrap();
        let Cmd::Ctl(a) = c.cmd else { panic!() };
        assert!(a.json);
        assert_eq!(a.socket, PathBuf::from("/x"));
        let c =
            Cli::try_parse_from(["joypath", "audit", "-c", "f", "--log-format", "json"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
