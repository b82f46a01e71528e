//! The management server: a Unix socket speaking JSON lines, one thread per client (never on a worker's
//! core; at most `max_connections` at once, one more answered `busy`), peer credentials deciding access, every change validated, compiled off the hot path,
//! persisted, then handed to the dataplane to publish with one `ArcSwap::store`.

use crate::edit;
use crate::protocol::{ErrorCode, OpError, Request, Response};
use crate::store::{Change, Store, StoreError, VersionRecord};
use arc_swap::ArcSwap;
use policy::{Document, Table};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the binary's dataplane offers the management plane. mgmt never sees frames or workers
/// directly: it hands over compiled tables and reads back status, counters and traces.
pub trait Dataplane: Send + Sync + 'static {
    /// Publishes a new table to every worker (one `ArcSwap::store`); workers take it at their next batch.
    fn publish(&self, table: Arc<Table>);
    /// Each worker's state.
    fn workers(&self) -> Vec<WorkerStatus>;
    /// Counters summed over workers: what the replay summary's JSON holds (`frames`, `forwarded`,
    /// `arp_replied`, `dropped`, `tenants` — those `tenants` lists), the tenants read one at a time.
    fn stats(&self, tenants: &TenantFilter) -> Stats;
    /// Captures the next frames matching the request into a pcapng file; returns what was written.
    fn trace(&self, req: &TraceRequest) -> Result<Value, String>;
}

/// A dataplane's counters summed over its workers, as `stats` and `/metrics` read them: the tenants
/// apart, read one at a time, so that at a million tenants no answer holds a tree of all of them.
pub struct Stats {
    /// Every field of the `stats` answer but `tenants` (`frames`, `forwarded`, `dropped`, `rules`,
    /// `driver`, …).
    pub head: serde_json::Map<String, Value>,
    /// The tenants listed, in name order.
    pub tenants: Box<dyn TenantLines>,
}

/// The tenants' lines of a [`Stats`].
pub trait TenantLines {
    /// Calls `f` with each listed tenant's name and figures (its entry in the `stats` answer's
    /// `tenants`), in name order, one tenant at a time.
    fn each(&self, f: &mut dyn FnMut(&str, &Value));
}

/// Tenants' lines already made (a small dataplane's, or a test's).
impl TenantLines for Vec<(String, Value)> {
    fn each(&self, f: &mut dyn FnMut(&str, &Value)) {
        for (name, v) in self {
            f(name, v);
        }
    }
}

/// What an operation answers: a JSON value, or JSON text made without a tree of it (`stats`).
enum Answer {
    Value(Value),
    Text(Box<serde_json::value::RawValue>),
}

impl Stats {
    /// The `stats` answer as JSON text, byte for byte what [`Stats::to_value`]'s serialization is,
    /// each tenant's line written as it is read.
    pub fn to_json(&self) -> serde_json::Result<Box<serde_json::value::RawValue>> {
        // The keys in the order `to_value`'s map has them, `tenants` where it inserts it.
        let mut keys: serde_json::Map<String, Value> =
            self.head.keys().map(|k| (k.clone(), Value::Null)).collect();
        keys.insert("tenants".into(), Value::Null);
        let mut out = vec![b'{'];
        for (i, k) in keys.keys().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k)?;
            out.push(b':');
            match self.head.get(k) {
                Some(v) if k != "tenants" => serde_json::to_writer(&mut out, v)?,
                _ => self.write_tenants(&mut out)?,
            }
        }
        out.push(b'}');
        let text = String::from_utf8(out).map_err(serde::ser::Error::custom)?;
        serde_json::value::RawValue::from_string(text)
    }

    /// The `tenants` object, written one tenant at a time.
    fn write_tenants(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'{');
        let mut first = true;
        let mut result = Ok(());
        self.tenants.each(&mut |name, v| {
            if result.is_err() {
                return;
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            result = serde_json::to_writer(&mut *out, name).and_then(|()| {
                out.push(b':');
                serde_json::to_writer(&mut *out, v)
            });
        });
        out.push(b'}');
        result
    }

    /// From a whole `stats` answer (its `tenants` object, if any, read as the tenants' lines).
    pub fn from_value(v: Value) -> Self {
        let mut head = match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let tenants: Vec<(String, Value)> = match head.remove("tenants") {
            Some(Value::Object(t)) => t.into_iter().collect(),
            _ => Vec::new(),
        };
        Stats {
            head,
            tenants: Box::new(tenants),
        }
    }

    /// The `stats` answer: the head, and `tenants` by name.
    pub fn to_value(&self) -> Value {
        let mut tenants = serde_json::Map::new();
        self.tenants.each(&mut |name, v| {
            tenants.insert(name.to_string(), v.clone());
        });
        let mut v = self.head.clone();
        v.insert("tenants".into(), Value::Object(tenants));
        Value::Object(v)
    }
}

/// Which tenants a `stats` answer lists, from its `tenants` (`all`, `active`, `none`) or `tenant`
/// (a name) argument: at a million tenants, all of them is a few hundred megabytes of answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TenantFilter {
    /// Every live tenant, and a removed one whose counters still count something (the default).
    #[default]
    All,
    /// The tenants with a figure that is not zero.
    Active,
    /// None: the totals, the rules' and the driver's counters only.
    None,
    /// The tenant of this name.
    One(String),
}

impl TenantFilter {
    /// From a `stats` request's arguments; the error says what is wrong.
    pub fn from_args(args: &Value) -> Result<Self, String> {
        let one = match args.get("tenant") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(v) => return Err(format!("tenant: a tenant's name, not {v}")),
        };
        let which = match args.get("tenants") {
            None | Some(Value::Null) => None,
            Some(Value::String(w)) => Some(w.as_str()),
            Some(v) => return Err(format!("tenants: \"all\", \"active\" or \"none\", not {v}")),
        };
        match (which, one) {
            (Some(_), Some(_)) => Err("tenants and tenant: one or the other".into()),
            (None, Some(t)) => Ok(TenantFilter::One(t)),
            (None | Some("all"), None) => Ok(TenantFilter::All),
            (Some("active"), None) => Ok(TenantFilter::Active),
            (Some("none"), None) => Ok(TenantFilter::None),
            (Some(w), None) => Err(format!("tenants {w:?}: all, active or none")),
        }
    }

    /// Whether the tenant named `name`, whose figures are `active` (not all zero), is listed.
    pub fn lists(&self, name: &str, active: bool) -> bool {
        match self {
            TenantFilter::All => true,
            TenantFilter::Active => active,
            TenantFilter::None => false,
            TenantFilter::One(n) => n == name,
        }
    }
}

/// A worker's state as the dataplane reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub id: usize,
    /// Policy version of the worker's last batch (0 before its first).
    pub active_version: u64,
    /// Digest of that version's document (hex).
    pub active_digest: String,
    pub frames: u64,
    /// Frames per second over the last interval the dataplane measured.
    pub pps: f64,
}

/// `trace` arguments.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct TraceRequest {
    /// Only frames of this (source) tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only frames with this outcome: `forward`, `arp_reply`, or a drop reason name.
    #[serde(default)]
    pub outcome: Option<String>,
    /// How many frames to capture: 1 to [`TraceRequest::MAX_COUNT`].
    pub count: usize,
    /// Where to write the pcapng (on the gateway host).
    pub path: PathBuf,
    /// Give up after this long (default [`TraceRequest::DEFAULT_TIMEOUT_MS`], at most
    /// [`TraceRequest::MAX_TIMEOUT_MS`]).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl TraceRequest {
    /// The most frames one trace captures: the dataplane holds them all (up to an MTU each) until
    /// the file is written, and sizes its queue for them up front.
    pub const MAX_COUNT: usize = 10_000;
    /// The longest a trace waits for its frames: one hour (the request holds its connection).
    pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
    /// How long a trace waits when the request does not say.
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

    /// The request's problem, if its count or timeout is outside the limits.
    pub fn check(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("count must be at least 1".into());
        }
        if self.count > Self::MAX_COUNT {
            return Err(format!(
                "count {} is over the limit of {} frames a trace",
                self.count,
                Self::MAX_COUNT
            ));
        }
        match self.timeout_ms {
            Some(t) if t > Self::MAX_TIMEOUT_MS => Err(format!(
                "timeout_ms {t} is over the limit of {} ms (one hour)",
                Self::MAX_TIMEOUT_MS
            )),
            _ => Ok(()),
        }
    }

    /// How long to wait for the frames.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(
            self.timeout_ms
                .unwrap_or(Self::DEFAULT_TIMEOUT_MS)
                .min(Self::MAX_TIMEOUT_MS),
        )
    }
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// A tenant's administrator (a member of a group mapped to tenants): reads, and changes only
    /// those tenants' endpoints and the rules from those tenants (allow rules only to them).
    Tenant,
    None,
}

/// Socket and access settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub socket: PathBuf,
    /// Socket file mode (default 0o660).
    pub mode: u32,
    /// Owner and group of the socket file (default: the process's).
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Members of this group may read (status, get, audit, stats, history).
    pub readonly_gid: Option<u32>,
    /// Largest request line accepted.
    pub max_request: usize,
    /// Most connections served at once (each holds a thread and up to `max_request` bytes of
    /// request); one more is answered `busy` and closed. At least 1.
    pub max_connections: usize,
    /// How long a connection may take to send its next request whole, from its opening or from the
    /// last response written; past it the connection is closed and its slot given back, so idle or
    /// trickling clients cannot keep others out. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Most bytes of request lines held at once, over every connection (a line is held from its
    /// first byte until its response is written). A line that would pass it is answered `busy`
    /// (and the rest of it read and dropped), so many clients sending large requests at once
    /// cannot hold `max_connections` × `max_request` bytes. At least `max_request`.
    pub max_buffered: usize,
    /// Tenant-scoped administration: members of group `gid` administer `tenant`.
    pub tenant_admins: Vec<(u32, String)>,
}

impl ServerConfig {
    /// How many connections the socket serves at once unless configured otherwise.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
    /// How long a connection may wait before its next request unless configured otherwise.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// How many bytes of requests are held at once unless configured otherwise (four of the
    /// largest requests).
    pub const DEFAULT_MAX_BUFFERED: usize = 256 << 20;

    pub fn new(socket: PathBuf) -> Self {
        ServerConfig {
            socket,
            mode: 0o660,
            owner: None,
            group: None,
            readonly_gid: None,
            max_request: 64 << 20,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            max_buffered: Self::DEFAULT_MAX_BUFFERED,
            tenant_admins: Vec::new(),
        }
    }
}

/// A connection's place among the [`ServerConfig::max_connections`] served at once, held by its
/// thread and given back when dropped — however the thread ends, a panic included, or when the
/// thread could not be started.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A slot, if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(count.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection over the limit with one `busy` line and closes it. A client that does not
/// read cannot hold the accept thread: the line fits the socket's buffer, and the write gives up
/// after a second.
fn refuse_busy(stream: UnixStream, max: usize) {
    tracing::warn!(
        limit = max,
        "management connection refused: too many connections"
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let r = Response::err(
        Value::Null,
        OpError::new(
            ErrorCode::Busy,
            format!("too many management connections (limit {max}); retry later"),
        ),
    );
    let _ = write_response(&mut std::io::BufWriter::new(&stream), &r);
}

/// A connection's reading side under a deadline: every read waits at most until `deadline`, and
/// one past it fails `TimedOut` — a request trickled a byte at a time is held to the deadline as a
/// silent client is.
struct Deadline {
    stream: UnixStream,
    deadline: Option<Instant>,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// Bytes of request lines a connection holds, charged against the server's
/// [`ServerConfig::max_buffered`] and given back when dropped (however the thread ends).
struct Held<'a> {
    total: &'a AtomicUsize,
    bytes: usize,
}

impl Held<'_> {
    /// Charges `n` more bytes, unless that would pass `max` over every connection.
    fn charge(&mut self, n: usize, max: usize) -> bool {
        let ok = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t + n <= max).then_some(t + n)
            })
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }
    fn release(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

struct Inner {
    cfg: ServerConfig,
    /// Bytes of request lines held now, over every connection.
    buffered: AtomicUsize,
    store: Mutex<Store>,
    table: ArcSwap<Table>,
    dataplane: Arc<dyn Dataplane>,
    started: Instant,
    owner_uid: u32,
    /// The etcd link, in fleet mode.
    fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
}

/// The server; cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// Keeps the accept thread; dropping it stops accepting and removes the socket file.
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket); // wake accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads SO_PEERCRED of a connected Unix socket.
pub fn peer_credentials(s: &UnixStream) -> std::io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live, properly sized and aligned ucred and `len` holds its size, as
    // getsockopt(SO_PEERCRED) requires; the fd is valid for the lifetime of `s`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The supplementary groups of a process, from /proc.
fn groups_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What a tenant's administrator may change (each checked by [`tenant_may`]).
const TENANT_OPS: &[&str] = &[
    "endpoint.add",
    "endpoint.update",
    "endpoint.remove",
    "rule.add",
    "rule.update",
    "rule.remove",
    "policy.edit",
];

/// A tenant administrator's request `op` with every rule it writes marked as that tenant's:
/// `owner` set to the rule's `from` (which [`tenant_may`] holds to the peer's scope), whatever the
/// request said. `None`: the request writes no rule.
fn stamp_owner(op: &str, args: &Value) -> Option<Value> {
    fn stamp(args: &mut Value) {
        if let Some(rule) = args.get_mut("rule").and_then(Value::as_object_mut) {
            if let Some(from) = rule.get("from").cloned() {
                rule.insert("owner".into(), from);
            }
        }
    }
    // Copied only for the requests that write rules.
    let mut args = match op {
        "rule.add" | "rule.update" | "policy.edit" => args.clone(),
        _ => return None,
    };
    if op != "policy.edit" {
        stamp(&mut args);
        return Some(args);
    }
    let edits = args.get_mut("edits").and_then(Value::as_array_mut)?;
    for e in edits.iter_mut() {
        let writes_rule = matches!(e["op"].as_str(), Some("rule.add" | "rule.update"));
        if let (true, Some(a)) = (writes_rule, e.get_mut("args")) {
            stamp(a);
        }
    }
    Some(args)
}

/// Whether an administrator of `scope` may make the edit `op` with `args` to `doc`: only endpoints of
/// its tenants, and only rules from its tenants (before and after the change). An allow rule also
/// decides who may reach its `to`, which is that tenant's to give: an allow rule added, and the
/// rule an update writes and the one it replaces, must be `to` a tenant of the scope (not `*`, not
/// another tenant — that needs an administrator of that tenant too, or the operator); a deny rule
/// only restricts the peer's own tenants, and may be to anything, but lifting one (removing or
/// replacing it) opens what it closed, so a deny removed or replaced must be `to` a tenant of the
/// scope too, unless the scope's administrators wrote it (its `owner`, which [`stamp_owner`] sets
/// on their rules: the operator's denies are not theirs to lift). The rule an update or a removal
/// changes is found as the edit finds it ([`crate::rules::rule_index`]: by `name`, or
/// `index` as a number or a name), so what is checked is what is changed. `table`: the running
/// table, whose rule-name index serves the lookup when it was compiled from `doc`'s rules.
fn tenant_may(
    scope: &[String],
    op: &str,
    args: &Value,
    doc: &Document,
    table: Option<&Table>,
) -> Result<(), OpError> {
    let mine = |t: &str| scope.iter().any(|s| s == t);
    let deny = |what: String| {
        Err(OpError::new(
            ErrorCode::Forbidden,
            format!("{what}: this peer administers tenant(s) {scope:?} only"),
        ))
    };
    // An allow rule to `to` (anything but an explicit deny counts as one: a malformed action is
    // refused here rather than let through to the edit).
    let allow_into = |what: String, to: &str| {
        if mine(to) {
            return Ok(());
        }
        let target = if to == policy::document::ANY_TENANT {
            "every tenant (\"*\")".to_string()
        } else {
            format!("tenant {to:?}")
        };
        deny(format!(
            "{what} into {target}: an allow into a tenant outside this peer's scope \
             needs that tenant's administrator or the operator"
        ))
    };
    // The rule the edit would change, and whether it is one of this peer's: from its tenants, and
    // for a replacement (`rewritten`), not an allow into another's (removing one only restricts).
    // A deny is lifted by a removal or a replacement alike, which opens what it closed: that is
    // the `to` tenant's to give, as an allow into it is — a deny into another tenant (or `*`), an
    // operator's compliance block among them, stays until that tenant's administrator or the
    // operator lifts it. (A deny into the peer's own tenant may go: an allow could outrank it.)
    let own_rule = |args: &Value, rewritten: bool| -> Result<(), OpError> {
        let i = crate::rules::rule_index(doc, table, args)?;
        let old = &doc.rules[i];
        let name = || policy::names::rule_name(doc, i);
        if !mine(&old.from) {
            return deny(format!("rule {:?} (from {:?})", name(), old.from));
        }
        match old.action {
            policy::Action::Allow if rewritten => {
                allow_into(format!("rule {:?}, an allow,", name()), &old.to)?
            }
            // Its own deny (`owner`: written by an administrator of its tenant) it may lift.
            policy::Action::Deny if !mine(&old.to) && !old.owner.as_deref().is_some_and(mine) => {
                let target = if old.to == policy::document::ANY_TENANT {
                    "every tenant (\"*\")".to_string()
                } else {
                    format!("tenant {:?}", old.to)
                };
                return deny(format!(
                    "rule {:?}, a deny into {target} not written by this tenant's administrator: \
                     lifting it opens what it closes, which needs that tenant's administrator or \
                     the operator",
                    name()
                ));
            }
            _ => {}
        }
        Ok(())
    };
    match op {
        "endpoint.add" | "endpoint.update" => {
            let t = args["endpoint"]["tenant"].as_str().unwrap_or_default();
            if !mine(t) {
                return deny(format!("an endpoint of tenant {t:?}"));
            }
        }
        "endpoint.remove" => {
            let t = args["tenant"].as_str().unwrap_or_default();
            if !mine(t) {
                return deny(format!("an endpoint of tenant {t:?}"));
            }
        }
        "rule.add" | "rule.update" => {
            let rule = &args["rule"];
            let from = rule["from"].as_str().unwrap_or_default();
            if !mine(from) {
                return deny(format!("a rule from {from:?}"));
            }
            if rule["action"].as_str() != Some("deny") {
                let to = rule["to"].as_str().unwrap_or_default();
                allow_into(format!("an allow rule from {from:?}"), to)?;
            }
            if op == "rule.update" {
                own_rule(args, true)?;
            }
            // Inserting inside the list renumbers other tenants' rules: only appends.
            if op == "rule.add" && crate::rules::insert_index(args)?.is_some() {
                return deny("inserting a rule before others".into());
            }
        }
        "rule.remove" => own_rule(args, false)?,
        _ => return deny(format!("{op:?}")),
    }
    Ok(())
}

const READ_OPS: &[&str] = &[
    "status",
    "fleet.status",
    "policy.get",
    "policy.validate",
    "history",
    "audit.reachability",
    "audit.verify",
    "stats",
    "explain",
];

fn storage(e: StoreError) -> OpError {
    match e {
        StoreError::NotFound(v) => {
            OpError::new(ErrorCode::NotFound, format!("version {v} is not kept"))
        }
        e => OpError::new(ErrorCode::Storage, e.to_string()),
    }
}

fn fleet_error(e: crate::fleet::FleetError) -> OpError {
    use crate::fleet::FleetError as F;
    let code = match &e {
        F::Unavailable(_) => ErrorCode::Unavailable,
        F::Conflict { .. } => ErrorCode::VersionConflict,
        F::TooLarge { .. } => ErrorCode::TooLarge,
        F::Corrupt(_) => ErrorCode::Internal,
    };
    tracing::warn!(error = %e, "fleet refused a change");
    OpError::new(code, e.to_string())
}

fn invalid(e: policy::ConfigError) -> OpError {
    match e {
        policy::ConfigError::Invalid { issues, .. } => OpError::new(
            ErrorCode::InvalidPolicy,
            format!(
                "the policy would be invalid: {}",
                issues
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_details(json!({ "issues": issues })),
        e => OpError::new(ErrorCode::InvalidPolicy, e.to_string()),
    }
}

fn doc_arg(args: &Value) -> Result<Document, OpError> {
    let v = args
        .get("document")
        .ok_or_else(|| OpError::new(ErrorCode::BadArgs, "missing argument \"document\""))?;
    serde_json::from_value(v.clone())
        .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("document: {e}")))
}

fn opt_u64(args: &Value, key: &str) -> Result<Option<u64>, OpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            OpError::new(
                ErrorCode::BadArgs,
                format!("{key} must be a non-negative integer"),
            )
        }),
    }
}

fn meta_json(r: &VersionRecord) -> Value {
    serde_json::to_value(&r.meta).unwrap_or(Value::Null)
}

impl Server {
    /// A server over `store`, whose current version `table` was compiled from, feeding `dataplane`.
    pub fn new(
        cfg: ServerConfig,
        store: Store,
        table: Arc<Table>,
        dataplane: Arc<dyn Dataplane>,
    ) -> Server {
        let owner_uid = cfg.owner.unwrap_or_else(current_euid);
        index_rule_names(&table);
        Server {
            inner: Arc::new(Inner {
                cfg,
                buffered: AtomicUsize::new(0),
                store: Mutex::new(store),
                table: ArcSwap::new(table),
                dataplane,
                started: Instant::now(),
                owner_uid,
                fleet: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Commits a whole document as the next version (e.g. the config file re-read on SIGHUP) and
    /// returns its table, published.
    pub fn apply_document(
        &self,
        doc: Document,
        uid: u32,
        op: &str,
        comment: Option<String>,
    ) -> Result<Arc<Table>, OpError> {
        self.commit((uid, op, comment, None), None, None, move |_| Ok(doc))?;
        Ok(self.table())
    }

    /// SIGHUP: the config file `doc` (from `source`) is applied as a change on top of the current
    /// version, with its diff in the log — when every version since the file was last loaded came from
    /// the file. When the store holds changes made since (through the socket), they are not silently
    /// replaced: the reload is refused, naming them. Returns the new table, or `None` when the file
    /// already is the current policy.
    pub fn reload_file(&self, doc: Document, source: &str) -> Result<Option<Arc<Table>>, OpError> {
        const FROM_FILE: &[&str] = &["config", "sighup"];
        {
            let store = self.store();
            let cur = store
                .current()
                .ok_or_else(|| OpError::new(ErrorCode::NotFound, "the store is empty"))?;
            if cur.meta.digest == format!("{:016x}", policy::table::digest(&doc)) {
                tracing::info!(
                    version = cur.meta.version,
                    file = source,
                    "SIGHUP: the file is the current policy; nothing to do"
                );
                return Ok(None);
            }
            let history = store.history(usize::MAX);
            let since: Vec<String> = history
                .iter()
                .take_while(|m| !FROM_FILE.contains(&m.op.as_str()))
                .map(|m| format!("version {} ({} by uid {})", m.version, m.op, m.uid))
                .collect();
            let loaded = history.iter().any(|m| FROM_FILE.contains(&m.op.as_str()));
            if !since.is_empty() || !loaded {
                let msg = format!(
                    "SIGHUP refused: the store holds changes made since {source} was last loaded ({}); \
                     the file would silently undo them. Apply it deliberately with `joypath ctl apply`",
                    if loaded { since.join(", ") } else { "the file's version is no longer kept".into() }
                );
                tracing::error!("{msg}");
                return Err(OpError::new(ErrorCode::VersionConflict, msg));
            }
            let diff = edit::diff(&cur.document, &doc);
            tracing::info!(file = source, from_version = cur.meta.version, diff = %diff, "SIGHUP: applying the file");
        }
        self.commit(
            (0, "sighup", Some(format!("re-read {source}")), None),
            None,
            None,
            move |_| Ok(doc),
        )?;
        Ok(Some(self.table()))
    }

    /// Joins the fleet (called by [`crate::fleet::Fleet::start`]).
    pub(crate) fn attach_fleet(&self, fleet: Arc<crate::fleet::Fleet>) {
        let _ = self.inner.fleet.set(fleet);
    }

    /// The fleet link, in fleet mode.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::Fleet>> {
        self.inner.fleet.get()
    }

    pub(crate) fn store_version(&self) -> u64 {
        self.store().version()
    }

    /// (version, digest) of the store's current version.
    pub(crate) fn store_head(&self) -> (u64, String) {
        let s = self.store();
        (
            s.version(),
            s.current()
                .map(|c| c.meta.digest.clone())
                .unwrap_or_default(),
        )
    }

    /// Whether `record` (the fleet's record of this store's current version) is of this store's
    /// document: its digest compared in its own format, so that gateways of two builds (a rolling
    /// upgrade) recognise the same version. A format this build cannot check counts as a match.
    pub(crate) fn store_head_matches(&self, record: &crate::store::VersionMeta) -> bool {
        let s = self.store();
        let Some(c) = s.current() else {
            return false;
        };
        if record.version != c.meta.version {
            return false;
        }
        // This store's digest in this build's format: as recorded once settled at start-up.
        let here = Some(&c.meta)
            .filter(|m| m.digest_format == policy::table::DIGEST_FORMAT)
            .and_then(|m| u64::from_str_radix(&m.digest, 16).ok())
            .unwrap_or_else(|| policy::table::digest(&c.document));
        match record.digest_matches(&c.document, here) {
            Some(m) => m,
            None => {
                tracing::warn!(
                    version = record.version, recorded = %record.digest, format = record.digest_format,
                    "fleet: the version's digest was recorded by a later build, in a format this one cannot check"
                );
                true
            }
        }
    }

    pub(crate) fn store_current(&self) -> Option<(crate::store::VersionMeta, Document)> {
        let s = self.store();
        s.current().map(|c| (c.meta.clone(), (*c.document).clone()))
    }

    /// What this gateway runs, for the fleet's membership record.
    pub(crate) fn member_status(&self) -> Value {
        let (version, digest) = self.store_head();
        let workers = self.inner.dataplane.workers();
        let running = workers
            .iter()
            .map(|w| w.active_version)
            .min()
            .unwrap_or(version);
        let workers_digest_ok = workers.iter().all(|w| w.active_digest == digest);
        json!({
            "version": running,
            "store_version": version,
            "digest": digest,
            "workers": workers.len(),
            "workers_digest_ok": workers_digest_ok,
        })
    }

    /// Applies a version that came from the fleet: its `edits` on top of the current version when
    /// it is the next one, or the whole `doc`; checked against its digest, cached in the local store,
    /// then published. Versions this gateway already has are ignored.
    pub(crate) fn fleet_apply(
        &self,
        meta: crate::store::VersionMeta,
        edits: Option<&Value>,
        doc: Option<Document>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let mut store = self.store();
        if meta.version <= store.version() {
            return Ok(());
        }
        let base = store.current().map(|c| c.document.clone());
        let (doc, change) = match (doc, edits) {
            (Some(d), _) => (d, Change::Whole),
            (None, Some(e)) => {
                if meta.version != store.version() + 1 {
                    return Err(format!(
                        "version {} does not follow this gateway's {}",
                        meta.version,
                        store.version()
                    ));
                }
                let mut d = store
                    .current()
                    .map(|c| (*c.document).clone())
                    .ok_or("the store is empty")?;
                crate::store::apply_edits(&mut d, e)?;
                (d, Change::Edits(e))
            }
            (None, None) => return Err("neither edits nor a document".into()),
        };
        let old = self.table();
        let edits = match change {
            Change::Edits(e) => Some(e),
            Change::Whole => None,
        };
        // Edits on top of the version the running table was compiled from may be made in place,
        // as on the gateway that committed them (the digest check below holds either way).
        let base = base.filter(|_| old.version() == store.version());
        let (table, in_place) =
            compile_next(&old, base.as_deref(), edits, Arc::new(doc), meta.version)
                .map_err(|e| format!("version {} does not compile: {e}", meta.version))?;
        let digest = format!("{:016x}", table.digest());
        match meta.digest_matches(table.document(), table.digest()) {
            Some(true) => {}
            Some(false) => {
                return Err(format!(
                    "version {}: digest {digest} differs from the fleet's {} (format {})",
                    meta.version, meta.digest, meta.digest_format
                ))
            }
            None => tracing::warn!(
                version = meta.version, recorded = %meta.digest, format = meta.digest_format,
                "fleet: the version's digest was recorded by a later build, in a format this one cannot check"
            ),
        }
        // Cached here in this build's format, which is what this gateway's workers report.
        let meta = if meta.digest_format == policy::table::DIGEST_FORMAT {
            meta
        } else {
            meta.restamped(table.digest())
        };
        let version = meta.version;
        store
            .commit_meta(table.document().clone(), meta, change)
            .map_err(|e| e.to_string())?;
        let table = Arc::new(table);
        self.inner.table.store(table.clone());
        index_rule_names(&table);
        self.inner.dataplane.publish(table);
        tracing::info!(
            version,
            in_place,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "fleet: version applied"
        );
        Ok(())
    }

    /// The store, even after a thread panicked while holding it: every change to it is complete
    /// before it is visible (a version is pushed only once durable), so what it holds is consistent.
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The table of the store's current version.
    pub fn table(&self) -> Arc<Table> {
        self.inner.table.load_full()
    }

    /// What a peer may do: root and the owner change, the read-only group reads, others nothing.
    pub fn access(&self, peer: &Peer) -> Access {
        if peer.uid == 0 || peer.uid == self.inner.owner_uid {
            return Access::ReadWrite;
        }
        if !self.tenant_scope(peer).is_empty() {
            return Access::Tenant;
        }
        if let Some(g) = self.inner.cfg.readonly_gid {
            if peer.gid == g || groups_of(peer.pid).contains(&g) {
                return Access::ReadOnly;
            }
        }
        Access::None
    }

    /// The tenants a peer administers, through the groups it belongs to.
    pub fn tenant_scope(&self, peer: &Peer) -> Vec<String> {
        if self.inner.cfg.tenant_admins.is_empty() {
            return Vec::new();
        }
        let groups = groups_of(peer.pid);
        let mut out: Vec<String> = self
            .inner
            .cfg
            .tenant_admins
            .iter()
            .filter(|(g, _)| peer.gid == *g || groups.contains(g))
            .map(|(_, t)| t.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Binds the socket (mode and ownership as configured) and serves it from a `mgmt` thread.
    pub fn spawn(&self) -> std::io::Result<ServerHandle> {
        let path = &self.inner.cfg.socket;
        check_socket_path(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.inner.cfg.mode))?;
        if self.inner.cfg.owner.is_some() || self.inner.cfg.group.is_some() {
            std::os::unix::fs::chown(path, self.inner.cfg.owner, self.inner.cfg.group)?;
        }
        tracing::info!(socket = %path.display(), mode = format!("{:o}", self.inner.cfg.mode), "management socket listening");
        let stop = Arc::new(AtomicBool::new(false));
        let server = self.clone();
        let stop2 = stop.clone();
        let max = self.inner.cfg.max_connections.max(1);
        let open = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("mgmt".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            let Some(slot) = ConnectionSlot::take(&open, max) else {
                                refuse_busy(s, max);
                                continue;
                            };
                            let server = server.clone();
                            let spawned = std::thread::Builder::new()
                                .name("mgmt-conn".into())
                                .spawn(move || {
                                    let _slot = slot;
                                    server.serve_connection(s)
                                });
                            // Not started: the closure, its slot and the connection are dropped.
                            if let Err(e) = spawned {
                                tracing::warn!(error = %e, "no thread for a management connection");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "accept failed"),
                    }
                }
            })?;
        Ok(ServerHandle {
            stop,
            socket: path.clone(),
            thread: Some(thread),
        })
    }

    fn serve_connection(&self, stream: UnixStream) {
        let peer = match peer_credentials(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing");
                return;
            }
        };
        // A client that stops reading cannot hold this thread forever.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let access = self.access(&peer);
        let mut writer = match stream.try_clone() {
            Ok(w) => std::io::BufWriter::new(w),
            Err(_) => return,
        };
        if access == Access::None {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "management connection refused"
            );
            let r = Response::err(
                Value::Null,
                OpError::new(
                    ErrorCode::Forbidden,
                    format!("uid {} may not use this socket (root, the owner or the read-only group only)", peer.uid),
                ),
            );
            let _ = write_response(&mut writer, &r);
            return;
        }
        let scope = if access == Access::Tenant {
            self.tenant_scope(&peer)
        } else {
            Vec::new()
        };
        let max = self.inner.cfg.max_request;
        let idle = self.inner.cfg.idle_timeout;
        let budget = self.inner.cfg.max_buffered.max(max + 1);
        // Request lines are read, and charged to `budget`, this much at a time.
        const CHUNK: usize = 64 << 10;
        let mut reader = BufReader::new(Deadline {
            stream,
            deadline: None,
        });
        let mut line = Vec::new();
        loop {
            line.clear();
            // The next request, whole, within the idle timeout of the last response.
            reader.get_mut().deadline = idle.map(|d| Instant::now() + d);
            let mut held = Held {
                total: &self.inner.buffered,
                bytes: 0,
            };
            // Read the line a chunk at a time, each charged to the server's budget before the
            // next is read: `None` while it fits, else why it is refused.
            let mut refused = None;
            loop {
                let n = match reader
                    .by_ref()
                    .take(CHUNK as u64)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) if line.is_empty() => return,
                    // The peer closed within a line: what came is the request.
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                        ) {
                            tracing::info!(
                                uid = peer.uid,
                                pid = peer.pid,
                                "management connection closed: no whole request within the idle timeout"
                            );
                        }
                        return;
                    }
                };
                let ended = line.last() == Some(&b'\n');
                if line.len() - usize::from(ended) > max {
                    refused = Some(OpError::new(
                        ErrorCode::TooLarge,
                        format!("request longer than {max} bytes"),
                    ));
                } else if !held.charge(n, budget) {
                    refused = Some(OpError::new(
                        ErrorCode::Busy,
                        format!(
                            "requests being received hold the management socket's buffer \
                             ({budget} bytes); retry later"
                        ),
                    ));
                }
                if refused.is_some() || ended {
                    break;
                }
            }
            let resp = if let Some(e) = refused {
                // Answer, then read the rest of the line and drop it (a chunk at a time, never
                // held); the connection stays usable.
                let ended = line.last() == Some(&b'\n');
                line.clear();
                held.release();
                if !ended {
                    loop {
                        line.clear();
                        match reader
                            .by_ref()
                            .take(CHUNK as u64)
                            .read_until(b'\n', &mut line)
                        {
                            Ok(0) => return,
                            Ok(_) if line.last() == Some(&b'\n') => break,
                            Ok(_) => continue,
                            Err(_) => return,
                        }
                    }
                }
                if e.code == ErrorCode::Busy {
                    tracing::warn!(limit = budget, "management request refused: buffer full");
                }
                Response::err(Value::Null, e)
            } else {
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    line.clear();
                    continue;
                }
                self.handle_scoped(&text, peer.uid, access, &scope)
            };
            // A large request's buffer is not kept for the next one, and its bytes are given
            // back before the answer is sent, so a client that has its answer finds them free.
            line.clear();
            line.shrink_to(CHUNK);
            drop(held);
            if write_response(&mut writer, &resp).is_err() {
                return;
            }
        }
    }

    /// Handles one request line from a peer with `uid` and `access`.
    pub fn handle_line(&self, line: &str, uid: u32, access: Access) -> Response {
        self.handle_scoped(line, uid, access, &[])
    }

    /// Handles one request line from a tenant administrator of `scope` (or anyone, scope empty).
    pub fn handle_scoped(
        &self,
        line: &str,
        uid: u32,
        access: Access,
        scope: &[String],
    ) -> Response {
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                let id = serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                return Response::err(
                    id,
                    OpError::new(ErrorCode::BadRequest, format!("not a request object: {e}")),
                );
            }
        };
        let id = req.id.clone();
        // A bug in an operation fails that request, never the server: the lock it held is
        // released and the next request is served.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch(&req, uid, access, scope)
        }));
        match outcome {
            Ok(Ok(Answer::Value(v))) => Response::ok(id, v),
            Ok(Ok(Answer::Text(t))) => Response::ok_text(id, t),
            Ok(Err(e)) => Response::err(id, e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tracing::error!(op = %req.op, panic = %what, "an operation panicked; request refused");
                Response::err(
                    id,
                    OpError::new(
                        ErrorCode::Internal,
                        format!("internal error in {:?}: {what}", req.op),
                    ),
                )
            }
        }
    }

    fn dispatch(
        &self,
        req: &Request,
        uid: u32,
        access: Access,
        scope: &[String],
    ) -> Result<Answer, OpError> {
        let op = req.op.as_str();
        let args = &req.args;
        let known = READ_OPS.contains(&op)
            || edit::EDIT_OPS.contains(&op)
            || matches!(op, "policy.apply" | "policy.edit" | "rollback" | "trace");
        if !known {
            return Err(OpError::new(
                ErrorCode::UnknownOp,
                format!("unknown op {op:?}"),
            ));
        }
        let scoped = access == Access::Tenant;
        if scoped && !READ_OPS.contains(&op) && !TENANT_OPS.contains(&op) {
            return Err(OpError::new(
                ErrorCode::Forbidden,
                format!(
                    "uid {uid} administers tenant(s) {scope:?} only: {op:?} is not one tenant's endpoint or rule change"
                ),
            ));
        }
        if !scoped && access != Access::ReadWrite && !READ_OPS.contains(&op) {
            return Err(OpError::new(
                ErrorCode::Forbidden,
                format!("uid {uid} has read-only access; {op:?} changes the gateway"),
            ));
        }
        // What a tenant administrator's change touches (checked against the document it applies to).
        let tenants = scoped.then(|| scope.to_vec());
        // The rules a tenant administrator writes are its tenant's (`owner`), in this gateway's
        // document and in the delta the fleet replays alike.
        let stamped = if scoped { stamp_owner(op, args) } else { None };
        let args = stamped.as_ref().unwrap_or(args);
        let expected = opt_u64(args, "expected_version")?;
        let comment = args
            .get("comment")
            .and_then(Value::as_str)
            .map(str::to_string);
        if op == "stats" {
            return self.stats(args);
        }
        match op {
            "status" => Ok(self.status()),
            "fleet.status" => self.fleet_status(),
            "policy.get" => {
                let store = self.store();
                let r = match opt_u64(args, "version")? {
                    Some(v) => store.read(v).map_err(storage)?,
                    None => store
                        .current()
                        .cloned()
                        .ok_or_else(|| OpError::new(ErrorCode::NotFound, "the store is empty"))?,
                };
                Ok(
                    json!({"version": r.meta.version, "meta": meta_json(&r), "document": &*r.document}),
                )
            }
            "policy.validate" => {
                let mut doc = doc_arg(args)?;
                policy::names::name_rules(&mut doc);
                let issues = doc.validate();
                if !issues.is_empty() {
                    return Ok(Answer::Value(json!({"valid": false, "issues": issues})));
                }
                let cur = self.current_document()?;
                Ok(json!({"valid": true, "diff": edit::diff(&cur, &doc)}))
            }
            "policy.apply" => {
                let doc = doc_arg(args)?;
                self.commit((uid, op, comment, None), expected, None, move |_| Ok(doc))
            }
            "policy.edit" => {
                // Several edits, all or nothing, as one version (e.g. onboarding a tenant with its
                // segment, endpoints and rules).
                let edits = args
                    .get("edits")
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| {
                        OpError::new(
                            ErrorCode::BadArgs,
                            "missing argument \"edits\" (a list of {op, args})",
                        )
                    })?;
                let delta = Value::Array(edits.clone());
                let scope_owned = tenants.clone();
                // The running table's rule-name index serves the scope checks while the edits
                // have not changed the rules it was compiled from.
                let running = self.table();
                self.commit(
                    (uid, op, comment, tenants),
                    expected,
                    Some(&delta),
                    move |cur| {
                        let mut doc = cur.clone();
                        for (i, e) in edits.iter().enumerate() {
                            let eop = e.get("op").and_then(Value::as_str).unwrap_or_default();
                            let eargs = e.get("args").cloned().unwrap_or(Value::Null);
                            if let Some(scope) = &scope_owned {
                                let running = Some(&*running);
                                tenant_may(scope, eop, &eargs, &doc, running).map_err(
                                    |mut err| {
                                        err.message = format!("edits[{i}]: {}", err.message);
                                        err
                                    },
                                )?;
                            }
                            let known = edit::apply(eop, &eargs, &mut doc).map_err(|mut err| {
                                err.message = format!("edits[{i}] ({eop}): {}", err.message);
                                err
                            })?;
                            if !known {
                                return Err(OpError::new(
                                    ErrorCode::BadArgs,
                                    format!("edits[{i}]: {eop:?} is not an edit"),
                                ));
                            }
                        }
                        Ok(doc)
                    },
                )
            }
            "rollback" => {
                let v = opt_u64(args, "version")?.ok_or_else(|| {
                    OpError::new(ErrorCode::BadArgs, "missing argument \"version\"")
                })?;
                let old = self.store().read(v).map_err(storage)?;
                let comment = comment.or_else(|| Some(format!("rollback to version {v}")));
                self.commit((uid, op, comment, None), expected, None, move |_| {
                    Ok((*old.document).clone())
                })
            }
            "history" => {
                let limit = opt_u64(args, "limit")?.unwrap_or(20) as usize;
                Ok(json!(self.store().history(limit)))
            }
            "audit.reachability" => {
                let t = self.table();
                let now = match args.get("at").and_then(Value::as_str) {
                    Some(s) => policy::time::parse_rfc3339(s)
                        .map_err(|e| OpError::new(ErrorCode::BadArgs, e))?,
                    None => unix_now(),
                };
                let r = policy::reachability(&t, now);
                match args.get("format").and_then(Value::as_str).unwrap_or("json") {
                    "json" => Ok(json!(r)),
                    "dot" => Ok(json!({"version": r.version, "dot": r.to_dot()})),
                    f => Err(OpError::new(
                        ErrorCode::BadArgs,
                        format!("format {f:?}: json or dot"),
                    )),
                }
            }
            "audit.verify" => {
                let mut v = self.verify();
                // In a fleet: every live gateway runs the fleet's latest version.
                if let Some(f) = self.inner.fleet.get() {
                    let fleet = f.status().map_err(fleet_error)?;
                    if fleet["ok"] != json!(true) {
                        v["ok"] = json!(false);
                    }
                    v["fleet"] = fleet;
                }
                Ok(v)
            }
            "explain" => {
                let now = match args.get("at").and_then(Value::as_str) {
                    Some(s) => policy::time::parse_rfc3339_ns(s)
                        .map_err(|e| OpError::new(ErrorCode::BadArgs, e))?,
                    None => unix_now().saturating_mul(1_000_000_000),
                };
                crate::explain::explain(&self.table(), args, now)
            }
            "trace" => {
                let req: TraceRequest = serde_json::from_value(args.clone())
                    .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("trace: {e}")))?;
                req.check()
                    .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("trace: {e}")))?;
                tracing::info!(uid, count = req.count, path = %req.path.display(), "trace requested");
                self.inner
                    .dataplane
                    .trace(&req)
                    .map_err(|e| OpError::new(ErrorCode::Internal, e))
            }
            "rule.add" | "rule.update" if !scoped && self.rule_fast_path(op, args) => {
                self.commit_rule((uid, op, comment), expected, args)
            }
            _ => {
                let op_name = op.to_string();
                let delta = json!([{"op": op, "args": args}]);
                let args = args.clone();
                let scope_owned = tenants.clone();
                // The running table's rule-name index serves the edit when it runs `cur`.
                let running = self.table();
                self.commit(
                    (uid, op, comment, tenants),
                    expected,
                    Some(&delta),
                    move |cur| {
                        if let Some(scope) = &scope_owned {
                            tenant_may(scope, &op_name, &args, cur, Some(&running))?;
                        }
                        let mut doc = cur.clone();
                        edit::apply_with(&op_name, &args, &mut doc, Some(&running))?;
                        Ok(doc)
                    },
                )
            }
        }
        .map(Answer::Value)
    }

    fn current_document(&self) -> Result<Arc<Document>, OpError> {
        self.store()
            .current()
            .map(|c| c.document.clone())
            .ok_or_else(|| OpError::new(ErrorCode::NotFound, "the store is empty"))
    }

    /// Persists `doc` (compiled into `table`, made from the current version by `change`) as the next
    /// version, then publishes `table` to the workers: a change that could not be made durable never
    /// runs, and its number is never handed out.
    #[allow(clippy::too_many_arguments)]
    fn persist_and_publish(
        &self,
        store: &mut Store,
        (base, table): (&Document, Arc<Table>),
        doc: Arc<Document>,
        change: Change<'_>,
        (uid, op, comment, tenants): (u32, &str, Option<String>, Option<Vec<String>>),
        (t0, compiled): (Instant, f64),
    ) -> Result<Value, OpError> {
        let mut meta = store.meta_for(table.digest(), uid, op, comment);
        meta.tenants = tenants;
        debug_assert_eq!(meta.version, table.version());
        if let Some(fleet) = self.inner.fleet.get() {
            // The fleet's transaction decides; the local store then caches what etcd holds.
            let edits = match change {
                Change::Edits(e) => Some(e),
                Change::Whole => None,
            };
            let revision = fleet
                .commit(store.version(), base, &doc, &meta, edits)
                .map_err(fleet_error)?;
            meta.revision = Some(revision);
        }
        let rec = store.commit_meta(doc, meta, change).map_err(|e| {
            tracing::error!(error = %e, op, "could not persist a change; it was refused and does not run");
            storage(e)
        })?;
        let persisted = t0.elapsed().as_secs_f64() * 1e3;
        let version = rec.meta.version;
        let digest = rec.meta.digest.clone();
        self.inner.table.store(table.clone());
        index_rule_names(&table);
        self.inner.dataplane.publish(table);
        tracing::info!(uid, op, version, "policy changed");
        Ok(json!({
            "version": version,
            "digest": digest,
            "compile_ms": compiled,
            "persist_ms": persisted,
            "commit_ms": t0.elapsed().as_secs_f64() * 1e3,
        }))
    }

    /// The version a change builds on and its document, if it is the one the client expects.
    fn base(store: &Store, expected: Option<u64>) -> Result<(u64, Arc<Document>), OpError> {
        let current = Self::check_expected(store, expected)?;
        let doc = store
            .current()
            .map(|c| c.document.clone())
            .ok_or_else(|| OpError::new(ErrorCode::NotFound, "the store is empty"))?;
        Ok((current, doc))
    }

    fn check_expected(store: &Store, expected: Option<u64>) -> Result<u64, OpError> {
        let current = store.version();
        if let Some(e) = expected {
            if e != current {
                return Err(OpError::new(
                    ErrorCode::VersionConflict,
                    format!("expected version {e}, but the store is at version {current}"),
                )
                .with_details(json!({"current_version": current})));
            }
        }
        Ok(current)
    }

    /// Validates and compiles a change made by `build` from the current document off the hot path,
    /// persists it (as the `edits` delta when given, whole otherwise), then publishes it.
    fn commit(
        &self,
        (uid, op, comment, tenants): (u32, &str, Option<String>, Option<Vec<String>>),
        expected: Option<u64>,
        edits: Option<&Value>,
        build: impl FnOnce(&Document) -> Result<Document, OpError>,
    ) -> Result<Value, OpError> {
        let t0 = Instant::now();
        let mut store = self.store();
        let (_, base) = Self::base(&store, expected)?;
        let old = self.table();
        let mut doc = build(&base)?;
        policy::names::name_new_rules(&mut doc, &base);
        if doc == *base {
            // The document already in force: no new version.
            return Ok(json!({
                "version": store.version(),
                "digest": store.current().map(|c| c.meta.digest.clone()),
                "unchanged": true,
            }));
        }
        let next = store.next_version();
        let base_of_old = (old.version() == store.version()).then_some(&*base);
        let (table, in_place) =
            compile_next(&old, base_of_old, edits, Arc::new(doc), next).map_err(invalid)?;
        if in_place {
            tracing::debug!(op, version = next, "change made in place");
        }
        let compiled = t0.elapsed().as_secs_f64() * 1e3;
        let doc = table.document().clone();
        let change = match edits {
            Some(e) => Change::Edits(e),
            None => Change::Whole,
        };
        self.persist_and_publish(
            &mut store,
            (&base, Arc::new(table)),
            doc,
            change,
            (uid, op, comment, tenants),
            (t0, compiled),
        )
    }

    /// `rule.add` at the end of the list and `rule.update` change one rule bucket: they are validated
    /// against the running table and compiled incrementally, so the workers run them within
    /// milliseconds however many endpoints and rules the policy has.
    fn rule_fast_path(&self, op: &str, args: &Value) -> bool {
        if op == "rule.update" {
            return true;
        }
        // rule.add with an index inside the list inserts, renumbering the rules after it: full compile.
        match args.get("index") {
            None | Some(Value::Null) => true,
            Some(i) => {
                let n = self.current_document().map(|d| d.rules.len()).unwrap_or(0);
                i.as_u64() == Some(n as u64)
            }
        }
    }

    fn commit_rule(
        &self,
        (uid, op, comment): (u32, &str, Option<String>),
        expected: Option<u64>,
        args: &Value,
    ) -> Result<Value, OpError> {
        let t0 = Instant::now();
        let mut store = self.store();
        let (current, base) = Self::base(&store, expected)?;
        let mut rule: policy::Rule = serde_json::from_value(
            args.get("rule")
                .cloned()
                .ok_or_else(|| OpError::new(ErrorCode::BadArgs, "missing argument \"rule\""))?,
        )
        .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("argument \"rule\": {e}")))?;
        let n = base.rules.len();
        // The running table: its rule-name index finds and checks names (when it runs `base`).
        let old = self.table();
        let index = if op == "rule.add" {
            n
        } else {
            crate::rules::rule_index(&base, Some(&old), args)?
        };
        crate::rules::name_for(&base, Some(&old), index, &mut rule)?;
        if base.rules.get(index) == Some(&rule) {
            return Ok(json!({
                "version": current,
                "digest": store.current().map(|c| c.meta.digest.clone()),
                "unchanged": true,
            }));
        }
        let issues = old.check_rule(index, &rule);
        if !issues.is_empty() {
            return Err(invalid(policy::ConfigError::Invalid {
                file: "<document>".into(),
                issues,
            }));
        }
        let change = if op == "rule.add" {
            policy::RuleChange::Append(&rule)
        } else {
            policy::RuleChange::Replace {
                index,
                old: &base.rules[index],
                new: &rule,
            }
        };
        let mut doc = (*base).clone();
        if index == n {
            doc.rules.push(rule.clone());
        } else {
            doc.rules[index] = rule.clone();
        }
        let doc = Arc::new(doc);
        let table = Arc::new(old.with_rule_change(store.next_version(), change, doc.clone()));
        let compiled = t0.elapsed().as_secs_f64() * 1e3;
        let mut delta_args = json!({"rule": rule});
        if op == "rule.update" {
            delta_args["index"] = json!(index);
        }
        let edits = json!([{"op": op, "args": delta_args}]);
        self.persist_and_publish(
            &mut store,
            (&base, table),
            doc,
            Change::Edits(&edits),
            (uid, op, comment, None),
            (t0, compiled),
        )
    }

    /// `stats`: the counters as JSON — made as text, the tenants written one at a time (at a million
    /// tenants a tree of them is gigabytes) — or in the Prometheus text format.
    fn stats(&self, args: &Value) -> Result<Answer, OpError> {
        let tenants = TenantFilter::from_args(args)
            .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("stats: {e}")))?;
        if let TenantFilter::One(t) = &tenants {
            if self.table().tenant_by_name(t).is_none() {
                return Err(OpError::new(
                    ErrorCode::NotFound,
                    format!("no tenant {t:?}"),
                ));
            }
        }
        match args.get("format").and_then(Value::as_str).unwrap_or("json") {
            "json" => self
                .inner
                .dataplane
                .stats(&tenants)
                .to_json()
                .map(Answer::Text)
                .map_err(|e| OpError::new(ErrorCode::Internal, format!("stats: {e}"))),
            "prometheus" => Ok(Answer::Value(
                json!({ "text": self.prometheus(&tenants).concat() }),
            )),
            f => Err(OpError::new(
                ErrorCode::BadArgs,
                format!("format {f:?}: json or prometheus"),
            )),
        }
    }

    /// The counters in the Prometheus text format, in sections to be sent one after another (at a
    /// million tenants a few hundred megabytes: not copied into one string to be sent).
    fn prometheus(&self, tenants: &TenantFilter) -> Vec<String> {
        let stats = self.inner.dataplane.stats(tenants);
        let workers = self.inner.dataplane.workers();
        let mut text =
            crate::metrics::prometheus_sections(&stats, &workers, self.table().version());
        text.push(self.lag_metric(&workers));
        text
    }

    /// `GET /metrics`: what `stats {"format": "prometheus"}` answers, as the text's sections, for the
    /// tenants `tenants` (the query's `tenants`: `all` when `None`), checked as the socket's `stats`
    /// checks it: an unknown one is `bad_args`.
    pub fn metrics(&self, tenants: Option<&str>) -> Result<Vec<String>, OpError> {
        let args = json!({ "tenants": tenants });
        let tenants = TenantFilter::from_args(&args)
            .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("stats: {e}")))?;
        tracing::debug!(?tenants, "metrics requested");
        Ok(self.prometheus(&tenants))
    }

    /// `joypath_policy_lag`: versions between the newest policy (the fleet's, or the store's) and
    /// the oldest one a worker of this gateway runs.
    fn lag_metric(&self, workers: &[WorkerStatus]) -> String {
        let store = self.store_version();
        let latest = self
            .inner
            .fleet
            .get()
            .map_or(store, |f| f.latest().max(store));
        let running = workers
            .iter()
            .map(|w| w.active_version)
            .min()
            .unwrap_or(store);
        format!(
            "# HELP joypath_policy_lag Policy versions this gateway's workers are behind the newest (the fleet's with --etcd).\n\
             # TYPE joypath_policy_lag gauge\njoypath_policy_lag {}\n",
            latest.saturating_sub(running)
        )
    }

    /// `fleet.status`: every gateway of the fleet (this one alone without `--etcd`).
    fn fleet_status(&self) -> Result<Value, OpError> {
        match self.inner.fleet.get() {
            Some(f) => f.status().map_err(fleet_error),
            None => {
                let (version, _) = self.store_head();
                let mut me = self.member_status();
                me["name"] = json!("local");
                me["lag"] = json!(version.saturating_sub(me["version"].as_u64().unwrap_or(0)));
                me["alive"] = json!(true);
                me["uptime_s"] = json!(self.inner.started.elapsed().as_secs());
                let ok = me["lag"] == json!(0);
                Ok(json!({"latest": version, "prefix": null, "gateways": [me], "ok": ok}))
            }
        }
    }

    fn status(&self) -> Value {
        let (version, digest, dir, quarantined) = {
            let s = self.store();
            (
                s.version(),
                s.current().map(|c| c.meta.digest.clone()),
                s.dir().display().to_string(),
                s.quarantined().to_vec(),
            )
        };
        let workers: Vec<Value> = self
            .inner
            .dataplane
            .workers()
            .into_iter()
            .map(|w| {
                let lag = version.saturating_sub(w.active_version);
                let mut v = json!(w);
                v["lag"] = json!(lag);
                v
            })
            .collect();
        json!({
            "version": version,
            "digest": digest,
            "uptime_s": self.inner.started.elapsed().as_secs_f64(),
            "state_dir": dir,
            "quarantined": quarantined,
            "fleet": self.inner.fleet.get().map(|f| json!({
                "name": f.name(),
                "latest": f.latest(),
                "synced": f.synced(),
            })),
            "workers": workers,
        })
    }

    fn verify(&self) -> Value {
        let (version, digest) = {
            let s = self.store();
            (
                s.version(),
                s.current()
                    .map(|c| c.meta.digest.clone())
                    .unwrap_or_default(),
            )
        };
        let workers: Vec<Value> = self
            .inner
            .dataplane
            .workers()
            .into_iter()
            .map(|w| {
                let ok = w.active_version == version && w.active_digest == digest;
                json!({"id": w.id, "version": w.active_version, "digest": w.active_digest, "ok": ok})
            })
            .collect();
        let ok = workers.iter().all(|w| w["ok"] == json!(true));
        json!({"ok": ok, "expected": {"version": version, "digest": digest}, "workers": workers})
    }
}

/// Makes way for a new socket at `path`: nothing there, or a stale socket (no one answers on it),
/// which is removed. Anything else — a live socket, a regular file, a directory, a symlink — is
/// refused and left alone.
pub fn check_socket_path(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: refusing to replace it (remove it or choose another --socket)",
                path.display()
            ),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{}: another process is serving this socket", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

fn write_response(w: &mut impl Write, r: &Response) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, r)?;
    w.write_all(b"\n")?;
    w.flush()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub use crate::metrics::prometheus;

/// `doc`, made by `edits` from `base` — the document the running table `old` was compiled from, if
/// it is — compiled as `version`: in place when the edits are one change to one list that the table
/// can make by itself (`Table::with_addition`, `with_tenant_edit`, `with_segment_edit`,
/// `with_endpoint_change`); whole otherwise. Says which.
fn compile_next(
    old: &Table,
    base: Option<&Document>,
    edits: Option<&Value>,
    doc: Arc<Document>,
    version: u64,
) -> Result<(Table, bool), policy::ConfigError> {
    let in_place = base.zip(edits).and_then(|(base, edits)| {
        let (op, args) = single_edit(edits)?;
        let d = doc.clone();
        match only_changed(base, &doc)? {
            List::Tenants if op == "tenant.add" && doc.tenants.len() == base.tenants.len() + 1 => {
                old.with_addition(version, policy::Addition::Tenant(doc.tenants.last()?), d)
            }
            List::Segments
                if op == "segment.add" && doc.segments.len() == base.segments.len() + 1 =>
            {
                old.with_addition(version, policy::Addition::Segment(doc.segments.last()?), d)
            }
            List::Tenants => old.with_tenant_edit(version, tenant_edit(op, args, base, &doc)?, d),
            List::Segments => {
                old.with_segment_edit(version, segment_edit(op, args, base, &doc)?, d)
            }
            List::Endpoints => {
                old.with_endpoint_change(version, endpoint_change(op, args, base, &doc)?, d)
            }
            List::Rules => {
                let change = rule_change(op, args, base, &doc)?;
                let new = match change {
                    policy::RuleChange::Append(r) => Some((doc.rules.len() - 1, r)),
                    policy::RuleChange::Replace { index, new, .. }
                    | policy::RuleChange::Insert { index, new } => Some((index, new)),
                    policy::RuleChange::Remove { .. } => None,
                };
                // A rule the running table refuses goes to the whole compile, which words why.
                if let Some((index, r)) = new {
                    if !old.check_rule(index, r).is_empty() {
                        return None;
                    }
                }
                Some(old.with_rule_change(version, change, d))
            }
        }
    });
    match in_place {
        Some(t) => Ok((t, true)),
        None => Table::compile(doc, version, Some(old)).map(|t| (t, false)),
    }
}

/// Makes a big table's rule-name index on a thread of its own, off the request path, when the
/// table does not have it (a whole compile; a table changed from one that has it keeps it), so the
/// next change by name does not wait for it.
fn index_rule_names(table: &Arc<Table>) {
    if table.document().rules.len() >= 10_000 && !table.rule_names_indexed() {
        let t = table.clone();
        let spawned = std::thread::Builder::new()
            .name("rule-names".into())
            .spawn(move || t.index_rule_names());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not index rule names ahead (the first lookup will)");
        }
    }
}

/// The one edit of `edits` (as persisted), as its op and arguments.
fn single_edit(edits: &Value) -> Option<(&str, &Value)> {
    let [one] = edits.as_array()?.as_slice() else {
        return None;
    };
    Some((one.get("op")?.as_str()?, one.get("args")?))
}

/// A list of the document that a change made in place touches.
enum List {
    Segments,
    Tenants,
    Endpoints,
    Rules,
}

/// The one list `doc` changed from `base`, when only one of those changed. Lists shared with
/// `base` compare by pointer: nothing is walked.
fn only_changed(base: &Document, doc: &Document) -> Option<List> {
    if doc.gateway != base.gateway {
        return None;
    }
    match (
        doc.segments == base.segments,
        doc.tenants == base.tenants,
        doc.endpoints == base.endpoints,
        doc.rules == base.rules,
    ) {
        (false, true, true, true) => Some(List::Segments),
        (true, false, true, true) => Some(List::Tenants),
        (true, true, false, true) => Some(List::Endpoints),
        (true, true, true, false) => Some(List::Rules),
        _ => None,
    }
}

/// The one rule a `rule.*` edit changed between `base` and `doc`: appended, replaced, inserted
/// (`rule.add` with an `index`) or removed.
fn rule_change<'a>(
    op: &str,
    args: &Value,
    base: &'a Document,
    doc: &'a Document,
) -> Option<policy::RuleChange<'a>> {
    let n = base.rules.len();
    match op {
        "rule.add" if doc.rules.len() == n + 1 => {
            // As the edit read it: a new edit refuses an index that is not a non-negative
            // integer (`rules::insert_index`); one replayed as committed (a fleet's) appends.
            let i = args
                .get("index")
                .and_then(Value::as_u64)
                .map_or(n, |i| i as usize);
            // The rule after it is the one that was there (nothing else moved).
            (doc.rules.get(i + 1) == base.rules.get(i)).then_some(())?;
            let new = doc.rules.get(i)?;
            Some(if i == n {
                policy::RuleChange::Append(new)
            } else {
                policy::RuleChange::Insert { index: i, new }
            })
        }
        // The rule an update or a removal changed is where the lists first differ (found past the
        // chunks they share, not by looking its name up again among every rule's).
        "rule.update" if doc.rules.len() == n => {
            let index = first_difference(&base.rules, &doc.rules);
            Some(policy::RuleChange::Replace {
                index,
                old: base.rules.get(index)?,
                new: doc.rules.get(index)?,
            })
        }
        "rule.remove" if doc.rules.len() + 1 == n => {
            let index = first_difference(&base.rules, &doc.rules);
            (doc.rules.get(index) == base.rules.get(index + 1)).then_some(())?;
            Some(policy::RuleChange::Remove {
                index,
                old: base.rules.get(index)?,
            })
        }
        _ => None,
    }
}

/// The first index at which `a` and `b` hold different rules (the shorter one's length when one is
/// the other's prefix): looked for past the chunks they share.
fn first_difference(
    a: &policy::section::Section<policy::Rule>,
    b: &policy::section::Section<policy::Rule>,
) -> usize {
    let n = a.len().min(b.len());
    (a.shared_prefix(b)..n)
        .find(|&i| a.get(i) != b.get(i))
        .unwrap_or(n)
}

/// The tenant a `tenant.update` / `tenant.remove` edit changed between `base` and `doc` (a
/// cascading removal that removed something changed more lists, and never gets here).
fn tenant_edit<'a>(
    op: &str,
    args: &Value,
    base: &'a Document,
    doc: &'a Document,
) -> Option<policy::TenantEdit<'a>> {
    // Names are unique, and everything before the first chunk the edit copied is the same in both.
    let start = doc.tenants.shared_prefix(&base.tenants);
    let find = |d: &'a Document, name: &str| d.tenants.find_from(start, |t| *t.name == *name);
    match op {
        "tenant.update" if doc.tenants.len() == base.tenants.len() => {
            let name = args.get("tenant")?.get("name")?.as_str()?;
            Some(policy::TenantEdit::Update {
                old: find(base, name)?,
                new: find(doc, name)?,
            })
        }
        "tenant.remove" if doc.tenants.len() + 1 == base.tenants.len() => {
            let name = args.get("name")?.as_str()?;
            find(doc, name).is_none().then_some(())?;
            Some(policy::TenantEdit::Remove(find(base, name)?))
        }
        _ => None,
    }
}

/// The segment a `segment.update` / `segment.remove` edit changed between `base` and `doc`.
fn segment_edit<'a>(
    op: &str,
    args: &Value,
    base: &'a Document,
    doc: &'a Document,
) -> Option<policy::SegmentEdit<'a>> {
    // VNIs are unique, and everything before the first chunk the edit copied is the same in both.
    let start = doc.segments.shared_prefix(&base.segments);
    let find = |d: &'a Document, vni: u64| d.segments.find_from(start, |s| u64::from(s.vni) == vni);
    match op {
        "segment.update" if doc.segments.len() == base.segments.len() => {
            let vni = args.get("segment")?.get("vni")?.as_u64()?;
            Some(policy::SegmentEdit::Update {
                old: find(base, vni)?,
                new: find(doc, vni)?,
            })
        }
        "segment.remove" if doc.segments.len() + 1 == base.segments.len() => {
            let vni = args.get("vni")?.as_u64()?;
            find(doc, vni).is_none().then_some(())?;
            Some(policy::SegmentEdit::Remove(find(base, vni)?))
        }
        _ => None,
    }
}

/// The one endpoint an `endpoint.*` edit changed between `base` and `doc`.
fn endpoint_change<'a>(
    op: &str,
    args: &Value,
    base: &'a Document,
    doc: &'a Document,
) -> Option<policy::EndpointChange<'a>> {
    // Endpoints are unique, and everything before the first chunk the edit copied is the same in
    // both.
    let start = doc.endpoints.shared_prefix(&base.endpoints);
    let find = |d: &'a Document, tenant: &str, ip: std::net::IpAddr| {
        d.endpoints
            .find_from(start, |e| e.tenant == tenant && e.ip == ip)
    };
    match op {
        "endpoint.add" if doc.endpoints.len() == base.endpoints.len() + 1 => {
            Some(policy::EndpointChange {
                old: None,
                new: Some(doc.endpoints.last()?),
            })
        }
        "endpoint.update" => {
            let e: policy::Endpoint = serde_json::from_value(args.get("endpoint")?.clone()).ok()?;
            Some(policy::EndpointChange {
                old: Some(find(base, &e.tenant, e.ip)?),
                new: Some(find(doc, &e.tenant, e.ip)?),
            })
        }
        "endpoint.remove" if doc.endpoints.len() + 1 == base.endpoints.len() => {
            let tenant = args.get("tenant")?.as_str()?;
            let ip: std::net::IpAddr = args.get("ip")?.as_str()?.parse().ok()?;
            Some(policy::EndpointChange {
                old: Some(find(base, tenant, ip)?),
                new: None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"
[[tenant]]
name = "a"
id = 1
[[tenant]]
name = "b"
id = 2
[[rule]]
from = "a"
to = "b"
proto = "tcp"
ports = "443"
action = "allow"
[[rule]]
name = "b-in"
from = "b"
to = "a"
action = "allow"
priority = 2
[[rule]]
from = "*"
to = "b"
proto = "udp"
action = "deny"
"#;

    /// `edits` (one op) made to `base` as the server makes them, then compiled by `compile_next`.
    fn next(
        old: &Table,
        base: &Document,
        op: &str,
        args: Value,
    ) -> Result<(Table, bool, Document), policy::ConfigError> {
        let mut doc = base.clone();
        edit::apply(op, &args, &mut doc).expect("applies");
        policy::names::name_new_rules(&mut doc, base);
        let edits = json!([{"op": op, "args": args}]);
        let doc = Arc::new(doc);
        let (t, in_place) = compile_next(old, Some(base), Some(&edits), doc.clone(), 2)?;
        Ok((t, in_place, (*doc).clone()))
    }

    #[test]
    fn one_rule_changes_are_compiled_in_place_to_the_whole_documents_digest() {
        let base = Document::from_toml(DOC, "t").unwrap();
        let old = Table::compile(Arc::new(base.clone()), 1, None).unwrap();
        let rule = json!({"from": "b", "to": "a", "proto": "udp", "ports": "53", "action": "deny"});
        for (op, args) in [
            ("rule.remove", json!({"index": 0})),
            ("rule.remove", json!({"name": "b-in"})),
            ("rule.remove", json!({"index": 2})),
            ("rule.add", json!({"rule": rule, "index": 0})),
            ("rule.add", json!({"rule": rule, "index": 2})),
            ("rule.add", json!({"rule": rule, "index": 3})),
            ("rule.add", json!({"rule": rule})),
            ("rule.update", json!({"index": 1, "rule": rule})),
        ] {
            let (t, in_place, doc) = next(&old, &base, op, args.clone()).unwrap();
            assert!(in_place, "{op} {args}: made in place");
            assert_eq!(t.digest(), policy::digest(&doc), "{op} {args}");
            let whole = Table::compile(Arc::new(doc), 2, None).unwrap();
            assert_eq!(t.digest(), whole.digest(), "{op} {args}");
        }
        // A rule naming no tenant goes to the whole compile, which says what is wrong.
        let bad = json!({"from": "nobody", "to": "a", "action": "allow"});
        let e = next(&old, &base, "rule.add", json!({"rule": bad, "index": 1}));
        assert!(e.is_err_and(|e| e.to_string().contains("nobody")));
    }

    /// An unnamed rule added through the running table's name index gets the name the whole
    /// naming pass would give it, wherever it lands, and a later one the next free suffix.
    #[test]
    fn a_rule_named_through_the_index_gets_the_name_the_naming_pass_gives() {
        let base = Document::from_toml(DOC, "t").unwrap();
        let table = Table::compile(Arc::new(base.clone()), 1, None).unwrap();
        let rule =
            json!({"from": "a", "to": "b", "proto": "tcp", "ports": "443", "action": "allow"});
        for index in [json!(0), json!(1), json!(3), Value::Null] {
            let args = json!({"rule": rule, "index": index});
            let mut by_index = base.clone();
            edit::apply_with("rule.add", &args, &mut by_index, Some(&table)).unwrap();
            let mut by_pass = base.clone();
            edit::apply("rule.add", &args, &mut by_pass).unwrap();
            policy::names::name_new_rules(&mut by_pass, &base);
            assert_eq!(by_index, by_pass, "at {index}");
            let i = index.as_u64().map_or(base.rules.len(), |i| i as usize);
            assert_eq!(
                by_index.rules[i].name.as_deref(),
                Some("a-b-tcp-443-2"),
                "at {index}"
            );
        }
    }

    /// A rule added or updated under a name another rule has is refused, wherever it lands in the
    /// list: the edit refuses it, before the in-place compile (which does not look at names) would
    /// take it.
    #[test]
    fn a_rule_under_a_name_taken_is_refused_in_place_too() {
        let base = Document::from_toml(DOC, "t").unwrap();
        let rule = json!({"name": "b-in", "from": "a", "to": "b", "action": "deny"});
        for (op, args) in [
            ("rule.add", json!({"rule": rule, "index": 0})),
            ("rule.add", json!({"rule": rule, "index": 1})),
            ("rule.add", json!({"rule": rule})),
            ("rule.update", json!({"index": 0, "rule": rule})),
        ] {
            let e = edit::apply(op, &args, &mut base.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidPolicy, "{op} {args}");
            assert!(
                e.message.contains("\"b-in\" is taken"),
                "{op} {args}: {e:?}"
            );
        }
    }

    /// `stats` as text is byte for byte the JSON of the answer made whole, with the tenants in their
    /// place among the keys (before and after others), names escaped; and a peer reads it back.
    #[test]
    fn stats_text_is_the_answer_json() {
        for v in [
            json!({"frames": 3, "dropped": {"malformed": 1}, "rules": {"r\"1": 2},
                   "tenants": {"a\nb": {"frames_in": 1, "dropped": {}}, "z": {"denied": 2}},
                   "zz": [1, 2], "driver": null}),
            json!({"frames": 0, "tenants": {}}),
            json!({}),
        ] {
            let stats = Stats::from_value(v.clone());
            let text = stats.to_json().unwrap();
            let mut whole = v.clone();
            whole["tenants"] = stats.to_value()["tenants"].clone();
            assert_eq!(text.get(), serde_json::to_string(&whole).unwrap());
            let line = serde_json::to_string(&Response::ok_text(json!(7), text)).unwrap();
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back.result, Some(whole), "{line}");
            assert_eq!(back.id, json!(7));
        }
    }

    struct Null;
    impl Dataplane for Null {
        fn publish(&self, _: Arc<Table>) {}
        fn workers(&self) -> Vec<WorkerStatus> {
            Vec::new()
        }
        fn stats(&self, _: &TenantFilter) -> Stats {
            Stats::from_value(json!({}))
        }
        fn trace(&self, _: &TraceRequest) -> Result<Value, String> {
            Err("none".into())
        }
    }

    /// Versions another gateway recorded in an earlier build's digest format (a rolling upgrade)
    /// are checked in that format, cached here in this build's, and recognised at start-up; one
    /// whose digest is not its document's is refused.
    #[test]
    fn fleet_versions_recorded_in_an_earlier_digest_format() {
        let dir = tempfile::tempdir().unwrap();
        let base = Arc::new(Document::from_toml(DOC, "t").unwrap());
        let mut store = Store::open(dir.path(), 10).unwrap();
        let d = policy::digest(&base);
        let meta = store.meta_for(d, 0, "config", None);
        store
            .commit_meta(base.clone(), meta, Change::Whole)
            .unwrap();
        let table = Arc::new(Table::compile(base.clone(), 1, None).unwrap());
        let server = Server::new(
            ServerConfig::new(dir.path().join("s.sock")),
            store,
            table,
            Arc::new(Null),
        );
        let edits = json!([{"op": "rule.remove", "args": {"index": 0}}]);
        let mut next = (*base).clone();
        crate::store::apply_edits(&mut next, &edits).unwrap();
        let legacy = policy::table::digest_in_format(&next, 1).unwrap();
        let now = policy::digest(&next);
        assert_ne!(legacy, now);
        let earlier = |digest: u64| {
            let mut m = server.store().meta_for(digest, 0, "rule.remove", None);
            m.digest_format = 1;
            m
        };
        let e = server.fleet_apply(earlier(legacy ^ 1), Some(&edits), None);
        assert!(e.is_err_and(|e| e.contains("differs from the fleet's")));
        let record = earlier(legacy);
        server
            .fleet_apply(record.clone(), Some(&edits), None)
            .unwrap();
        let (v, digest) = server.store_head();
        assert_eq!((v, digest), (2, format!("{now:016x}")));
        assert_eq!(server.table().digest(), now);
        assert!(server.store_head_matches(&record));
        let mut other = record.clone();
        other.digest = format!("{:016x}", legacy ^ 1);
        assert!(!server.store_head_matches(&other));
        assert!(server.store_head_matches(&record.clone().restamped(now)));
        // 73cd899 recorded format 2 without saying so.
        let mut unlabelled = record.restamped(now);
        unlabelled.digest_format = 1;
        assert!(server.store_head_matches(&unlabelled));
    }
}
