//! The live gateway: AF_XDP (xsk-rs) sockets on one or more interfaces, one pinned worker thread per RX
//! queue running the pipeline, an XDP program that takes only the overlay (UDP to the VXLAN port) and
//! passes everything else to the kernel, and a control thread for signals (SIGHUP: reload the policy;
//! SIGINT/SIGTERM: stop), next hops (kernel neighbour table and routes) and final counters.
//!
//! Each worker owns one UMEM shared by its sockets on every interface (same queue number), so a frame
//! received on one interface is transmitted on another without a copy.

mod net;
mod worker;
mod xdp;

pub use net::Interface;
pub use worker::{DriverCounters, MAX_BATCH};
pub use xdp::Attached;

use arc_swap::ArcSwap;
use datapath::counters::{Counters, Summary};
use datapath::pipeline::HEADROOM;
use hashbrown::HashMap;
use policy::{Document, Table};
use serde::Serialize;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vtep::Mac;
use worker::{Port, Shared, Sockets};
use xdp::XdpAttachment;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface as XskIf, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{Socket, Umem};

/// Errors of the live driver, each worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    #[error("interface {0:?} not found")]
    NoInterface(String),
    #[error("interface {ifname} has {has} RX queue(s); asked for {want}")]
    Queues { ifname: String, has: u32, want: u32 },
    #[error("not permitted: {what} needs root (or CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)")]
    Privileges { what: String },
    #[error(
        "an XDP program is already attached to {0} (not ours, or from a joypath still running); \
         detach it with `ip link set dev {0} xdp off` (or xdpgeneric off) and retry"
    )]
    XdpAlreadyAttached(String),
    #[error("XDP on {ifname}: {what}: {detail}")]
    Xdp {
        ifname: String,
        what: &'static str,
        detail: String,
    },
    #[error(
        "cannot allocate the UMEM ({bytes} bytes): {source}; the locked-memory limit is {memlock} \
         (raise it with `ulimit -l unlimited` or LimitMEMLOCK=infinity)"
    )]
    Memlock {
        bytes: usize,
        memlock: String,
        source: std::io::Error,
    },
    #[error("AF_XDP socket on {ifname} queue {queue} ({mode}): {source}")]
    Socket {
        ifname: String,
        queue: u32,
        mode: &'static str,
        source: std::io::Error,
    },
    #[error("zero-copy was required but {ifname} queue {queue} refused it: {source}")]
    NoZeroCopy {
        ifname: String,
        queue: u32,
        source: std::io::Error,
    },
    #[error("policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Setup(String),
}

/// How workers wait for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Busy-poll the rings forever (lowest latency, one core per worker at 100%).
    Spin,
    /// Spin while busy; when idle, yield and then sleep in poll() with a growing timeout (≤ 10 ms).
    Adaptive,
}

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, generic otherwise.
    Auto,
    Native,
    Generic,
}

/// Whether AF_XDP sockets bind in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy where the driver offers it, copy otherwise.
    Auto,
    On,
    Off,
}

/// The `joypath run` settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub config: PathBuf,
    pub interfaces: Vec<String>,
    /// RX queues (= workers); default: every RX queue of the first interface.
    pub queues: Option<u32>,
    /// Cores to pin workers on, round-robin; empty: no pinning.
    pub cores: Vec<usize>,
    pub poll: PollMode,
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
    pub batch: usize,
    /// Entries of each RX, TX, fill and completion ring.
    pub ring_size: u32,
    /// Log the counters every this often (0: never).
    pub stats_every: Duration,
    /// Benchmark reference: skip the pipeline, reflect every frame out of the next interface.
    pub null: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            config: PathBuf::new(),
            interfaces: Vec::new(),
            queues: None,
            cores: Vec::new(),
            poll: PollMode::Adaptive,
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            batch: 64,
            ring_size: 2048,
            stats_every: Duration::ZERO,
            null: false,
        }
    }
}

/// Where frames toward one VTEP leave: the worker's port and the next hop's MAC (kernel's view).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub port: usize,
    pub next_hop: IpAddr,
    pub mac: Option<Mac>,
}

/// The routes toward every VTEP of the policy, rebuilt by the control thread for each table: by
/// the table's VTEP index (what a frame's outcome names), and by address.
#[derive(Debug, Default)]
pub struct Routes {
    pub map: HashMap<IpAddr, Route>,
    pub by_vtep: Vec<Option<Route>>,
    /// The version of the table `by_vtep` is indexed for.
    pub version: u64,
}

/// What `run` reports when it stops.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub policy_version: u64,
    pub reloads: u64,
    pub reload_errors: u64,
    pub uptime_secs: f64,
    #[serde(flatten)]
    pub summary: Summary,
    pub driver: DriverCounters,
}

/// Versioned policy loading: compile a document into the successor of `old`.
pub fn compile(doc: Document, old: Option<&Table>) -> Result<Table, AfxdpError> {
    let version = old.map(|t| t.version() + 1).unwrap_or(1);
    Table::compile(Arc::new(doc), version, old).map_err(|e| AfxdpError::Policy(e.to_string()))
}

fn load_table(path: &Path, old: Option<&Table>) -> Result<Table, AfxdpError> {
    let doc = Document::load(path).map_err(|e| AfxdpError::Policy(e.to_string()))?;
    compile(doc, old)
}

fn memlock_limit() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit structure we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "unknown".into();
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", r.rlim_cur / 1024)
    }
}

/// Lifts RLIMIT_MEMLOCK as far as allowed (kernels before 5.11 charge UMEMs and BPF maps to it).
fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the rlimit structure we pass; failure is harmless here.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK (now {})", memlock_limit());
    }
}

fn io_source(e: &dyn std::error::Error) -> std::io::Error {
    let mut cur = e.source();
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(n) => std::io::Error::from_raw_os_error(n),
                None => std::io::Error::other(io.to_string()),
            };
        }
        cur = c.source();
    }
    std::io::Error::other(e.to_string())
}

/// Builds one worker's UMEM and sockets (one per interface, same queue), copy or zero-copy.
fn build_sockets(
    cfg: &RunConfig,
    ifaces: &[Interface],
    queue: u32,
    zero_copy: bool,
) -> Result<Sockets, AfxdpError> {
    let ring = QueueSize::new(cfg.ring_size)
        .map_err(|e| AfxdpError::Setup(format!("ring size {}: {e}", cfg.ring_size)))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(2048).expect("2048 is a valid frame size"))
        .frame_headroom(HEADROOM as u32)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| AfxdpError::Setup(format!("UMEM config: {e}")))?;
    let frame_mtu = umem_cfg.mtu() as usize;
    // Per interface: a full fill ring and a full TX ring, plus as much again for frames in flight.
    let count = 2 * 2 * cfg.ring_size * ifaces.len() as u32;
    let (umem, free) = Umem::new(
        umem_cfg,
        NonZeroU32::new(count).expect("non-zero frame count"),
        false,
    )
    .map_err(|e| {
        let source = io_source(&e);
        if matches!(
            source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::ENOMEM) | Some(libc::EAGAIN)
        ) {
            AfxdpError::Memlock {
                bytes: count as usize * 2048,
                memlock: memlock_limit(),
                source,
            }
        } else {
            AfxdpError::Setup(format!("creating the UMEM: {e}: {source}"))
        }
    })?;
    let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
    bind |= if zero_copy {
        BindFlags::XDP_ZEROCOPY
    } else {
        BindFlags::XDP_COPY
    };
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind)
        .build();
    let mut ports = Vec::with_capacity(ifaces.len());
    for ifc in ifaces {
        let name = XskIf::new(
            std::ffi::CString::new(ifc.name.as_str())
                .map_err(|_| AfxdpError::NoInterface(ifc.name.clone()))?,
        );
        // SAFETY: every (interface, queue) pair is bound once per UMEM, and the default program
        // load is inhibited (we attach our own), as Socket::new requires for shared UMEMs.
        let r = unsafe { Socket::new(sock_cfg, &umem, &name, queue) };
        let (tx, rx, fqcq) = r.map_err(|e| {
            let source = io_source(&e);
            match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => AfxdpError::Privileges {
                    what: format!("creating an AF_XDP socket on {}", ifc.name),
                },
                _ => AfxdpError::Socket {
                    ifname: ifc.name.clone(),
                    queue,
                    mode: if zero_copy { "zero-copy" } else { "copy" },
                    source,
                },
            }
        })?;
        let (fq, cq) = fqcq.ok_or_else(|| {
            AfxdpError::Setup(format!(
                "{} queue {queue}: no fill/completion rings (pair bound twice?)",
                ifc.name
            ))
        })?;
        ports.push(Port::new(rx, tx, fq, cq, ifc.mac, ifc.name.clone()));
    }
    Ok(Sockets {
        queue,
        umem,
        ports,
        free,
        frame_mtu,
        zero_copy,
    })
}

/// Computes the route toward every VTEP the policy names (connected prefixes first, then the kernel's
/// FIB), with the kernel's neighbour entry for each next hop; probes next hops still unresolved.
fn build_routes(
    table: &Table,
    ifaces: &[Interface],
    cache: &mut HashMap<IpAddr, Option<(usize, IpAddr)>>,
) -> Routes {
    let vteps: Vec<IpAddr> = (0..table.vteps() as u32)
        .map(|v| table.vtep_ip(v))
        .collect();
    let v6 = vteps.iter().any(|v| v.is_ipv6());
    let neigh = net::kernel_neighbors(v6);
    let mut routes = Routes {
        by_vtep: vec![None; vteps.len()],
        version: table.version(),
        ..Routes::default()
    };
    for (idx, v) in vteps.into_iter().enumerate() {
        let hop = *cache.entry(v).or_insert_with(|| {
            if let Some(p) = ifaces.iter().position(|i| i.on_link(v)) {
                return Some((p, v));
            }
            let (oif, via) = net::route_get(v)?;
            let p = ifaces.iter().position(|i| i.index == oif)?;
            Some((p, via))
        });
        let Some((port, next_hop)) = hop else {
            continue;
        };
        let mac = neigh.get(&next_hop).copied();
        if mac.is_none() {
            net::probe(next_hop);
        }
        let r = Route {
            port,
            next_hop,
            mac,
        };
        routes.by_vtep[idx] = Some(r);
        routes.map.insert(v, r);
    }
    routes
}

/// What the caller of [`run`] may plug in: where the policy comes from and goes to (the binary's
/// management plane). Without one, `run` reads `cfg.config` and SIGHUP re-reads it.
pub trait Control: Send {
    /// The table to start from.
    fn initial(&mut self) -> Result<Arc<Table>, String>;
    /// Called once the workers run, with the policy they read and their shared state.
    fn started(
        &mut self,
        policy: Arc<ArcSwap<Table>>,
        workers: Vec<Arc<crate::live::WorkerShared>>,
    ) -> Result<(), String>;
    /// SIGHUP: the table to run next.
    fn reload(&mut self, old: &Arc<Table>) -> Result<Arc<Table>, String>;
    /// Called before [`Control::started`] with a way to read the workers' driver counters live.
    fn driver_counters(&mut self, _read: DriverReader) {}
}

/// Reads the driver counters of all workers, summed, as they last published them.
pub type DriverReader = Arc<dyn Fn() -> DriverCounters + Send + Sync>;

/// Runs the gateway until SIGINT or SIGTERM; SIGHUP re-reads `cfg.config` and swaps the policy.
pub fn run(cfg: &RunConfig) -> Result<RunReport, AfxdpError> {
    run_with(cfg, None)
}

/// [`run`], with the policy coming from and going through `control`.
pub fn run_with(
    cfg: &RunConfig,
    mut control: Option<&mut dyn Control>,
) -> Result<RunReport, AfxdpError> {
    if cfg.interfaces.is_empty() {
        return Err(AfxdpError::Setup("no interface given".into()));
    }
    let mut ifaces = Vec::new();
    for name in &cfg.interfaces {
        let i = Interface::lookup(name)?;
        if ifaces.iter().any(|o: &Interface| o.index == i.index) {
            return Err(AfxdpError::Setup(format!("interface {name} given twice")));
        }
        ifaces.push(i);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tracing::warn!(
            "not running as root: AF_XDP and XDP need CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW"
        );
    }
    let queues = cfg.queues.unwrap_or(ifaces[0].rx_queues).max(1);
    for i in &ifaces {
        if i.rx_queues < queues {
            return Err(AfxdpError::Queues {
                ifname: i.name.clone(),
                has: i.rx_queues,
                want: queues,
            });
        }
    }
    let table = match control.as_mut() {
        Some(c) => c.initial().map_err(AfxdpError::Policy)?,
        None => Arc::new(load_table(&cfg.config, None)?),
    };
    let port = table.udp_port();
    raise_memlock();

    // Signals first, so a SIGTERM during setup still tears down cleanly.
    let stop_sig = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(s, stop_sig.clone())
            .map_err(|e| AfxdpError::Setup(format!("installing signal handlers: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| AfxdpError::Setup(format!("installing signal handlers: {e}")))?;

    let mut attachments = Vec::new();
    for i in &ifaces {
        let a = XdpAttachment::attach(&i.name, port, cfg.xdp_mode)?;
        tracing::info!(
            "{}: XDP program attached in {} mode (bpf_link: removed when joypath exits)",
            i.name,
            a.mode
        );
        attachments.push(a);
    }

    let mut all = Vec::new();
    for q in 0..queues {
        let s = match cfg.zero_copy {
            ZeroCopy::Off => build_sockets(cfg, &ifaces, q, false)?,
            ZeroCopy::On => build_sockets(cfg, &ifaces, q, true).map_err(|e| match e {
                AfxdpError::Socket {
                    ifname,
                    queue,
                    source,
                    ..
                } => AfxdpError::NoZeroCopy {
                    ifname,
                    queue,
                    source,
                },
                e => e,
            })?,
            ZeroCopy::Auto => match build_sockets(cfg, &ifaces, q, true) {
                Ok(s) => s,
                Err(AfxdpError::Socket { source, .. }) => {
                    tracing::debug!("queue {q}: zero-copy refused ({source}); using copy mode");
                    build_sockets(cfg, &ifaces, q, false)?
                }
                Err(e) => return Err(e),
            },
        };
        for (a, p) in attachments.iter_mut().zip(&s.ports) {
            a.register(q, p.rx.fd())?;
        }
        all.push(s);
    }
    for (i, a) in ifaces.iter().zip(&attachments) {
        let zc = all.iter().filter(|s| s.zero_copy).count();
        tracing::info!(
            "{}: {} RX queue(s) taken; XDP {}; AF_XDP {}; poll mode {:?}; batch {}",
            i.name,
            queues,
            a.mode,
            if zc == all.len() {
                "zero-copy"
            } else if zc == 0 {
                "copy mode"
            } else {
                "mixed zero-copy/copy"
            },
            cfg.poll,
            cfg.batch
        );
    }

    let mut route_cache = HashMap::new();
    let routes = build_routes(&table, &ifaces, &mut route_cache);
    let workers: Vec<Arc<crate::live::WorkerShared>> = (0..all.len())
        .map(|n| Arc::new(crate::live::WorkerShared::new(n)))
        .collect();
    let shared = Arc::new(Shared {
        flows: datapath::pipeline::flow_table_for(&table),
        decision_cache: datapath::decision_cache_for(&table),
        table: Arc::new(ArcSwap::new(table)),
        routes: ArcSwap::from_pointee(routes),
        stop: AtomicBool::new(false),
        workers: workers.clone(),
        driver: (0..all.len())
            .map(|_| std::sync::Mutex::new(DriverCounters::default()))
            .collect(),
    });
    let mut handles = Vec::new();
    for (n, s) in all.into_iter().enumerate() {
        let shared = shared.clone();
        let core = (!cfg.cores.is_empty()).then(|| cfg.cores[n % cfg.cores.len()]);
        let (batch, poll, null) = (cfg.batch, cfg.poll, cfg.null);
        let q = s.queue;
        let h = std::thread::Builder::new()
            .name(format!("joypath-q{q}"))
            .spawn(move || {
                if let Some(id) = core {
                    if core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::info!("worker for queue {q} pinned to core {id}");
                    } else {
                        tracing::warn!("worker for queue {q}: could not pin to core {id}");
                    }
                }
                worker::run(s, shared, n, batch, poll, null)
            })
            .map_err(|e| AfxdpError::Setup(format!("spawning a worker: {e}")))?;
        handles.push(h);
    }
    tracing::info!(
        "joypath running: {} worker(s) on {}",
        handles.len(),
        cfg.interfaces.join(",")
    );

    if let Some(c) = control.as_mut() {
        let reader = shared.clone();
        c.driver_counters(Arc::new(move || reader.driver_totals()));
        if let Err(e) = c.started(shared.table.clone(), workers) {
            shared.stop.store(true, Ordering::Relaxed);
            for h in handles {
                let _ = h.join();
            }
            return Err(AfxdpError::Setup(e));
        }
    }
    let started = Instant::now();
    let (mut reloads, mut reload_errors) = (0u64, 0u64);
    let mut last_routes = Instant::now();
    let mut watch = match net::Watch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow netlink events; re-reading routes every second");
            None
        }
    };
    let mut last_stats = Instant::now();
    let mut last_driver = DriverCounters::default();
    let mut last_pipeline = (0u64, 0u64);
    let workers_for_stats = shared.workers.clone();
    while !stop_sig.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            let old = shared.table.load_full();
            let next = match control.as_mut() {
                Some(c) => c.reload(&old).map_err(AfxdpError::Policy),
                None => load_table(&cfg.config, Some(&old)).map(Arc::new),
            };
            match next {
                Ok(t) => {
                    let v = t.version();
                    route_cache.clear();
                    shared
                        .routes
                        .store(Arc::new(build_routes(&t, &ifaces, &mut route_cache)));
                    shared.table.store(t);
                    reloads += 1;
                    // With a store, the management plane logs the change (one line per change).
                    if control.is_none() {
                        tracing::info!(
                            version = v,
                            config = %cfg.config.display(),
                            "SIGHUP: policy reloaded"
                        );
                    }
                }
                Err(e) => {
                    reload_errors += 1;
                    tracing::error!(
                        version = old.version(),
                        error = %e,
                        "SIGHUP: reload failed, keeping the running policy"
                    );
                }
            }
        }
        // Routes and next hops follow the kernel's netlink events; a next hop still unresolved is
        // probed (and looked at) again every second, and everything every 30 s in case an event
        // was missed (or every second when the event socket could not be opened).
        let changes = watch.as_mut().map(|w| w.changes()).unwrap_or(net::Changes {
            routes: false,
            neighbours: last_routes.elapsed() >= Duration::from_secs(1),
        });
        let unresolved = shared.routes.load().map.values().any(|r| r.mac.is_none());
        let every = if unresolved || watch.is_none() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        if changes.routes || changes.neighbours || last_routes.elapsed() >= every {
            if changes.routes {
                route_cache.clear();
            }
            last_routes = Instant::now();
            let t = shared.table.load_full();
            shared
                .routes
                .store(Arc::new(build_routes(&t, &ifaces, &mut route_cache)));
        }
        if !cfg.stats_every.is_zero() && last_stats.elapsed() >= cfg.stats_every {
            let dt = last_stats.elapsed().as_secs_f64();
            last_stats = Instant::now();
            let now = shared.driver_totals();
            let pipeline =
                crate::live::collect_counters(&workers_for_stats, Duration::from_secs(1));
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let dropped = pipeline.total_dropped();
            tracing::info!(
                uptime_s = started.elapsed().as_secs(),
                version = shared.table.load().version(),
                rx = d(now.rx, last_driver.rx),
                tx = d(now.tx, last_driver.tx),
                rx_pps = (d(now.rx, last_driver.rx) as f64 / dt) as u64,
                forwarded = d(pipeline.forwarded, last_pipeline.0),
                dropped = d(dropped, last_pipeline.1),
                unresolved_next_hop = d(now.unresolved_next_hop, last_driver.unresolved_next_hop),
                tx_ring_full = d(now.tx_ring_full, last_driver.tx_ring_full),
                xsk_rx_dropped = d(now.xsk_rx_dropped, last_driver.xsk_rx_dropped),
                xsk_fill_ring_empty = d(now.xsk_fill_ring_empty, last_driver.xsk_fill_ring_empty),
                "counters since the last report"
            );
            last_driver = now;
            last_pipeline = (pipeline.forwarded, dropped);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut counters = Counters::default();
    let mut driver = DriverCounters::default();
    for h in handles {
        match h.join() {
            Ok((w, c)) => {
                counters.add(&w.counters);
                driver.add(&c);
            }
            Err(_) => tracing::error!("a worker panicked"),
        }
    }
    // Detach the XDP programs (close the links), then the sockets and UMEMs go with the workers.
    drop(attachments);
    let table = shared.table.load_full();
    Ok(RunReport {
        policy_version: table.version(),
        reloads,
        reload_errors,
        uptime_secs: started.elapsed().as_secs_f64(),
        summary: counters.summary(&table),
        driver,
    })
}
