//! The binary's side of the management plane: the policy every worker reads, the workers' shared
//! state, and `mgmt::Dataplane` over them (publish, status, stats, trace) — for `run` and `replay --serve`.

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use datapath::counters::TenantSummary;
use datapath::Disposition;
use driver::live::{collect_counters, TraceTap, TracedFrame, WorkerShared};
use mgmt::{Dataplane, Store, TraceRequest, WorkerStatus};
use policy::{Document, Table};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default management socket.
pub const DEFAULT_SOCKET: &str = "/run/joypath/joypath.sock";
/// Default state directory of the policy store.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/joypath";

/// Observability options shared by `run` and `replay --serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ObserveArgs {
    /// Serve Prometheus /metrics and /healthz over HTTP on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Management options shared by `run` and `replay --serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct MgmtArgs {
    /// The management socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Where the versioned policy store lives. When it holds a version, it wins over --config.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Versions kept for history and rollback.
    #[arg(long, default_value_t = 64)]
    pub history: usize,
    /// Socket file mode (octal).
    #[arg(long, default_value = "660")]
    pub socket_mode: String,
    /// Group owning the socket file (name or gid).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Members of this group (name or gid) get read-only access.
    #[arg(long)]
    pub readonly_group: Option<String>,
    /// Tenant-scoped administration, GROUP=TENANT (repeat): members of the Unix group (name or
    /// gid) may change only that tenant's endpoints and the rules from that tenant (allow rules
    /// only into the tenants the group administers).
    #[arg(long, value_name = "GROUP=TENANT")]
    pub tenant_admin: Vec<String>,
    /// Most management connections served at once; one more is answered `busy` and closed.
    #[arg(long, value_name = "N", default_value_t = mgmt::ServerConfig::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a management connection may take to send its next request (whole) before it is
    /// closed and its slot given back; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = mgmt::ServerConfig::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Longest request line accepted (bytes, or with a unit: 512KiB, 64MiB, 1GiB; K, M and G are
    /// the same binary units); a longer one is answered `too_large` and the connection stays usable.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_request: usize,
    /// Most bytes of request lines held at once over every connection (a unit as for
    /// --max-request; at least --max-request); a line that would pass it is answered `busy`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_buffered: usize,
    /// Share the policy with a fleet of gateways through etcd (client URLs, comma-separated). The
    /// state directory then caches what etcd holds, and is what runs while etcd is down.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the fleet's policy in etcd.
    #[arg(long, default_value = "/joypath")]
    pub etcd_prefix: String,
    /// This gateway's name in the fleet (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
}

/// The smallest `--max-request`: room for any request but the policy documents a client sends.
const MIN_MAX_REQUEST: usize = 1 << 10;

/// A size in bytes: a whole number, optionally followed by a binary unit (`K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, any case; `B` for bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size (a whole number of bytes, or e.g. 64MiB)"
        ));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        u => return Err(format!("unknown unit {u:?} in {s:?} (B, KiB, MiB or GiB)")),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The host name, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "joypath".into())
}

/// Resolves a group name or number via /etc/group.
pub fn resolve_group(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(g))
                .then(|| f.nth(1).and_then(|x| x.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("no group {g:?}"))
}

impl MgmtArgs {
    /// Joins the fleet when `--etcd` is given.
    pub fn start_fleet(&self, server: &mgmt::Server) -> Result<Option<Arc<mgmt::Fleet>>> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        let name = self.name.clone().unwrap_or_else(hostname);
        let cfg = mgmt::FleetConfig::new(self.etcd.clone(), &self.etcd_prefix, &name);
        tracing::info!(etcd = ?self.etcd, prefix = %self.etcd_prefix, name = %name, "joining the fleet");
        Ok(Some(
            mgmt::Fleet::start(cfg, server.clone()).context("starting the fleet link")?,
        ))
    }

    pub fn server_config(&self) -> Result<mgmt::ServerConfig> {
        let mut c = mgmt::ServerConfig::new(self.socket.clone());
        c.mode = u32::from_str_radix(&self.socket_mode, 8)
            .with_context(|| format!("--socket-mode {:?} is not octal", self.socket_mode))?;
        c.group = self
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        c.readonly_gid = self
            .readonly_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        if self.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        c.max_connections = self.max_connections;
        c.idle_timeout = (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout));
        if self.max_request < MIN_MAX_REQUEST {
            anyhow::bail!(
                "--max-request {} is too small: at least {MIN_MAX_REQUEST} bytes (1KiB)",
                self.max_request
            );
        }
        if self.max_buffered < self.max_request {
            anyhow::bail!(
                "--max-buffered ({} bytes) must be at least --max-request ({} bytes)",
                self.max_buffered,
                self.max_request
            );
        }
        c.max_request = self.max_request;
        c.max_buffered = self.max_buffered;
        for m in &self.tenant_admin {
            let (g, t) = m
                .split_once('=')
                .with_context(|| format!("--tenant-admin {m:?}: GROUP=TENANT"))?;
            c.tenant_admins.push((resolve_group(g)?, t.to_string()));
        }
        Ok(c)
    }
}

/// Opens the store; when it is empty, commits the config file as its first version. The state
/// directory wins over the config file when both exist.
pub fn open_policy(
    config: Option<&Path>,
    state_dir: &Path,
    keep: usize,
) -> Result<(Store, Arc<Table>)> {
    let mut store = Store::open(state_dir, keep)?;
    if store.current().is_none() {
        let config = config.with_context(|| {
            format!(
                "{} holds no policy yet: give --config FILE",
                state_dir.display()
            )
        })?;
        let doc = Document::load(config)?;
        let digest = policy::table::digest(&doc);
        store.commit(
            Arc::new(doc),
            digest,
            0,
            "config",
            Some(format!("loaded from {}", config.display())),
        )?;
    } else if let Some(c) = config {
        tracing::warn!(
            state_dir = %state_dir.display(), config = %c.display(), version = store.version(),
            "the state directory holds a policy: it wins over the config file"
        );
    }
    let rec = store.current().expect("committed above");
    let table = Table::compile(rec.document.clone(), rec.meta.version, None)?;
    store.settle_digest(table.digest());
    Ok((store, Arc::new(table)))
}

/// The policy and the workers, as mgmt sees them.
pub struct Plane {
    pub policy: Arc<ArcSwap<Table>>,
    pub workers: Vec<Arc<WorkerShared>>,
    samples: Mutex<Vec<(Instant, u64)>>,
    /// The AF_XDP driver's counters, live (none for `replay --serve`).
    driver: Option<driver::afxdp::DriverReader>,
}

impl Plane {
    pub fn new(policy: Arc<ArcSwap<Table>>, workers: Vec<Arc<WorkerShared>>) -> Self {
        let now = Instant::now();
        let samples = Mutex::new(workers.iter().map(|_| (now, 0)).collect());
        Plane {
            policy,
            workers,
            samples,
            driver: None,
        }
    }

    /// With the driver's counters in `stats`.
    pub fn with_driver(mut self, d: Option<driver::afxdp::DriverReader>) -> Self {
        self.driver = d;
        self
    }
}

/// The tenants' lines of a `stats`: the counters summed when it was asked and the table then running,
/// each listed tenant's JSON made as it is read (at a million tenants a map of them all, and then its
/// JSON, would be gigabytes).
struct Lines {
    counters: datapath::counters::Counters,
    table: Arc<Table>,
    tenants: mgmt::TenantFilter,
}

impl mgmt::TenantLines for Lines {
    fn each(&self, f: &mut dyn FnMut(&str, &Value)) {
        for (name, t) in self.counters.tenant_lines(&self.table) {
            if self.tenants.lists(name, t != TenantSummary::default()) {
                f(name, &serde_json::to_value(t).unwrap_or(Value::Null));
            }
        }
    }
}

/// The `[gateway]` settings read only when the gateway starts (the shared flow table's size and
/// timeouts, each worker's decision cache) that differ between two versions.
fn restart_settings_changed(before: &Table, after: &Table) -> Vec<&'static str> {
    let (a, b) = (&before.document().gateway, &after.document().gateway);
    let mut out = Vec::new();
    if a.max_flows != b.max_flows {
        out.push("max_flows");
    }
    if a.flow_timeouts != b.flow_timeouts {
        out.push("flow_timeouts");
    }
    if a.decision_cache != b.decision_cache {
        out.push("decision_cache");
    }
    out
}

/// A traced frame's comment. Rules are named from `table` when it is the version that judged the frame.
fn describe(t: &TracedFrame, table: &Table) -> String {
    let (verdict, reason) = match t.disposition {
        Disposition::Forward => ("forward", None),
        Disposition::ArpReply => ("arp_reply", None),
        Disposition::NdReply => ("nd_reply", None),
        Disposition::Drop(r) => ("drop", Some(r.name())),
        Disposition::Pending => ("pending", None),
    };
    let mut s = format!(
        "tenant={} verdict={verdict}",
        t.tenant.as_deref().unwrap_or("-")
    );
    if let Some(r) = reason {
        s.push_str(&format!(" drop_reason={r}"));
    }
    match t.rule {
        Some(r) if table.version() == t.version => {
            s.push_str(&format!(" rule={}", mgmt::explain::rule_name(table, r)))
        }
        Some(r) => s.push_str(&format!(" rule=#{r}")),
        None if matches!(
            t.disposition,
            Disposition::Forward | Disposition::Drop(datapath::DropReason::PolicyDenied)
        ) =>
        {
            s.push_str(" rule=default")
        }
        None => {}
    }
    if let Some((vtep, vni)) = t.egress {
        s.push_str(&format!(" egress_vtep={vtep} egress_vni={vni}"));
    }
    s.push_str(&format!(
        " interface={} policy_version={} worker={}",
        t.ifname.as_deref().unwrap_or("-"),
        t.version,
        t.worker
    ));
    s
}

impl Dataplane for Plane {
    fn publish(&self, table: Arc<Table>) {
        let before = self.policy.swap(table.clone());
        for key in restart_settings_changed(&before, &table) {
            tracing::warn!(
                setting = key,
                version = table.version(),
                "gateway.{key} changed: the running gateway keeps its value until it restarts"
            );
        }
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let mut samples = self.samples.lock().expect("samples");
        let now = Instant::now();
        self.workers
            .iter()
            .zip(samples.iter_mut())
            .map(|(w, s)| {
                let frames = w.frames.load(Ordering::Acquire);
                let dt = now.duration_since(s.0).as_secs_f64();
                let pps = if dt > 0.0 {
                    frames.saturating_sub(s.1) as f64 / dt
                } else {
                    0.0
                };
                *s = (now, frames);
                WorkerStatus {
                    id: w.id,
                    active_version: w.active_version.load(Ordering::Acquire),
                    active_digest: format!("{:016x}", w.active_digest.load(Ordering::Acquire)),
                    frames,
                    pps,
                }
            })
            .collect()
    }

    fn stats(&self, tenants: &mgmt::TenantFilter) -> mgmt::Stats {
        let counters = collect_counters(&self.workers, Duration::from_secs(2));
        let mut head = match serde_json::to_value(counters.totals()) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        head.insert(
            "rules".into(),
            json!(driver::live::collect_rule_hits(&self.workers)),
        );
        if let Some(d) = &self.driver {
            head.insert(
                "driver".into(),
                serde_json::to_value(d()).unwrap_or(Value::Null),
            );
        }
        mgmt::Stats {
            head,
            tenants: Box::new(Lines {
                counters,
                table: self.policy.load_full(),
                tenants: tenants.clone(),
            }),
        }
    }

    fn trace(&self, req: &TraceRequest) -> Result<Value, String> {
        if let Some(t) = &req.tenant {
            if self.policy.load().tenant_by_name(t).is_none() {
                return Err(format!("no tenant {t:?}"));
            }
        }
        if let Some(o) = &req.outcome {
            if !matches!(o.as_str(), "forward" | "arp_reply")
                && datapath::DropReason::from_name(o).is_none()
            {
                return Err(format!(
                    "outcome {o:?}: forward, arp_reply or a drop reason"
                ));
            }
        }
        // Checked where the request is parsed; checked again here, before anything is attached
        // (the queue is sized for `count` frames up front).
        req.check()?;
        let file =
            std::fs::File::create(&req.path).map_err(|e| format!("{}: {e}", req.path.display()))?;
        let deadline = Instant::now()
            .checked_add(req.timeout())
            .ok_or("timeout_ms: past what this clock can count")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(req.count);
        let tap = Arc::new(TraceTap {
            tenant: req.tenant.clone(),
            outcome: req.outcome.clone(),
            remaining: AtomicUsize::new(req.count),
            tx,
        });
        for w in &self.workers {
            w.trace.store(Some(tap.clone()));
        }
        drop(tap);
        let mut got = Vec::new();
        while got.len() < req.count {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(t) => got.push(t),
                Err(_) => break,
            }
        }
        for w in &self.workers {
            w.trace.store(None);
        }
        let mut out =
            driver::capture::PcapNgWriter::new(std::io::BufWriter::new(file), "joypath trace")
                .map_err(|e| e.to_string())?;
        let table = self.policy.load();
        for t in &got {
            out.write(t.ts_ns, &t.data, &describe(t, &table))
                .map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
        Ok(json!({
            "path": req.path,
            "frames": got.len(),
            "requested": req.count,
            "complete": got.len() == req.count,
            "comments": got.iter().map(|t| describe(t, &table)).collect::<Vec<_>>(),
        }))
    }
}

/// `joypath run`'s management plane, plugged into the AF_XDP driver: the policy starts from the
/// store (seeded by --config), the socket is served once the workers run, and SIGHUP commits the
/// re-read config file as a change on top of the current version, or refuses it when
/// the store holds changes made since the file was last loaded (`mgmt::Server::reload_file`).
pub struct MgmtControl {
    args: MgmtArgs,
    config: PathBuf,
    store: Option<Store>,
    table: Option<Arc<Table>>,
    server: Option<mgmt::Server>,
    handle: Option<mgmt::server::ServerHandle>,
    metrics_listen: Option<std::net::SocketAddr>,
    metrics: Option<crate::metrics::MetricsHandle>,
    driver: Option<driver::afxdp::DriverReader>,
}

impl MgmtControl {
    pub fn new(args: MgmtArgs, config: PathBuf) -> Self {
        MgmtControl {
            args,
            config,
            store: None,
            table: None,
            server: None,
            handle: None,
            metrics_listen: None,
            metrics: None,
            driver: None,
        }
    }

    /// Also serve /metrics and /healthz on `addr`.
    pub fn with_metrics(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.metrics_listen = addr;
        self
    }
}

impl driver::afxdp::Control for MgmtControl {
    fn initial(&mut self) -> Result<Arc<Table>, String> {
        let (store, table) =
            open_policy(Some(&self.config), &self.args.state_dir, self.args.history)
                .map_err(|e| format!("{e:#}"))?;
        self.store = Some(store);
        self.table = Some(table.clone());
        Ok(table)
    }

    fn started(
        &mut self,
        policy: Arc<ArcSwap<Table>>,
        workers: Vec<Arc<WorkerShared>>,
    ) -> Result<(), String> {
        let plane = Arc::new(Plane::new(policy, workers).with_driver(self.driver.clone()));
        let store = self.store.take().ok_or("the store is not open")?;
        let table = self.table.clone().ok_or("no initial table")?;
        let cfg = self.args.server_config().map_err(|e| format!("{e:#}"))?;
        let server = mgmt::Server::new(cfg, store, table, plane);
        let handle = server
            .spawn()
            .map_err(|e| format!("{}: {e}", self.args.socket.display()))?;
        self.args
            .start_fleet(&server)
            .map_err(|e| format!("{e:#}"))?;
        if let Some(addr) = self.metrics_listen {
            self.metrics =
                Some(crate::metrics::spawn(addr, server.clone()).map_err(|e| format!("{e:#}"))?);
        }
        crate::metrics::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "serving policy version {}",
                server.table().version()
            )),
        ]);
        self.server = Some(server);
        self.handle = Some(handle);
        Ok(())
    }

    fn driver_counters(&mut self, read: driver::afxdp::DriverReader) {
        self.driver = Some(read);
    }

    fn reload(&mut self, _old: &Arc<Table>) -> Result<Arc<Table>, String> {
        let server = self
            .server
            .as_ref()
            .ok_or("the management server is not running")?;
        crate::metrics::notify(&[sd_notify::NotifyState::Reloading]);
        let r = Document::load(&self.config)
            .map_err(|e| e.to_string())
            .and_then(
                |doc| match server.reload_file(doc, &self.config.display().to_string()) {
                    Ok(Some(t)) => Ok(t),
                    Ok(None) => Ok(server.table()),
                    Err(e) => Err(e.message),
                },
            );
        crate::metrics::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "serving policy version {}",
                server.table().version()
            )),
        ]);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_refuse_what_is_not_a_size() {
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("0", 0),
            ("512B", 512),
            ("512KiB", 512 << 10),
            ("2k", 2 << 10),
            ("64MiB", 64 << 20),
            ("64 mib", 64 << 20),
            ("1G", 1 << 30),
            (" 3GiB ", 3 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
        for (text, says) in [
            ("", "not a size"),
            ("MiB", "not a size"),
            ("-1", "not a size"),
            ("1.5MiB", "unknown unit \".5mib\""),
            ("64MB", "unknown unit \"mb\""),
            ("99999999999999999999", "too large"),
            ("17179869184GiB", "too large"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn settings_read_at_start_are_named_when_a_version_changes_them() {
        let doc: policy::Document =
            toml::from_str("[gateway]\nunderlay_ip = \"198.18.0.254\"\n").unwrap();
        let compile =
            |d: &policy::Document, v| Table::compile(Arc::new(d.clone()), v, None).unwrap();
        let a = compile(&doc, 1);
        let mut changed = doc.clone();
        changed.gateway.mtu = 9000;
        assert!(restart_settings_changed(&a, &compile(&changed, 2)).is_empty());
        changed.gateway.decision_cache = Some(0);
        changed.gateway.max_flows = Some(10);
        assert_eq!(
            restart_settings_changed(&a, &compile(&changed, 3)),
            ["max_flows", "decision_cache"]
        );
        changed.gateway.flow_timeouts = Some(policy::FlowTimeouts {
            udp: Some(5),
            ..Default::default()
        });
        assert_eq!(
            restart_settings_changed(&compile(&changed, 3), &compile(&doc, 4)),
            ["max_flows", "flow_timeouts", "decision_cache"]
        );
    }
}
