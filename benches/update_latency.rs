//! Hitless updates, measured: the time from a management request (one rule added) to its durable
//! acknowledgement (a small delta file written and fsynced) and to every worker running the new
//! version, with frames flowing through replay workers the whole time, at 1k and 100k rules with 1M
//! endpoints by default. Run: `cargo bench --bench update_latency` (JOYPATH_UPDATE_SCALES to pick,
//! e.g. "1000:1000000,100000:1000000"; JOYPATH_UPDATE_ROUNDS rounds per scale). With
//! JOYPATH_UPDATE_WATCH=spin the thread that watches the workers spins instead of polling every
//! 20 µs (it then takes a core of its own). With
//! JOYPATH_UPDATE_OP=endpoint the change is one endpoint added instead of one rule; with
//! JOYPATH_UPDATE_OP=tenant, one tenant onboarded (`tenant.add`, then `segment.add` for its VNI
//! segment, each timed as a change of its own); with JOYPATH_UPDATE_OP=tenant-edit, in turn: a
//! tenant added and updated (its VTEP list), a segment of it added, updated (to GBP) and removed,
//! the tenant removed; with JOYPATH_UPDATE_OP=rule-mid, in turn: a rule inserted in the middle of
//! the rule list (`rule.add` with an `index`) and removed again (`rule.remove`), each moving every
//! later rule's index. A scale may name its tenants too:
//! "RULES:ENDPOINTS:TENANTS" (default: endpoints / 10, at most 100 000).

use arc_swap::ArcSwap;

/// The allocator the `joypath` binary runs the management server with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use driver::live::{collect_counters, WorkerShared};

use mgmt::{Client, Dataplane, Server, ServerConfig, Store, TraceRequest, WorkerStatus};
use policy::Table;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Plane {
    policy: Arc<ArcSwap<Table>>,
    workers: Vec<Arc<WorkerShared>>,
}

impl Dataplane for Plane {
    fn publish(&self, table: Arc<Table>) {
        self.policy.store(table);
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        self.workers
            .iter()
            .map(|w| WorkerStatus {
                id: w.id,
                active_version: w.active_version.load(Ordering::Acquire),
                active_digest: format!("{:016x}", w.active_digest.load(Ordering::Acquire)),
                frames: w.frames.load(Ordering::Acquire),
                pps: 0.0,
            })
            .collect()
    }
    fn stats(&self, _: &mgmt::TenantFilter) -> mgmt::Stats {
        mgmt::Stats::from_value(
            serde_json::to_value(
                collect_counters(&self.workers, Duration::from_secs(2))
                    .summary(&self.policy.load()),
            )
            .unwrap(),
        )
    }
    fn trace(&self, _: &TraceRequest) -> Result<Value, String> {
        Err("not in this bench".into())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let scales = std::env::var("JOYPATH_UPDATE_SCALES")
        .unwrap_or_else(|_| "1000:1000000,100000:1000000".into());
    let rounds: usize = std::env::var("JOYPATH_UPDATE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let workers_n = 1;
    // The watcher polls the workers' versions every 20 µs, sleeping between polls: on this 2-core
    // machine a spinning watcher takes the core the management plane would run on (the worker has
    // the other), and the request then waits on the scheduler. JOYPATH_UPDATE_WATCH=spin spins.
    let spin = std::env::var("JOYPATH_UPDATE_WATCH").is_ok_and(|v| v == "spin");
    let op_kind = std::env::var("JOYPATH_UPDATE_OP").unwrap_or_else(|_| "rule".into());
    assert!(
        ["rule", "rule-mid", "endpoint", "tenant", "tenant-edit"].contains(&op_kind.as_str()),
        "JOYPATH_UPDATE_OP is rule, rule-mid, endpoint, tenant or tenant-edit"
    );
    println!(
        "change: {}",
        match op_kind.as_str() {
            "tenant" => "one tenant.add or segment.add (alternating: a tenant onboarded with its VNI segment)",
            "tenant-edit" => "in turn: tenant.add, tenant.update, segment.add, segment.update, segment.remove, tenant.remove",
            "endpoint" => "one endpoint added",
            "rule-mid" => "in turn: rule.add in the middle of the list, rule.remove of it",
            _ => "one rule added",
        }
    );
    println!("| rules | endpoints | request → all workers (median ms) | request → ack (median ms) | compile (ms) | compiled → durable (ms) | frames during updates | frames accounted |");
    println!("|---|---|---|---|---|---|---|---|");
    for scale in scales.split(',') {
        let parts: Vec<u32> = scale
            .split(':')
            .map(|x| x.parse().expect("RULES:ENDPOINTS[:TENANTS]"))
            .collect();
        let (rules, endpoints) = (parts[0], parts[1]);
        let tenants = parts
            .get(2)
            .copied()
            .unwrap_or((endpoints / 10).clamp(10, 100_000));
        let mut p = synth::Params::scale(tenants, endpoints, rules);
        p.flows = 4096;
        p.frames = 4096;
        let w = synth::generate(&p).expect("workload");
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut store = Store::open(&dir.path().join("state"), 8).unwrap();
        // Endpoints to add: beside one of t0's, at inner addresses no endpoint has.
        let t0_ep = w
            .doc
            .endpoints
            .iter()
            .find(|e| e.tenant == "t0")
            .unwrap()
            .clone();
        let used: std::collections::HashSet<std::net::IpAddr> =
            w.doc.endpoints.iter().map(|e| e.ip).collect();
        let mut free = (0u32..)
            .map(|i| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0xc613_ff01u32 - i)))
            .filter(|ip| !used.contains(ip));
        let new_endpoints: Vec<Value> = (0..rounds)
            .map(|r| {
                let mut e = t0_ep.clone();
                e.ip = free.next().unwrap();
                e.mac = vtep::Mac([0x02, 0xee, 0, 0, 0, r as u8]);
                json!({"endpoint": e})
            })
            .collect();
        // Tenants to onboard: ids and VNIs above every one in use, each on a VNI segment of its own.
        let max_id = w.doc.tenants.iter().map(|t| t.id).max().unwrap_or(0);
        let max_vni = w.doc.segments.iter().map(|s| s.vni).max().unwrap_or(0);
        let doc = Arc::new(w.doc);
        store
            .commit(doc.clone(), policy::table::digest(&doc), 0, "config", None)
            .unwrap();
        let table = Arc::new(Table::compile(doc, 1, None).unwrap());
        eprintln!(
            "{rules} rules / {endpoints} endpoints: initial commit+compile {:?}",
            t0.elapsed()
        );
        let policy = Arc::new(ArcSwap::new(table.clone()));
        let flows = datapath::flow_table_for(&table);
        let shared: Vec<Arc<WorkerShared>> = (0..workers_n)
            .map(|i| Arc::new(WorkerShared::new(i)))
            .collect();
        let plane = Arc::new(Plane {
            policy: policy.clone(),
            workers: shared.clone(),
        });
        let sock = dir.path().join("s.sock");
        let server = Server::new(ServerConfig::new(sock.clone()), store, table, plane.clone());
        let _h = server.spawn().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(w.frames);
        let threads: Vec<_> = shared
            .iter()
            .map(|s| {
                let (f, pol, s, st) = (frames.clone(), policy.clone(), s.clone(), stop.clone());
                let fl = flows.clone();
                std::thread::spawn(move || driver::replay::serve(&f, &pol, &s, &st, 0, fl))
            })
            .collect();
        let frames_before = shared
            .iter()
            .map(|s| s.frames.load(Ordering::Acquire))
            .sum::<u64>();
        let (mut to_workers, mut to_ack, mut compile, mut persist) =
            (vec![], vec![], vec![], vec![]);
        // Frames are flowing: every worker runs version 1.
        while !shared
            .iter()
            .all(|s| s.active_version.load(Ordering::Acquire) >= 1)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (r, new_endpoint) in new_endpoints.iter().enumerate() {
            let rule = json!({"from": "t0", "to": format!("t{}", 1 + r), "proto": "tcp", "ports": format!("{}", 10_000 + r), "action": "allow", "priority": 5});
            let v = shared[0].active_version.load(Ordering::Acquire) + 1;
            // The request goes out on another thread; this one watches the workers meanwhile.
            let t = Instant::now();
            let sock = sock.clone();
            let name = format!("onboarded{}", r / 2);
            let (op, args) = match op_kind.as_str() {
                "endpoint" => ("endpoint.add", new_endpoint.clone()),
                "tenant" if r % 2 == 0 => (
                    "tenant.add",
                    json!({"tenant": {"name": name, "id": max_id + 1 + r as u32}}),
                ),
                "tenant-edit" => {
                    let name = format!("edited{}", r / 6);
                    let id = max_id + 1 + (r / 6) as u32;
                    let vni = max_vni + 1 + (r / 6) as u32;
                    match r % 6 {
                        0 => ("tenant.add", json!({"tenant": {"name": name, "id": id}})),
                        1 => (
                            "tenant.update",
                            json!({"tenant": {"name": name, "id": id, "vteps": ["198.18.0.1"]}}),
                        ),
                        2 => (
                            "segment.add",
                            json!({"segment": {"vni": vni, "identity": "vni", "tenant": name}}),
                        ),
                        3 => (
                            "segment.update",
                            json!({"segment": {"vni": vni, "identity": "gbp"}}),
                        ),
                        4 => ("segment.remove", json!({"vni": vni})),
                        _ => ("tenant.remove", json!({"name": name})),
                    }
                }
                "tenant" => (
                    "segment.add",
                    json!({"segment": {"vni": max_vni + 1 + r as u32, "identity": "vni", "tenant": name}}),
                ),
                "rule-mid" if r % 2 == 0 => {
                    let mut rule = rule;
                    rule["name"] = json!(format!("mid{}", r / 2));
                    ("rule.add", json!({"rule": rule, "index": rules / 2}))
                }
                "rule-mid" => ("rule.remove", json!({"name": format!("mid{}", r / 2)})),
                _ => ("rule.add", json!({"rule": rule})),
            };
            let req = std::thread::spawn(move || {
                let mut c = Client::connect(&sock).unwrap();
                let resp = c.call(op, args).unwrap();
                (resp, t.elapsed())
            });
            while !shared
                .iter()
                .all(|s| s.active_version.load(Ordering::Acquire) >= v)
            {
                if spin {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            to_workers.push(t.elapsed().as_secs_f64() * 1e3);
            let (resp, ack) = req.join().unwrap();
            assert!(resp.ok, "{:?}", resp.error);
            let res = resp.result.unwrap();
            assert_eq!(res["version"].as_u64().unwrap(), v);
            to_ack.push(ack.as_secs_f64() * 1e3);
            eprintln!(
                "  {op}: ack {:.2} ms, compile {:.2} ms, durable {:.2} ms, published {:.2} ms (in the server)",
                ack.as_secs_f64() * 1e3,
                res["compile_ms"].as_f64().unwrap(),
                res["persist_ms"].as_f64().unwrap(),
                res["commit_ms"].as_f64().unwrap()
            );
            compile.push(res["compile_ms"].as_f64().unwrap());
            persist.push(res["persist_ms"].as_f64().unwrap() - res["compile_ms"].as_f64().unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let mut total = datapath::Counters::default();
        for t in threads {
            total.add(&t.join().unwrap().counters);
        }
        let accounted = total.forwarded + total.arp_replied + total.total_dropped() == total.frames;
        println!(
            "| {rules} | {endpoints} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            median(&mut to_workers),
            median(&mut to_ack),
            median(&mut compile),
            median(&mut persist),
            total.frames - frames_before.min(total.frames),
            if accounted { "all" } else { "NO" }
        );
    }
}
