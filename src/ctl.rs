//! `joypath ctl`: the management socket's client. Human tables by default, `--json` for scripts.
//! Exit codes: 0 done, 1 the gateway refused or failed the request, 2 usage or connection error,
//! 3 `verify` found drift.

use crate::out::{self, out, outln, usage};
use crate::plane::DEFAULT_SOCKET;
use anyhow::{bail, Context, Result};
use mgmt::Client;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The gateway's management socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the raw JSON result (accepted anywhere on the line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCmd {
    /// Store version, each worker's version, lag and rate.
    Status,
    /// The policy document as TOML (current, or a kept version); `apply` takes it back.
    Get {
        /// A kept version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Replace the whole policy with a TOML or JSON file (`ctl get` output included).
    Apply {
        /// The policy file: TOML, or JSON (a document, or `ctl get --json` output).
        file: PathBuf,
        /// Refuse unless the store is at this version (optimistic concurrency).
        #[arg(long)]
        expected_version: Option<u64>,
        /// Kept in the history beside the change.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Dry run: the errors, or what would change.
    Validate {
        /// The policy file: TOML or JSON.
        file: PathBuf,
    },
    /// Who changed what, when.
    History {
        /// The most recent N versions.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Make a kept version current again (as a new version).
    Rollback {
        /// The kept version to restore.
        version: u64,
        /// Refuse unless the store is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Who may reach whom.
    Audit {
        /// Graphviz DOT instead of a table.
        #[arg(long)]
        dot: bool,
        /// Judge validity windows at this RFC 3339 instant (default: now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Do all workers run exactly the table the store expects?
    Verify,
    /// Counters per tenant, drop reason and rule, and the driver's, live.
    Stats {
        /// Prometheus text format.
        #[arg(long)]
        prometheus: bool,
        /// Which tenants to list: all (live ones), active (a figure not zero) or none (at a million
        /// tenants, all of them is a few hundred megabytes).
        #[arg(long, value_parser = ["all", "active", "none"], conflicts_with = "tenant")]
        tenants: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// What the running table would do with a packet, and by which rule.
    Explain {
        /// The sending tenant.
        #[arg(long)]
        tenant: String,
        /// Inner source address.
        #[arg(long)]
        src: String,
        /// Inner destination address.
        #[arg(long)]
        dst: String,
        /// tcp, udp, icmp or a protocol number.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Inner source port.
        #[arg(long, default_value_t = 0)]
        sport: u16,
        /// Inner destination port.
        #[arg(long, default_value_t = 0)]
        dport: u16,
        /// Judge validity windows at this RFC 3339 instant (default: now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Capture the next N matching frames into a pcapng with per-packet comments.
    Trace {
        /// Frames to capture (at most 10000).
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Only this tenant's frames.
        #[arg(long)]
        tenant: Option<String>,
        /// Only frames with this outcome: forward, arp_reply or a drop reason.
        #[arg(long)]
        outcome: Option<String>,
        /// The pcapng file to write.
        #[arg(long)]
        out: PathBuf,
        /// Give up after this long (milliseconds; at most 3600000, one hour).
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// The fleet: every gateway sharing this one's etcd policy, its version, digest, lag and
    /// liveness. Exit code 4 when a gateway lags or is gone.
    Fleet,
    /// Any operation: `joypath ctl call tenant.add tenant='{"name":"x","id":7}' expected_version=3`.
    /// Values are JSON when they parse as JSON, strings otherwise.
    Call {
        /// The operation, e.g. rule.update.
        op: String,
        /// KEY=VALUE arguments.
        args: Vec<String>,
    },
}

fn document_from_file(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))
        .map_err(|e| usage(format!("{e:#}")))?;
    if p.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{') {
        let mut v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
        // `ctl get --json` output: {"version", "meta", "document"}.
        if v.get("meta").is_some() && v.get("document").is_some_and(Value::is_object) {
            v = v["document"].take();
        }
        Ok(v)
    } else {
        // Wrong keys and types are reported here, every one with its line and a suggestion (as
        // `joypath check` does); what only the gateway can judge, it judges.
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        let file = p.display().to_string();
        let problems = crate::check::check_text(&text, &file)?;
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .iter()
                .map(|x| {
                    let at = x.line.map(|l| format!("{file}:{l}: ")).unwrap_or_default();
                    let hint = x
                        .suggestion
                        .as_ref()
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    format!("  {at}{}: {}{hint}", x.path, x.message)
                })
                .collect();
            bail!("{file} is not a valid policy:\n{}", lines.join("\n"));
        }
        Ok(serde_json::to_value(v)?)
    }
}

fn kv_args(items: &[String]) -> Result<Value> {
    let mut m = Map::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| usage(format!("{it:?}: arguments are KEY=VALUE")))?;
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
        CtlCmd::Stats {
            prometheus,
            tenants,
            tenant,
        } => {
            let mut v = json!({"format": if *prometheus { "prometheus" } else { "json" }});
            if let Some(w) = tenants {
                v["tenants"] = json!(w);
            }
            if let Some(t) = tenant {
                v["tenant"] = json!(t);
            }
            ("stats".into(), v)
        }
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
        CtlCmd::Explain {
            tenant,
            src,
            dst,
            proto,
            sport,
            dport,
            at,
        } => {
            let mut v = json!({"tenant": tenant, "src": src, "dst": dst, "proto": proto,
                "sport": sport, "dport": dport});
            put(&mut v, "at", at.clone());
            ("explain".into(), v)
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
    if let CtlCmd::Trace {
        count,
        out,
        timeout_ms,
        ..
    } = &a.cmd
    {
        eprintln!(
            "joypath ctl: tracing up to {count} frame(s) into {} for at most {:.1}s…",
            out.display(),
            *timeout_ms as f64 / 1e3
        );
    }
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
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"ok": false, "error": e}))?
            );
        } else {
            let code = serde_json::to_value(e.code)?;
            eprintln!(
                "joypath ctl: {op}: {}: {}",
                code.as_str().unwrap_or("error"),
                e.message
            );
            if let Some(issues) = e.details.as_ref().and_then(|d| d["issues"].as_array()) {
                for i in issues {
                    eprintln!(
                        "  {}: {}",
                        i["path"].as_str().unwrap_or(""),
                        i["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        return Ok(1);
    }
    let r = resp.result.unwrap_or(Value::Null);
    let code = match a.cmd {
        CtlCmd::Verify if r["ok"] != json!(true) => 3,
        CtlCmd::Trace { .. } if r["frames"].as_u64() == Some(0) => {
            eprintln!("joypath ctl: trace: nothing matched before the timeout");
            1
        }
        CtlCmd::Validate { .. } if r["valid"] == json!(false) => 1,
        CtlCmd::Fleet if !fleet_healthy(&r) => 4,
        _ => 0,
    };
    let printed = if a.json {
        (|| {
            outln!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        })()
    } else {
        human(&a.cmd, &r)
    };
    match printed {
        // A closed pipe cuts the output short but keeps the exit code.
        Err(e) if crate::is_broken_pipe(&e) => Ok(code),
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
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
            outln!(
                "policy version {}  digest {}  uptime {:.0}s  state {}",
                r["version"],
                r["digest"].as_str().unwrap_or("-"),
                r["uptime_s"].as_f64().unwrap_or(0.0),
                r["state_dir"].as_str().unwrap_or("")
            );
            let mut t = out::table(
                &["worker", "version", "lag", "frames", "pps"],
                &[0, 1, 2, 3, 4],
            );
            for w in r["workers"].as_array().into_iter().flatten() {
                t.add_row(vec![
                    s(&w["id"]),
                    s(&w["active_version"]),
                    s(&w["lag"]),
                    s(&w["frames"]),
                    format!("{:.0}", w["pps"].as_f64().unwrap_or(0.0)),
                ]);
            }
            out::print_table(&t)?;
        }
        CtlCmd::Get { .. } => {
            let doc: policy::Document = serde_json::from_value(r["document"].clone())
                .context("the gateway sent a document this client cannot read")?;
            outln!(
                "# joypath policy version {} ({} by uid {} at {})",
                r["version"],
                r["meta"]["op"].as_str().unwrap_or("?"),
                r["meta"]["uid"],
                r["meta"]["time"].as_str().unwrap_or("?")
            );
            out!("{}", toml::to_string(&doc)?);
        }
        CtlCmd::History { .. } => {
            let mut t = out::table(&["version", "time", "uid", "op", "comment"], &[0, 2]);
            for m in r.as_array().into_iter().flatten() {
                t.add_row(vec![
                    s(&m["version"]),
                    s(&m["time"]),
                    s(&m["uid"]),
                    s(&m["op"]),
                    m["comment"].as_str().unwrap_or("").to_string(),
                ]);
            }
            out::print_table(&t)?;
        }
        CtlCmd::Stats {
            prometheus: true, ..
        } => out!("{}", r["text"].as_str().unwrap_or("")),
        CtlCmd::Stats {
            prometheus: false, ..
        } => {
            let sum: datapath::counters::Summary = serde_json::from_value(r.clone())?;
            crate::print_table(&mut std::io::stdout().lock(), &sum)?;
            if let Some(rules) = r["rules"].as_object().filter(|m| !m.is_empty()) {
                outln!();
                let mut t = out::table(&["rule", "hits"], &[1]);
                for (name, n) in rules {
                    t.add_row(vec![name.clone(), s(n)]);
                }
                out::print_table(&t)?;
            }
            if let Some(d) = r["driver"].as_object().filter(|m| !m.is_empty()) {
                outln!();
                let mut t = out::table(&["driver counter", "value"], &[1]);
                for (k, v) in d {
                    t.add_row(vec![k.clone(), s(v)]);
                }
                out::print_table(&t)?;
            }
        }
        CtlCmd::Audit { dot: true, .. } => out!("{}", r["dot"].as_str().unwrap_or("")),
        CtlCmd::Audit { dot: false, .. } => {
            let mut t = out::table(&["from", "to", "proto", "ports", "rule"], &[]);
            for e in r["reach"].as_array().into_iter().flatten() {
                let rule = match &e["rule_name"] {
                    Value::String(n) => n.clone(),
                    _ => match e["rule"].as_u64() {
                        Some(i) => i.to_string(),
                        None => "default".into(),
                    },
                };
                let cond = if e["conditional"] == json!(true) {
                    " (cidr)"
                } else {
                    ""
                };
                t.add_row(vec![
                    s(&e["from"]),
                    s(&e["to"]),
                    s(&e["proto"]),
                    s(&e["ports"]),
                    format!("{rule}{cond}"),
                ]);
            }
            out::print_table(&t)?;
        }
        CtlCmd::Verify => {
            let ok = r["ok"] == json!(true);
            outln!(
                "{}: store version {} digest {}",
                if ok { "ok" } else { "DRIFT" },
                r["expected"]["version"],
                r["expected"]["digest"].as_str().unwrap_or("")
            );
            let mut t = out::table(&["worker", "version", "digest", "state"], &[0, 1]);
            for w in r["workers"].as_array().into_iter().flatten() {
                t.add_row(vec![
                    s(&w["id"]),
                    s(&w["version"]),
                    s(&w["digest"]),
                    if w["ok"] == json!(true) {
                        "ok".into()
                    } else {
                        "DIFFERS".into()
                    },
                ]);
            }
            out::print_table(&t)?;
        }
        CtlCmd::Explain { .. } => {
            outln!("verdict      {}", s(&r["verdict"]));
            if let Some(reason) = r["drop_reason"].as_str() {
                outln!("drop reason  {reason}");
            }
            outln!("rule         {}", s(&r["rule"]));
            outln!("from tenant  {}", s(&r["tenant"]));
            outln!("to tenant    {}", s(&r["dst_tenant"]));
            outln!("egress vtep  {}", s(&r["egress_vtep"]));
            outln!("egress vni   {}", s(&r["egress_vni"]));
            if let Some(m) = r["egress_identity"].as_str() {
                outln!("identity     {m}");
            }
            outln!("policy       version {}", r["version"]);
            if let Some(why) = r["why"].as_str() {
                outln!("why          {why}");
            }
        }
        CtlCmd::Trace { .. } => {
            outln!(
                "captured {} of {} frame(s) into {}",
                r["frames"],
                r["requested"],
                r["path"].as_str().unwrap_or("")
            );
            for c in r["comments"].as_array().into_iter().flatten() {
                outln!("  {}", c.as_str().unwrap_or(""));
            }
        }
        CtlCmd::Apply { .. } | CtlCmd::Rollback { .. } => {
            if r["unchanged"] == json!(true) {
                outln!(
                    "unchanged: the document is already version {} (digest {})",
                    r["version"],
                    r["digest"].as_str().unwrap_or("")
                );
            } else {
                outln!(
                    "committed version {} (digest {}, compiled in {:.1} ms)",
                    r["version"],
                    r["digest"].as_str().unwrap_or(""),
                    r["compile_ms"].as_f64().unwrap_or(0.0)
                );
            }
        }
        CtlCmd::Validate { .. } => {
            if r["valid"] == json!(true) {
                outln!(
                    "valid; changes:\n{}",
                    serde_json::to_string_pretty(&r["diff"])?
                );
            } else {
                outln!("invalid:");
                for i in r["issues"].as_array().into_iter().flatten() {
                    outln!(
                        "  {}: {}",
                        i["path"].as_str().unwrap_or(""),
                        i["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        _ => outln!("{}", serde_json::to_string_pretty(r)?),
    }
    Ok(())
}
