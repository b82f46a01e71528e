//! Replaying captures through the pipeline: the same code as the live gateway, fed from memory in
//! batches, with every frame's outcome, what would be transmitted, and a rate against a null forwarder.

pub use crate::capture::{read_capture, write_pcap, CaptureError, Captured};
use crate::live::LiveWorker;
use datapath::counters::Counters;
use datapath::pipeline::{null_forward, Frame, Outcome, Worker, HEADROOM};
use policy::Table;
use serde::Serialize;
use std::time::Instant;

/// Frames per batch, as a live worker would take them from its RX ring.
pub const BATCH: usize = 64;

/// Everything a replay produced.
#[derive(Debug)]
pub struct ReplayOutput {
    /// One outcome per input frame, in order.
    pub outcomes: Vec<Outcome>,
    /// Transmitted frames (forwarded and ARP replies): (input index, timestamp, bytes).
    pub transmitted: Vec<(usize, u64, Vec<u8>)>,
    pub worker: Worker,
}

/// Batches of frames: at most `BATCH` each; every frame carries its own capture time (Unix ns), at
/// which rules' validity windows, flows and fragments are judged.
fn batches(frames: &[Captured]) -> Vec<(usize, usize, i64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let j = (i + BATCH).min(frames.len());
        out.push((i, j, frames[i].ts_ns as i64));
        i = j;
    }
    out
}

/// A batch's worth of frame buffers, each with `HEADROOM` bytes before the frame.
struct Arena {
    slot: usize,
    bytes: Vec<u8>,
}

impl Arena {
    fn new(frames: &[Captured]) -> Arena {
        let max = frames.iter().map(|f| f.data.len()).max().unwrap_or(0);
        let slot = (HEADROOM + max + 63) & !63;
        Arena {
            slot,
            bytes: vec![0; slot * BATCH],
        }
    }

    /// Loads `frames` into the slots and runs `f` over them as a batch.
    /// With `stamp`, each frame carries its capture time; without, the batch's `now` applies.
    fn run<R>(
        &mut self,
        frames: &[Captured],
        stamp: bool,
        f: impl FnOnce(&mut [Frame<'_>]) -> R,
    ) -> R {
        let n = frames.len().min(BATCH);
        // One array of frames, built in place: a slot per captured frame, loaded with its bytes;
        // the unused slots (a short last batch) hold empty frames the pipeline never sees.
        let mut chunks = self.bytes.chunks_exact_mut(self.slot);
        let mut ready: [Frame<'_>; BATCH] = std::array::from_fn(|i| {
            let buf = chunks.next().expect("BATCH slots");
            let Some(c) = frames.get(i) else {
                return Frame::new(&mut [], 0, 0);
            };
            let len = c.data.len();
            buf[HEADROOM..HEADROOM + len].copy_from_slice(&c.data);
            let fr = Frame::new(buf, HEADROOM, len);
            if stamp {
                fr.at(c.ts_ns as i64)
            } else {
                fr
            }
        });
        f(&mut ready[..n])
    }
}

/// Replays `frames` through the pipeline once, keeping every outcome and transmitted frame.
pub fn replay(table: &Table, frames: &[Captured]) -> ReplayOutput {
    replay_with(worker_for(table), table, frames)
}

/// [`replay`] keeping every outcome but none of the transmitted frames (`transmitted` is left
/// empty): for a report that writes no capture, which at 100 000 forwarded frames saves ~16 MB.
pub fn replay_outcomes(table: &Table, frames: &[Captured]) -> ReplayOutput {
    run(worker_for(table), table, frames, false)
}

/// The worker a replay (or a measurement) of `table` runs: a flow table of its own, sized and
/// timed as `table` says, and the decision cache it says.
fn worker_for(table: &Table) -> Worker {
    let flows = datapath::pipeline::flow_table_for(table);
    Worker::with_flows_and_cache(flows, datapath::decision_cache_for(table))
}

/// [`replay`] through a given worker (one without a decision cache, say).
pub fn replay_with(worker: Worker, table: &Table, frames: &[Captured]) -> ReplayOutput {
    run(worker, table, frames, true)
}

fn run(mut worker: Worker, table: &Table, frames: &[Captured], keep: bool) -> ReplayOutput {
    let mut arena = Arena::new(frames);
    let mut outcomes = vec![Outcome::default(); frames.len()];
    let mut transmitted = Vec::new();
    for (s, e, now) in batches(frames) {
        arena.run(&frames[s..e], true, |batch| {
            worker.process(table, batch, &mut outcomes[s..e], now);
            if !keep {
                return;
            }
            for (k, f) in batch.iter().enumerate() {
                if outcomes[s + k].disposition.transmits() {
                    transmitted.push((s + k, frames[s + k].ts_ns, f.data().to_vec()));
                }
            }
        });
    }
    ReplayOutput {
        outcomes,
        transmitted,
        worker,
    }
}

/// Throughput of the pipeline beside the null forwarder, measured in the same run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rate {
    /// Frames processed per pass × passes.
    pub frames: u64,
    pub mpps: f64,
    pub ns_per_frame: f64,
    pub null_mpps: f64,
    pub null_ns_per_frame: f64,
    /// Pipeline rate over null forwarder rate.
    pub ratio: f64,
}

/// Replays `frames` from memory `repeat` times through the pipeline and through the null forwarder,
/// alternating three rounds of each and keeping each one's best round (the machine is shared).
pub fn measure(table: &Table, frames: &[Captured], repeat: u32) -> Rate {
    let plan = batches(frames);
    let mut arena = Arena::new(frames);
    let mut outcomes = [Outcome::default(); BATCH];
    let mut worker = worker_for(table);
    let mut null_counters = Counters::default();
    let total = frames.len() as u64 * u64::from(repeat);
    let mut best = [f64::MAX; 2];
    for _round in 0..3 {
        for (which, b) in best.iter_mut().enumerate() {
            let t0 = Instant::now();
            for _ in 0..repeat {
                for &(s, e, now) in &plan {
                    let out = &mut outcomes[..e - s];
                    arena.run(&frames[s..e], true, |batch| {
                        if which == 0 {
                            worker.process(table, batch, out, now);
                        } else {
                            null_forward(batch, out, &mut null_counters);
                        }
                    });
                }
            }
            *b = b.min(t0.elapsed().as_secs_f64());
        }
    }
    let per = |secs: f64| (secs * 1e9 / total.max(1) as f64, total as f64 / secs / 1e6);
    let (ns, mpps) = per(best[0]);
    let (null_ns, null_mpps) = per(best[1]);
    Rate {
        frames: total,
        mpps,
        ns_per_frame: ns,
        null_mpps,
        null_ns_per_frame: null_ns,
        ratio: mpps / null_mpps,
    }
}

/// Replays `frames` in a loop as a live worker would see them — policy loaded from `policy` once per
/// batch, state published through `shared`, validity windows judged at the wall clock — until `stop`
/// is set. `pps` paces it (0: as fast as it goes). This is `joypath replay --serve`: a gateway without
/// a NIC whose management socket can be scripted while frames flow.
pub fn serve(
    frames: &[Captured],
    policy: &arc_swap::ArcSwap<Table>,
    shared: &crate::live::WorkerShared,
    stop: &std::sync::atomic::AtomicBool,
    pps: u64,
    flows: std::sync::Arc<datapath::flows::FlowTable>,
) -> Worker {
    use std::sync::atomic::Ordering;
    let cache = datapath::decision_cache_for(&policy.load());
    let mut worker = Worker::with_flows_and_cache(flows, cache);
    let mut arena = Arena::new(frames);
    let mut outcomes = [Outcome::default(); BATCH];
    let started = Instant::now();
    let mut sent: u64 = 0;
    if frames.is_empty() {
        while !stop.load(Ordering::Relaxed) {
            worker.idle_live(policy, shared);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        return worker;
    }
    while !stop.load(Ordering::Relaxed) {
        for chunk in frames.chunks(BATCH) {
            let ts_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let out = &mut outcomes[..chunk.len()];
            arena.run(chunk, false, |batch| {
                worker.process_live(policy, shared, batch, out, ts_ns)
            });
            sent += chunk.len() as u64;
            if pps > 0 {
                let due = std::time::Duration::from_secs_f64(sent as f64 / pps as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    worker
}
