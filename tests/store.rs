//! The local store keeps its promises, against a real `joypath replay --serve` process: no panic on
//! any input, one process per state directory, a truncated newest version never skipped silently nor
//! its number reused, persist then publish, a socket path that is not a socket never deleted, SIGHUP
//! never silently undoing socket changes, and one-rule changes written as small deltas.

mod common;

use common::{err_message, fixtures, ok, serve_command, wait_workers_on, Gateway, BIN};
use mgmt::{Client, ErrorCode};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmp() -> tempfile::TempDir {
    common::tmp("jp-store")
}

fn config() -> PathBuf {
    fixtures().join("fixtures.toml")
}

#[test]
fn malformed_timestamps_are_errors_and_the_server_keeps_serving() {
    let dir = tmp();
    let g = Gateway::at(dir.path()).start();
    let mut c = g.client();
    for bad in [
        "2026-01-01T00:00:00+€00",
        "2026-01-01T00:00:0€+00:00",
        "2026-01-01T00:00:00.€Z",
    ] {
        let rule = json!({"from": "acme", "to": "globex", "action": "allow", "not_before": bad});
        let (code, msg) = err_message(c.call("rule.add", json!({"rule": rule})).unwrap());
        assert_eq!(code, ErrorCode::InvalidPolicy, "{msg}");
        assert!(msg.contains("RFC 3339"), "{msg}");
        // Through the whole-document path too.
        let mut doc = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
        doc["rule"][0]["not_after"] = json!(bad);
        let (code, _) = err_message(c.call("policy.apply", json!({"document": doc})).unwrap());
        assert_eq!(code, ErrorCode::InvalidPolicy);
        // Every later request is served, status included.
        assert_eq!(ok(c.call("status", json!({})).unwrap())["version"], 1);
    }
    let fresh = g.client().call("status", json!({})).unwrap();
    assert!(fresh.ok);

    // `joypath check` says what is wrong, no panic.
    let file = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(config()).unwrap()
        + "\n[[rule]]\nfrom = \"acme\"\nto = \"globex\"\naction = \"allow\"\nnot_before = \"2026-01-01T00:00:00+€00\"\n";
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    // `check` lists the problems on stdout (issue 10), errors of its own on stderr.
    let stderr =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not_before"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_second_process_on_the_state_directory_is_refused() {
    let dir = tmp();
    let g = Gateway::at(dir.path()).start();
    let other = tmp();
    // Same state directory, another socket.
    let out = Command::new(BIN)
        .args(["replay", "--serve", "--config"])
        .arg(config())
        .arg("--socket")
        .arg(other.path().join("s.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg(fixtures().join("verdicts.pcap"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another joypath process")
            && stderr.contains(&format!("pid {}", g.child.id())),
        "{stderr}"
    );
    // The first one is unharmed.
    assert_eq!(
        ok(g.client().call("status", json!({})).unwrap())["version"],
        1
    );
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tmp();
    let victim = dir.path().join("s.sock");
    std::fs::write(&victim, b"not a socket").unwrap();
    let out = serve_command(dir.path(), &config(), 20000, &[])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"not a socket");
    // A stale socket (no one serving it) is replaced.
    std::fs::remove_file(&victim).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&victim).unwrap());
    let g = Gateway::at(dir.path()).start();
    assert!(g.client().call("status", json!({})).unwrap().ok);
}

#[test]
fn a_truncated_newest_version_is_quarantined_never_reused() {
    let dir = tmp();
    let rule = json!({"from": "acme", "to": "globex", "proto": "tcp", "ports": "22", "action": "deny", "priority": 7});
    {
        let g = Gateway::at(dir.path()).start();
        let mut c = g.client();
        assert_eq!(
            ok(c.call("rule.add", json!({"rule": rule})).unwrap())["version"],
            2
        );
    }
    let versions = dir.path().join("state/versions");
    let newest = std::fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("v00000000000000000002"))
        .expect("version 2's file");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let g = Gateway::at(dir.path()).start();
    let mut c = g.client();
    let s = ok(c.call("status", json!({})).unwrap());
    assert_eq!(s["version"], 1);
    let q = s["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 1, "{s}");
    assert!(q[0].as_str().unwrap().ends_with(".corrupt"));
    // The next change is version 3, never a second version 2.
    let other = json!({"from": "globex", "to": "acme", "action": "deny"});
    assert_eq!(
        ok(c.call("rule.add", json!({"rule": other})).unwrap())["version"],
        3
    );
    let (code, _) = err_message(c.call("policy.get", json!({"version": 2})).unwrap());
    assert_eq!(code, ErrorCode::NotFound);
}

#[test]
fn a_change_that_cannot_be_persisted_never_runs() {
    let dir = tmp();
    let g = Gateway::at(dir.path()).start();
    let mut c = g.client();
    wait_workers_on(&mut c, 1);
    // Make persisting impossible (works as root too): the versions directory becomes a file.
    let versions = dir.path().join("state/versions");
    let aside = dir.path().join("state/versions.aside");
    std::fs::rename(&versions, &aside).unwrap();
    std::fs::write(&versions, b"").unwrap();
    let rule = json!({"from": "acme", "to": "globex", "action": "deny", "priority": 99});
    let (code, _) = err_message(c.call("rule.add", json!({"rule": rule})).unwrap());
    assert_eq!(code, ErrorCode::Storage);
    let (code, _) = err_message(
        c.call("tenant.add", json!({"tenant": {"name": "new", "id": 77}}))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::Storage);
    // Give workers time to pick up anything wrongly published: they must stay on version 1.
    std::thread::sleep(Duration::from_millis(300));
    let s = ok(c.call("status", json!({})).unwrap());
    assert_eq!(s["version"], 1);
    for w in s["workers"].as_array().unwrap() {
        assert_eq!(w["active_version"], 1, "{s}");
    }
    std::fs::remove_file(&versions).unwrap();
    std::fs::rename(&aside, &versions).unwrap();
    assert_eq!(
        ok(c.call("rule.add", json!({"rule": rule})).unwrap())["version"],
        2
    );
    wait_workers_on(&mut c, 2);
}

#[test]
fn one_rule_changes_are_written_as_small_deltas() {
    let dir = tmp();
    let g = Gateway::at(dir.path()).start();
    let mut c = g.client();
    let rule =
        json!({"from": "acme", "to": "globex", "proto": "udp", "ports": "53", "action": "allow"});
    let r = ok(c
        .call("rule.add", json!({"rule": rule, "comment": "dns"}))
        .unwrap());
    assert_eq!(r["version"], 2);
    let delta = dir
        .path()
        .join("state/versions/v00000000000000000002.delta.json");
    let whole = dir.path().join("state/versions/v00000000000000000001.json");
    assert!(delta.exists(), "version 2 is a delta");
    assert!(std::fs::metadata(&delta).unwrap().len() < 1024);
    assert!(std::fs::metadata(&whole).unwrap().len() > std::fs::metadata(&delta).unwrap().len());
    // After a restart the delta rebuilds the same version.
    let before = ok(c.call("policy.get", json!({})).unwrap());
    drop(c);
    drop(g);
    let g = Gateway::at(dir.path()).start();
    let after = ok(g.client().call("policy.get", json!({})).unwrap());
    assert_eq!(after["version"], 2);
    assert_eq!(after["document"], before["document"]);
    assert_eq!(after["meta"]["comment"], "dns");
    assert_eq!(after["meta"]["digest"], before["meta"]["digest"]);
}

#[test]
fn sighup_applies_the_file_or_refuses_to_undo_socket_changes() {
    let dir = tmp();
    let cfg = dir.path().join("gw.toml");
    let original = std::fs::read_to_string(config()).unwrap();
    std::fs::write(&cfg, &original).unwrap();
    let g = Gateway::at(dir.path()).config(&cfg).start();
    let mut c = g.client();
    let wait_version = |c: &mut Client, v: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = ok(c.call("status", json!({})).unwrap());
            if s["version"] == json!(v) {
                return;
            }
            assert!(Instant::now() < deadline, "never reached version {v}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // 1. Only the file so far: SIGHUP applies the edited file as version 2.
    let extra = "\n[[rule]]\nfrom = \"acme\"\nto = \"globex\"\nproto = \"tcp\"\nports = \"8443\"\naction = \"allow\"\n";
    std::fs::write(&cfg, original.clone() + extra).unwrap();
    g.signal(libc::SIGHUP);
    wait_version(&mut c, 2);
    let h = ok(c.call("history", json!({"limit": 1})).unwrap());
    assert_eq!(h[0]["op"], "sighup");
    // 2. A change through the socket, then SIGHUP with the file unchanged: refused, version kept.
    let sock_rule = json!({"from": "globex", "to": "acme", "action": "deny", "priority": 5});
    assert_eq!(
        ok(c.call("rule.add", json!({"rule": sock_rule})).unwrap())["version"],
        3
    );
    g.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let got = ok(c.call("policy.get", json!({})).unwrap());
    assert_eq!(
        got["version"], 3,
        "SIGHUP must not undo the socket's change"
    );
    assert!(got["document"]["rule"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["priority"] == 5 && r["from"] == "globex"));
    // The process is still serving (SIGHUP never kills it).
    assert!(g.client().call("status", json!({})).unwrap().ok);
}
