//! The command line as an operator uses it: every printing command into a pipe closed early (no
//! panic, exit 0), global flags anywhere, `ctl get > f; ctl apply f`, error codes and exit codes as
//! documented, `check` with every problem in one pass, and logs without ANSI off a terminal.

mod common;

use common::{fixtures, wait_for_socket, Gateway, BIN};
use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};

fn cfg() -> String {
    fixtures().join("fixtures.toml").display().to_string()
}

fn cap(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A `replay --serve` gateway in a temporary directory, its stderr a pipe, killed on drop.
fn start(extra: &[&str]) -> Gateway {
    Gateway::in_temp("jp-cli").args(extra).pipe_stderr().start()
}

/// Runs joypath with stdout a pipe whose reading end is already closed.
fn into_closed_pipe(args: &[String]) -> Output {
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn assert_quiet_exit(args: &[String], want: i32) {
    let o = into_closed_pipe(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn offline_commands_into_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display().to_string();
    let (c, v) = (cfg(), cap("verdicts.pcap"));
    for args in [
        vec!["replay", "--config", &c, &v],
        vec!["replay", "--config", &c, "--json", &v],
        vec!["replay", "--config", &c, "--frames", &v],
        vec!["audit", "--config", &c],
        vec!["audit", "--config", &c, "--dot"],
        vec!["check", "--config", &c],
        vec!["check", "--config", &c, "--json"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["man", &t],
        vec!["--help"],
        vec!["ctl", "--help"],
    ] {
        assert_quiet_exit(&strings(&args), 0);
    }
    let synth = format!("{t}/synth");
    let args = strings(&[
        "synth",
        "--tenants",
        "4",
        "--endpoints",
        "8",
        "--rules",
        "4",
        "--flows",
        "4",
        "--frames",
        "10",
        "--out",
        &synth,
    ]);
    assert_quiet_exit(&args, 0);
    // A broken config still exits 1 into a closed pipe: the pipe does not hide the failure.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[gateway]\nunderlay_ip = \"x\"\n").unwrap();
    assert_quiet_exit(&strings(&["check", "--config", bad.to_str().unwrap()]), 1);
}

#[test]
fn ctl_commands_into_a_closed_pipe() {
    let g = start(&[]);
    let s = g.socket().display().to_string();
    let file = g.dir().join("p.toml");
    std::fs::copy(cfg(), &file).unwrap();
    let f = file.display().to_string();
    for args in [
        vec!["status"],
        vec!["get"],
        vec!["get", "--json"],
        vec!["history"],
        vec!["audit"],
        vec!["audit", "--dot"],
        vec!["verify"],
        vec!["stats"],
        vec!["stats", "--prometheus"],
        vec!["validate", &f],
        vec![
            "explain",
            "--tenant",
            "acme",
            "--src",
            "198.19.0.1",
            "--dst",
            "198.19.0.2",
        ],
    ] {
        let mut a = strings(&["ctl", "--socket", &s]);
        a.extend(strings(&args));
        assert_quiet_exit(&a, 0);
    }
}

#[test]
fn get_then_apply_round_trips_and_errors_are_as_documented() {
    let g = start(&[]);
    // Human `get` is TOML that `apply` takes back; the same document makes no new version.
    let o = g.ctl(&["get"]);
    assert!(o.status.success());
    let f = g.dir().join("got");
    std::fs::write(&f, &o.stdout).unwrap();
    let o = g.ctl(&["apply", f.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["unchanged"], true, "{r}");
    // `get --json` output is accepted too (the document is taken out of it).
    let o = g.ctl(&["get", "--json"]);
    let fj = g.dir().join("got.json");
    std::fs::write(&fj, &o.stdout).unwrap();
    let o = g.ctl(&["apply", fj.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A refused request: exit 1, the code in snake_case as the docs spell it.
    let o = g.ctl(&["call", "rollback", "version=\"x\""]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad_args"), "{err}");
    assert!(!err.contains("BadArgs"), "{err}");

    // Usage errors exit 2: a bad KEY=VALUE, a missing file, an unknown flag.
    assert_eq!(g.ctl(&["call", "status", "novalue"]).status.code(), Some(2));
    assert_eq!(
        g.ctl(&["apply", "/nonexistent/p.toml"]).status.code(),
        Some(2)
    );
    assert_eq!(g.ctl(&["status", "--bogus"]).status.code(), Some(2));

    // `--json` after the subcommand.
    let o = g.ctl(&["stats", "--json"]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["frames"].is_u64(), "{v}");
}

#[test]
fn tables_are_aligned() {
    let g = start(&["--workers", "2"]);
    let o = g.ctl(&["status"]);
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{text}");
    // Right-aligned numeric columns: every row ends at the same column.
    let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
    assert!(ends.iter().all(|e| *e == ends[0]), "{text}");
    assert!(lines[0].contains("worker") && lines[0].contains("version"));
}

#[test]
fn check_reports_every_problem_with_suggestions_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(cfg())
        .unwrap()
        .replacen("action = \"allow\"", "action = \"alow\"", 1)
        .replacen("identity = \"gbp\"", "identity = \"gpb\"", 1)
        .replacen("udp_port = 4789", "udp_port = \"4789\"", 1);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let o = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let issues = v["issues"].as_array().unwrap();
    let sugg: Vec<&str> = issues
        .iter()
        .filter_map(|i| i["suggestion"].as_str())
        .collect();
    assert!(sugg.contains(&"allow") && sugg.contains(&"gbp"), "{v}");
    assert!(issues.iter().all(|i| i["line"].is_u64()), "{v}");
    let human = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let h = String::from_utf8(human.stdout).unwrap();
    assert!(h.contains("did you mean \"allow\"?"), "{h}");
    assert!(!h.contains("u16"), "{h}");
}

/// `[[rule]] owner` is a key `check` knows (a string); an owner that is not the rule's `from` is a
/// problem on its line, saying both.
#[test]
fn check_knows_a_rules_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(cfg()).unwrap();
    let with_owner = |owner: &str| {
        let path = tmp.path().join("owner.toml");
        let text = format!(
            "{base}\n[[rule]]\nname = \"owned\"\nfrom = \"acme\"\nto = \"globex\"\naction = \"deny\"\nowner = {owner}\n"
        );
        std::fs::write(&path, &text).unwrap();
        let line = text.lines().count();
        let o = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8(o.stdout).unwrap(), line)
    };
    let (code, out, _) = with_owner("\"acme\"");
    assert_eq!(code, Some(0), "{out}");
    let (code, out, line) = with_owner("\"globex\"");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(":{line}: rule["))
            && out.contains(".owner: owner \"globex\" is not the rule's from tenant \"acme\""),
        "{out}"
    );
    let (code, out, _) = with_owner("7");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("expected a string"), "{out}");
}

#[test]
fn logs_have_no_ansi_off_a_terminal_and_json_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    for (fmt, json) in [("text", false), ("json", true)] {
        let state = tmp.path().join(fmt);
        let child = Command::new(BIN)
            .args(["replay", "--serve", "--config", &cfg(), "--log-format", fmt])
            .arg("--socket")
            .arg(state.join("s.sock"))
            .arg("--state-dir")
            .arg(&state)
            .arg(cap("verdicts.pcap"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_socket(&state.join("s.sock"));
        // SIGTERM: a clean stop, so stderr ends.
        terminate(&child);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains('\x1b'), "{fmt}: ANSI in {err}");
        let logs: Vec<&str> = err.lines().filter(|l| l.contains("listening")).collect();
        assert_eq!(logs.len(), 1, "{fmt}: {err}");
        if json {
            let v: Value = serde_json::from_str(logs[0]).unwrap();
            assert_eq!(v["level"], "INFO");
        } else {
            assert!(serde_json::from_str::<Value>(logs[0]).is_err());
        }
    }
}

fn terminate(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn trace_names_rules_and_egress_with_ns_timestamps_and_fails_when_empty() {
    let g = start(&[]);
    let out = g.dir().join("t.pcapng");
    let o = g.ctl(&[
        "trace",
        "--count",
        "4",
        "--outcome",
        "forward",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("captured 4 of 4"), "{text}");
    assert!(text.contains("egress_vtep=198.18."), "{text}");
    assert!(text.contains("interface="), "{text}");
    let frames = driver::replay::read_capture(&out).unwrap();
    assert_eq!(frames.len(), 4);
    assert!(
        frames.iter().any(|f| f.ts_ns % 1_000_000_000 != 0),
        "whole-second timestamps"
    );
    // Rules by name in the comments.
    let o = g.ctl(&[
        "trace",
        "--count",
        "1",
        "--tenant",
        "acme",
        "--outcome",
        "policy_denied",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("rule="), "{text}");
    assert!(!text.contains("rule=#"), "{text}");
    // Nothing matches (contractor sends nothing): a non-zero exit.
    let o = g.ctl(&[
        "trace",
        "--count",
        "1",
        "--tenant",
        "contractor",
        "--timeout-ms",
        "300",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing matched"));
}

#[test]
fn ctl_apply_reports_type_errors_like_check() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(cfg())
        .unwrap()
        .replacen("proto = \"tcp\"", "proto = \"tpc\"", 1)
        .replacen("vni = 100", "vni = \"100\"", 1);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    for sub in ["apply", "validate"] {
        let o = Command::new(BIN)
            .args(["ctl", sub])
            .arg(&bad)
            .arg("--socket")
            .arg(tmp.path().join("none.sock"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("did you mean \"tcp\"?"), "{err}");
        assert!(err.contains("segment[0].vni"), "{err}");
        assert!(
            !err.contains("u32") && !err.contains("invalid type"),
            "{err}"
        );
    }
}

#[test]
fn one_log_line_per_change() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s.sock");
    let child = Command::new(BIN)
        .args([
            "replay",
            "--serve",
            "--config",
            &cfg(),
            "--log-format",
            "json",
        ])
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg(cap("verdicts.pcap"))
        .env("JOYPATH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&sock);
    let mut c = mgmt::Client::connect(&sock).unwrap();
    let r = c
        .call(
            "tenant.add",
            serde_json::json!({"tenant": {"name": "newco", "id": 999}}),
        )
        .unwrap();
    assert!(r.ok);
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let about_v2: Vec<&str> = err
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| v["fields"]["version"] == 2)
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(about_v2.len(), 1, "{err}");
    assert!(about_v2[0].contains("tenant.add"), "{err}");
}
