//! The versioned policy store: every committed change is a new, monotonically numbered version kept
//! in the state directory, acknowledged only once it is durable (written to a temporary file created
//! exclusively, fsynced, renamed into place, the directory fsynced).
//!
//! A version is kept either as a whole document, `versions/v<N>.json` (a metadata line, then the
//! document line), or as a **delta**, `versions/v<N>.delta.json` (a metadata line, then the list of
//! edits `[{"op":…,"args":…}]` that turn version N−1 into N). A one-rule change writes a few hundred
//! bytes however large the policy is; every [`SNAPSHOT_EVERY`] deltas a whole document is written in
//! the background, after the change was acknowledged, so that opening the store replays few deltas.
//!
//! Promises:
//! - one process per state directory: an exclusive lock on `lock`, a second process is refused;
//! - a version file that cannot be read (truncated, corrupt) is never skipped silently: it is renamed
//!   `….corrupt` (quarantined), logged as an error, listed by [`Store::quarantined`], and its number
//!   is never given to another version (the next version is numbered above every file seen);
//! - temporary files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`: a symlink planted in the state
//!   directory is never followed.

use policy::Document;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A whole document is written (in the background) after this many deltas in a row.
pub const SNAPSHOT_EVERY: u64 = 64;

/// Who changed what, when: the first line of a version file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: u64,
    /// RFC 3339 commit time.
    pub time: String,
    /// The peer's uid (0 for changes made at start-up from the config file).
    pub uid: u32,
    /// The peer's user name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The operation that made it (`policy.apply`, `tenant.add`, `rollback`, `config`, …).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Digest of the document (hex), as `audit.verify` compares it.
    pub digest: String,
    /// The format `digest` is in ([`policy::table::DIGEST_FORMAT`] when this build wrote it; 1 for a
    /// record written before formats were recorded, which [`VersionMeta::digest_matches`] also
    /// accepts in format 2).
    #[serde(default = "unlabelled_format")]
    pub digest_format: u32,
    /// The tenants whose objects the change touched (tenant-scoped administration), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// The etcd revision of the transaction that made this version (fleet mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

fn unlabelled_format() -> u32 {
    policy::table::UNLABELLED_FORMAT
}

impl VersionMeta {
    /// Whether the recorded digest is `doc`'s, `this_build` being `doc`'s digest in this build's
    /// format: compared as is when the record is in that format, computed again in the record's
    /// format when it is an earlier one (for a record that does not say, in each format it may be
    /// in: [`policy::table::UNLABELLED_MAY_BE`]). `None` when the record's format is unknown to
    /// this build (a later build wrote it).
    pub fn digest_matches(&self, doc: &Document, this_build: u64) -> Option<bool> {
        let formats: &[u32] = if self.digest_format == policy::table::UNLABELLED_FORMAT {
            &policy::table::UNLABELLED_MAY_BE
        } else {
            std::slice::from_ref(&self.digest_format)
        };
        let mut known = false;
        for &f in formats {
            let d = if f == policy::table::DIGEST_FORMAT {
                this_build
            } else {
                match policy::table::digest_in_format(doc, f) {
                    Some(d) => d,
                    None => continue,
                }
            };
            known = true;
            if self.digest == format!("{d:016x}") {
                return Some(true);
            }
        }
        known.then_some(false)
    }

    /// The record with `digest` (this build's format) as its digest.
    pub fn restamped(mut self, digest: u64) -> VersionMeta {
        self.digest = format!("{digest:016x}");
        self.digest_format = policy::table::DIGEST_FORMAT;
        self
    }
}

/// A committed version.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub meta: VersionMeta,
    pub document: Arc<Document>,
}

/// What a change is, for the journal.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A whole new document (policy.apply, rollback, the config file): written whole.
    Whole,
    /// The edits (`[{"op":…,"args":…}]`, as [`crate::edit::apply`] takes them) that turn the current
    /// document into the new one: written as a delta.
    Edits(&'a Value),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("version {0} is not kept in the store")]
    NotFound(u64),
    #[error("{file}: corrupt version file: {message}")]
    Corrupt { file: String, message: String },
    #[error(
        "state directory {dir} is in use by another joypath process{}: one process per state directory",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: String, pid: Option<u32> },
}

/// The store. Single writer (the management thread holds it behind a mutex).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    /// Kept versions' metadata, oldest first.
    metas: Vec<VersionMeta>,
    current: Option<VersionRecord>,
    /// The highest version number any file ever had here (quarantined ones included).
    high: u64,
    /// The newest version written whole (or being written in the background).
    last_snapshot: u64,
    quarantined: Vec<String>,
    /// Held for the store's lifetime: the exclusive lock on `lock`.
    _lock: File,
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        dir: dir.display().to_string(),
        source,
    }
}

fn whole_file(dir: &Path, v: u64) -> PathBuf {
    dir.join("versions").join(format!("v{v:020}.json"))
}

fn delta_file(dir: &Path, v: u64) -> PathBuf {
    dir.join("versions").join(format!("v{v:020}.delta.json"))
}

fn now_rfc3339() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    policy::time::format_rfc3339(t)
}

/// Parses `v<N>.json` / `v<N>.delta.json` (and their `.corrupt` quarantine names).
fn parse_name(name: &str) -> Option<(u64, bool, bool)> {
    let (name, corrupt) = match name.strip_suffix(".corrupt") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let rest = name.strip_prefix('v')?;
    let (num, delta) = if let Some(n) = rest.strip_suffix(".delta.json") {
        (n, true)
    } else {
        (rest.strip_suffix(".json")?, false)
    };
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, delta, corrupt))
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `lines` durably at `path`: a temporary file beside it created exclusively and without
/// following symlinks (a name already taken, by anything, is skipped), fsynced, renamed, the
/// directory fsynced.
fn write_durably(
    dir: &Path,
    path: &Path,
    write: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let err = io_err(dir);
    let parent = path.parent().unwrap_or(dir);
    let mut attempt = 0;
    let (tmp, file) = loop {
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10_000 => {
                tracing::warn!(path = %tmp.display(), "temporary name taken (planted?); trying another");
                attempt += 1;
            }
            Err(e) => return Err(err(e)),
        }
    };
    let result = (|| {
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// One parsed version file.
enum Parsed {
    Whole(VersionMeta, Box<Document>),
    Delta(VersionMeta, Value),
}

fn read_file(path: &Path, delta: bool) -> Result<Parsed, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(f);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let meta: VersionMeta = serde_json::from_str(&line).map_err(|e| format!("metadata: {e}"))?;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).map_err(|e| e.to_string())?;
    if !rest.ends_with('\n') {
        return Err("truncated (no final newline)".into());
    }
    if delta {
        let edits: Value = serde_json::from_str(&rest).map_err(|e| format!("edits: {e}"))?;
        if !edits.is_array() {
            return Err("edits: not a list".into());
        }
        Ok(Parsed::Delta(meta, edits))
    } else {
        let doc: Document = serde_json::from_str(&rest).map_err(|e| format!("document: {e}"))?;
        Ok(Parsed::Whole(meta, Box::new(doc)))
    }
}

fn read_meta(path: &Path) -> Result<VersionMeta, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(f)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| e.to_string())
}

/// Applies a committed delta's edits to `doc` ([`crate::edit::replay`]).
pub fn apply_edits(doc: &mut Document, edits: &Value) -> Result<(), String> {
    // The rules the edits add without a name get the names the server gave them when it committed
    // them (naming is deterministic, and a delta holds the request as it came).
    let before = doc.clone();
    for (i, e) in edits.as_array().into_iter().flatten().enumerate() {
        let op = e.get("op").and_then(Value::as_str).unwrap_or_default();
        let args = e.get("args").cloned().unwrap_or(Value::Null);
        match crate::edit::replay(op, &args, doc) {
            Ok(true) => {}
            Ok(false) => return Err(format!("edits[{i}]: {op:?} is not an edit")),
            Err(e) => return Err(format!("edits[{i}] ({op}): {}", e.message)),
        }
    }
    policy::names::name_new_rules(doc, &before);
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_err(dir))?;
    // SAFETY: flock on a file descriptor we own and keep open for as long as the lock is meant to
    // last; it has no memory-safety preconditions.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StoreError::Locked {
                dir: dir.display().to_string(),
                pid,
            });
        }
        return Err(io_err(dir)(e));
    }
    f.set_len(0).map_err(io_err(dir))?;
    writeln!(f, "{}", std::process::id()).map_err(io_err(dir))?;
    Ok(f)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, keeping at most `keep` versions (≥ 1).
    /// Fails with [`StoreError::Locked`] when another process has it open.
    pub fn open(dir: &Path, keep: usize) -> Result<Store, StoreError> {
        let vdir = dir.join("versions");
        fs::create_dir_all(&vdir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        // (number, is_delta) of every readable-looking file; quarantined numbers count for `high`.
        let mut files: Vec<(u64, bool)> = Vec::new();
        let mut high = 0;
        let mut quarantined = Vec::new();
        for e in fs::read_dir(&vdir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((v, delta, corrupt)) = parse_name(&name) {
                high = high.max(v);
                if corrupt {
                    quarantined.push(e.path().display().to_string());
                } else {
                    files.push((v, delta));
                }
            } else if name.starts_with(".tmp-") {
                // An uncommitted write interrupted by a crash: never acknowledged, so drop it.
                let _ = fs::remove_file(e.path());
            }
        }
        files.sort_unstable();
        let mut store = Store {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            metas: Vec::new(),
            current: None,
            high,
            last_snapshot: 0,
            quarantined,
            _lock: lock,
        };
        // Rebuild from the newest whole document that is readable, then its deltas in order. A file
        // that fails is quarantined, and so is every delta that depended on it.
        let wholes: Vec<u64> = files.iter().filter(|f| !f.1).map(|f| f.0).collect();
        let mut base: Option<(VersionMeta, Document)> = None;
        for &v in wholes.iter().rev() {
            match read_file(&whole_file(dir, v), false) {
                Ok(Parsed::Whole(m, d)) if m.version == v => {
                    base = Some((m, *d));
                    break;
                }
                Ok(_) => store.quarantine(&whole_file(dir, v), "metadata names another version"),
                Err(e) => store.quarantine(&whole_file(dir, v), &e),
            }
        }
        let Some((meta, doc)) = base else {
            // Deltas without any whole document to apply them to cannot be rebuilt.
            for &(v, delta) in &files {
                if delta {
                    store.quarantine(
                        &delta_file(dir, v),
                        "no whole version below it to apply it to",
                    );
                }
            }
            return Ok(store);
        };
        store.last_snapshot = meta.version;
        let mut doc = doc;
        let mut meta = meta;
        let mut chain_broken = false;
        let base_v = store.last_snapshot;
        for &(v, delta) in files.iter().filter(|f| f.0 > base_v) {
            if !delta {
                continue; // whole files above the base were unreadable and are quarantined
            }
            let path = delta_file(dir, v);
            if chain_broken || v != meta.version + 1 {
                store.quarantine(
                    &path,
                    &format!("version {} before it is missing or corrupt", v - 1),
                );
                chain_broken = true;
                continue;
            }
            let applied = read_file(&path, true).and_then(|p| match p {
                Parsed::Delta(m, edits) if m.version == v => {
                    let mut next = doc.clone();
                    apply_edits(&mut next, &edits)?;
                    Ok((m, next))
                }
                _ => Err("metadata names another version".into()),
            });
            match applied {
                Ok((m, d)) => {
                    meta = m;
                    doc = d;
                }
                Err(e) => {
                    store.quarantine(&path, &e);
                    chain_broken = true;
                }
            }
        }
        // History: the metadata of the versions below, as far as `keep` reaches.
        let first = meta.version.saturating_sub(store.keep as u64 - 1).max(1);
        for &(v, delta) in files.iter().filter(|f| f.0 >= first && f.0 < meta.version) {
            let path = if delta {
                delta_file(dir, v)
            } else {
                whole_file(dir, v)
            };
            if !path.exists() {
                continue;
            }
            if let Ok(m) = read_meta(&path) {
                if store.metas.last().map(|x| x.version) != Some(v) {
                    store.metas.push(m);
                }
            }
        }
        store.metas.push(meta.clone());
        store.current = Some(VersionRecord {
            meta,
            document: Arc::new(doc),
        });
        Ok(store)
    }

    /// Settles the current version's recorded digest against `digest`, its document's digest as
    /// compiled by this build, at start-up. A record in an earlier digest format (the store was
    /// written by an earlier build) is checked in that format and, either way, takes this build's
    /// digest in memory, so that `audit.verify` compares like with like after an upgrade; the file
    /// keeps what was written. A record in this build's format that differs is left as it is, for
    /// `audit.verify` to report. Returns whether the recorded digest matched.
    pub fn settle_digest(&mut self, digest: u64) -> bool {
        let Some(cur) = self.current.as_mut() else {
            return true;
        };
        let m = &cur.meta;
        let matched = m.digest_matches(&cur.document, digest);
        let hex = format!("{digest:016x}");
        if m.digest_format == policy::table::DIGEST_FORMAT {
            if matched == Some(false) {
                tracing::error!(
                    version = m.version, recorded = %m.digest, compiled = %hex,
                    "the current version's document does not have the digest recorded with it"
                );
            }
            return matched == Some(true);
        }
        match matched {
            Some(true) => tracing::info!(
                version = m.version, format = m.digest_format, recorded = %m.digest, now = %hex,
                "the current version's digest was recorded by an earlier build (checked): it is now given in this build's format"
            ),
            Some(false) => tracing::warn!(
                version = m.version, format = m.digest_format, recorded = %m.digest, now = %hex,
                "the current version's digest, recorded by an earlier build, does not match its document in that build's format: it is now given in this build's format"
            ),
            None => tracing::warn!(
                version = m.version, format = m.digest_format, recorded = %m.digest, now = %hex,
                "the current version's digest was recorded by a later build, in a format this one cannot check: it is now given in this build's format"
            ),
        }
        cur.meta = cur.meta.clone().restamped(digest);
        let v = cur.meta.version;
        let meta = cur.meta.clone();
        if let Some(last) = self.metas.iter_mut().rev().find(|x| x.version == v) {
            *last = meta;
        }
        matched == Some(true)
    }

    fn quarantine(&mut self, path: &Path, why: &str) {
        let to = PathBuf::from(format!("{}.corrupt", path.display()));
        match fs::rename(path, &to) {
            Ok(()) => tracing::error!(
                file = %path.display(), quarantined_as = %to.display(), reason = why,
                "unreadable policy version quarantined; its number will not be reused"
            ),
            Err(e) => tracing::error!(
                file = %path.display(), reason = why, error = %e,
                "unreadable policy version could not be quarantined; its number will not be reused"
            ),
        }
        self.quarantined.push(to.display().to_string());
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn current(&self) -> Option<&VersionRecord> {
        self.current.as_ref()
    }
    /// The current version number (0 when the store is empty).
    pub fn version(&self) -> u64 {
        self.current.as_ref().map(|c| c.meta.version).unwrap_or(0)
    }
    /// The number the next version will get: above every version file ever seen here.
    pub fn next_version(&self) -> u64 {
        self.version().max(self.high) + 1
    }
    /// Version files found unreadable and set aside (`….corrupt`).
    pub fn quarantined(&self) -> &[String] {
        &self.quarantined
    }
    /// Kept versions' metadata, newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Vec<VersionMeta> {
        self.metas.iter().rev().take(limit).cloned().collect()
    }

    /// Reads a kept version: a whole file, or the nearest whole file below it and the deltas since.
    pub fn read(&self, v: u64) -> Result<VersionRecord, StoreError> {
        if let Some(c) = &self.current {
            if c.meta.version == v {
                return Ok(c.clone());
            }
        }
        if !self.metas.iter().any(|m| m.version == v) {
            return Err(StoreError::NotFound(v));
        }
        let corrupt = |path: &Path, message: String| StoreError::Corrupt {
            file: path.display().to_string(),
            message,
        };
        // Walk down to a whole file, then back up applying deltas.
        let mut deltas = Vec::new();
        let mut at = v;
        let (mut meta, mut doc) = loop {
            let whole = whole_file(&self.dir, at);
            if whole.exists() {
                match read_file(&whole, false).map_err(|e| corrupt(&whole, e))? {
                    Parsed::Whole(m, d) => break (m, *d),
                    Parsed::Delta(..) => unreachable!("read as whole"),
                }
            }
            let delta = delta_file(&self.dir, at);
            if !delta.exists() || at <= 1 {
                return Err(StoreError::NotFound(v));
            }
            match read_file(&delta, true).map_err(|e| corrupt(&delta, e))? {
                Parsed::Delta(m, e) => deltas.push((m, e, delta)),
                Parsed::Whole(..) => unreachable!("read as delta"),
            }
            at -= 1;
        };
        for (m, edits, path) in deltas.into_iter().rev() {
            apply_edits(&mut doc, &edits).map_err(|e| corrupt(&path, e))?;
            meta = m;
        }
        Ok(VersionRecord {
            meta,
            document: Arc::new(doc),
        })
    }

    /// Commits `doc` whole as the next version and returns it once it is durable. `digest` is the
    /// document's digest ([`policy::table::digest`], or the compiled table's, which is the same).
    pub fn commit(
        &mut self,
        doc: Arc<Document>,
        digest: u64,
        uid: u32,
        op: &str,
        comment: Option<String>,
    ) -> Result<&VersionRecord, StoreError> {
        let meta = self.meta_for(digest, uid, op, comment);
        self.commit_meta(doc, meta, Change::Whole)
    }

    /// The metadata of the next version.
    pub fn meta_for(
        &self,
        digest: u64,
        uid: u32,
        op: &str,
        comment: Option<String>,
    ) -> VersionMeta {
        VersionMeta {
            version: self.next_version(),
            time: now_rfc3339(),
            uid,
            user: user_name(uid),
            op: op.to_string(),
            comment,
            digest: format!("{digest:016x}"),
            digest_format: policy::table::DIGEST_FORMAT,
            tenants: None,
            revision: None,
        }
    }

    /// Commits `doc` with `meta` (from [`Store::meta_for`]): a delta when `change` gives the edits
    /// and the current version is kept, the whole document otherwise. Returns once durable.
    pub fn commit_meta(
        &mut self,
        doc: Arc<Document>,
        meta: VersionMeta,
        change: Change<'_>,
    ) -> Result<&VersionRecord, StoreError> {
        let dir = self.dir.clone();
        let v = meta.version;
        let delta_ok = self.current.is_some() && v == self.version() + 1;
        match change {
            Change::Edits(edits) if delta_ok => {
                write_durably(&dir, &delta_file(&dir, v), |w| {
                    serde_json::to_writer(&mut *w, &meta)?;
                    w.write_all(b"\n")?;
                    serde_json::to_writer(&mut *w, edits)?;
                    w.write_all(b"\n")
                })?;
                if v - self.last_snapshot >= SNAPSHOT_EVERY {
                    self.snapshot_in_background(doc.clone(), meta.clone());
                }
            }
            _ => {
                write_whole(&dir, &doc, &meta)?;
                self.last_snapshot = v;
            }
        }
        tracing::debug!(version = v, uid = meta.uid, op = %meta.op, "policy version committed");
        self.high = self.high.max(v);
        self.metas.push(meta.clone());
        self.current = Some(VersionRecord {
            meta,
            document: doc,
        });
        self.prune();
        Ok(self.current.as_ref().expect("just set"))
    }

    fn snapshot_in_background(&mut self, doc: Arc<Document>, meta: VersionMeta) {
        self.last_snapshot = meta.version;
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("mgmt-snapshot".into())
            .spawn(move || match write_whole(&dir, &doc, &meta) {
                Ok(()) => tracing::debug!(version = meta.version, "whole version written"),
                Err(e) => tracing::warn!(version = meta.version, error = %e,
                    "could not write a whole version; its deltas still hold it"),
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the snapshot thread");
        }
    }

    /// Drops the files of versions older than the kept ones, except the whole file the oldest kept
    /// version's deltas start from.
    fn prune(&mut self) {
        if self.metas.len() <= self.keep {
            return;
        }
        let drop_n = self.metas.len() - self.keep;
        self.metas.drain(..drop_n);
        let oldest = self.metas[0].version;
        let Ok(entries) = fs::read_dir(self.dir.join("versions")) else {
            return;
        };
        let mut files: Vec<(u64, bool, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (v, delta, corrupt) = parse_name(&name)?;
                (!corrupt).then(|| (v, delta, e.path()))
            })
            .collect();
        files.sort_by_key(|f| f.0);
        // The newest whole file at or below the oldest kept version.
        let Some(base) = files
            .iter()
            .filter(|f| !f.1 && f.0 <= oldest)
            .map(|f| f.0)
            .max()
        else {
            return;
        };
        for (v, _, path) in files.iter().filter(|f| f.0 < base) {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(version = v, error = %e, "could not prune an old version");
            }
        }
    }
}

fn write_whole(dir: &Path, doc: &Document, meta: &VersionMeta) -> Result<(), StoreError> {
    write_durably(dir, &whole_file(dir, meta.version), |w| {
        serde_json::to_writer(&mut *w, meta)?;
        w.write_all(b"\n")?;
        serde_json::to_writer(&mut *w, doc)?;
        w.write_all(b"\n")
    })
}

/// The user name of `uid` from /etc/passwd.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(n: u32) -> Arc<Document> {
        let text = format!(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[tenant]]\nname = \"t{n}\"\nid = {}\n",
            n + 1
        );
        Arc::new(Document::from_toml(&text, "t").unwrap())
    }

    fn commit(s: &mut Store, d: Arc<Document>, comment: &str) -> u64 {
        s.commit(
            d.clone(),
            policy::table::digest(&d),
            1000,
            "policy.apply",
            Some(comment.into()),
        )
        .unwrap()
        .meta
        .version
    }

    /// Commits a `tenant.add` of `name` as a delta.
    fn add_tenant(s: &mut Store, name: &str, id: u32) -> u64 {
        let edits = json!([{"op": "tenant.add", "args": {"tenant": {"name": name, "id": id}}}]);
        let mut d = (*s.current().unwrap().document).clone();
        apply_edits(&mut d, &edits).unwrap();
        let meta = s.meta_for(policy::table::digest(&d), 1000, "tenant.add", None);
        s.commit_meta(Arc::new(d), meta, Change::Edits(&edits))
            .unwrap()
            .meta
            .version
    }

    fn names(d: &Document) -> Vec<String> {
        d.tenants.iter().map(|t| t.name.to_string()).collect()
    }

    #[test]
    fn versions_persist_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), 3).unwrap();
            assert_eq!(s.version(), 0);
            for n in 0..5 {
                commit(&mut s, doc(n), &format!("change {n}"));
            }
            assert_eq!(s.version(), 5);
            let h = s.history(10);
            assert_eq!(
                h.iter().map(|m| m.version).collect::<Vec<_>>(),
                vec![5, 4, 3]
            );
            assert!(matches!(s.read(1), Err(StoreError::NotFound(1))));
        }
        let s = Store::open(dir.path(), 3).unwrap();
        assert_eq!(s.version(), 5);
        assert_eq!(s.current().unwrap().document.tenants[0].name, "t4");
        assert_eq!(s.read(3).unwrap().document.tenants[0].name, "t2");
        assert_eq!(s.read(4).unwrap().meta.comment.as_deref(), Some("change 3"));
    }

    #[test]
    fn deltas_rebuild_every_version_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), 100).unwrap();
            commit(&mut s, doc(0), "base");
            for i in 0..5 {
                add_tenant(&mut s, &format!("d{i}"), 100 + i);
            }
            assert_eq!(s.version(), 6);
            // Only the first version is whole; the rest are small delta files.
            assert!(whole_file(dir.path(), 1).exists());
            assert!(!whole_file(dir.path(), 4).exists());
            assert!(delta_file(dir.path(), 4).exists());
        }
        let s = Store::open(dir.path(), 100).unwrap();
        assert_eq!(s.version(), 6);
        assert_eq!(
            names(&s.current().unwrap().document),
            ["t0", "d0", "d1", "d2", "d3", "d4"]
        );
        assert_eq!(names(&s.read(3).unwrap().document), ["t0", "d0", "d1"]);
        assert_eq!(s.read(3).unwrap().meta.op, "tenant.add");
        assert_eq!(s.history(100).len(), 6);
    }

    #[test]
    fn a_rule_added_without_a_name_keeps_the_name_it_was_given_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let edits = json!([{"op": "rule.add", "args": {"index": 0, "rule": {"from": "t0", "to": "t0", "action": "allow"}}}]);
        {
            let mut s = Store::open(dir.path(), 5).unwrap();
            commit(&mut s, doc(0), "base");
            let mut d = (*s.current().unwrap().document).clone();
            apply_edits(&mut d, &edits).unwrap();
            // Named as the server names a committed rule (`names::name_new_rules`).
            assert_eq!(d.rules[0].name.as_deref(), Some("t0-t0"));
            let meta = s.meta_for(policy::table::digest(&d), 1000, "rule.add", None);
            s.commit_meta(Arc::new(d), meta, Change::Edits(&edits))
                .unwrap();
        }
        let s = Store::open(dir.path(), 5).unwrap();
        assert_eq!(s.version(), 2);
        let d = &s.current().unwrap().document;
        assert_eq!(
            d.rules[0].name.as_deref(),
            Some("t0-t0"),
            "the delta replayed"
        );
    }

    /// A delta an earlier build committed that gave a rule a name another rule had (builds before
    /// stop 31 did not check it for a rule inserted mid-list) is read back as it was committed —
    /// not dropped with the versions after it — and the document's own validation names the fault.
    #[test]
    fn a_committed_rule_under_a_taken_name_is_read_back_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let rule = json!({"name": "dup", "from": "t0", "to": "t0", "action": "allow"});
        {
            let mut s = Store::open(dir.path(), 5).unwrap();
            commit(&mut s, doc(0), "base");
            for index in [0, 0] {
                let edits = json!([{"op": "rule.add", "args": {"index": index, "rule": rule}}]);
                let mut d = (*s.current().unwrap().document).clone();
                d.rules
                    .insert(0, serde_json::from_value(rule.clone()).unwrap());
                let meta = s.meta_for(policy::table::digest(&d), 1000, "rule.add", None);
                s.commit_meta(Arc::new(d), meta, Change::Edits(&edits))
                    .unwrap();
            }
            add_tenant(&mut s, "after", 77);
        }
        let s = Store::open(dir.path(), 5).unwrap();
        assert_eq!(s.version(), 4, "no version dropped");
        assert!(s.quarantined().is_empty());
        let d = &s.current().unwrap().document;
        assert_eq!(d.rules.len(), 2);
        let e = policy::Table::compile(d.clone(), 4, None).unwrap_err();
        assert!(e.to_string().contains("\"dup\" is used twice"), "{e}");
    }

    #[test]
    fn whole_versions_are_written_in_the_background_and_pruning_keeps_a_base() {
        let dir = tempfile::tempdir().unwrap();
        let n = SNAPSHOT_EVERY + 10;
        let mut s = Store::open(dir.path(), 5).unwrap();
        commit(&mut s, doc(0), "base");
        for i in 0..n {
            add_tenant(&mut s, &format!("d{i}"), 100 + i as u32);
        }
        // While the background writer runs, version 1 is the base every kept delta needs.
        let snap = whole_file(dir.path(), 1 + SNAPSHOT_EVERY);
        for _ in 0..1000 {
            if snap.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            snap.exists(),
            "no whole version written after {SNAPSHOT_EVERY} deltas"
        );
        // The next commit prunes below the new base.
        add_tenant(&mut s, "last", 9999);
        assert!(!whole_file(dir.path(), 1).exists());
        assert!(!delta_file(dir.path(), 2).exists());
        drop(s);
        let s = Store::open(dir.path(), 5).unwrap();
        assert_eq!(s.version(), 2 + n);
        assert_eq!(s.current().unwrap().document.tenants.len(), 2 + n as usize);
        let oldest = s.history(100).last().unwrap().version;
        assert_eq!(oldest, 2 + n - 4);
        assert_eq!(
            s.read(oldest).unwrap().document.tenants.len(),
            oldest as usize
        );
        assert!(matches!(s.read(oldest - 1), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn interrupted_writes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 10).unwrap();
        commit(&mut s, doc(0), "one");
        drop(s);
        // A crash mid-write leaves only a temporary file behind.
        fs::write(dir.path().join("versions/.tmp-1-2"), b"{\"version\":2").unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.version(), 1);
        assert!(!dir.path().join("versions/.tmp-1-2").exists());
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        match Store::open(dir.path(), 10) {
            Err(e @ StoreError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("in use by another joypath process"), "{msg}");
                assert!(
                    msg.contains(&format!("pid {}", std::process::id())),
                    "{msg}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(s);
        Store::open(dir.path(), 10).expect("the lock goes with the store");
    }

    #[test]
    fn a_truncated_newest_version_is_quarantined_and_its_number_never_reused() {
        for delta in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let mut s = Store::open(dir.path(), 10).unwrap();
                commit(&mut s, doc(0), "one");
                commit(&mut s, doc(1), "two");
                if delta {
                    add_tenant(&mut s, "lost", 50);
                } else {
                    commit(&mut s, doc(2), "three");
                }
            }
            let newest = if delta {
                delta_file(dir.path(), 3)
            } else {
                whole_file(dir.path(), 3)
            };
            let len = fs::metadata(&newest).unwrap().len();
            let f = OpenOptions::new().write(true).open(&newest).unwrap();
            f.set_len(len / 2).unwrap();
            drop(f);

            let mut s = Store::open(dir.path(), 10).unwrap();
            assert_eq!(s.version(), 2, "runs the last intact version");
            assert_eq!(s.quarantined().len(), 1);
            assert!(s.quarantined()[0].ends_with(".corrupt"));
            assert!(!newest.exists());
            assert!(matches!(s.read(3), Err(StoreError::NotFound(3))));
            // The next change is 4, never a second "3".
            assert_eq!(commit(&mut s, doc(7), "after"), 4);
            drop(s);
            let s = Store::open(dir.path(), 10).unwrap();
            assert_eq!(s.version(), 4);
            assert_eq!(names(&s.current().unwrap().document), ["t7"]);
            assert_eq!(s.quarantined().len(), 1, "still listed after a restart");
        }
    }

    #[test]
    fn a_corrupt_delta_quarantines_the_deltas_above_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), 10).unwrap();
            commit(&mut s, doc(0), "one");
            add_tenant(&mut s, "a", 10);
            add_tenant(&mut s, "b", 11);
            add_tenant(&mut s, "c", 12);
        }
        fs::write(delta_file(dir.path(), 3), b"garbage\n").unwrap();
        let mut s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.version(), 2);
        assert_eq!(names(&s.current().unwrap().document), ["t0", "a"]);
        assert_eq!(s.quarantined().len(), 2);
        assert_eq!(add_tenant(&mut s, "z", 13), 5);
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let mut s = Store::open(dir.path(), 10).unwrap();
        // Plant a symlink under every temporary name the next writes could pick.
        let seq = TMP_SEQ.load(Ordering::Relaxed);
        for k in seq..seq + 2000 {
            let _ = std::os::unix::fs::symlink(
                &victim,
                dir.path()
                    .join(format!("versions/.tmp-{}-{k}", std::process::id())),
            );
        }
        commit(&mut s, doc(0), "one");
        add_tenant(&mut s, "a", 10);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        drop(s);
        let s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.version(), 2);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    /// Two tenants and a rule: the rule makes the digest formats differ.
    fn ruled() -> Arc<Document> {
        let text = "[gateway]\nunderlay_ip = \"198.18.0.254\"\n\
            [[tenant]]\nname = \"a\"\nid = 1\n[[tenant]]\nname = \"b\"\nid = 2\n\
            [[rule]]\nfrom = \"a\"\nto = \"b\"\naction = \"allow\"\n";
        Arc::new(Document::from_toml(text, "t").unwrap())
    }

    /// A store whose one version records `digest` in `format`, as the build that wrote it would.
    fn recorded(dir: &Path, d: &Arc<Document>, digest: u64, format: u32) -> Store {
        let mut s = Store::open(dir, 10).unwrap();
        let mut meta = s.meta_for(digest, 0, "config", None);
        meta.digest_format = format;
        s.commit_meta(d.clone(), meta, Change::Whole).unwrap();
        drop(s);
        Store::open(dir, 10).unwrap()
    }

    #[test]
    fn a_record_without_a_format_is_in_the_first() {
        let m: VersionMeta =
            serde_json::from_str(r#"{"version":1,"time":"t","uid":0,"op":"config","digest":"00"}"#)
                .unwrap();
        assert_eq!(m.digest_format, 1);
        let back = serde_json::to_value(m.restamped(0xab)).unwrap();
        assert_eq!(back["digest_format"], policy::table::DIGEST_FORMAT);
        assert_eq!(back["digest"], "00000000000000ab");
    }

    #[test]
    fn a_digest_in_an_earlier_format_is_checked_in_it_and_given_in_this_one() {
        let d = ruled();
        let now = policy::table::digest(&d);
        let legacy = policy::table::digest_in_format(&d, 1).unwrap();
        assert_ne!(now, legacy);
        let hex = |x: u64| format!("{x:016x}");
        for (recorded_as, format, matches) in [
            (legacy, 1, true),      // an earlier build's record of this document
            (now, 1, true),         // 73cd899's: format 2 already, not labelled
            (legacy ^ 1, 1, false), // an earlier build's record of another document
            (legacy, 99, false),    // a later build's: cannot be checked
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = recorded(dir.path(), &d, recorded_as, format);
            assert_eq!(s.current().unwrap().meta.digest, hex(recorded_as));
            assert_eq!(s.current().unwrap().meta.digest_format, format);
            assert_eq!(s.settle_digest(now), matches, "{format} {recorded_as:x}");
            let m = &s.current().unwrap().meta;
            assert_eq!((m.digest.as_str(), m.digest_format), (hex(now).as_str(), 2));
            assert_eq!(s.history(10)[0].digest, hex(now));
        }
        // In this build's format, a record that differs is left for audit.verify to report.
        let dir = tempfile::tempdir().unwrap();
        let mut s = recorded(dir.path(), &d, now ^ 1, policy::table::DIGEST_FORMAT);
        assert!(!s.settle_digest(now));
        assert_eq!(s.current().unwrap().meta.digest, hex(now ^ 1));
        drop(s);
        let mut s = recorded(dir.path(), &d, now, policy::table::DIGEST_FORMAT);
        assert!(s.settle_digest(now));
    }
}
