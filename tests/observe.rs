//! Observability of a running gateway: `/metrics` over HTTP, parsed by a Prometheus text parser, with
//! every drop reason, the tenants, the rules by name and the policy version; readiness told to
//! systemd (sd_notify READY=1); `ctl stats` with per-rule hits.

mod common;

use common::{free_port, Gateway, BIN};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn start(extra: &[&str], env: &[(&str, &Path)]) -> Gateway {
    let mut launch = Gateway::in_temp("jp-obs").args(extra);
    for (k, v) in env {
        launch = launch.env(k, v);
    }
    launch.start()
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let code = r.split(' ').nth(1).unwrap().parse().unwrap();
    (code, r.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metrics_over_http_parse_as_prometheus_text() {
    let addr = free_port();
    let g = start(
        &["--metrics-listen", &addr.to_string(), "--workers", "2"],
        &[],
    );
    let mut c = mgmt::Client::connect(&g.socket()).unwrap();
    // Wait until a whole pass over verdicts.pcap (56 frames) has been counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.call("stats", json!({})).unwrap().result.unwrap();
        if s["frames"].as_u64().unwrap_or(0) >= 112 {
            break;
        }
        assert!(Instant::now() < deadline, "no frames: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = |metric: &str, label: &str, want: &str| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && (label.is_empty() || s.labels.get(label) == Some(want)))
            .map(|s| value(&s.value))
    };
    // Every drop reason the datapath knows, as one labelled series.
    for r in datapath::DropReason::ALL {
        assert!(
            sample("joypath_dropped_total", "reason", r.name()).is_some(),
            "no series for {}",
            r.name()
        );
    }
    assert!(sample("joypath_dropped_total", "reason", "policy_denied").unwrap() > 0.0);
    assert!(sample("joypath_frames_total", "", "").unwrap() >= 112.0);
    assert!(sample("joypath_tenant_frames_in_total", "tenant", "acme").unwrap() > 0.0);
    assert!(
        sample("joypath_rule_hits_total", "rule", "acme-globex-tcp-443").unwrap() > 0.0,
        "{body}"
    );
    assert_eq!(sample("joypath_policy_version", "", ""), Some(1.0));
    assert_eq!(sample("joypath_workers_in_sync", "", ""), Some(1.0));
    let lags: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "joypath_worker_policy_lag")
        .map(|s| value(&s.value))
        .collect();
    assert_eq!(lags, [0.0, 0.0]);
    // Every metric has HELP text and a TYPE.
    let mut types: HashMap<&str, usize> = HashMap::new();
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        *types.entry(l.split(' ').nth(2).unwrap()).or_default() += 1;
    }
    for s in &scrape.samples {
        assert_eq!(types.get(s.metric.as_str()), Some(&1), "{}", s.metric);
        assert!(
            scrape.docs.contains_key(&s.metric),
            "no HELP for {}",
            s.metric
        );
    }

    let (code, body) = http_get(addr, "/healthz");
    assert_eq!(code, 200, "{body}");

    // ctl stats shows the rule hits.
    let o = Command::new(BIN)
        .args(["ctl", "stats", "--socket"])
        .arg(g.socket())
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("acme-globex-tcp-443"), "{text}");
}

/// `stats` lists the tenants asked for (at a million tenants, all of them is a few hundred megabytes
/// of answer): all, the active ones, none, or one; and `/metrics?tenants=…` the same.
#[test]
fn stats_lists_the_tenants_asked_for() {
    let addr = free_port();
    let g = start(&["--metrics-listen", &addr.to_string()], &[]);
    let mut c = mgmt::Client::connect(&g.socket()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stats = |args: serde_json::Value| c.call("stats", args).unwrap();
    while stats(json!({})).result.unwrap()["frames"]
        .as_u64()
        .unwrap_or(0)
        < 56
    {
        assert!(Instant::now() < deadline, "no frames");
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = |r: &mgmt::Response| -> Vec<String> {
        let t = r.result.as_ref().unwrap()["tenants"].as_object().unwrap();
        t.keys().cloned().collect()
    };
    let all = stats(json!({"tenants": "all"}));
    let active = stats(json!({"tenants": "active"}));
    let (all_names, active_names) = (names(&all), names(&active));
    assert_eq!(names(&stats(json!({}))), all_names);
    assert!(
        active_names.contains(&"acme".to_string()),
        "{active_names:?}"
    );
    assert!(active_names.len() < all_names.len(), "{all_names:?}");
    let zero = |t: &serde_json::Value| {
        [
            "frames_in",
            "bytes_in",
            "forwarded",
            "bytes_out",
            "arp_replied",
            "denied",
        ]
        .iter()
        .all(|k| t[k].as_u64() == Some(0))
            && t["dropped"].as_object().is_none_or(|d| d.is_empty())
    };
    for (name, t) in all.result.as_ref().unwrap()["tenants"].as_object().unwrap() {
        assert_eq!(active_names.contains(name), !zero(t), "{name}: {t}");
    }
    let none = stats(json!({"tenants": "none"})).result.unwrap();
    assert_eq!(none["tenants"], json!({}));
    assert!(
        none["frames"].as_u64().unwrap() >= 56 && none["rules"].is_object(),
        "{none}"
    );
    assert_eq!(names(&stats(json!({"tenant": "acme"}))), ["acme"]);
    let code = |r: mgmt::Response| r.error.map(|e| e.code);
    assert_eq!(
        code(stats(json!({"tenant": "nosuch"}))),
        Some(mgmt::ErrorCode::NotFound)
    );
    for bad in [
        json!({"tenants": "some"}),
        json!({"tenants": 1}),
        json!({"tenant": 7}),
        json!({"tenants": "all", "tenant": "acme"}),
    ] {
        assert_eq!(
            code(stats(bad.clone())),
            Some(mgmt::ErrorCode::BadArgs),
            "{bad}"
        );
    }
    let tenant_series = |body: &str| {
        body.lines()
            .filter(|l| l.starts_with("joypath_tenant_"))
            .count()
    };
    let (code_all, body_all) = http_get(addr, "/metrics");
    let (code_none, body_none) = http_get(addr, "/metrics?tenants=none");
    assert_eq!((code_all, code_none), (200, 200));
    assert!(tenant_series(&body_all) > 0);
    assert_eq!(tenant_series(&body_none), 0, "{body_none}");
    assert!(body_none.contains("joypath_frames_total "), "{body_none}");
    let (code, body) = http_get(addr, "/metrics?tenants=every");
    assert_eq!(code, 400, "{body}");
    // ctl: one tenant's line.
    let o = Command::new(BIN)
        .args(["ctl", "stats", "--tenant", "acme", "--socket"])
        .arg(g.socket())
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("acme ")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        !all_names
            .iter()
            .any(|n| n != "acme" && text.lines().any(|l| l.starts_with(&format!("{n} ")))),
        "{text}"
    );
}

#[test]
fn tells_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _g = start(&[], &[("NOTIFY_SOCKET", &sock_path)]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no sd_notify message");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
}

/// The Grafana dashboard is JSON and queries only metrics joypath exports: those /metrics shows
/// from `replay --serve`, and the AF_XDP driver's (`joypath_driver_*`, only from `run`).
#[test]
fn the_grafana_dashboard_uses_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let addr = free_port();
    let _g = start(&["--metrics-listen", &addr.to_string()], &[]);
    let (_, body) = http_get(addr, "/metrics");
    let exported: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut seen = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            for (i, _) in e.match_indices("joypath_") {
                let name: String = e[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                seen += 1;
                if name.starts_with("joypath_driver_") {
                    let key = name
                        .trim_start_matches("joypath_driver_")
                        .trim_end_matches("_total");
                    assert!(
                        serde_json::to_value(driver::afxdp::DriverCounters::default())
                            .unwrap()
                            .get(key)
                            .is_some(),
                        "{name}: no such driver counter"
                    );
                } else {
                    assert!(exported.contains(&name.as_str()), "{name} is not exported");
                }
            }
        }
    }
    assert!(seen > 10);
}
