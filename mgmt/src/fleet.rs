//! The fleet: etcd as the policy source shared by many gateways, and their health.
//!
//! Keys under the prefix `P` (default `/joypath`):
//! - `P/doc/gateway`, `P/doc/segment/<vni>`, `P/doc/tenant/<name>`, `P/doc/endpoint/<tenant>/<ip>`,
//!   `P/doc/rule/<index>`: the policy, one key per object (names with `/` or `%` percent-encoded);
//! - `P/version`: the policy version, monotonic;
//! - `P/history/<version>`: `{"meta":…, "edits":…}` — who made the version, its digest and etcd
//!   revision, and the edits that made it from the version before (null for a whole document);
//! - `P/members/<name>` (under the gateway's lease) and `P/known/<name>`: fleet health.
//!
//! Every change is one etcd transaction: compare `P/version` with the version the change was built
//! on (`expected_version`), then put/delete the objects it touches, `P/version` and its history
//! record. Each gateway watches `P/history/` and applies a version incrementally (its edits, checked
//! against the digest), or reloads the objects at that revision (whole documents, gaps, a compacted
//! watch). Every version is also written to the gateway's local store, which a gateway starting
//! while etcd is down runs from.
//!
//! tokio lives here only: one runtime with one worker thread named `fleet`.

use crate::server::Server;
use crate::store::VersionMeta;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use policy::Document;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a gateway joins the fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// etcd client URLs (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing `/`.
    pub prefix: String,
    /// This gateway's name in the fleet (unique).
    pub name: String,
    /// Lease TTL of the membership key, seconds: a dead gateway leaves the view within it.
    pub lease_ttl: i64,
    /// Every etcd request gives up after this long (a cluster without quorum never hangs a change).
    pub timeout: Duration,
    /// The most operations etcd accepts in one transaction (etcd's `--max-txn-ops`, default 128).
    pub max_txn_ops: usize,
}

impl FleetConfig {
    pub fn new(endpoints: Vec<String>, prefix: &str, name: &str) -> Self {
        FleetConfig {
            endpoints,
            prefix: prefix.trim_end_matches('/').to_string(),
            name: name.to_string(),
            lease_ttl: 5,
            timeout: Duration::from_secs(3),
            max_txn_ops: 128,
        }
    }
}

/// Why the fleet refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd is unavailable ({0}): changes are refused until it is back; forwarding goes on with the last version")]
    Unavailable(String),
    #[error("the fleet is at version {fleet}, not {expected}: {why}")]
    Conflict {
        fleet: u64,
        expected: u64,
        why: String,
    },
    #[error("the change touches {ops} objects; etcd takes at most {max} operations per transaction (etcd's --max-txn-ops)")]
    TooLarge { ops: usize, max: usize },
    #[error("etcd holds something unexpected: {0}")]
    Corrupt(String),
}

/// The running fleet link of one gateway.
pub struct Fleet {
    cfg: FleetConfig,
    rt: tokio::runtime::Runtime,
    client: Mutex<Option<Client>>,
    /// Which endpoint to try first when (re)connecting: one member at a time, so that a dead one
    /// fails fast and the next is tried.
    preferred: AtomicU64,
    /// The newest version seen in etcd.
    latest: AtomicU64,
    /// Why this gateway's store cannot follow the fleet, if it cannot.
    diverged: Mutex<Option<String>>,
    /// The watch is live and this gateway has caught up with etcd at least once.
    synced: AtomicBool,
    started: Instant,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("cfg", &self.cfg).finish()
    }
}

fn enc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn dec(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

fn unavailable(e: impl std::fmt::Display) -> FleetError {
    FleetError::Unavailable(e.to_string())
}

/// A put (Some) or delete (None) of one key.
type KeyOp = (String, Option<Vec<u8>>);

impl Fleet {
    /// Connects in the background and keeps this gateway in sync with etcd: seeds an empty prefix
    /// from the server's current version, or adopts the fleet's, then watches. Until it connects the
    /// server runs its locally cached version and refuses changes.
    pub fn start(cfg: FleetConfig, server: Server) -> std::io::Result<Arc<Fleet>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fleet")
            .enable_all()
            .build()?;
        let fleet = Arc::new(Fleet {
            cfg,
            rt,
            client: Mutex::new(None),
            preferred: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            diverged: Mutex::new(None),
            synced: AtomicBool::new(false),
            started: Instant::now(),
        });
        server.attach_fleet(fleet.clone());
        let f = fleet.clone();
        fleet.rt.spawn(async move { f.sync_loop(server).await });
        Ok(fleet)
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The newest version this gateway has seen in etcd (0 before it first reached it).
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.cfg.prefix)
    }

    fn client(&self) -> Result<Client, FleetError> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| FleetError::Unavailable("not connected to etcd yet".into()))
    }

    /// The current connection, or a new one to a member that has a leader. A change or a
    /// heartbeat that finds none connects itself: the watch may be healthy on its own connection
    /// while a failed transaction dropped the shared one.
    async fn connected(&self) -> Result<Client, FleetError> {
        if let Ok(c) = self.client() {
            return Ok(c);
        }
        let c = self.connect().await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.cfg.timeout, f).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(FleetError::Unavailable(format!(
                "no answer within {:?} (no quorum?)",
                self.cfg.timeout
            ))),
        }
    }

    /// Commits a change as one etcd transaction: `base` (the version it was built on, whose
    /// document is `old`) must still be the fleet's version. Returns the etcd revision.
    pub fn commit(
        &self,
        base: u64,
        old: &Document,
        new: &Document,
        meta: &VersionMeta,
        edits: Option<&Value>,
    ) -> Result<i64, FleetError> {
        // A watch that is being re-established (a member went away) gets a moment to catch up.
        let deadline = Instant::now() + self.cfg.timeout;
        while !self.synced() {
            if Instant::now() >= deadline {
                return Err(FleetError::Unavailable(
                    "this gateway has not caught up with etcd".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(why) = self
            .diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(FleetError::Conflict {
                fleet: self.latest(),
                expected: base,
                why,
            });
        }
        let mut ops = object_ops(&self.cfg.prefix, old, new, edits);
        let record = json!({"meta": meta, "edits": edits});
        ops.push((
            self.key("version"),
            Some(meta.version.to_string().into_bytes()),
        ));
        ops.push((
            self.key(&format!("history/{:020}", meta.version)),
            Some(serde_json::to_vec(&record).unwrap_or_default()),
        ));
        if meta.version > 1000 {
            ops.push((
                self.key(&format!("history/{:020}", meta.version - 1000)),
                None,
            ));
        }
        if ops.len() > self.cfg.max_txn_ops {
            return Err(FleetError::TooLarge {
                ops: ops.len(),
                max: self.cfg.max_txn_ops,
            });
        }
        let cmp = Compare::value(
            self.key("version"),
            CompareOp::Equal,
            base.to_string().into_bytes(),
        );
        let txn = Txn::new()
            .when([cmp])
            .and_then(to_txn_ops(ops))
            .or_else([TxnOp::get(self.key("version"), None)]);
        let mut c = self.rt.block_on(self.connected())?;
        let mut retried = false;
        let resp = loop {
            match self.rt.block_on(self.timed(c.txn(txn.clone()))) {
                Ok(r) => break r,
                Err(e) if !retried => {
                    // This member may be gone: once more through another (the watch reconnects too).
                    tracing::debug!(error = %e, "fleet: transaction failed; retrying through another member");
                    retried = true;
                    self.fail_over();
                    c = self.rt.block_on(self.connect())?;
                    *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                }
                Err(FleetError::Unavailable(why)) => {
                    // A proposal that reached a leader just before quorum was lost may still commit
                    // once it returns: say so rather than promise it did not happen.
                    return Err(FleetError::Unavailable(format!(
                        "{why}; if etcd had accepted it, version {} may still appear once quorum returns: check history",
                        meta.version
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() && retried && self.committed_already(&mut c, meta) {
            // The first attempt did commit; only its answer was lost.
            self.latest.fetch_max(meta.version, Ordering::AcqRel);
            return Ok(revision);
        }
        if !resp.succeeded() {
            let fleet = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    etcd_client::TxnOpResponse::Get(g) => g
                        .kvs()
                        .first()
                        .and_then(|kv| kv.value_str().ok()?.parse().ok()),
                    _ => None,
                })
                .unwrap_or(0);
            return Err(FleetError::Conflict {
                fleet,
                expected: base,
                why: "another gateway changed the policy first; this one is catching up".into(),
            });
        }
        self.latest.fetch_max(meta.version, Ordering::AcqRel);
        Ok(revision)
    }

    /// Whether `meta`'s version in etcd is this very change (same time, uid, op and digest).
    fn committed_already(&self, c: &mut Client, meta: &VersionMeta) -> bool {
        let key = self.key(&format!("history/{:020}", meta.version));
        let got = self.rt.block_on(self.timed(c.get(key, None)));
        got.ok()
            .and_then(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
            .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
            .and_then(|r| serde_json::from_value::<VersionMeta>(r["meta"].clone()).ok())
            .is_some_and(|m| {
                m.time == meta.time
                    && m.uid == meta.uid
                    && m.op == meta.op
                    && m.digest == meta.digest
            })
    }

    /// `fleet.status`: every gateway that ever joined, with its version, digest, lag and liveness.
    pub fn status(&self) -> Result<Value, FleetError> {
        let mut c = self.rt.block_on(self.connected())?;
        let prefix = self.cfg.prefix.clone();
        self.rt.block_on(async move {
            let members = self
                .timed(c.get(
                    format!("{prefix}/members/"),
                    Some(GetOptions::new().with_prefix()),
                ))
                .await?;
            let known = self
                .timed(c.get(
                    format!("{prefix}/known/"),
                    Some(GetOptions::new().with_prefix()),
                ))
                .await?;
            let version = self.timed(c.get(format!("{prefix}/version"), None)).await?;
            let latest: u64 = version
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok()?.parse().ok())
                .unwrap_or(0);
            self.latest.fetch_max(latest, Ordering::AcqRel);
            let mut alive: HashMap<String, Value> = HashMap::new();
            for kv in members.kvs() {
                if let Ok(v) = serde_json::from_slice::<Value>(kv.value()) {
                    if let Some(n) = v.get("name").and_then(Value::as_str) {
                        alive.insert(n.to_string(), v);
                    }
                }
            }
            let mut names: Vec<String> = known
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok())
                .filter_map(|k| k.rsplit('/').next().map(dec))
                .collect();
            for n in alive.keys() {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            names.sort();
            let gateways: Vec<Value> = names
                .iter()
                .map(|n| match alive.get(n) {
                    Some(v) => {
                        let running = v.get("version").and_then(Value::as_u64).unwrap_or(0);
                        let mut v = v.clone();
                        v["lag"] = json!(latest.saturating_sub(running));
                        v["alive"] = json!(true);
                        v
                    }
                    None => json!({"name": n, "alive": false, "version": null, "digest": null, "lag": null}),
                })
                .collect();
            let in_sync = gateways
                .iter()
                .filter(|g| g["alive"] == json!(true))
                .all(|g| g["lag"] == json!(0));
            Ok(json!({
                "latest": latest,
                "prefix": prefix,
                "gateways": gateways,
                "ok": in_sync,
            }))
        })
    }

    /// Connects to one member that has a leader, trying each endpoint in turn.
    async fn connect(&self) -> Result<Client, FleetError> {
        let n = self.cfg.endpoints.len().max(1);
        let mut last = FleetError::Unavailable("no etcd endpoint".into());
        for k in 0..n {
            let i = (self.preferred.load(Ordering::Acquire) as usize + k) % n;
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(self.cfg.timeout)
                .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
                .with_require_leader(true);
            let ep = self.cfg.endpoints[i].clone();
            let attempt = async {
                let mut c = self
                    .timed(Client::connect([ep.clone()], Some(opts)))
                    .await?;
                // A member cut off from the others answers "no leader" at once.
                self.timed(c.get(self.key("version"), None)).await?;
                Ok::<_, FleetError>(c)
            };
            match attempt.await {
                Ok(c) => {
                    self.preferred.store(i as u64, Ordering::Release);
                    tracing::debug!(endpoint = %ep, "fleet: connected");
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Drops the current connection; the next one starts with another member.
    fn fail_over(&self) {
        let had = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if had {
            self.preferred.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Connect, catch up (seed or adopt), watch; on any failure start over after a pause.
    async fn sync_loop(self: Arc<Self>, server: Server) {
        let hb = self.clone();
        let hb_server = server.clone();
        self.rt
            .spawn(async move { hb.heartbeat_loop(hb_server).await });
        let mut failures = 0u32;
        loop {
            let r = self.sync_and_watch(&server).await;
            if r.is_err() {
                self.fail_over();
            }
            if self.synced.swap(false, Ordering::AcqRel) {
                failures = 0; // it had been in sync: this is a new outage
            }
            if let Err(e) = r {
                if failures == 1 {
                    tracing::warn!(error = %e, "fleet: lost etcd; running the last version, changes refused until it is back");
                } else {
                    tracing::debug!(error = %e, "fleet: etcd still unavailable");
                }
                failures += 1;
            }
            // The first retry at once (another member answers); then every half second.
            let pause = if failures <= 1 { 20 } else { 500 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    async fn sync_and_watch(&self, server: &Server) -> Result<(), FleetError> {
        let mut c = self.connected().await?;
        let rev = self.catch_up(&mut c, server).await?;
        let mut stream = self
            .timed(
                c.watch(
                    self.key("history/"),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(rev + 1)
                            .with_progress_notify(),
                    ),
                ),
            )
            .await?;
        self.synced.store(true, Ordering::Release);
        let version = on_server(server, |s| s.store_version()).await?;
        tracing::info!(
            version,
            revision = rev,
            "fleet: in sync with etcd, watching"
        );
        let mut asked = Instant::now();
        let mut heard = Instant::now();
        loop {
            // Ask for a progress report every few seconds: a watch that hears nothing for long is
            // talking to a member that is gone or cut off, and starts over.
            if asked.elapsed() > Duration::from_secs(3) {
                let _ = self.timed(stream.request_progress()).await;
                asked = Instant::now();
            }
            let msg = match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Err(_) if heard.elapsed() > Duration::from_secs(20) => {
                    return Err(FleetError::Unavailable("the watch went silent".into()))
                }
                Err(_) => continue,
                Ok(m) => m.map_err(unavailable)?,
            };
            heard = Instant::now();
            let Some(resp) = msg else {
                return Err(FleetError::Unavailable("the watch ended".into()));
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                tracing::warn!(
                    compacted = resp.compact_revision(),
                    reason = resp.cancel_reason(),
                    "fleet: watch compacted or cancelled; reloading a snapshot"
                );
                return Err(FleetError::Unavailable("watch cancelled".into()));
            }
            for ev in resp.events() {
                if ev.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = ev.kv() else { continue };
                let record: Value = serde_json::from_slice(kv.value())
                    .map_err(|e| FleetError::Corrupt(format!("history record: {e}")))?;
                let mut meta: VersionMeta = serde_json::from_value(record["meta"].clone())
                    .map_err(|e| FleetError::Corrupt(format!("history meta: {e}")))?;
                // The record is written in the transaction whose revision it cannot know.
                meta.revision = Some(kv.mod_revision());
                self.latest.fetch_max(meta.version, Ordering::AcqRel);
                let edits = record.get("edits").filter(|e| e.is_array()).cloned();
                let applied = match edits {
                    Some(e) => {
                        let m = meta.clone();
                        on_server(server, move |s| s.fleet_apply(m, Some(&e), None)).await?
                    }
                    None => Err("a whole document".to_string()),
                };
                if let Err(why) = applied {
                    tracing::info!(version = meta.version, why = %why, "fleet: loading the version's objects");
                    let (m, doc) = self.load(&mut c, kv.mod_revision()).await?;
                    on_server(server, move |s| s.fleet_apply(m, None, Some(doc)))
                        .await?
                        .map_err(FleetError::Corrupt)?;
                }
            }
        }
    }

    /// Brings the server to etcd's version (or seeds etcd from the server); returns the revision.
    async fn catch_up(&self, c: &mut Client, server: &Server) -> Result<i64, FleetError> {
        loop {
            let resp = self.timed(c.get(self.key("version"), None)).await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let Some(kv) = resp.kvs().first() else {
                if self.seed(c, server).await? {
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let fleet_v: u64 = kv
                .value_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| FleetError::Corrupt("version key".into()))?;
            self.latest.fetch_max(fleet_v, Ordering::AcqRel);
            let (local_v, local_digest) = on_server(server, |s| s.store_head()).await?;
            if fleet_v == local_v {
                let h = self
                    .timed(c.get(self.key(&format!("history/{fleet_v:020}")), None))
                    .await?;
                let record = h
                    .kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
                    .and_then(|r| serde_json::from_value::<VersionMeta>(r["meta"].clone()).ok());
                if let Some(m) = record {
                    if on_server(server, move |s| s.store_head_matches(&m)).await? {
                        return Ok(rev);
                    }
                }
            }
            if fleet_v <= local_v {
                // Same number, other content, or a local store ahead of etcd (etcd was reset, or
                // this state directory served another fleet): the numbers cannot be reconciled.
                // Keep forwarding on the local version, refuse changes, say why.
                let why = format!(
                    "this gateway's store (version {local_v}, digest {local_digest}) diverges from the fleet's (version {fleet_v}): \
                     start it with an empty --state-dir to join the fleet"
                );
                tracing::error!("fleet: {why}");
                *self.diverged.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                return Ok(rev);
            }
            *self.diverged.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let (meta, doc) = self.load(c, rev).await?;
            on_server(server, move |s| s.fleet_apply(meta, None, Some(doc)))
                .await?
                .map_err(FleetError::Corrupt)?;
            return Ok(rev);
        }
    }

    /// The policy at `revision`: every object key, paginated.
    async fn load(
        &self,
        c: &mut Client,
        revision: i64,
    ) -> Result<(VersionMeta, Document), FleetError> {
        let v = self
            .timed(c.get(
                self.key("version"),
                Some(GetOptions::new().with_revision(revision)),
            ))
            .await?;
        let version: u64 = v
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok()?.parse().ok())
            .ok_or_else(|| FleetError::Corrupt("no version key".into()))?;
        let h = self
            .timed(c.get(
                self.key(&format!("history/{version:020}")),
                Some(GetOptions::new().with_revision(revision)),
            ))
            .await?;
        let meta: VersionMeta = h
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
            .and_then(|r| serde_json::from_value(r["meta"].clone()).ok())
            .ok_or_else(|| {
                FleetError::Corrupt(format!("no history record for version {version}"))
            })?;
        let doc_prefix = self.key("doc/");
        let end = prefix_end(&doc_prefix);
        let mut start = doc_prefix.clone().into_bytes();
        let mut gateway = None;
        let mut segments = Vec::new();
        let mut tenants = Vec::new();
        let mut endpoints = Vec::new();
        let mut rules: Vec<(u64, policy::Rule)> = Vec::new();
        loop {
            let page = self
                .timed(
                    c.get(
                        start.clone(),
                        Some(
                            GetOptions::new()
                                .with_range(end.clone())
                                .with_revision(revision)
                                .with_limit(5000),
                        ),
                    ),
                )
                .await?;
            let bad = |k: &str, e: serde_json::Error| FleetError::Corrupt(format!("{k}: {e}"));
            for kv in page.kvs() {
                let k = kv.key_str().map_err(unavailable)?;
                let rest = &k[doc_prefix.len()..];
                let val = kv.value();
                if rest == "gateway" {
                    gateway = Some(serde_json::from_slice(val).map_err(|e| bad(k, e))?);
                } else if rest.starts_with("segment/") {
                    segments.push(serde_json::from_slice(val).map_err(|e| bad(k, e))?);
                } else if rest.starts_with("tenant/") {
                    tenants.push(serde_json::from_slice(val).map_err(|e| bad(k, e))?);
                } else if rest.starts_with("endpoint/") {
                    endpoints.push(serde_json::from_slice(val).map_err(|e| bad(k, e))?);
                } else if let Some(i) = rest.strip_prefix("rule/") {
                    let i = i
                        .parse()
                        .map_err(|_| FleetError::Corrupt(format!("{k}: not a rule index")))?;
                    rules.push((i, serde_json::from_slice(val).map_err(|e| bad(k, e))?));
                }
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        rules.sort_by_key(|r| r.0);
        let doc = Document {
            gateway: gateway.ok_or_else(|| FleetError::Corrupt("no gateway object".into()))?,
            segments: segments.into(),
            tenants: tenants.into(),
            endpoints: endpoints.into(),
            rules: rules.into_iter().map(|r| r.1).collect(),
        };
        Ok((meta, doc))
    }

    /// Seeds an empty prefix with the server's current version, if this gateway gets the seed lock.
    /// Returns whether it seeded.
    async fn seed(&self, c: &mut Client, server: &Server) -> Result<bool, FleetError> {
        let Some((meta, doc)) = on_server(server, |s| s.store_current()).await? else {
            return Ok(false);
        };
        let lease = self.timed(c.lease_grant(30, None)).await?.id();
        let lock = self.key("seed-lock");
        let got = self
            .timed(
                c.txn(
                    Txn::new()
                        .when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            lock.clone(),
                            self.cfg.name.clone(),
                            Some(PutOptions::new().with_lease(lease)),
                        )]),
                ),
            )
            .await?;
        if !got.succeeded() {
            return Ok(false);
        }
        tracing::info!(version = meta.version, prefix = %self.cfg.prefix, "fleet: etcd holds no policy; seeding it from this gateway's");
        // A half-written earlier seed is swept first.
        self.timed(c.delete(
            self.key("doc/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ))
        .await?;
        let empty = Document {
            gateway: doc.gateway.clone(),
            segments: Default::default(),
            tenants: Default::default(),
            endpoints: Default::default(),
            rules: Default::default(),
        };
        let mut ops = object_ops(&self.cfg.prefix, &empty, &doc, None);
        ops.push((
            self.key("doc/gateway"),
            Some(serde_json::to_vec(&doc.gateway).unwrap_or_default()),
        ));
        let batch = self.cfg.max_txn_ops.max(2) - 1;
        for chunk in ops.chunks(batch) {
            self.timed(c.txn(Txn::new().and_then(to_txn_ops(chunk.to_vec()))))
                .await?;
        }
        let record = json!({"meta": meta, "edits": null});
        let done = self
            .timed(
                c.txn(
                    Txn::new()
                        .when([Compare::create_revision(
                            self.key("version"),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then([
                            TxnOp::put(self.key("version"), meta.version.to_string(), None),
                            TxnOp::put(
                                self.key(&format!("history/{:020}", meta.version)),
                                serde_json::to_vec(&record).unwrap_or_default(),
                                None,
                            ),
                            TxnOp::delete(lock, None),
                        ]),
                ),
            )
            .await?;
        let _ = c.lease_revoke(lease).await;
        Ok(done.succeeded())
    }

    /// Keeps `P/members/<name>` alive under a lease, with what this gateway runs.
    async fn heartbeat_loop(self: Arc<Self>, server: Server) {
        loop {
            if let Err(e) = self.heartbeat(&server).await {
                tracing::debug!(error = %e, "fleet: heartbeat interrupted");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn heartbeat(&self, server: &Server) -> Result<(), FleetError> {
        let mut c = self.connected().await?;
        let lease = self
            .timed(c.lease_grant(self.cfg.lease_ttl, None))
            .await?
            .id();
        let (mut keeper, mut responses) = self.timed(c.lease_keep_alive(lease)).await?;
        let name = enc(&self.cfg.name);
        self.timed(c.put(
            self.key(&format!("known/{name}")),
            json!({"name": self.cfg.name}).to_string(),
            None,
        ))
        .await?;
        let mut last = Value::Null;
        let mut last_put = Instant::now();
        let mut last_keepalive = Instant::now() - Duration::from_secs(60);
        loop {
            let mut status = on_server(server, |s| s.member_status()).await?;
            status["name"] = json!(self.cfg.name);
            status["uptime_s"] = json!(self.started.elapsed().as_secs());
            let mut compare = status.clone();
            compare["uptime_s"] = Value::Null;
            // Rewritten when something changed, and every few seconds for the uptime.
            if compare != last || last_put.elapsed() >= Duration::from_secs(5) {
                last_put = Instant::now();
                self.timed(c.put(
                    self.key(&format!("members/{name}")),
                    status.to_string(),
                    Some(PutOptions::new().with_lease(lease)),
                ))
                .await?;
                last = compare;
            }
            if last_keepalive.elapsed() >= Duration::from_millis(1000) {
                self.timed(keeper.keep_alive()).await?;
                let r = self.timed(responses.message()).await?;
                match r {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(FleetError::Unavailable("lease expired".into())),
                }
                last_keepalive = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs `f` on the server off the runtime's worker: the server's store lock may be held by a
/// management thread that is itself waiting on this runtime (a change's etcd transaction).
async fn on_server<T: Send + 'static>(
    server: &Server,
    f: impl FnOnce(&Server) -> T + Send + 'static,
) -> Result<T, FleetError> {
    let s = server.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| FleetError::Corrupt(format!("applying a version failed: {e}")))
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn to_txn_ops(ops: Vec<KeyOp>) -> Vec<TxnOp> {
    ops.into_iter()
        .map(|(k, v)| match v {
            Some(v) => TxnOp::put(k, v, None),
            None => TxnOp::delete(k, None),
        })
        .collect()
}

/// The key puts and deletes that turn `old`'s objects into `new`'s. With `edits`, only the sections
/// (and for endpoints, the keys) they name are compared: a one-rule change costs a few keys however
/// large the policy.
pub fn object_ops(
    prefix: &str,
    old: &Document,
    new: &Document,
    edits: Option<&Value>,
) -> Vec<KeyOp> {
    let ops_named: Vec<(String, Value)> = edits
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e.get("op")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        e.get("args").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cascade = ops_named.iter().any(|(o, a)| {
        o == "tenant.remove" && a.get("cascade").and_then(Value::as_bool) == Some(true)
    });
    let all = edits.is_none() || cascade;
    let touches = |p: &str| all || ops_named.iter().any(|(o, _)| o.starts_with(p));
    let mut out: Vec<KeyOp> = Vec::new();
    let put = |k: String, v: &dyn erased::Ser| (k, Some(v.to_vec()));
    if old.gateway != new.gateway {
        out.push(put(format!("{prefix}/doc/gateway"), &new.gateway));
    }
    if touches("segment.") {
        keyed(&mut out, &old.segments, &new.segments, |s| {
            format!("{prefix}/doc/segment/{}", s.vni)
        });
    }
    if touches("tenant.") {
        keyed(&mut out, &old.tenants, &new.tenants, |t| {
            format!("{prefix}/doc/tenant/{}", enc(&t.name))
        });
    }
    let ep_key = |t: &str, ip: &str| format!("{prefix}/doc/endpoint/{}/{ip}", enc(t));
    if all {
        keyed(&mut out, &old.endpoints, &new.endpoints, |e| {
            ep_key(&e.tenant, &e.ip.to_string())
        });
    } else if touches("endpoint.") {
        for (op, args) in &ops_named {
            let (t, ip) = match op.as_str() {
                "endpoint.add" | "endpoint.update" => (
                    args["endpoint"]["tenant"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    args["endpoint"]["ip"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
                "endpoint.remove" => (
                    args["tenant"].as_str().unwrap_or_default().to_string(),
                    args["ip"].as_str().unwrap_or_default().to_string(),
                ),
                _ => continue,
            };
            let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
                continue;
            };
            let key = ep_key(&t, &ip.to_string());
            match new.endpoints.iter().find(|e| e.tenant == t && e.ip == ip) {
                Some(e) => out.push(put(key, e)),
                None => out.push((key, None)),
            }
        }
    }
    if touches("rule.") {
        for (i, r) in new.rules.iter().enumerate() {
            if old.rules.get(i) != Some(r) {
                out.push(put(format!("{prefix}/doc/rule/{i:010}"), r));
            }
        }
        for i in new.rules.len()..old.rules.len() {
            out.push((format!("{prefix}/doc/rule/{i:010}"), None));
        }
    }
    // The same key twice in one transaction is refused by etcd: the last operation wins.
    let mut seen = std::collections::HashSet::new();
    let mut dedup: Vec<KeyOp> = out
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    dedup.reverse();
    dedup
}

fn keyed<T: PartialEq + serde::Serialize>(
    out: &mut Vec<KeyOp>,
    old: &policy::section::Section<T>,
    new: &policy::section::Section<T>,
    key: impl Fn(&T) -> String,
) {
    let before: HashMap<String, &T> = old.iter().map(|x| (key(x), x)).collect();
    let mut now = std::collections::HashSet::new();
    for x in new.iter() {
        let k = key(x);
        if before.get(&k) != Some(&x) {
            out.push((k.clone(), Some(serde_json::to_vec(x).unwrap_or_default())));
        }
        now.insert(k);
    }
    for k in before.keys() {
        if !now.contains(k) {
            out.push((k.clone(), None));
        }
    }
}

mod erased {
    /// Serializes any value to JSON bytes (a small object-safe wrapper).
    pub trait Ser {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document::from_toml(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[segment]]\nvni = 1\nidentity = \"gbp\"\n\
             [[tenant]]\nname = \"a/b\"\nid = 1\n[[tenant]]\nname = \"c\"\nid = 2\n\
             [[endpoint]]\ntenant = \"c\"\nip = \"198.19.0.1\"\nmac = \"02:00:00:00:00:01\"\nvtep = \"198.18.0.1\"\nvni = 1\n\
             [[rule]]\nfrom = \"c\"\nto = \"*\"\naction = \"allow\"\n[[rule]]\nfrom = \"*\"\nto = \"c\"\naction = \"deny\"\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn one_rule_change_touches_one_key_and_removal_shifts_the_rest() {
        let old = doc();
        let mut new = old.clone();
        let first = new.rules[0].clone();
        new.rules.push(first);
        let edits = json!([{"op": "rule.add", "args": {}}]);
        let ops = object_ops("/j", &old, &new, Some(&edits));
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].0, "/j/doc/rule/0000000002");
        let mut removed = old.clone();
        removed.rules.remove(0);
        let edits = json!([{"op": "rule.remove", "args": {"index": 0}}]);
        let ops = object_ops("/j", &old, &removed, Some(&edits));
        let keys: Vec<(&str, bool)> = ops.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(
            keys,
            [
                ("/j/doc/rule/0000000000", true),
                ("/j/doc/rule/0000000001", false)
            ]
        );
    }

    #[test]
    fn whole_changes_diff_every_section_with_encoded_names() {
        let old = doc();
        let mut new = old.clone();
        new.tenants.retain(|t| t.name != "a/b");
        new.endpoints[0].vni = 1;
        new.endpoints[0].mac = "02:00:00:00:00:09".parse().unwrap();
        let ops = object_ops("/j", &old, &new, None);
        let keys: Vec<(&str, bool)> = ops.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert!(keys.contains(&("/j/doc/tenant/a%2Fb", false)), "{keys:?}");
        assert!(
            keys.contains(&("/j/doc/endpoint/c/198.19.0.1", true)),
            "{keys:?}"
        );
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_eq!(dec("a%2Fb%25"), "a/b%");
        // From nothing, every object is a put.
        let empty = Document {
            segments: Default::default(),
            tenants: Default::default(),
            endpoints: Default::default(),
            rules: Default::default(),
            ..old.clone()
        };
        assert_eq!(object_ops("/j", &empty, &old, None).len(), 1 + 2 + 1 + 2);
    }

    #[test]
    fn endpoint_edits_name_their_keys() {
        let old = doc();
        let mut new = old.clone();
        new.endpoints.clear();
        let edits = json!([{"op": "endpoint.remove", "args": {"tenant": "c", "ip": "198.19.0.1"}}]);
        let ops = object_ops("/j", &old, &new, Some(&edits));
        assert_eq!(
            ops,
            vec![("/j/doc/endpoint/c/198.19.0.1".to_string(), None)]
        );
    }
}
