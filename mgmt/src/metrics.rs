//! Counters in the Prometheus text exposition format: frames, per drop reason, per tenant (and per
//! tenant and reason), per rule (by name), the driver's counters, the policy version and each worker's
//! version, lag and frames — for `stats {"format":"prometheus"}` and the HTTP `/metrics`.

use crate::server::WorkerStatus;
use serde_json::Value;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric's help, type and samples (label set, value), written straight into `out`: at a
/// million tenants no list of samples is made first.
fn metric(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Renders the stats JSON in the Prometheus text exposition format. The stats are read where they
/// lie (at a million tenants a copy of their map is a gigabyte).
pub fn prometheus(stats: &Value, workers: &[WorkerStatus], version: u64) -> String {
    let mut out = String::new();
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let map = |k: &str| {
        stats
            .get(k)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    };
    for (name, help, key) in [
        ("joypath_frames_total", "Frames received.", "frames"),
        (
            "joypath_forwarded_total",
            "Frames re-encapsulated and transmitted.",
            "forwarded",
        ),
        (
            "joypath_arp_replied_total",
            "ARP requests answered.",
            "arp_replied",
        ),
    ] {
        metric(
            &mut out,
            name,
            help,
            "counter",
            [(String::new(), num(stats, key))],
        );
    }
    metric(
        &mut out,
        "joypath_dropped_total",
        "Frames dropped, by reason.",
        "counter",
        map("dropped").map(|(r, n)| {
            (
                format!("{{reason=\"{}\"}}", label(r)),
                n.as_u64().unwrap_or(0),
            )
        }),
    );
    for (key, help) in [
        ("frames_in", "Frames identified as the tenant's."),
        ("bytes_in", "Inner bytes identified as the tenant's."),
        ("forwarded", "The tenant's frames forwarded."),
        ("bytes_out", "Bytes of the tenant's forwarded frames."),
        ("arp_replied", "The tenant's ARP requests answered."),
        ("denied", "The tenant's frames denied by policy."),
    ] {
        metric(
            &mut out,
            &format!("joypath_tenant_{key}_total"),
            help,
            "counter",
            map("tenants").map(|(t, v)| (format!("{{tenant=\"{}\"}}", label(t)), num(v, key))),
        );
    }
    metric(
        &mut out,
        "joypath_tenant_dropped_total",
        "The tenant's frames dropped, by reason.",
        "counter",
        map("tenants").flat_map(|(t, v)| {
            v.get("dropped")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(move |(r, n)| {
                    (
                        format!("{{tenant=\"{}\",reason=\"{}\"}}", label(t), label(r)),
                        n.as_u64().unwrap_or(0),
                    )
                })
        }),
    );
    metric(
        &mut out,
        "joypath_policy_version",
        "The store's current policy version.",
        "gauge",
        [(String::new(), version)],
    );
    metric(
        &mut out,
        "joypath_worker_policy_version",
        "The policy version each worker runs.",
        "gauge",
        workers
            .iter()
            .map(|w| (format!("{{worker=\"{}\"}}", w.id), w.active_version)),
    );
    metric(
        &mut out,
        "joypath_worker_policy_lag",
        "Versions each worker is behind the store (0: in sync).",
        "gauge",
        workers.iter().map(|w| {
            (
                format!("{{worker=\"{}\"}}", w.id),
                version.saturating_sub(w.active_version),
            )
        }),
    );
    metric(
        &mut out,
        "joypath_worker_frames_total",
        "Frames each worker has processed.",
        "counter",
        workers
            .iter()
            .map(|w| (format!("{{worker=\"{}\"}}", w.id), w.frames)),
    );
    metric(
        &mut out,
        "joypath_workers_in_sync",
        "1 when every worker runs the store's version, else 0.",
        "gauge",
        [(
            String::new(),
            u64::from(!workers.is_empty() && workers.iter().all(|w| w.active_version == version)),
        )],
    );
    metric(
        &mut out,
        "joypath_rule_hits_total",
        "Frames decided by each rule, by rule name.",
        "counter",
        map("rules").map(|(r, n)| {
            (
                format!("{{rule=\"{}\"}}", label(r)),
                n.as_u64().unwrap_or(0),
            )
        }),
    );
    if let Some(driver) = stats.get("driver").and_then(Value::as_object) {
        for (k, v) in driver {
            if let Some(n) = v.as_u64() {
                metric(
                    &mut out,
                    &format!("joypath_driver_{k}_total"),
                    &format!("AF_XDP driver counter {k}."),
                    "counter",
                    [(String::new(), n)],
                );
            }
        }
    }
    out
}
