//! The decision cache is an optimisation only: a worker with it gives every frame the outcome,
//! the bytes and the counters a worker without it gives (every frame on the full path), over
//! generated workloads of every identity mode, overlapping address spaces, both reply modes, and
//! flows seen many times in both directions.
//!
//! One thing may differ, by design, and only until a VTEP's next hop is learnt: the outer
//! destination MAC. A cached frame is rewritten early in its batch (stage 1c), before the frames
//! ahead of it on the full path (stage 3) have taught their sender's next hop, so it may still go
//! back the way it came where the reference already knows the VTEP's MAC. The learnt next hops
//! must agree at the end.

use driver::replay::{replay, replay_with, ReplayOutput};
use policy::{Replies, Table};
use std::sync::Arc;
use synth::{generate, Params};

fn both(p: &Params) -> (Table, ReplayOutput, ReplayOutput) {
    let w = generate(p).expect("workload");
    let table = Table::compile(Arc::new(w.doc.clone()), 1, None).expect("compiles");
    let cached = replay(&table, &w.frames);
    let flows = datapath::pipeline::flow_table_for(&table);
    let full = replay_with(
        datapath::pipeline::Worker::with_flows_and_cache(flows, 0),
        &table,
        &w.frames,
    );
    (table, cached, full)
}

fn assert_same(p: &Params) {
    let (table, cached, full) = both(p);
    assert_eq!(full.worker.cache_hits, 0, "the reference caches nothing");
    assert!(
        cached.worker.cache_hits > cached.worker.cache_misses,
        "the workload exercises the cache: {} hits, {} misses",
        cached.worker.cache_hits,
        cached.worker.cache_misses
    );
    for (i, (a, b)) in cached.outcomes.iter().zip(&full.outcomes).enumerate() {
        assert_eq!(a, b, "frame {i}: outcome with the cache, and without");
    }
    assert_eq!(cached.transmitted.len(), full.transmitted.len());
    let mut next_hop_differs = 0;
    for (a, b) in cached.transmitted.iter().zip(&full.transmitted) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        assert_eq!(
            a.2[6..],
            b.2[6..],
            "frame {}: bytes with the cache, and without",
            a.0
        );
        next_hop_differs += usize::from(a.2[..6] != b.2[..6]);
    }
    assert!(
        next_hop_differs * 50 < full.transmitted.len().max(50),
        "next hops differ in {next_hop_differs} of {} frames",
        full.transmitted.len()
    );
    for v in 0..table.vteps() as u32 {
        let ip = table.vtep_ip(v);
        assert_eq!(
            cached.worker.neighbors.get(&ip),
            full.worker.neighbors.get(&ip),
            "next hop of {ip}"
        );
    }
    assert_eq!(cached.worker.counters, full.worker.counters, "counters");
}

/// 40 tenants, 200 flows seen many times in 6 000 frames.
fn many() -> Params {
    Params {
        tenants: 40,
        endpoints: 400,
        rules: 60,
        flows: 200,
        frames: 6000,
        ..Params::default()
    }
}

#[test]
fn the_decision_cache_changes_nothing_but_the_cost() {
    let many = many();
    for p in [
        Params {
            frames: 4000,
            ..Params::default()
        },
        many.clone(),
        Params {
            replies: Replies::Stateless,
            ..many.clone()
        },
        Params {
            spaces: 3,
            tenants: 300,
            endpoints: 3000,
            rules: 400,
            flows: 500,
            frames: 8000,
            ..Params::default()
        },
        Params {
            denied: 0.4,
            allowed: 0.4,
            inner_size: 1400,
            seed: 7,
            ..many
        },
    ] {
        assert_same(&p);
    }
}

/// `[gateway] decision_cache` sizes the cache a replay's worker gets: 0 holds nothing (every frame
/// the cache could take is a miss), a few entries hold less than the default, and the outcomes are
/// the same at every size.
#[test]
fn the_decision_cache_setting_sizes_the_cache() {
    let w = generate(&many()).expect("workload");
    let run = |entries: Option<u32>| {
        let mut doc = w.doc.clone();
        doc.gateway.decision_cache = entries;
        let table = Table::compile(Arc::new(doc), 1, None).expect("compiles");
        let out = replay(&table, &w.frames);
        (datapath::decision_cache_for(&table), out)
    };
    let (n, default) = run(None);
    assert_eq!(n, 131_072);
    let probed = default.worker.cache_hits + default.worker.cache_misses;
    assert!(default.worker.cache_hits > default.worker.cache_misses);
    for (entries, want) in [(Some(0), 0), (Some(3), 3), (Some(4096), 4096)] {
        let (n, out) = run(entries);
        assert_eq!(n, want);
        assert_eq!(out.outcomes, default.outcomes, "{entries:?}");
        assert_eq!(
            out.worker.cache_hits + out.worker.cache_misses,
            probed,
            "{entries:?}: every frame the cache could take is probed"
        );
        match n {
            0 => assert_eq!(out.worker.cache_hits, 0),
            3 => assert!(
                out.worker.cache_hits < default.worker.cache_hits / 2,
                "4 entries for 200 flows: {} hits",
                out.worker.cache_hits
            ),
            _ => assert_eq!(out.worker.cache_hits, default.worker.cache_hits),
        }
    }
}
