//! The versioned policy store: every committed change is a new, monotonically numbered version kept
//! in the state directory as `versions/v<N>.json` — a metadata line, then the document line — written
//! to a temporary file, fsynced, renamed into place and the directory fsynced before it is acknowledged.
//! A kill at any instant leaves the last acknowledged version intact; history is bounded.

use policy::Document;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Who changed what, when: the first line of a version file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: u64,
    /// RFC 3339 commit time.
    pub time: String,
    /// The peer's uid (0 for changes made at start-up from the config file).
    pub uid: u32,
    /// The operation that made it (`policy.apply`, `tenant.add`, `rollback`, `config`, …).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Digest of the document (hex), as `audit.verify` compares it.
    pub digest: String,
}

/// A committed version.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub meta: VersionMeta,
    pub document: Arc<Document>,
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
}

/// The store. Single writer (the management thread holds it behind a mutex).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    /// Kept versions' metadata, oldest first.
    metas: Vec<VersionMeta>,
    current: Option<VersionRecord>,
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        dir: dir.display().to_string(),
        source,
    }
}

fn version_file(dir: &Path, v: u64) -> PathBuf {
    dir.join("versions").join(format!("v{v:020}.json"))
}

fn now_rfc3339() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    policy::time::format_rfc3339(t)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, keeping at most `keep` versions (≥ 1).
    pub fn open(dir: &Path, keep: usize) -> Result<Store, StoreError> {
        let vdir = dir.join("versions");
        fs::create_dir_all(&vdir).map_err(io_err(dir))?;
        let mut numbers: Vec<u64> = Vec::new();
        for e in fs::read_dir(&vdir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix('v').and_then(|s| s.strip_suffix(".json")) {
                if let Ok(v) = n.parse::<u64>() {
                    numbers.push(v);
                }
            } else if name.starts_with(".tmp-") {
                // An uncommitted write interrupted by a crash: never acknowledged, so drop it.
                let _ = fs::remove_file(e.path());
            }
        }
        numbers.sort_unstable();
        let mut metas = Vec::with_capacity(numbers.len());
        for &v in &numbers {
            match read_meta(&version_file(dir, v)) {
                Ok(m) => metas.push(m),
                Err(e) => {
                    tracing::warn!(version = v, error = %e, "skipping unreadable version file")
                }
            }
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            metas,
            current: None,
        };
        // The newest readable version is current.
        while let Some(m) = store.metas.last() {
            match store.read(m.version) {
                Ok(r) => {
                    store.current = Some(r);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "newest version unreadable; falling back");
                    store.metas.pop();
                }
            }
        }
        Ok(store)
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
    /// Kept versions' metadata, newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Vec<VersionMeta> {
        self.metas.iter().rev().take(limit).cloned().collect()
    }

    /// Reads a kept version.
    pub fn read(&self, v: u64) -> Result<VersionRecord, StoreError> {
        if let Some(c) = &self.current {
            if c.meta.version == v {
                return Ok(c.clone());
            }
        }
        let path = version_file(&self.dir, v);
        let f = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(v),
            _ => io_err(&self.dir)(e),
        })?;
        let corrupt = |message: String| StoreError::Corrupt {
            file: path.display().to_string(),
            message,
        };
        let mut r = BufReader::new(f);
        let mut line = String::new();
        r.read_line(&mut line).map_err(io_err(&self.dir))?;
        let meta: VersionMeta = serde_json::from_str(&line).map_err(|e| corrupt(e.to_string()))?;
        let document: Document = serde_json::from_reader(r).map_err(|e| corrupt(e.to_string()))?;
        Ok(VersionRecord {
            meta,
            document: Arc::new(document),
        })
    }

    /// Commits `doc` as the next version and returns it once it is durable. `digest` is the document's
    /// digest ([`policy::table::digest`], or the compiled table's, which is the same and cheaper).
    pub fn commit(
        &mut self,
        doc: Arc<Document>,
        digest: u64,
        uid: u32,
        op: &str,
        comment: Option<String>,
    ) -> Result<&VersionRecord, StoreError> {
        let meta = VersionMeta {
            version: self.version() + 1,
            time: now_rfc3339(),
            uid,
            op: op.to_string(),
            comment,
            digest: format!("{digest:016x}"),
        };
        let vdir = self.dir.join("versions");
        let tmp = vdir.join(format!(".tmp-{}-{}", std::process::id(), meta.version));
        let dir = self.dir.clone();
        let err = io_err(&dir);
        {
            let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(&err)?);
            serde_json::to_writer(&mut f, &meta).map_err(|e| err(e.into()))?;
            f.write_all(b"\n").map_err(&err)?;
            serde_json::to_writer(&mut f, &*doc).map_err(|e| err(e.into()))?;
            f.write_all(b"\n").map_err(&err)?;
            let f = f.into_inner().map_err(|e| err(e.into_error()))?;
            f.sync_all().map_err(&err)?;
        }
        fs::rename(&tmp, version_file(&self.dir, meta.version)).map_err(&err)?;
        File::open(&vdir).and_then(|d| d.sync_all()).map_err(&err)?;
        tracing::debug!(version = meta.version, uid, op, "policy version committed");
        self.metas.push(meta.clone());
        self.current = Some(VersionRecord {
            meta,
            document: doc,
        });
        self.prune();
        Ok(self.current.as_ref().expect("just set"))
    }

    fn prune(&mut self) {
        while self.metas.len() > self.keep {
            let old = self.metas.remove(0);
            if let Err(e) = fs::remove_file(version_file(&self.dir, old.version)) {
                tracing::warn!(version = old.version, error = %e, "could not prune an old version");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u32) -> Arc<Document> {
        let text = format!(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[tenant]]\nname = \"t{n}\"\nid = {}\n",
            n + 1
        );
        Arc::new(Document::from_toml(&text, "t").unwrap())
    }

    #[test]
    fn versions_persist_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), 3).unwrap();
            assert_eq!(s.version(), 0);
            for n in 0..5 {
                let d = doc(n);
                s.commit(
                    d.clone(),
                    policy::table::digest(&d),
                    1000,
                    "policy.apply",
                    Some(format!("change {n}")),
                )
                .unwrap();
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
    fn interrupted_writes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 10).unwrap();
        let d = doc(0);
        s.commit(d.clone(), policy::table::digest(&d), 0, "config", None)
            .unwrap();
        // A crash mid-write leaves only a temporary file behind.
        fs::write(dir.path().join("versions/.tmp-1-2"), b"{\"version\":2").unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.version(), 1);
        assert!(!dir.path().join("versions/.tmp-1-2").exists());
    }
}
