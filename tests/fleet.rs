//! Many gateways, one policy: a real 3-member etcd cluster on loopback (started and stopped here,
//! temporary data directories, killed even when the test fails) and two `joypath replay --serve`
//! gateways sharing it. A change through one reaches the other; a stale `expected_version` is
//! refused; `fleet.status` shows both at lag 0; a killed etcd member changes nothing; a killed gateway
//! leaves the view; lost quorum keeps forwarding and refuses changes; a gateway started while etcd
//! is down runs its cached version; regained quorum works again.
//!
//! Needs `etcd` (Debian's etcd-server; scripts/install-deps.sh installs it).

mod common;

use common::{fixtures, free_port, ok, BIN};
use mgmt::{Client, ErrorCode, Response};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three etcd members on 127.0.0.1, each in its own temporary data directory.
struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Option<Child>>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
}

impl Etcd {
    fn start() -> Etcd {
        let etcd = Command::new("etcd").arg("--version").output();
        assert!(
            etcd.is_ok_and(|o| o.status.success()),
            "etcd is not installed: run scripts/install-deps.sh (Debian package etcd-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("jp-etcd")
            .tempdir()
            .unwrap();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port().port()).collect();
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port().port()).collect();
        let mut e = Etcd {
            dir,
            members: vec![None, None, None],
            client_ports,
            peer_ports,
        };
        for i in 0..3 {
            e.start_member(i);
        }
        e.wait_healthy(&[0, 1, 2]);
        e
    }

    fn start_member(&mut self, i: usize) {
        let cluster: Vec<String> = (0..3)
            .map(|j| format!("m{j}=http://127.0.0.1:{}", self.peer_ports[j]))
            .collect();
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).unwrap();
        let child = Command::new("etcd")
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{}", self.client_ports[i]))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{}", self.client_ports[i]))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_ports[i]))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_ports[i]))
            .arg("--initial-cluster")
            .arg(cluster.join(","))
            .arg("--initial-cluster-token")
            .arg(format!("jp-test-{}", std::process::id()))
            .arg("--initial-cluster-state")
            .arg("new")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i] = Some(child);
    }

    fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn wait_healthy(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for &i in members {
            loop {
                let out = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!(
                        "--endpoints=http://127.0.0.1:{}",
                        self.client_ports[i]
                    ))
                    .args(["endpoint", "health", "--command-timeout=2s"])
                    .output()
                    .unwrap();
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} never became healthy: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_member(i);
        }
    }
}

/// A `replay --serve` gateway in the fleet.
struct Gateway {
    child: Option<Child>,
    dir: PathBuf,
    name: String,
    etcd: String,
}

impl Gateway {
    fn start(root: &Path, name: &str, etcd: &str) -> Gateway {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut g = Gateway {
            child: None,
            dir,
            name: name.into(),
            etcd: etcd.into(),
        };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let child = Command::new(BIN)
            .args([
                "replay",
                "--serve",
                "--pps",
                "20000",
                "--workers",
                "2",
                "--config",
            ])
            .arg({
                // A gateway may have its own config file (gw.toml in its directory).
                let own = self.dir.join("gw.toml");
                if own.exists() {
                    own
                } else {
                    fixtures().join("fixtures.toml")
                }
            })
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--etcd", &self.etcd, "--name", &self.name])
            .arg(fixtures().join("verdicts.pcap"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start joypath");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::connect(&self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway {} did not come up",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("s.sock")
    }

    fn call(&self, op: &str, args: Value) -> Response {
        Client::connect(&self.socket())
            .unwrap()
            .call(op, args)
            .unwrap()
    }

    fn status(&self) -> Value {
        ok(self.call("status", json!({})))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the gateway is in sync with etcd at `version` and its workers run it.
    fn wait_version(&self, version: u64, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let s = self.status();
            let workers_on = s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["active_version"] == json!(version));
            if s["version"] == json!(version) && workers_on && s["fleet"]["synced"] == json!(true) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "{} never reached version {version}: {s}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn frames(&self) -> u64 {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["frames"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} log (last lines) ---", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn rule(port: u16) -> Value {
    json!({"rule": {"from": "acme", "to": "globex", "proto": "tcp", "ports": port.to_string(), "action": "allow", "priority": 3}})
}

fn fleet_view(g: &Gateway) -> Value {
    ok(g.call("fleet.status", json!({})))
}

fn gateway_in<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the fleet view: {view}"))
}

fn ctl_fleet(g: &Gateway, json_out: bool) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.arg("ctl").arg("--socket").arg(g.socket());
    if json_out {
        c.arg("--json");
    }
    let out = c.arg("fleet").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn two_gateways_share_one_policy_through_etcd() {
    let mut etcd = Etcd::start();
    let root = tempfile::Builder::new()
        .prefix("jp-fleet")
        .tempdir()
        .unwrap();
    let urls = etcd.urls();
    let a = Gateway::start(root.path(), "gw-a", &urls);
    a.wait_version(1, Duration::from_secs(30));
    let mut b = Gateway::start(root.path(), "gw-b", &urls);
    b.wait_version(1, Duration::from_secs(30));
    // A change through A reaches B.
    let t = Instant::now();
    let r = ok(a.call("rule.add", rule(9001)));
    assert_eq!(r["version"], 2);
    b.wait_version(2, Duration::from_secs(20));
    eprintln!(
        "fleet: change acknowledged by gw-a in {:.1} ms, running on every worker of gw-b after {:.1} ms",
        r["commit_ms"].as_f64().unwrap_or(0.0),
        t.elapsed().as_secs_f64() * 1e3
    );
    let (got_a, got_b) = (
        ok(a.call("policy.get", json!({}))),
        ok(b.call("policy.get", json!({}))),
    );
    assert_eq!(got_b["document"], got_a["document"]);
    // Versions map to etcd revisions, the same on both sides; B applied A's edits (a delta).
    let rev = got_a["meta"]["revision"]
        .as_i64()
        .expect("an etcd revision");
    assert_eq!(got_b["meta"]["revision"].as_i64(), Some(rev));
    assert_eq!(got_b["meta"]["op"], "rule.add");

    // A gateway joining with another config file: the populated prefix wins over its file.
    std::fs::create_dir_all(root.path().join("gw-c")).unwrap();
    let other = std::fs::read_to_string(fixtures().join("fixtures.toml")).unwrap()
        + "\n[[rule]]\nfrom = \"globex\"\nto = \"acme\"\nproto = \"udp\"\nports = \"53\"\naction = \"allow\"\n";
    std::fs::write(root.path().join("gw-c/gw.toml"), other).unwrap();
    let c = Gateway::start(root.path(), "gw-c", &urls);
    c.wait_version(2, Duration::from_secs(30));
    // (Loaded from the objects, sections may come in another order: the digest ignores it.)
    let got_c = ok(c.call("policy.get", json!({})));
    assert_eq!(
        got_c["meta"]["digest"], got_a["meta"]["digest"],
        "the fleet's policy wins over gw-c's config file"
    );
    assert_eq!(got_c["document"]["rule"], got_a["document"]["rule"]);

    // A stale expected_version through B is refused.
    let mut stale = rule(9002);
    stale["expected_version"] = json!(1);
    let e = b.call("rule.add", stale).error.expect("refused");
    assert_eq!(e.code, ErrorCode::VersionConflict, "{}", e.message);

    // fleet.status from either side: both at lag 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = fleet_view(&b);
        let both = ["gw-a", "gw-b", "gw-c"].iter().all(|n| {
            v["gateways"].as_array().unwrap().iter().any(|g| {
                g["name"] == *n
                    && g["alive"] == json!(true)
                    && g["lag"] == json!(0)
                    && g["version"] == json!(2)
            })
        });
        if both {
            assert_eq!(v["latest"], 2);
            assert_eq!(v["ok"], true);
            break;
        }
        assert!(Instant::now() < deadline, "fleet never in sync: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, table) = ctl_fleet(&a, false);
    assert_eq!(code, 0, "{table}");
    let verify = ok(a.call("audit.verify", json!({})));
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["fleet"]["gateways"].as_array().unwrap().len(), 3);
    let prom = ok(b.call("stats", json!({"format": "prometheus"})));
    assert!(
        prom["text"]
            .as_str()
            .unwrap()
            .contains("joypath_policy_lag 0\n"),
        "{prom}"
    );
    assert!(table.contains("gw-a") && table.contains("gw-b"), "{table}");
    let (code, js) = ctl_fleet(&a, true);
    assert_eq!(code, 0);
    let js: Value = serde_json::from_str(&js).unwrap();
    assert_eq!(js["gateways"].as_array().unwrap().len(), 3);

    // A killed etcd member changes nothing. (The change is an endpoint edit, which each gateway
    // makes in place on its running table: both must come to the same digest.)
    etcd.kill_member(2);
    let endpoint = json!({"endpoint": {"tenant": "acme", "ip": "198.19.0.99",
        "mac": "02:00:00:00:0a:63", "vtep": "198.18.0.1", "vni": 100}});
    let r = ok(b.call("endpoint.add", endpoint));
    assert_eq!(r["version"], 3);
    a.wait_version(3, Duration::from_secs(20));
    let (got_a, got_b) = (
        ok(a.call("policy.get", json!({}))),
        ok(b.call("policy.get", json!({}))),
    );
    assert_eq!(got_a["meta"]["op"], "endpoint.add");
    assert_eq!(got_a["meta"]["digest"], got_b["meta"]["digest"]);
    assert_eq!(got_a["document"], got_b["document"]);
    let log = std::fs::read_to_string(a.dir.join("log")).unwrap_or_default();
    assert!(
        log.contains("version applied version=3 in_place=true"),
        "gw-a did not make the endpoint edit in place:\n{log}"
    );

    // A killed gateway leaves the view within the lease TTL; ctl fleet says so with exit code 4.
    b.kill();
    let t = Instant::now();
    loop {
        let v = fleet_view(&a);
        if gateway_in(&v, "gw-b")["alive"] == json!(false) {
            assert_eq!(v["ok"], true, "the live gateways are in sync: {v}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gw-b never left: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "fleet: a killed gateway left the view after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (code, table) = ctl_fleet(&a, false);
    assert_eq!(code, 4, "{table}");

    // Lost quorum: A keeps forwarding, refuses changes with a clear error, and never hangs.
    etcd.kill_member(1);
    let frames = a.frames();
    let t = Instant::now();
    let e = a
        .call("rule.add", rule(9004))
        .error
        .expect("a change was accepted without quorum");
    let refused_after = t.elapsed();
    assert_eq!(e.code, ErrorCode::Unavailable, "{}", e.message);
    assert!(e.message.contains("etcd"), "{}", e.message);
    assert!(
        refused_after < Duration::from_secs(15),
        "took {refused_after:?}"
    );
    eprintln!(
        "fleet: without quorum a change is refused after {:.1} s: {}",
        refused_after.as_secs_f64(),
        e.message
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.frames() > frames, "forwarding goes on without quorum");
    assert_eq!(a.status()["version"], 3);

    // A gateway started while etcd cannot serve runs the version it cached.
    b.spawn();
    let s = b.status();
    assert_eq!(s["version"], 3, "{s}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.frames() > 0);

    // Quorum regained: changes work again, without restarting anything.
    etcd.start_member(1);
    etcd.start_member(2);
    etcd.wait_healthy(&[0, 1, 2]);
    let t = Instant::now();
    let r = loop {
        let r = a.call("rule.add", rule(9005));
        if r.ok {
            break r.result.unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no recovery: {:?}",
            r.error
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The refused change can still surface as version 4 when it reached a leader just before
    // quorum went (etcd commits such a proposal once quorum is back): the error said so.
    let v = r["version"].as_u64().unwrap();
    assert!(v == 4 || v == 5, "{r}");
    if v == 5 {
        let four = ok(a.call("policy.get", json!({"version": 4})));
        assert!(
            four["document"]["rule"].to_string().contains("9004"),
            "{four}"
        );
    }
    eprintln!(
        "fleet: quorum back, a change accepted after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    b.wait_version(v, Duration::from_secs(30));
    c.wait_version(v, Duration::from_secs(30));
}
