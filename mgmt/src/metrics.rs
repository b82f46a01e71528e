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

/// Renders the stats JSON in the Prometheus text exposition format.
pub fn prometheus(stats: &Value, workers: &[WorkerStatus], version: u64) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    metric(
        "joypath_frames_total",
        "Frames received.",
        "counter",
        vec![(String::new(), num(stats, "frames"))],
    );
    metric(
        "joypath_forwarded_total",
        "Frames re-encapsulated and transmitted.",
        "counter",
        vec![(String::new(), num(stats, "forwarded"))],
    );
    metric(
        "joypath_arp_replied_total",
        "ARP requests answered.",
        "counter",
        vec![(String::new(), num(stats, "arp_replied"))],
    );
    let dropped = stats
        .get("dropped")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metric(
        "joypath_dropped_total",
        "Frames dropped, by reason.",
        "counter",
        dropped
            .iter()
            .map(|(r, n)| {
                (
                    format!("{{reason=\"{}\"}}", label(r)),
                    n.as_u64().unwrap_or(0),
                )
            })
            .collect(),
    );
    let tenants = stats
        .get("tenants")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, help) in [
        ("frames_in", "Frames identified as the tenant's."),
        ("bytes_in", "Inner bytes identified as the tenant's."),
        ("forwarded", "The tenant's frames forwarded."),
        ("bytes_out", "Bytes of the tenant's forwarded frames."),
        ("arp_replied", "The tenant's ARP requests answered."),
        ("denied", "The tenant's frames denied by policy."),
    ] {
        metric(
            &format!("joypath_tenant_{key}_total"),
            help,
            "counter",
            tenants
                .iter()
                .map(|(t, v)| (format!("{{tenant=\"{}\"}}", label(t)), num(v, key)))
                .collect(),
        );
    }
    let mut per_reason = Vec::new();
    for (t, v) in &tenants {
        for (r, n) in v
            .get("dropped")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            per_reason.push((
                format!("{{tenant=\"{}\",reason=\"{}\"}}", label(t), label(r)),
                n.as_u64().unwrap_or(0),
            ));
        }
    }
    metric(
        "joypath_tenant_dropped_total",
        "The tenant's frames dropped, by reason.",
        "counter",
        per_reason,
    );
    metric(
        "joypath_policy_version",
        "The store's current policy version.",
        "gauge",
        vec![(String::new(), version)],
    );
    metric(
        "joypath_worker_policy_version",
        "The policy version each worker runs.",
        "gauge",
        workers
            .iter()
            .map(|w| (format!("{{worker=\"{}\"}}", w.id), w.active_version))
            .collect(),
    );
    metric(
        "joypath_worker_policy_lag",
        "Versions each worker is behind the store (0: in sync).",
        "gauge",
        workers
            .iter()
            .map(|w| {
                (
                    format!("{{worker=\"{}\"}}", w.id),
                    version.saturating_sub(w.active_version),
                )
            })
            .collect(),
    );
    metric(
        "joypath_worker_frames_total",
        "Frames each worker has processed.",
        "counter",
        workers
            .iter()
            .map(|w| (format!("{{worker=\"{}\"}}", w.id), w.frames))
            .collect(),
    );
    metric(
        "joypath_workers_in_sync",
        "1 when every worker runs the store's version, else 0.",
        "gauge",
        vec![(
            String::new(),
            u64::from(!workers.is_empty() && workers.iter().all(|w| w.active_version == version)),
        )],
    );
    let rules = stats
        .get("rules")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metric(
        "joypath_rule_hits_total",
        "Frames decided by each rule, by rule name.",
        "counter",
        rules
            .iter()
            .map(|(r, n)| {
                (
                    format!("{{rule=\"{}\"}}", label(r)),
                    n.as_u64().unwrap_or(0),
                )
            })
            .collect(),
    );
    if let Some(driver) = stats.get("driver").and_then(Value::as_object) {
        for (k, v) in driver {
            if let Some(n) = v.as_u64() {
                metric(
                    &format!("joypath_driver_{k}_total"),
                    &format!("AF_XDP driver counter {k}."),
                    "counter",
                    vec![(String::new(), n)],
                );
            }
        }
    }
    out
}
