//! `Worker::process` over a 64-frame batch at 10, 10k and 1M tenants, beside the null forwarder over
//! the same batches. Each iteration copies one batch of the synthetic workload into the arena (as the
//! replay driver does; both benches pay it) and runs it; batches rotate through 131 072 frames of
//! as many flows (see `synth::Params::scale`), so the 1M tables do not fit in the caches.
//!
//! `JOYPATH_BENCH_CACHE=N` gives the worker a decision cache of `N` entries instead of its own
//! (131 072): `0` times the full path alone, `1048576` (which holds every flow) the cache hit alone.

mod common;

use common::{setup, Arena, BATCH, SCALES};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use datapath::{flow_table_for, null_forward, Counters, Outcome, Worker};
use std::sync::OnceLock;

/// The decision cache's size `JOYPATH_BENCH_CACHE` asks for, if any.
fn cache_entries() -> Option<usize> {
    let v = std::env::var("JOYPATH_BENCH_CACHE").ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("JOYPATH_BENCH_CACHE={v:?}: {e} (want a number of entries)"),
    }
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (label, t, e, r) in SCALES {
        let cell: OnceLock<common::Setup> = OnceLock::new();
        let get = || cell.get_or_init(|| setup(label, t, e, r));
        // Worker state lives across criterion's calls of the closure (one per sample): a fresh
        // worker's first batch sizes its per-tenant counters (112 MB at 1M tenants), which must not
        // land in a timed iteration. It is warmed with one pass over every batch before timing.
        let mut state: Option<(Arena, Worker, (u64, u64))> = None;
        g.bench_function(format!("{label}/worker"), |b| {
            let s = get();
            let batches: Vec<_> = s.frames.chunks_exact(BATCH).collect();
            let (arena, worker, _) = state.get_or_insert_with(|| {
                let mut arena = Arena::new(&s.frames);
                let flows = flow_table_for(&s.table);
                let mut worker = match cache_entries() {
                    Some(n) => Worker::with_flows_and_cache(flows, n),
                    None => Worker::with_flows(flows),
                };
                let mut out = [Outcome::default(); BATCH];
                for batch in &batches {
                    arena.run(batch, |frames| {
                        worker.process(&s.table, frames, &mut out, s.now)
                    });
                }
                let warm = (worker.cache_hits, worker.cache_misses);
                (arena, worker, warm)
            });
            let mut out = [Outcome::default(); BATCH];
            let mut i = 0usize;
            b.iter(|| {
                let batch = batches[i % batches.len()];
                i = i.wrapping_add(1);
                arena.run(batch, |frames| {
                    worker.process(&s.table, frames, &mut out, s.now);
                });
                black_box(&out);
            });
            // The bench measures the full path: most frames are forwarded, none is malformed.
            let c = &worker.counters;
            assert!(c.forwarded * 10 >= c.frames * 8, "{c:?}");
        });
        if let Some((_, w, (h, m))) = &state {
            // What the timed batches found in the decision cache (a hit skips every table).
            let (h, m) = (w.cache_hits - h, w.cache_misses - m);
            eprintln!(
                "{label}: decision cache {:.0}% hits ({h} hits, {m} misses)",
                h as f64 * 100.0 / (h + m).max(1) as f64
            );
        }
        g.bench_function(format!("{label}/null"), |b| {
            let s = get();
            let batches: Vec<_> = s.frames.chunks_exact(BATCH).collect();
            let mut arena = Arena::new(&s.frames);
            let mut counters = Counters::default();
            let mut out = [Outcome::default(); BATCH];
            let mut i = 0usize;
            b.iter(|| {
                let batch = batches[i % batches.len()];
                i = i.wrapping_add(1);
                arena.run(batch, |frames| {
                    null_forward(frames, &mut out, &mut counters)
                });
                black_box(&out);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
