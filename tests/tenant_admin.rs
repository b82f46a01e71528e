//! Tenant-scoped administration against a real `replay --serve` and real unprivileged users: a member
//! of a group mapped to tenant acme (`--tenant-admin GROUP=acme`) changes acme's endpoints and the
//! rules from acme (allow rules only within acme), and nothing else; the history records who
//! changed what.

mod common;

use common::{ctl_as, ensure_user, euid, group_id, open_to_others, Gateway};
use mgmt::Client;
use serde_json::{json, Value};
use std::path::Path;

/// `joypath ctl --json call OP ARGS…` as another user; (exit code, stdout + stderr).
fn call_as(ids: (u32, u32, u32), sock: &Path, op: &str, args: &[String]) -> (i32, String) {
    let (uid, gid, extra) = ids;
    let mut all = vec!["call", op];
    all.extend(args.iter().map(String::as_str));
    let (code, out, err) = ctl_as(uid, gid, &[extra], sock, &all);
    (code, out + &err)
}

fn arg(k: &str, v: Value) -> String {
    format!("{k}={v}")
}

#[test]
fn a_tenant_administrator_changes_only_its_tenant() {
    assert_eq!(euid(), 0, "this test creates users: run as root (CI does)");
    let admin = {
        let (uid, gid) = ensure_user("joypath-test-acme", Some("joypath-test-acme-admins"));
        (uid, gid, group_id("joypath-test-acme-admins"))
    };
    let g = Gateway::in_temp("jp-tenant")
        .pps(1000)
        .args(&[
            "--socket-mode",
            "666",
            "--tenant-admin",
            "joypath-test-acme-admins=acme",
        ])
        .start();
    let sock = g.socket();
    // Let the other user reach the socket file; the credentials check is what is tested.
    open_to_others(g.dir());
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
