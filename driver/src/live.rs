//! What a live worker shares with the rest of the process: the policy it reads (`ArcSwap<Table>`,
//! loaded once per batch), the version it runs, counter snapshots on request and an optional trace tap.
//! All of it is touched once per batch, never per frame, and never with a lock on the frame path.

use arc_swap::{ArcSwap, ArcSwapOption};
use datapath::counters::Counters;
use datapath::pipeline::{Disposition, Frame, Outcome, Worker};
use policy::Table;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

/// One traced frame: the frame as received, and what the gateway did with it.
#[derive(Debug, Clone)]
pub struct TracedFrame {
    pub worker: usize,
    pub ts_ns: u64,
    pub data: Vec<u8>,
    pub tenant: Option<String>,
    pub disposition: Disposition,
    pub rule: Option<u32>,
    pub version: u64,
    /// The interface the frame came in on, when the driver knows it.
    pub ifname: Option<Arc<str>>,
    /// For a forwarded frame: the outer destination (VTEP) and VNI it leaves with.
    pub egress: Option<(std::net::IpAddr, u32)>,
}

/// A trace request as the workers see it: which frames, how many, where to send them.
#[derive(Debug)]
pub struct TraceTap {
    /// Only this tenant's frames (by name, compared with the frame's source tenant).
    pub tenant: Option<String>,
    /// Only frames with this outcome: "forward", "arp_reply" or a drop reason name.
    pub outcome: Option<String>,
    /// Frames still wanted, across all workers.
    pub remaining: AtomicUsize,
    pub tx: SyncSender<TracedFrame>,
}

impl TraceTap {
    fn wants(&self, table: &Table, o: &Outcome) -> bool {
        if let Some(t) = &self.tenant {
            match o.tenant {
                Some(i) if *table.tenant(i).name == **t => {}
                _ => return false,
            }
        }
        if let Some(want) = &self.outcome {
            let name = match o.disposition {
                Disposition::Forward => "forward",
                Disposition::ArpReply => "arp_reply",
                Disposition::NdReply => "nd_reply",
                Disposition::Drop(r) => r.name(),
                Disposition::Pending => "pending",
            };
            if name != want {
                return false;
            }
        }
        true
    }
}

/// A worker's shared face.
#[derive(Debug, Default)]
pub struct WorkerShared {
    pub id: usize,
    /// Version and digest of the table of the worker's last batch.
    pub active_version: AtomicU64,
    pub active_digest: AtomicU64,
    /// Frames processed so far (published once per batch).
    pub frames: AtomicU64,
    snapshot_wanted: AtomicBool,
    snapshot: Mutex<Option<Counters>>,
    /// Armed by `trace`, disarmed when satisfied.
    pub trace: ArcSwapOption<TraceTap>,
    /// Frames decided by each rule, by rule name, since the worker started (updated once per batch).
    pub rule_hits: Mutex<hashbrown::HashMap<String, u64>>,
}

impl WorkerShared {
    pub fn new(id: usize) -> Self {
        WorkerShared {
            id,
            ..Default::default()
        }
    }

    /// Asks the worker for a copy of its counters at its next batch.
    pub fn request_snapshot(&self) {
        self.snapshot_wanted.store(true, Ordering::Release);
    }

    /// The copy, once the worker has made it.
    pub fn take_snapshot(&self) -> Option<Counters> {
        if self.snapshot_wanted.load(Ordering::Acquire) {
            return None;
        }
        self.snapshot.lock().ok()?.take()
    }
}

/// The live side of a [`Worker`]: a batch with the policy loaded once, the worker's state published
/// for the control side, a counter snapshot served, and an armed trace tap fed.
pub trait LiveWorker {
    /// One live batch: loads the policy once, runs the pipeline, publishes the version run, serves a
    /// pending counter snapshot and feeds an armed trace tap. `ts_ns` stamps traced frames.
    fn process_live(
        &mut self,
        policy: &ArcSwap<Table>,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
    );

    /// [`LiveWorker::process_live`] with the table the driver has already loaded for this batch.
    fn process_with(
        &mut self,
        table: &Table,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
    );

    /// [`LiveWorker::process_with`] for frames received on interface `ifname` (named in traces).
    fn process_on(
        &mut self,
        table: &Table,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
        ifname: Option<&Arc<str>>,
    );

    /// Publishes the worker's state while it is idle (no batch), so an idle worker still reports
    /// the newest version and answers snapshot requests.
    fn idle_live(&mut self, policy: &ArcSwap<Table>, shared: &WorkerShared);

    /// [`LiveWorker::idle_live`] with a table already loaded.
    fn idle_with(&mut self, table: &Table, shared: &WorkerShared);
}

impl LiveWorker for Worker {
    fn process_live(
        &mut self,
        policy: &ArcSwap<Table>,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
    ) {
        self.process_with(&policy.load(), shared, frames, outcomes, ts_ns);
    }

    fn process_with(
        &mut self,
        table: &Table,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
    ) {
        self.process_on(table, shared, frames, outcomes, ts_ns, None);
    }

    fn process_on(
        &mut self,
        table: &Table,
        shared: &WorkerShared,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        ts_ns: u64,
        ifname: Option<&Arc<str>>,
    ) {
        let now = ts_ns as i64;
        let tap = shared.trace.load();
        match tap.as_ref() {
            None => self.process(table, frames, outcomes, now),
            Some(tap) => {
                // Tracing only: keep the frames as received, before the in-place rewrite.
                let before: Vec<Vec<u8>> = frames.iter().map(|f| f.data().to_vec()).collect();
                self.process(table, frames, outcomes, now);
                for ((data, o), f) in before.into_iter().zip(outcomes.iter()).zip(frames.iter()) {
                    if !tap.wants(table, o) {
                        continue;
                    }
                    let claimed = tap
                        .remaining
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if !claimed {
                        shared.trace.store(None);
                        break;
                    }
                    let _ = tap.tx.try_send(TracedFrame {
                        worker: shared.id,
                        ts_ns,
                        data,
                        tenant: o.tenant.map(|t| table.tenant(t).name.to_string()),
                        disposition: o.disposition,
                        rule: o.rule,
                        version: table.version(),
                        ifname: ifname.cloned(),
                        egress: matches!(o.disposition, Disposition::Forward)
                            .then(|| vtep::parse_overlay(f.data(), table.udp_port()).ok())
                            .flatten()
                            .map(|ov| (ov.dst_ip, ov.vni)),
                    });
                }
            }
        }
        count_rule_hits(table, shared, outcomes);
        publish_state(self, table, shared);
    }

    fn idle_live(&mut self, policy: &ArcSwap<Table>, shared: &WorkerShared) {
        self.idle_with(&policy.load(), shared);
    }

    fn idle_with(&mut self, table: &Table, shared: &WorkerShared) {
        publish_state(self, table, shared);
    }
}

/// Once per batch (or idle round): the version and frame count the worker runs, and a counter
/// snapshot if one was asked for.
fn publish_state(w: &mut Worker, table: &Table, shared: &WorkerShared) {
    w.active_version = table.version();
    shared
        .active_version
        .store(table.version(), Ordering::Release);
    shared
        .active_digest
        .store(table.digest(), Ordering::Release);
    shared.frames.store(w.counters.frames, Ordering::Release);
    if shared.snapshot_wanted.load(Ordering::Acquire) {
        if let Ok(mut s) = shared.snapshot.lock() {
            *s = Some(w.counters.clone());
        }
        shared.snapshot_wanted.store(false, Ordering::Release);
    }
}

/// Adds a batch's frames to the hits of the rules that decided them, by name (one lock a batch, an
/// allocation only the first time a rule is seen).
fn count_rule_hits(table: &Table, shared: &WorkerShared, outcomes: &[Outcome]) {
    if !outcomes.iter().any(|o| o.rule.is_some()) {
        return;
    }
    let Ok(mut hits) = shared.rule_hits.lock() else {
        return;
    };
    let rules = &table.document().rules;
    for r in outcomes.iter().filter_map(|o| o.rule) {
        let named = rules.get(r as usize).and_then(|x| x.name.as_deref());
        let fallback;
        let name = match named {
            Some(n) => n,
            None => {
                fallback = format!("#{r}");
                &fallback
            }
        };
        match hits.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                hits.insert(name.to_string(), 1);
            }
        }
    }
}

/// Sums the rule hits of several workers.
pub fn collect_rule_hits(workers: &[Arc<WorkerShared>]) -> std::collections::BTreeMap<String, u64> {
    let mut total = std::collections::BTreeMap::new();
    for w in workers {
        if let Ok(h) = w.rule_hits.lock() {
            for (k, v) in h.iter() {
                *total.entry(k.clone()).or_insert(0) += v;
            }
        }
    }
    total
}

/// Sums the counters of several workers, asking each for a snapshot and waiting up to `wait` for them.
pub fn collect_counters(workers: &[Arc<WorkerShared>], wait: std::time::Duration) -> Counters {
    for w in workers {
        w.request_snapshot();
    }
    let deadline = std::time::Instant::now() + wait;
    let mut total = Counters::default();
    let mut pending: Vec<&Arc<WorkerShared>> = workers.iter().collect();
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        pending.retain(|w| match w.take_snapshot() {
            Some(c) => {
                total.add(&c);
                false
            }
            None => true,
        });
        if !pending.is_empty() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    total
}
