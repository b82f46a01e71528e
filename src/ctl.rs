//! `joypath ctl`: the management socket's client. Human tables by default, `--json` for scripts.
//! Exit codes: 0 done, 1 the gateway refused or failed the request, 2 usage or connection error,
//! 3 `verify` found drift.

use crate::plane::DEFAULT_SOCKET;
use anyhow::{bail, Context, Result};
use mgmt::Client;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the raw JSON result.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCmd {
    /// Store version, each worker's version, lag and rate.
    Status,
    /// The policy document (current, or a kept version).
    Get {
        #[arg(long)]
        version: Option<u64>,
    },
    /// Replace the whole policy with a TOML or JSON file.
    Apply {
        file: PathBuf,
        #[arg(long)]
        expected_version: Option<u64>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Dry run: the errors, or what would change.
    Validate { file: PathBuf },
    /// Who changed what, when.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Make a kept version current again (as a new version).
    Rollback {
        version: u64,
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Who may reach whom.
    Audit {
        #[arg(long)]
        dot: bool,
        #[arg(long)]
        at: Option<String>,
    },
    /// Do all workers run exactly the table the store expects?
    Verify,
    /// Counters per tenant and drop reason.
    Stats {
        #[arg(long)]
        prometheus: bool,
    },
    /// Capture the next N matching frames into a pcapng with per-packet comments.
    Trace {
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long)]
        tenant: Option<String>,
        /// forward, arp_reply or a drop reason
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// The fleet: every gateway sharing this one's etcd policy, its version, digest, lag and
    /// liveness. Exit code 4 when a gateway lags or is gone.
    Fleet,
    /// Any operation: `joypath ctl call tenant.add tenant='{"name":"x","id":7}' expected_version=3`.
    /// Values are JSON when they parse as JSON, strings otherwise.
    Call { op: String, args: Vec<String> },
}

fn document_from_file(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    if p.extension().is_some_and(|e| e == "json") {
        Ok(serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?)
    } else {
        // Parse without validating: the gateway validates and reports every problem.
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Ok(serde_json::to_value(v)?)
    }
}

fn kv_args(items: &[String]) -> Result<Value> {
    let mut m = Map::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .with_context(|| format!("{it:?}: arguments are KEY=VALUE"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        m.insert(k.to_string(), v);
    }
    Ok(Value::Object(m))
}

fn put(m: &mut Value, k: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m[k] = v.into();
    }
}

/// Runs a ctl command; returns the process exit code.
pub fn run(a: CtlArgs) -> Result<i32> {
    let (op, args) = match &a.cmd {
        CtlCmd::Status => ("status".to_string(), json!({})),
        CtlCmd::Get { version } => {
            let mut v = json!({});
            put(&mut v, "version", *version);
            ("policy.get".into(), v)
        }
        CtlCmd::Apply {
            file,
            expected_version,
            comment,
        } => {
            let mut v = json!({"document": document_from_file(file)?});
            put(&mut v, "expected_version", *expected_version);
            put(&mut v, "comment", comment.clone());
            ("policy.apply".into(), v)
        }
        CtlCmd::Validate { file } => (
            "policy.validate".into(),
            json!({"document": document_from_file(file)?}),
        ),
        CtlCmd::History { limit } => ("history".into(), json!({"limit": limit})),
        CtlCmd::Rollback {
            version,
            expected_version,
        } => {
            let mut v = json!({"version": version});
            put(&mut v, "expected_version", *expected_version);
            ("rollback".into(), v)
        }
        CtlCmd::Audit { dot, at } => {
            let mut v = json!({"format": if *dot { "dot" } else { "json" }});
            put(&mut v, "at", at.clone());
            ("audit.reachability".into(), v)
        }
        CtlCmd::Verify => ("audit.verify".into(), json!({})),
        CtlCmd::Fleet => ("fleet.status".into(), json!({})),
        CtlCmd::Stats { prometheus } => (
            "stats".into(),
            json!({"format": if *prometheus { "prometheus" } else { "json" }}),
        ),
        CtlCmd::Trace {
            count,
            tenant,
            outcome,
            out,
            timeout_ms,
        } => {
            let path = if out.is_absolute() {
                out.clone()
            } else {
                std::env::current_dir()?.join(out)
            };
            let mut v = json!({"count": count, "path": path, "timeout_ms": timeout_ms});
            put(&mut v, "tenant", tenant.clone());
            put(&mut v, "outcome", outcome.clone());
            ("trace".into(), v)
        }
        CtlCmd::Call { op, args } => (op.clone(), kv_args(args)?),
    };
    let mut c = match Client::connect(&a.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("joypath ctl: {}: {e}", a.socket.display());
            return Ok(2);
        }
    };
    let resp = match c.call(&op, args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("joypath ctl: {}: {e}", a.socket.display());
            return Ok(2);
        }
    };
    if !resp.ok {
        let e = resp.error.context("an error response without an error")?;
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"ok": false, "error": e}))?
            );
        } else {
            eprintln!("joypath ctl: {op}: {:?}: {}", e.code, e.message);
        }
        return Ok(1);
    }
    let r = resp.result.unwrap_or(Value::Null);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        human(&a.cmd, &r)?;
    }
    if matches!(a.cmd, CtlCmd::Verify) && r["ok"] != json!(true) {
        return Ok(3);
    }
    if matches!(a.cmd, CtlCmd::Fleet) && !fleet_healthy(&r) {
        return Ok(4);
    }
    Ok(0)
}

/// Every gateway that ever joined is alive and runs the latest version.
fn fleet_healthy(r: &Value) -> bool {
    r["gateways"].as_array().is_some_and(|g| {
        g.iter()
            .all(|g| g["alive"] == json!(true) && g["lag"] == json!(0))
    })
}

fn human_fleet(r: &Value) {
    println!(
        "latest version {}{}",
        r["latest"],
        r["prefix"]
            .as_str()
            .map(|p| format!("  prefix {p}"))
            .unwrap_or_default()
    );
    println!(
        "{:<20} {:>5} {:>8} {:>4} {:<16} {:>7} {:>8}",
        "gateway", "alive", "version", "lag", "digest", "workers", "uptime"
    );
    for g in r["gateways"].as_array().into_iter().flatten() {
        let n = |k: &str| g[k].as_u64().map(|v| v.to_string()).unwrap_or("-".into());
        println!(
            "{:<20} {:>5} {:>8} {:>4} {:<16} {:>7} {:>8}",
            g["name"].as_str().unwrap_or(""),
            if g["alive"] == json!(true) {
                "yes"
            } else {
                "NO"
            },
            n("version"),
            n("lag"),
            g["digest"].as_str().unwrap_or("-"),
            n("workers"),
            g["uptime_s"]
                .as_u64()
                .map(|s| format!("{s}s"))
                .unwrap_or("-".into()),
        );
    }
    if !fleet_healthy(r) {
        println!("NOT IN SYNC: a gateway lags or is gone");
    }
}

fn human(cmd: &CtlCmd, r: &Value) -> Result<()> {
    match cmd {
        CtlCmd::Fleet => human_fleet(r),
        CtlCmd::Status => {
            println!(
                "policy version {}  digest {}  uptime {:.0}s  state {}",
                r["version"],
                r["digest"].as_str().unwrap_or("-"),
                r["uptime_s"].as_f64().unwrap_or(0.0),
                r["state_dir"].as_str().unwrap_or("")
            );
            println!(
                "{:<7} {:>8} {:>4} {:>14} {:>12}",
                "worker", "version", "lag", "frames", "pps"
            );
            for w in r["workers"].as_array().into_iter().flatten() {
                println!(
                    "{:<7} {:>8} {:>4} {:>14} {:>12.0}",
                    w["id"],
                    w["active_version"],
                    w["lag"],
                    w["frames"],
                    w["pps"].as_f64().unwrap_or(0.0)
                );
            }
        }
        CtlCmd::History { .. } => {
            println!(
                "{:>7}  {:<20}  {:>6}  {:<16}  comment",
                "version", "time", "uid", "op"
            );
            for m in r.as_array().into_iter().flatten() {
                println!(
                    "{:>7}  {:<20}  {:>6}  {:<16}  {}",
                    m["version"],
                    m["time"].as_str().unwrap_or(""),
                    m["uid"],
                    m["op"].as_str().unwrap_or(""),
                    m["comment"].as_str().unwrap_or("")
                );
            }
        }
        CtlCmd::Stats { prometheus: true } => print!("{}", r["text"].as_str().unwrap_or("")),
        CtlCmd::Stats { prometheus: false } => {
            let s: datapath::counters::Summary = serde_json::from_value(r.clone())?;
            crate::print_table(&mut std::io::stdout(), &s)?;
        }
        CtlCmd::Audit { dot: true, .. } => print!("{}", r["dot"].as_str().unwrap_or("")),
        CtlCmd::Audit { dot: false, .. } => {
            println!(
                "{:<16} {:<16} {:<6} {:<12} rule",
                "from", "to", "proto", "ports"
            );
            for e in r["reach"].as_array().into_iter().flatten() {
                let rule = match e["rule"].as_u64() {
                    Some(i) => i.to_string(),
                    None => "default".into(),
                };
                println!(
                    "{:<16} {:<16} {:<6} {:<12} {}{}",
                    e["from"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or(""),
                    e["proto"].as_str().unwrap_or(""),
                    e["ports"].as_str().unwrap_or("-"),
                    rule,
                    if e["conditional"] == json!(true) {
                        " (cidr)"
                    } else {
                        ""
                    }
                );
            }
        }
        CtlCmd::Verify => {
            let ok = r["ok"] == json!(true);
            println!(
                "{}: store version {} digest {}",
                if ok { "ok" } else { "DRIFT" },
                r["expected"]["version"],
                r["expected"]["digest"].as_str().unwrap_or("")
            );
            for w in r["workers"].as_array().into_iter().flatten() {
                println!(
                    "  worker {}: version {} digest {} {}",
                    w["id"],
                    w["version"],
                    w["digest"].as_str().unwrap_or(""),
                    if w["ok"] == json!(true) {
                        "ok"
                    } else {
                        "DIFFERS"
                    }
                );
            }
        }
        CtlCmd::Apply { .. } | CtlCmd::Rollback { .. } => {
            println!(
                "committed version {} (digest {}, compiled in {:.1} ms)",
                r["version"],
                r["digest"].as_str().unwrap_or(""),
                r["compile_ms"].as_f64().unwrap_or(0.0)
            );
        }
        CtlCmd::Validate { .. } => {
            if r["valid"] == json!(true) {
                println!(
                    "valid; changes:\n{}",
                    serde_json::to_string_pretty(&r["diff"])?
                );
            } else {
                println!("invalid:");
                for i in r["issues"].as_array().into_iter().flatten() {
                    println!(
                        "  {}: {}",
                        i["path"].as_str().unwrap_or(""),
                        i["message"].as_str().unwrap_or("")
                    );
                }
                bail!("the policy is invalid");
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(r)?),
    }
    Ok(())
}
