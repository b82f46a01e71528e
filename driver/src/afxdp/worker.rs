//! One worker: a pinned thread owning, for its RX queue, one UMEM shared by an AF_XDP socket on each
//! interface. RX batch → pipeline → egress choice → TX, frames of dropped packets straight back to the
//! fill ring, completions reclaimed every round; no allocation per frame.

use super::{PollMode, Routes};
use crate::live::LiveWorker;
use arc_swap::ArcSwap;
use datapath::pipeline::{null_forward, Frame, Outcome, Worker, HEADROOM};
use policy::Table;
use serde::Serialize;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vtep::Mac;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

/// Largest batch a worker takes from one RX ring at once.
pub const MAX_BATCH: usize = 256;
/// Descriptors handed to a fill ring per produce call (reservations are all-or-nothing).
const FILL_CHUNK: usize = 64;

/// One AF_XDP socket of a worker: its interface's rings.
pub struct Port {
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub fq: FillQueue,
    pub cq: CompQueue,
    /// Source MAC of frames leaving through this interface.
    pub mac: Mac,
    pub ifname: String,
    tx_outstanding: usize,
}

impl Port {
    pub fn new(
        rx: RxQueue,
        tx: TxQueue,
        fq: FillQueue,
        cq: CompQueue,
        mac: Mac,
        ifname: String,
    ) -> Port {
        Port {
            rx,
            tx,
            fq,
            cq,
            mac,
            ifname,
            tx_outstanding: 0,
        }
    }
}

/// Everything a worker thread owns.
pub struct Sockets {
    pub queue: u32,
    pub umem: Umem,
    /// Ports in the order of the run's interfaces.
    pub ports: Vec<Port>,
    /// Frames owned by userspace and free for the fill rings.
    pub free: Vec<FrameDesc>,
    /// Usable bytes from a frame's data start (the UMEM's per-frame MTU).
    pub frame_mtu: usize,
    pub zero_copy: bool,
}

/// What the driver counts beside the pipeline (which counts its own decisions).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DriverCounters {
    pub rx: u64,
    pub tx: u64,
    pub batches: u64,
    /// Frames the pipeline forwarded whose next hop had no known MAC yet (dropped).
    pub unresolved_next_hop: u64,
    /// Frames the TX ring had no room for (dropped).
    pub tx_ring_full: u64,
    pub tx_wakeups: u64,
    pub fill_wakeups: u64,
    pub idle_polls: u64,
    /// Kernel AF_XDP statistics, summed over the worker's sockets.
    pub xsk_rx_dropped: u64,
    pub xsk_rx_ring_full: u64,
    pub xsk_fill_ring_empty: u64,
    pub xsk_rx_invalid: u64,
    pub xsk_tx_invalid: u64,
}

impl DriverCounters {
    pub fn add(&mut self, o: &DriverCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.batches += o.batches;
        self.unresolved_next_hop += o.unresolved_next_hop;
        self.tx_ring_full += o.tx_ring_full;
        self.tx_wakeups += o.tx_wakeups;
        self.fill_wakeups += o.fill_wakeups;
        self.idle_polls += o.idle_polls;
        self.xsk_rx_dropped += o.xsk_rx_dropped;
        self.xsk_rx_ring_full += o.xsk_rx_ring_full;
        self.xsk_fill_ring_empty += o.xsk_fill_ring_empty;
        self.xsk_rx_invalid += o.xsk_rx_invalid;
        self.xsk_tx_invalid += o.xsk_tx_invalid;
    }
}

/// What the worker shares with the control thread.
pub struct Shared {
    pub table: Arc<ArcSwap<Table>>,
    /// Each worker's face toward the management plane, by worker number.
    pub workers: Vec<Arc<crate::live::WorkerShared>>,
    pub routes: ArcSwap<Routes>,
    pub stop: AtomicBool,
    /// The flow table every worker shares (a flow's request and reply arrive on different queues).
    pub flows: Arc<datapath::flows::FlowTable>,
    /// Entries of each worker's decision cache (the policy's `[gateway] decision_cache` at start).
    pub decision_cache: usize,
    /// Each worker's driver counters so far, published about once a second and at every idle round.
    pub driver: Vec<std::sync::Mutex<DriverCounters>>,
}

impl Shared {
    /// The driver counters of all workers, summed, as last published.
    pub fn driver_totals(&self) -> DriverCounters {
        let mut t = DriverCounters::default();
        for d in &self.driver {
            if let Ok(d) = d.lock() {
                t.add(&d);
            }
        }
        t
    }
}

/// Nanoseconds since the Unix epoch.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The kernel's AF_XDP statistics of a worker's sockets, summed (cumulative, as the kernel keeps them).
fn xsk_stats(s: &Sockets) -> DriverCounters {
    let mut c = DriverCounters::default();
    for p in &s.ports {
        if let Ok(st) = p.rx.fd().xdp_statistics() {
            c.xsk_rx_dropped += st.rx_dropped();
            c.xsk_rx_ring_full += st.rx_ring_full();
            c.xsk_fill_ring_empty += st.rx_fill_ring_empty_descs();
            c.xsk_rx_invalid += st.rx_invalid_descs();
            c.xsk_tx_invalid += st.tx_invalid_descs();
        }
    }
    c
}

/// Reclaims completed TX frames of every port into `free`.
fn reclaim(s: &mut Sockets, tmp: &mut [FrameDesc]) {
    for p in s.ports.iter_mut() {
        loop {
            // SAFETY: the descriptors come back from the kernel's completion ring of a UMEM this
            // worker owns; `tmp` is scratch space only written by `consume`.
            let n = unsafe { p.cq.consume(tmp) };
            if n == 0 {
                break;
            }
            p.tx_outstanding = p.tx_outstanding.saturating_sub(n);
            s.free.extend_from_slice(&tmp[..n]);
        }
    }
}

/// Tops up every port's fill ring from `free`.
fn refill(s: &mut Sockets) {
    for p in s.ports.iter_mut() {
        while !s.free.is_empty() {
            let k = s.free.len().min(FILL_CHUNK);
            let from = s.free.len() - k;
            // SAFETY: frames in `free` belong to this worker's UMEM and to no ring.
            let n = unsafe { p.fq.produce(&s.free[from..]) };
            if n == 0 {
                break;
            }
            s.free.truncate(s.free.len() - n);
        }
    }
}

/// The worker's loop, until `shared.stop`. Returns its pipeline state and driver counters.
pub fn run(
    mut s: Sockets,
    shared: Arc<Shared>,
    me: usize,
    batch: usize,
    poll: PollMode,
    null: bool,
) -> (Worker, DriverCounters) {
    let batch = batch.clamp(1, MAX_BATCH);
    let mut w = Worker::with_flows_and_cache(shared.flows.clone(), shared.decision_cache);
    let mut c = DriverCounters::default();
    let mut rx_descs = [FrameDesc::default(); MAX_BATCH];
    let mut tmp = [FrameDesc::default(); MAX_BATCH];
    let mut outcomes = [Outcome::default(); MAX_BATCH];
    let mut egress = [usize::MAX; MAX_BATCH];
    let mut lens = [0usize; MAX_BATCH];
    let nports = s.ports.len();
    let mut stage: Vec<Vec<FrameDesc>> =
        (0..nports).map(|_| Vec::with_capacity(MAX_BATCH)).collect();
    let mut pollfds: Vec<libc::pollfd> = s
        .ports
        .iter()
        .map(|p| libc::pollfd {
            fd: p.rx.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let frame_mtu = s.frame_mtu;
    let mut idle: u32 = 0;
    let ifnames: Vec<Arc<str>> = s
        .ports
        .iter()
        .map(|p| Arc::from(p.ifname.as_str()))
        .collect();
    let mut last_publish = std::time::Instant::now();

    refill(&mut s);
    while !shared.stop.load(Ordering::Relaxed) {
        let table = shared.table.load();
        let routes = shared.routes.load();
        let now_ns = unix_now_ns();
        let mut work = 0usize;
        for i in 0..nports {
            reclaim(&mut s, &mut tmp);
            refill(&mut s);
            // SAFETY: `rx_descs` receives descriptors of frames the kernel hands over to us.
            let n = unsafe { s.ports[i].rx.consume(&mut rx_descs[..batch]) };
            if n == 0 {
                continue;
            }
            work += n;
            c.rx += n as u64;
            c.batches += 1;
            {
                let mut frames: [Frame<'_>; MAX_BATCH] =
                    std::array::from_fn(|_| Frame::new(&mut [], 0, 0));
                for (f, d) in frames.iter_mut().zip(rx_descs[..n].iter_mut()) {
                    let len = d.lengths().data().min(frame_mtu);
                    // SAFETY: `d` was just consumed from the RX ring, so its frame is ours alone
                    // until it is produced to a TX or fill ring.
                    let data = unsafe { s.umem.data_mut(d).contents_mut().as_mut_ptr() };
                    // SAFETY: the UMEM was created with a frame headroom of HEADROOM bytes, which
                    // lie right before the data segment in the same frame, and the data segment
                    // is `frame_mtu` bytes long; the frame is exclusively ours (see above) and
                    // every frame of the batch is a distinct frame, so the slices do not overlap.
                    let buf = unsafe {
                        std::slice::from_raw_parts_mut(data.sub(HEADROOM), HEADROOM + frame_mtu)
                    };
                    *f = Frame::new(buf, HEADROOM, len);
                }
                // The null reflector (a benchmark reference): out of the next interface toward
                // the first VTEP routed there, touching each frame but deciding nothing.
                let null_hop = null.then(|| {
                    let port = (i + 1) % nports;
                    let mac = routes
                        .map
                        .values()
                        .find(|r| r.port == port)
                        .and_then(|r| r.mac);
                    (port, mac)
                });
                if null {
                    null_forward(&mut frames[..n], &mut outcomes[..n], &mut w.counters);
                } else {
                    w.process_on(
                        &table,
                        &shared.workers[me],
                        &mut frames[..n],
                        &mut outcomes[..n],
                        now_ns,
                        ifnames.get(i),
                    );
                }
                for k in 0..n {
                    egress[k] = usize::MAX;
                    if !outcomes[k].disposition.transmits() {
                        continue;
                    }
                    let f = &mut frames[k];
                    // Egress interface and next hop: the control thread's route toward the VTEP the
                    // outcome names (by index when the routes are of this table), or back out of the
                    // interface the frame came in on, to the L2 source the pipeline addressed.
                    let to = outcomes[k].egress;
                    let route = match to {
                        Some(v) if routes.version == table.version() => {
                            routes.by_vtep.get(v as usize).and_then(|r| r.as_ref())
                        }
                        Some(v) => routes.map.get(&table.vtep_ip(v)),
                        None => None,
                    };
                    let (port, mac) = match (null_hop, route) {
                        (Some(hop), _) => hop,
                        (None, Some(r)) => {
                            (r.port, to.and_then(|v| w.neighbors.of_vtep(v)).or(r.mac))
                        }
                        (None, None) => {
                            let d = f.data();
                            let mut m = [0u8; 6];
                            m.copy_from_slice(&d[0..6]);
                            (i, Some(vtep::Mac(m)))
                        }
                    };
                    let Some(mac) = mac else {
                        c.unresolved_next_hop += 1;
                        continue;
                    };
                    let (start, len) = (f.start, f.len);
                    let d = &mut f.buf[start..start + len];
                    d[0..6].copy_from_slice(&mac.0);
                    d[6..12].copy_from_slice(&s.ports[port].mac.0);
                    if start != HEADROOM {
                        // The TX descriptor starts at the frame's data segment: move the frame
                        // there (only when re-encapsulation changed the header length).
                        f.buf.copy_within(start..start + len, HEADROOM);
                    }
                    egress[k] = port;
                    lens[k] = len;
                }
            }
            for k in 0..n {
                let d = &mut rx_descs[k];
                match egress[k] {
                    usize::MAX => s.free.push(*d),
                    port => {
                        // SAFETY: the frame is still ours (not yet in any ring); only the
                        // descriptor's length is written.
                        unsafe { s.umem.data_mut(d).cursor().set_pos(lens[k]) };
                        stage[port].push(*d);
                    }
                }
            }
            for (j, st) in stage.iter_mut().enumerate() {
                if st.is_empty() {
                    continue;
                }
                let p = &mut s.ports[j];
                // SAFETY: every staged frame belongs to this UMEM, is ours, and holds a complete
                // frame of the length set above.
                let mut sent = unsafe { p.tx.produce(st) };
                if sent == 0 {
                    // Ring full: let the kernel drain it, reclaim, and try once more.
                    let _ = p.tx.wakeup();
                    c.tx_wakeups += 1;
                    loop {
                        // SAFETY: as in `reclaim`.
                        let m = unsafe { p.cq.consume(&mut tmp) };
                        if m == 0 {
                            break;
                        }
                        p.tx_outstanding = p.tx_outstanding.saturating_sub(m);
                        s.free.extend_from_slice(&tmp[..m]);
                    }
                    // SAFETY: as above.
                    sent = unsafe { p.tx.produce(st) };
                }
                if sent == 0 {
                    c.tx_ring_full += st.len() as u64;
                    s.free.extend_from_slice(st);
                } else {
                    c.tx += sent as u64;
                    p.tx_outstanding += sent;
                }
                st.clear();
                if p.tx.needs_wakeup() {
                    let _ = p.tx.wakeup();
                    c.tx_wakeups += 1;
                }
            }
        }
        if work == 0 {
            w.idle_with(&table, &shared.workers[me]);
        }
        // Live driver counters for `ctl stats` and /metrics: about once a second.
        if last_publish.elapsed() >= std::time::Duration::from_secs(1) {
            last_publish = std::time::Instant::now();
            let mut p = c;
            p.add(&xsk_stats(&s));
            if let Some(Ok(mut d)) = shared.driver.get(me).map(|d| d.lock()) {
                *d = p;
            }
        }
        drop(table);
        drop(routes);
        if work > 0 {
            idle = 0;
            continue;
        }
        // Idle: keep the kernel going (TX still in flight, fill ring asleep), then back off.
        for p in s.ports.iter_mut() {
            if p.tx_outstanding > 0 && p.tx.needs_wakeup() {
                let _ = p.tx.wakeup();
                c.tx_wakeups += 1;
            }
            if p.fq.needs_wakeup() {
                let _ = p.fq.wakeup(p.rx.fd_mut(), 0);
                c.fill_wakeups += 1;
            }
        }
        idle = idle.saturating_add(1);
        match poll {
            PollMode::Spin => std::hint::spin_loop(),
            PollMode::Adaptive => {
                if idle < 256 {
                    std::hint::spin_loop();
                } else if idle < 512 {
                    std::thread::yield_now();
                } else {
                    // Sleep in poll() until a ring has frames, at most a few ms (so stop and
                    // policy swaps are still seen promptly).
                    let timeout = ((idle - 512) / 64 + 1).min(10) as i32;
                    // SAFETY: `pollfds` is a live, correctly sized array of pollfd structures.
                    unsafe {
                        libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout)
                    };
                    c.idle_polls += 1;
                }
            }
        }
    }
    c.add(&xsk_stats(&s));
    if let Some(Ok(mut d)) = shared.driver.get(me).map(|d| d.lock()) {
        *d = c;
    }
    (w, c)
}
