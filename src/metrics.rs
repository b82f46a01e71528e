//! `--metrics-listen ADDR`: a small HTTP server on its own thread for Prometheus and health checks.
//! `GET /metrics` is the management plane's `stats` in the Prometheus text format; `GET /healthz` is
//! 200 when every worker runs the version (and digest) the store holds, 503 otherwise.

use anyhow::{Context, Result};
use mgmt::server::Access;
use std::net::SocketAddr;
use std::sync::Arc;

/// Keeps the HTTP thread; dropping it stops the server.
pub struct MetricsHandle {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn call(
    m: &mgmt::Server,
    op: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, Option<mgmt::protocol::ErrorBody>> {
    let line = serde_json::json!({"op": op, "args": args}).to_string();
    let r = m.handle_line(&line, 0, Access::ReadOnly);
    r.result.ok_or(r.error)
}

fn respond(req: tiny_http::Request, code: u16, content_type: &str, body: String) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    let r = tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(header);
    if let Err(e) = req.respond(r) {
        tracing::debug!(error = %e, "metrics: the client went away");
    }
}

/// A 200 whose body is `sections` sent one after another (not first copied into one string).
fn respond_sections(req: tiny_http::Request, content_type: &str, sections: Vec<String>) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    let len = sections.iter().map(String::len).sum();
    let body = Sections {
        parts: sections.into_iter().map(String::into_bytes).collect(),
        at: 0,
    };
    let r = tiny_http::Response::new(200.into(), vec![header], body, Some(len), None);
    if let Err(e) = req.respond(r) {
        tracing::debug!(error = %e, "metrics: the client went away");
    }
}

/// Byte strings read one after another, each freed once read.
struct Sections {
    parts: std::collections::VecDeque<Vec<u8>>,
    at: usize,
}

impl std::io::Read for Sections {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(p) = self.parts.front() {
            if self.at < p.len() {
                let n = buf.len().min(p.len() - self.at);
                buf[..n].copy_from_slice(&p[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            self.parts.pop_front();
            self.at = 0;
        }
        Ok(0)
    }
}

/// Serves `/metrics` and `/healthz` on `addr` from the management server `m`.
pub fn spawn(addr: SocketAddr, m: mgmt::Server) -> Result<MetricsHandle> {
    let server = Arc::new(
        tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("--metrics-listen {addr}"))?,
    );
    tracing::info!(%addr, "metrics listening (/metrics, /healthz)");
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in s.incoming_requests() {
                let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
                let (path, query) = (path.to_string(), query.to_string());
                match (req.method(), path.as_str()) {
                    (tiny_http::Method::Get, "/metrics") => {
                        // `?tenants=active` or `?tenants=none` (a scrape config's `params`): at a
                        // million tenants every tenant's series is a few hundred megabytes a scrape.
                        let tenants = query
                            .split('&')
                            .filter_map(|kv| kv.split_once('='))
                            .filter(|(k, _)| *k == "tenants")
                            .map(|(_, v)| v)
                            .next_back();
                        // A bug in rendering fails the scrape, never this thread.
                        let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            m.metrics(tenants)
                        }));
                        match text {
                            Ok(Ok(sections)) => respond_sections(
                                req,
                                "text/plain; version=0.0.4; charset=utf-8",
                                sections,
                            ),
                            // The stats request's own check of `tenants`.
                            Ok(Err(e)) if e.code == mgmt::ErrorCode::BadArgs => respond(
                                req,
                                400,
                                "text/plain",
                                format!("/metrics: {}\n", e.message),
                            ),
                            _ => respond(req, 500, "text/plain", "stats failed\n".into()),
                        }
                    }
                    (tiny_http::Method::Get, "/healthz") => {
                        let v = call(&m, "audit.verify", serde_json::json!({})).ok();
                        let ok = v.as_ref().is_some_and(|v| v["ok"] == true);
                        let body = match &v {
                            Some(v) if ok => format!(
                                "ok: every worker runs policy version {}\n",
                                v["expected"]["version"]
                            ),
                            Some(v) => format!("{v}\n"),
                            None => "verify failed\n".into(),
                        };
                        respond(req, if ok { 200 } else { 503 }, "text/plain", body);
                    }
                    _ => respond(req, 404, "text/plain", "/metrics or /healthz\n".into()),
                }
            }
        })
        .context("spawning the metrics thread")?;
    Ok(MetricsHandle {
        server,
        thread: Some(thread),
    })
}

/// Tells systemd (when it started us with Type=notify) where the service stands; a no-op otherwise.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt::{Dataplane, TraceRequest, WorkerStatus};
    use policy::Table;
    use serde_json::Value;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A dataplane whose one worker runs whatever version the test says.
    struct Fake {
        version: AtomicU64,
        digest: String,
    }

    impl Dataplane for Fake {
        fn publish(&self, _t: Arc<Table>) {}
        fn workers(&self) -> Vec<WorkerStatus> {
            vec![WorkerStatus {
                id: 0,
                active_version: self.version.load(Ordering::SeqCst),
                active_digest: self.digest.clone(),
                frames: 7,
                pps: 0.0,
            }]
        }
        fn stats(&self, _: &mgmt::TenantFilter) -> mgmt::Stats {
            mgmt::Stats::from_value(serde_json::json!({
                "frames": 7, "forwarded": 7, "arp_replied": 0, "dropped": {}, "tenants": {}
            }))
        }
        fn trace(&self, _r: &TraceRequest) -> Result<Value, String> {
            Err("no".into())
        }
    }

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        let code = r.split(' ').nth(1).unwrap().parse().unwrap();
        let body = r
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (code, body)
    }

    #[test]
    fn healthz_is_503_until_the_workers_run_the_stored_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pcap-fixtures/fixtures.toml");
        let (store, table) =
            crate::plane::open_policy(Some(std::path::Path::new(path)), dir.path(), 4).unwrap();
        let fake = Arc::new(Fake {
            version: AtomicU64::new(0),
            digest: format!("{:016x}", table.digest()),
        });
        let server = mgmt::Server::new(
            mgmt::ServerConfig::new(dir.path().join("s.sock")),
            store,
            table,
            fake.clone(),
        );
        // A free port on the loopback.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let _h = spawn(addr, server).unwrap();
        let (code, body) = get(addr, "/healthz");
        assert_eq!(code, 503, "{body}");
        fake.version.store(1, Ordering::SeqCst);
        let (code, body) = get(addr, "/healthz");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("version 1"), "{body}");
        let (code, body) = get(addr, "/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("joypath_workers_in_sync 1"), "{body}");
        assert_eq!(get(addr, "/nope").0, 404);
    }
}
