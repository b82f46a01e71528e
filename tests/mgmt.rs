//! The management plane over a real socket, against a real `joypath replay --serve` process:
//! every operation, the error cases, peer-credential access with real unprivileged users, concurrent
//! clients, rollback, and crash safety under SIGKILL during a stream of applies.

mod common;

use common::{
    ctl_as, ensure_user, err, err_message, euid, group_id, ok, open_to_others, wait_workers_on,
};
use common::{fixtures, tmp, Gateway, BIN};
use mgmt::{Client, ErrorCode};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// A `replay --serve` gateway in a temporary directory, its stdout a pipe, killed on drop.
fn start(extra: &[&str]) -> Gateway {
    Gateway::in_temp("jp-mgmt")
        .args(extra)
        .pipe_stdout()
        .start()
}

/// The same in `dir` (as [`Gateway::kill`] left it).
fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Gateway {
    Gateway::in_dir(dir).args(extra).pipe_stdout().start()
}

#[test]
fn every_operation_over_the_socket() {
    let g = start(&["--workers", "2"]);
    let mut c = g.client();
    let s = ok(c.call("status", json!({})).unwrap());
    assert_eq!(s["version"], 1);
    assert_eq!(s["workers"].as_array().unwrap().len(), 2);
    wait_workers_on(&mut c, 1);

    let got = ok(c.call("policy.get", json!({})).unwrap());
    assert_eq!(got["version"], 1);
    assert_eq!(got["meta"]["op"], "config");
    let mut doc = got["document"].clone();
    assert_eq!(doc["gateway"]["underlay_ip"], "198.18.0.254");

    // validate: a diff when valid, the issues when not.
    doc["tenant"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "newco", "id": 900}));
    let v = ok(c.call("policy.validate", json!({"document": doc})).unwrap());
    assert_eq!(v["valid"], true);
    assert_eq!(v["diff"]["tenants"]["added"][0]["name"], "newco");
    let mut bad = doc.clone();
    bad["endpoint"][0]["tenant"] = json!("nobody");
    let v = ok(c.call("policy.validate", json!({"document": bad})).unwrap());
    assert_eq!(v["valid"], false);
    assert_eq!(v["issues"][0]["path"], "endpoint[0].tenant");
    assert_eq!(
        ok(c.call("status", json!({})).unwrap())["version"],
        1,
        "validate changes nothing"
    );

    // apply, then the edits; each is a new version the workers pick up.
    let r = ok(c
        .call(
            "policy.apply",
            json!({"document": doc, "expected_version": 1, "comment": "onboard newco"}),
        )
        .unwrap());
    assert_eq!(r["version"], 2);
    wait_workers_on(&mut c, 2);
    let edits = [
        (
            "segment.add",
            json!({"segment": {"vni": 4000, "identity": "vni", "tenant": "newco"}}),
        ),
        (
            "endpoint.add",
            json!({"endpoint": {"tenant": "newco", "ip": "198.19.90.1", "mac": "02:00:00:00:90:01", "vtep": "198.18.0.1", "vni": 4000}}),
        ),
        (
            "endpoint.update",
            json!({"endpoint": {"tenant": "newco", "ip": "198.19.90.1", "mac": "02:00:00:00:90:02", "vtep": "198.18.0.1", "vni": 4000}}),
        ),
        (
            "rule.add",
            json!({"rule": {"from": "newco", "to": "acme", "proto": "tcp", "ports": "443", "action": "allow", "priority": 10}}),
        ),
        (
            "rule.update",
            json!({"index": 21, "rule": {"from": "newco", "to": "acme", "proto": "tcp", "ports": "8443", "action": "allow", "priority": 10}}),
        ),
        (
            "tenant.update",
            json!({"tenant": {"name": "newco", "id": 901}}),
        ),
        (
            "segment.update",
            json!({"segment": {"vni": 4000, "identity": "vni", "tenant": "newco"}}),
        ),
    ];
    let mut version = 2;
    for (op, args) in edits {
        let r = ok(c.call(op, args).unwrap());
        if op == "segment.update" {
            // The segment as it already is: no new version.
            assert_eq!(r["unchanged"], true, "{op}: {r}");
        } else {
            version += 1;
        }
        assert_eq!(r["version"], version, "{op}");
    }
    let d = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
    assert_eq!(
        d["endpoint"].as_array().unwrap().last().unwrap()["mac"],
        "02:00:00:00:90:02"
    );
    assert_eq!(d["rule"][21]["ports"], "8443");
    assert_eq!(d["tenant"].as_array().unwrap().last().unwrap()["id"], 901);

    // audit: newco may reach acme on tcp/8443 by rule 21; and as DOT.
    let a = ok(c
        .call("audit.reachability", json!({"at": "2026-06-01T00:00:00Z"}))
        .unwrap());
    assert!(
        a["reach"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["from"] == "newco"
                && e["to"] == "acme"
                && e["proto"] == "tcp"
                && e["ports"] == "8443"
                && e["rule"] == 21),
        "{a}"
    );
    let dot = ok(c
        .call("audit.reachability", json!({"format": "dot"}))
        .unwrap());
    assert!(dot["dot"].as_str().unwrap().starts_with("digraph"));

    // verify: every worker on the store's version and digest.
    wait_workers_on(&mut c, version);
    let v = ok(c.call("audit.verify", json!({})).unwrap());
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["expected"]["version"], version);

    // removes, with and without cascade
    assert_eq!(
        err(c.call("tenant.remove", json!({"name": "newco"})).unwrap()),
        ErrorCode::InvalidPolicy
    );
    ok(c.call("rule.remove", json!({"index": 21})).unwrap());
    ok(c.call(
        "endpoint.remove",
        json!({"tenant": "newco", "ip": "198.19.90.1"}),
    )
    .unwrap());
    ok(
        c.call("tenant.remove", json!({"name": "newco", "cascade": true}))
            .unwrap(),
    );
    version += 3;
    let d = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
    assert!(!d["tenant"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "newco"));
    assert!(!d["segment"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["vni"] == 4000));

    // A tenant and a segment onboarded, updated and removed, each made in place
    // (`Table::with_addition`, `with_tenant_edit`, `with_segment_edit`): every worker runs the
    // store's version with the store's digest.
    for (op, args) in [
        ("tenant.add", json!({"tenant": {"name": "solo", "id": 960}})),
        (
            "tenant.update",
            json!({"tenant": {"name": "solo", "id": 961, "vteps": ["198.18.0.1"]}}),
        ),
        (
            "segment.add",
            json!({"segment": {"vni": 4100, "identity": "vni", "tenant": "solo"}}),
        ),
        (
            "segment.update",
            json!({"segment": {"vni": 4100, "identity": "gbp"}}),
        ),
        ("segment.remove", json!({"vni": 4100})),
        ("tenant.remove", json!({"name": "solo"})),
    ] {
        let r = ok(c.call(op, args).unwrap());
        version += 1;
        assert_eq!(r["version"], version, "{op}");
        wait_workers_on(&mut c, version);
        let v = ok(c.call("audit.verify", json!({})).unwrap());
        assert_eq!(v["ok"], true, "{op}: {v}");
    }

    // Rules inserted mid-list and removed, by name and by index, each made in place
    // (`Table::with_rule_change`, which moves every later rule's index): the store's digest is the
    // one the whole document compiles to, and every worker runs it.
    let rules_before = ok(c.call("policy.get", json!({})).unwrap())["document"]["rule"].clone();
    for (op, args) in [
        (
            "rule.add",
            json!({"index": 1, "rule": {"name": "mid-one", "from": "acme", "to": "globex", "proto": "tcp", "ports": "8443", "action": "allow"}}),
        ),
        (
            "rule.add",
            json!({"index": 0, "rule": {"from": "acme", "to": "globex", "proto": "udp", "ports": "53", "action": "deny", "priority": 3}}),
        ),
        ("rule.remove", json!({"name": "mid-one"})),
        ("rule.remove", json!({"index": 0})),
    ] {
        let r = ok(c.call(op, args).unwrap());
        version += 1;
        assert_eq!(r["version"], version, "{op}");
        let got = ok(c.call("policy.get", json!({})).unwrap());
        let d: policy::Document = serde_json::from_value(got["document"].clone()).unwrap();
        assert_eq!(
            r["digest"].as_str().unwrap(),
            format!("{:016x}", policy::digest(&d)),
            "{op}: the in-place digest is the whole document's"
        );
        wait_workers_on(&mut c, version);
        let v = ok(c.call("audit.verify", json!({})).unwrap());
        assert_eq!(v["ok"], true, "{op}: {v}");
    }
    let rules = ok(c.call("policy.get", json!({})).unwrap())["document"]["rule"].clone();
    assert_eq!(rules, rules_before, "both insertions removed again");

    // several edits as one version, all or nothing
    let bad = json!({"edits": [
        {"op": "tenant.add", "args": {"tenant": {"name": "batch", "id": 950}}},
        {"op": "endpoint.add", "args": {"endpoint": {"tenant": "batch", "ip": "198.19.95.1", "mac": "02:00:00:00:95:01", "vtep": "198.18.0.1", "vni": 4999}}}
    ]});
    assert_eq!(
        err(c.call("policy.edit", bad).unwrap()),
        ErrorCode::InvalidPolicy,
        "VNI 4999 is no segment"
    );
    let good = json!({"comment": "onboard batch", "edits": [
        {"op": "tenant.add", "args": {"tenant": {"name": "batch", "id": 950}}},
        {"op": "segment.add", "args": {"segment": {"vni": 4999, "identity": "vni", "tenant": "batch"}}},
        {"op": "endpoint.add", "args": {"endpoint": {"tenant": "batch", "ip": "198.19.95.1", "mac": "02:00:00:00:95:01", "vtep": "198.18.0.1", "vni": 4999}}}
    ]});
    version += 1;
    assert_eq!(ok(c.call("policy.edit", good).unwrap())["version"], version);
    let d = ok(c.call("policy.get", json!({})).unwrap());
    assert_eq!(d["meta"]["comment"], "onboard batch");
    assert!(d["document"]["endpoint"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ip"] == "198.19.95.1"));

    // history and rollback (itself a new version)
    let h = ok(c.call("history", json!({"limit": 3})).unwrap());
    assert_eq!(h.as_array().unwrap().len(), 3);
    assert_eq!(h[0]["version"], version);
    assert_eq!(h[0]["op"], "policy.edit");
    let r = ok(c.call("rollback", json!({"version": 2})).unwrap());
    assert_eq!(r["version"], version + 1);
    let d = ok(c.call("policy.get", json!({})).unwrap());
    assert_eq!(d["meta"]["op"], "rollback");
    assert_eq!(
        d["document"],
        ok(c.call("policy.get", json!({"version": 2})).unwrap())["document"]
    );
    assert_eq!(
        err(c.call("rollback", json!({"version": 999})).unwrap()),
        ErrorCode::NotFound
    );

    // stats, JSON and Prometheus
    let s = ok(c.call("stats", json!({})).unwrap());
    let frames = s["frames"].as_u64().unwrap();
    assert!(frames > 0);
    let dropped: u64 = s["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        s["forwarded"].as_u64().unwrap() + s["arp_replied"].as_u64().unwrap() + dropped,
        frames
    );
    assert!(s["tenants"]["acme"]["frames_in"].as_u64().unwrap() > 0);
    let p = ok(c.call("stats", json!({"format": "prometheus"})).unwrap());
    let text = p["text"].as_str().unwrap();
    assert!(text.contains("# TYPE joypath_frames_total counter"));
    assert!(text.contains("joypath_dropped_total{reason=\"policy_denied\"}"));
    assert!(text.contains("joypath_tenant_denied_total{tenant=\"acme\"}"));

    // trace: 5 of acme's denied frames into a pcapng with comments
    let path = g.dir().join("trace.pcapng");
    let t = ok(c
        .call(
            "trace",
            json!({"count": 5, "tenant": "acme", "outcome": "policy_denied", "path": path}),
        )
        .unwrap());
    assert_eq!(t["frames"], 5, "{t}");
    let frames = driver::capture::read_capture(&path).unwrap();
    assert_eq!(frames.len(), 5);
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(
        text.matches("tenant=acme verdict=drop drop_reason=policy_denied")
            .count(),
        5
    );
    assert_eq!(
        err(c
            .call(
                "trace",
                json!({"count": 1, "tenant": "nobody", "path": path})
            )
            .unwrap()),
        ErrorCode::Internal
    );
}

#[test]
fn errors_leave_the_connection_usable() {
    let g = start(&[]);
    let mut c = g.client();
    c.send_raw(b"this is not json\n").unwrap();
    assert_eq!(err(c.read_response().unwrap()), ErrorCode::BadRequest);
    c.send_raw(b"{\"id\": 5, \"args\": {}}\n").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.id, json!(5), "the id is echoed even for a bad request");
    assert_eq!(err(r), ErrorCode::BadRequest);
    assert_eq!(
        err(c.call("policy.frobnicate", json!({})).unwrap()),
        ErrorCode::UnknownOp
    );
    assert_eq!(
        err(c
            .call("tenant.add", json!({"tenant": {"name": "x"}}))
            .unwrap()),
        ErrorCode::BadArgs
    );
    assert_eq!(
        err(c
            .call("tenant.add", json!({"tenant": {"name": "acme", "id": 5}}))
            .unwrap()),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        err(c
            .call("tenant.add", json!({"tenant": {"name": "dup", "id": 10}}))
            .unwrap()),
        ErrorCode::InvalidPolicy
    );
    assert_eq!(
        err(c
            .call(
                "tenant.add",
                json!({"tenant": {"name": "x", "id": 500}, "expected_version": 7})
            )
            .unwrap()),
        ErrorCode::VersionConflict
    );
    // A rule inserted mid-list (a change made in place) under a name another rule has.
    let taken = ok(c.call("policy.get", json!({})).unwrap())["document"]["rule"][0]["name"].clone();
    assert!(taken.is_string());
    assert_eq!(
        err(c
            .call(
                "rule.add",
                json!({"index": 0, "rule": {"name": taken, "from": "acme", "to": "globex", "action": "deny"}})
            )
            .unwrap()),
        ErrorCode::InvalidPolicy
    );
    // Oversized request: an error, then the connection still works.
    let mut big = b"{\"id\":1,\"op\":\"status\",\"args\":{\"pad\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 80 << 20));
    big.extend(b"\"}}\n");
    c.send_raw(&big).unwrap();
    assert_eq!(err(c.read_response().unwrap()), ErrorCode::TooLarge);
    assert_eq!(
        ok(c.call("status", json!({})).unwrap())["version"],
        1,
        "nothing was committed by the failures"
    );
}

#[test]
fn concurrent_clients_and_a_silent_one() {
    let g = start(&[]);
    // A client that connects, sends half a line and never reads must not stall anyone.
    let mut silent = g.client();
    silent.send_raw(b"{\"id\":1,\"op\":\"sta").unwrap();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let sock = g.socket();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock).unwrap();
                let mut mine = 0;
                for k in 0..5 {
                    // optimistic concurrency: read the version, edit with it, retry on conflict
                    loop {
                        let v = ok(c.call("status", json!({})).unwrap())["version"].as_u64().unwrap();
                        let t = json!({"tenant": {"name": format!("c{i}-{k}"), "id": 1000 + i * 10 + k}, "expected_version": v});
                        let r = c.call("tenant.add", t).unwrap();
                        if r.ok {
                            mine += 1;
                            break;
                        }
                        assert_eq!(r.error.unwrap().code, ErrorCode::VersionConflict);
                    }
                }
                mine
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 30);
    let mut c = g.client();
    assert_eq!(ok(c.call("status", json!({})).unwrap())["version"], 31);
    let d = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
    assert_eq!(d["tenant"].as_array().unwrap().len(), 8 + 30);
    drop(silent);
}

/// `--max-connections N`: the gateway serves N connections at once (silent ones included); one more
/// gets a `busy` line and is closed, and a client that leaves makes room. 0 is refused at start.
#[test]
fn max_connections_bounds_the_clients_served_at_once() {
    let g = start(&["--max-connections", "2"]);
    // A client, once served (the connections that probed for the gateway coming up may hold
    // their slots a moment longer).
    let served = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = g.client();
            let r = c.call("status", json!({})).unwrap();
            if r.ok {
                return c;
            }
            assert_eq!(err(r), ErrorCode::Busy);
            assert!(Instant::now() < deadline, "no slot was given back");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // One client that then sends half a line, one that is served: the socket is full.
    let mut silent = served();
    silent.send_raw(b"{\"id\":1,\"op\":\"sta").unwrap();
    let mut c = served();
    let mut third = g.client();
    let r = third.call("status", json!({})).unwrap();
    assert_eq!(err(r.clone()), ErrorCode::Busy, "{r:?}");
    assert!(r
        .error
        .unwrap()
        .message
        .contains("too many management connections (limit 2)"));
    // The silent one leaves: there is room again.
    drop(silent);
    let mut again = served();
    assert!(again.call("status", json!({})).unwrap().ok);
    assert!(c.call("status", json!({})).unwrap().ok);

    let e = start_refused(&["--max-connections", "0"]);
    assert!(e.contains("--max-connections must be at least 1"), "{e}");
}

/// What `replay --serve` with `extra` says on stderr when it refuses to start (it must).
fn start_refused(extra: &[&str]) -> String {
    let dir = tmp("jp-mgmt");
    let out = Command::new(BIN)
        .args(["replay", "--serve"])
        .args(extra)
        .arg("--config")
        .arg(fixtures().join("fixtures.toml"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg(fixtures().join("verdicts.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--max-request SIZE` and `--max-buffered SIZE` set the request limits: a line over
/// --max-request is answered `too_large` naming the limit and the connection stays usable; with
/// --max-buffered at --max-request, a second client's line does not fit beside a first one's that
/// is still arriving (`busy`). Sizes that make no sense are refused at start, saying why.
#[test]
fn request_limits_are_set_from_the_command_line() {
    let g = start(&["--max-request", "256KiB", "--max-buffered", "256k"]);
    let mut c = g.client();
    let line = |len: usize| {
        let mut v = br#"{"id":1,"op":"status","args":{}}"#.to_vec();
        v.resize(len, b' ');
        v.push(b'\n');
        v
    };
    c.send_raw(&line(300 << 10)).unwrap();
    let (code, m) = err_message(c.read_response().unwrap());
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(m.contains("request longer than 262144 bytes"), "{m}");
    assert!(c.call("status", json!({})).unwrap().ok, "still usable");
    // A line of 200 KiB still arriving holds most of the buffer (the server charges it 64 KiB at
    // a time as it reads): another of 100 KiB is busy.
    let mut first = g.client();
    let big = line(200 << 10);
    first.send_raw(&big[..big.len() - 1]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let second = line(100 << 10);
    c.send_raw(&second).unwrap();
    let (code, m) = err_message(c.read_response().unwrap());
    assert_eq!(code, ErrorCode::Busy);
    assert!(m.contains("buffer"), "{m}");
    // The first line ends and is answered: the room is back.
    first.send_raw(b"\n").unwrap();
    assert!(first.read_response().unwrap().ok);
    c.send_raw(&second).unwrap();
    assert!(c.read_response().unwrap().ok);

    for (extra, says) in [
        (
            &["--max-request", "512"][..],
            "--max-request 512 is too small",
        ),
        (
            &["--max-request", "1MiB", "--max-buffered", "512KiB"][..],
            "--max-buffered (524288 bytes) must be at least --max-request (1048576 bytes)",
        ),
        (&["--max-request", "64MB"][..], "unknown unit \"mb\""),
        (&["--max-buffered", "lots"][..], "is not a size"),
    ] {
        let e = start_refused(extra);
        assert!(e.contains(says), "{extra:?}: {e}");
    }
}

/// `--idle-timeout SECS`: a connection that does not send its next request whole within the timeout
/// — silent, or trickling a byte at a time — is closed and gives its slot back, so idle clients
/// cannot keep others out; a client that keeps asking keeps its connection. 0 means never.
#[test]
fn idle_connections_are_closed_and_give_their_slot_back() {
    let g = start(&["--max-connections", "2", "--idle-timeout", "2"]);
    let served = |within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let mut c = g.client();
            let r = c.call("status", json!({})).unwrap();
            if r.ok {
                return c;
            }
            assert_eq!(err(r), ErrorCode::Busy);
            assert!(Instant::now() < deadline, "no slot was given back");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Two clients fill the socket: one silent after its first request, one trickling a request
    // that never ends, a byte every 200 ms.
    let mut silent = served(Duration::from_secs(10));
    let mut trickler = served(Duration::from_secs(10));
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        for b in b"{\"id\":1,\"op\":\"status\",\"args\":{}"
            .iter()
            .cycle()
            .take(100)
        {
            if trickler.send_raw(&[*b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    let r = g.client().call("status", json!({})).unwrap();
    assert_eq!(err(r), ErrorCode::Busy, "both slots are held");
    // Within the timeout (and some slack for a busy machine) both are closed, and the socket
    // serves again.
    let mut c = served(Duration::from_secs(15));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    assert!(
        silent.read_response().is_err(),
        "the silent client's connection was closed"
    );
    assert!(
        trickle.join().unwrap(),
        "the trickling client's connection was closed"
    );
    // A client that keeps asking, more often than the timeout, is served throughout.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(c.call("status", json!({})).unwrap().ok);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn peer_credentials_decide_access() {
    assert_eq!(
        euid(),
        0,
        "this test creates users: run the suite as root (CI does)"
    );
    let (nobody_uid, nobody_gid) = ensure_user("joypath-test-other", None);
    let (reader_uid, reader_gid) = ensure_user("joypath-test-reader", Some("joypath-test-ro"));
    let ro_gid = group_id("joypath-test-ro");
    let g = start(&[
        "--readonly-group",
        "joypath-test-ro",
        "--socket-mode",
        "666",
    ]);
    // Let other users reach the socket file itself; the credentials check is what is tested.
    open_to_others(g.dir());
    let sock = g.socket();
    let (code, out, _) = ctl_as(nobody_uid, nobody_gid, &[], &sock, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("forbidden"), "{out}");
    let (code, out, _) = ctl_as(reader_uid, reader_gid, &[ro_gid], &sock, &["status"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = ctl_as(
        reader_uid,
        reader_gid,
        &[ro_gid],
        &sock,
        &["call", "tenant.add", r#"tenant={"name":"ro","id":4000}"#],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("forbidden") && out.contains("read-only"),
        "{out}"
    );
    let mut c = g.client();
    assert_eq!(ok(c.call("status", json!({})).unwrap())["version"], 1);
    // The socket file's mode is as configured.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o666
    );
}

#[test]
fn default_socket_mode_is_0660() {
    let g = start(&[]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(g.socket()).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

#[test]
fn last_acknowledged_version_survives_sigkill() {
    let dir = tmp("jp-crash");
    let mut g = start_in(dir, &[]);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for round in 0..3 {
        let sock = g.socket();
        let killer = std::thread::spawn({
            let pid = g.child.id();
            move || {
                std::thread::sleep(Duration::from_millis(150 + 170 * round));
                // SAFETY: kill(2) with a pid we spawned; no memory is involved.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        let mut c = Client::connect(&sock).unwrap();
        for i in 0.. {
            let name = format!("crash-{round}-{i}");
            match c.call(
                "tenant.add",
                json!({"tenant": {"name": name, "id": 10_000 + round * 10_000 + i}}),
            ) {
                Ok(r) if r.ok => acked.push((r.result.unwrap()["version"].as_u64().unwrap(), name)),
                Ok(r) => panic!("{:?}", r.error),
                Err(_) => break, // killed mid-stream
            }
        }
        killer.join().unwrap();
        let dir = g.kill();
        // Restart on the same state directory: the last acknowledged version must be there.
        g = start_in(dir, &[]);
        let mut c = g.client();
        let got = ok(c.call("policy.get", json!({})).unwrap());
        let v = got["version"].as_u64().unwrap();
        let (last_v, last_name) = acked
            .last()
            .expect("some applies were acknowledged")
            .clone();
        assert!(
            v == last_v || v == last_v + 1,
            "loaded version {v}, last acknowledged {last_v}"
        );
        let names: Vec<&str> = got["document"]["tenant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&last_name.as_str()),
            "acknowledged tenant {last_name} lost"
        );
        for (_, n) in &acked {
            assert!(names.contains(&n.as_str()), "acknowledged tenant {n} lost");
        }
        // ... and the acknowledged version itself is still readable from history.
        let old = ok(c.call("policy.get", json!({"version": last_v})).unwrap());
        assert_eq!(old["version"], last_v);
    }
}

/// A state directory written by an earlier build records its digest in that build's format (1, no
/// `digest_format`). After an upgrade the workers report this build's digest: the gateway checks
/// the record in its own format and gives it in this one, so `audit.verify` (and `/healthz`) do not
/// report drift that is only a change of formula. 22039c51975b3d34 is what the build before formats
/// (8021336) recorded for `fixtures.toml`; 73cd899 recorded this build's digest without a format.
#[test]
fn a_store_written_by_an_earlier_build_verifies_after_the_upgrade() {
    let g = start(&[]);
    let now = ok(g.client().call("status", json!({})).unwrap())["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut dir = g.kill();
    let file = dir.path().join("state/versions/v00000000000000000001.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut meta: Value = serde_json::from_str(first).unwrap();
    assert_eq!(meta["digest_format"], 2, "this build records its format");
    assert_eq!(meta["digest"], json!(now));
    meta.as_object_mut().unwrap().remove("digest_format");
    for recorded in ["22039c51975b3d34", now.as_str()] {
        meta["digest"] = json!(recorded);
        std::fs::write(&file, format!("{meta}\n{rest}")).unwrap();
        let g = start_in(dir, &[]);
        let mut c = g.client();
        wait_workers_on(&mut c, 1);
        let v = ok(c.call("audit.verify", json!({})).unwrap());
        assert_eq!(v["ok"], true, "{recorded}: {v}");
        assert_eq!(v["expected"]["digest"], json!(now), "{recorded}: {v}");
        let h = ok(c.call("history", json!({})).unwrap());
        assert_eq!(h[0]["digest"], json!(now), "{recorded}: {h}");
        // The file keeps what the earlier build wrote.
        let kept = std::fs::read_to_string(&file).unwrap();
        assert!(kept.starts_with(&format!("{meta}\n")));
        dir = g.kill();
    }
}
