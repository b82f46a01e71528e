//! Tenant-scoped administration against a real `replay --serve` and real unprivileged users: a member
//! of a group mapped to tenant acme (`--tenant-admin GROUP=acme`) changes acme's endpoints and the
//! rules from acme (allow rules only within acme), and nothing else; the history records who
//! changed what.

use mgmt::Client;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_joypath");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcap-fixtures")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ensure_user(name: &str, group: &str) -> (u32, u32, u32) {
    let _ = Command::new("groupadd").arg("-f").arg(group).status();
    if !Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let ok = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "-G",
            ])
            .arg(group)
            .arg(name)
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd {name}");
    }
    let id = |flag: &str| -> u32 {
        String::from_utf8(
            Command::new("id")
                .arg(flag)
                .arg(name)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    let gid: u32 = String::from_utf8(
        Command::new("getent")
            .args(["group", group])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split(':')
    .nth(2)
    .unwrap()
    .parse()
    .unwrap();
    (id("-u"), id("-g"), gid)
}

/// `joypath ctl --json call OP ARGS…` as another user; (exit code, stdout + stderr).
fn call_as(ids: (u32, u32, u32), sock: &Path, op: &str, args: &[String]) -> (i32, String) {
    let (uid, gid, extra) = ids;
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl")
        .arg("--socket")
        .arg(sock)
        .arg("--json")
        .arg("call")
        .arg(op)
        .args(args);
    let groups = [extra];
    // SAFETY: setgroups/setgid/setuid are async-signal-safe and touch no memory of the parent; they
    // run in the forked child before exec, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn arg(k: &str, v: Value) -> String {
    format!("{k}={v}")
}

#[test]
fn a_tenant_administrator_changes_only_its_tenant() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates users: run as root (CI does)"
    );
    let admin = ensure_user("joypath-test-acme", "joypath-test-acme-admins");
    let dir = tempfile::Builder::new()
        .prefix("jp-tenant")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("s.sock");
    let _g = Killed(
        Command::new(BIN)
            .args(["replay", "--serve", "--pps", "1000", "--config"])
            .arg(fixtures().join("fixtures.toml"))
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args([
                "--socket-mode",
                "666",
                "--tenant-admin",
                "joypath-test-acme-admins=acme",
            ])
            .arg(fixtures().join("verdicts.pcap"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "gateway did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the other user reach the socket file; the credentials check is what is tested.
    let mut p = dir.path().to_path_buf();
    loop {
        let _ = Command::new("chmod").arg("o+x").arg(&p).status();
        if !p.pop() || p.as_os_str().len() <= 1 {
            break;
        }
    }
    let ep = |tenant: &str, ip: &str| {
        arg(
            "endpoint",
            json!({"tenant": tenant, "ip": ip, "mac": "02:00:00:00:0a:99", "vtep": "198.18.0.1", "vni": 100}),
        )
    };
    // Allowed: acme's own endpoint and a rule from acme.
    let (code, out) = call_as(admin, &sock, "endpoint.add", &[ep("acme", "198.19.0.99")]);
    assert_eq!(code, 0, "{out}");
    let rule = |from: &str, action: &str| {
        arg(
            "rule",
            json!({"from": from, "to": "globex", "proto": "tcp", "ports": "8080", "action": action}),
        )
    };
    // (A deny rule from acme may be to anyone; an allow into globex is globex's to give.)
    let (code, out) = call_as(admin, &sock, "rule.add", &[rule("acme", "deny")]);
    assert_eq!(code, 0, "{out}");
    // Refused: another tenant's endpoint, a rule from another tenant, an allow into another
    // tenant, whole-policy and tenant ops.
    for (op, args) in [
        ("endpoint.add", vec![ep("globex", "198.19.0.98")]),
        ("rule.add", vec![rule("globex", "allow")]),
        ("rule.add", vec![rule("*", "allow")]),
        ("rule.add", vec![rule("acme", "allow")]),
        (
            "tenant.add",
            vec![arg("tenant", json!({"name": "evil", "id": 999}))],
        ),
        ("rule.remove", vec![arg("index", json!(9))]),
        (
            "rule.update",
            vec![arg("index", json!(8)), rule("acme", "deny")],
        ),
    ] {
        let (code, out) = call_as(admin, &sock, op, &args);
        assert_eq!(code, 1, "{op} {args:?} must be refused: {out}");
        assert!(
            out.contains("Forbidden") || out.contains("forbidden"),
            "{op}: {out}"
        );
    }
    // policy.edit: all or nothing, each edit checked.
    let edits = json!([
        {"op": "endpoint.add", "args": {"endpoint": {"tenant": "acme", "ip": "198.19.0.97", "mac": "02:00:00:00:0a:97", "vtep": "198.18.0.1", "vni": 100}}},
        {"op": "endpoint.remove", "args": {"tenant": "globex", "ip": "198.19.1.1"}}
    ]);
    let (code, out) = call_as(admin, &sock, "policy.edit", &[arg("edits", edits)]);
    assert_eq!(code, 1, "{out}");
    // Reading is allowed.
    let (code, out) = call_as(admin, &sock, "status", &[]);
    assert_eq!(code, 0, "{out}");

    // The history says who changed what; only the two allowed changes were made.
    let mut c = Client::connect(&sock).unwrap();
    let h = c
        .call("history", json!({"limit": 10}))
        .unwrap()
        .result
        .unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h[0]["version"], 3, "{h:?}");
    assert_eq!(h[0]["op"], "rule.add");
    assert_eq!(h[0]["uid"], admin.0);
    assert_eq!(h[0]["user"], "joypath-test-acme");
    assert_eq!(h[0]["tenants"], json!(["acme"]));
    assert_eq!(h[1]["op"], "endpoint.add");
    let doc = c.call("policy.get", json!({})).unwrap().result.unwrap()["document"].clone();
    assert!(doc["endpoint"].to_string().contains("198.19.0.99"));
    assert!(!doc["endpoint"].to_string().contains("198.19.0.98"));
    assert!(!doc["endpoint"].to_string().contains("198.19.0.97"));
}
