//! Counters in the Prometheus text exposition format: frames, per drop reason, per tenant (and per
//! tenant and reason), per rule (by name), the driver's counters, the policy version and each worker's
//! version, lag and frames — for `stats {"format":"prometheus"}` and the HTTP `/metrics`.

use crate::server::{Stats, WorkerStatus};
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

/// Renders the stats in the Prometheus text exposition format.
pub fn prometheus(stats: &Stats, workers: &[WorkerStatus], version: u64) -> String {
    prometheus_sections(stats, workers, version).concat()
}

/// [`prometheus`]'s text in sections, to be sent one after another: the tenants' series are read in
/// one pass over them, each metric's into a section of its own (at a million tenants, a few hundred
/// megabytes that are not then copied into one string).
pub fn prometheus_sections(stats: &Stats, workers: &[WorkerStatus], version: u64) -> Vec<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let head = &stats.head;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let map = |k: &str| head.get(k).and_then(Value::as_object).into_iter().flatten();
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
            [(
                String::new(),
                head.get(key).and_then(Value::as_u64).unwrap_or(0),
            )],
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
    const TENANT: [(&str, &str); 6] = [
        ("frames_in", "Frames identified as the tenant's."),
        ("bytes_in", "Inner bytes identified as the tenant's."),
        ("forwarded", "The tenant's frames forwarded."),
        ("bytes_out", "Bytes of the tenant's forwarded frames."),
        ("arp_replied", "The tenant's ARP requests answered."),
        ("denied", "The tenant's frames denied by policy."),
    ];
    let mut sections: Vec<String> = TENANT
        .iter()
        .map(|(key, help)| {
            let mut s = String::new();
            metric(
                &mut s,
                &format!("joypath_tenant_{key}_total"),
                help,
                "counter",
                [],
            );
            s
        })
        .collect();
    let mut dropped = String::new();
    metric(
        &mut dropped,
        "joypath_tenant_dropped_total",
        "The tenant's frames dropped, by reason.",
        "counter",
        [],
    );
    // Writing into a String cannot fail.
    stats.tenants.each(&mut |t, v| {
        let t = label(t);
        for ((key, _), s) in TENANT.iter().zip(sections.iter_mut()) {
            let _ = writeln!(
                s,
                "joypath_tenant_{key}_total{{tenant=\"{t}\"}} {}",
                num(v, key)
            );
        }
        for (r, n) in v
            .get("dropped")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                dropped,
                "joypath_tenant_dropped_total{{tenant=\"{t}\",reason=\"{}\"}} {}",
                label(r),
                n.as_u64().unwrap_or(0)
            );
        }
    });
    let mut text = vec![out];
    text.append(&mut sections);
    text.push(dropped);
    let mut out = String::new();
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
    if let Some(driver) = head.get("driver").and_then(Value::as_object) {
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
    text.push(out);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text for stats with escapes in names, drop reasons by tenant, rules and the driver's
    /// counters, byte for byte as the renderer before the tenants were streamed wrote it (checked in).
    #[test]
    fn renders_the_checked_in_text() {
        let v = serde_json::json!({
            "frames": 12, "forwarded": 7, "arp_replied": 1, "nd_replied": 0,
            "dropped": {"malformed": 2, "policy_denied": 3},
            "tenants": {
                "acme": {"frames_in": 5, "bytes_in": 500, "forwarded": 4, "bytes_out": 600,
                         "arp_replied": 1, "nd_replied": 0, "denied": 1,
                         "dropped": {"policy_denied": 1}},
                "q\"uo\\te\nd": {"frames_in": 0, "bytes_in": 0, "forwarded": 0, "bytes_out": 0,
                                 "arp_replied": 0, "nd_replied": 0, "denied": 2,
                                 "dropped": {"policy_denied": 2, "spoofed_source": 1}},
                "zeta": {"frames_in": 3, "bytes_in": 300, "forwarded": 3, "bytes_out": 360,
                         "arp_replied": 0, "nd_replied": 0, "denied": 0, "dropped": {}}
            },
            "rules": {"allow-web": 4, "deny \"x\"": 3},
            "driver": {"rx_ring_full": 9, "note": "text"}
        });
        let w = |id, active_version, frames| WorkerStatus {
            id,
            active_version,
            active_digest: String::new(),
            frames,
            pps: 0.0,
        };
        let workers = [w(0, 5, 10), w(1, 4, 2)];
        let stats = Stats::from_value(v.clone());
        let text = prometheus(&stats, &workers, 5);
        assert_eq!(text, include_str!("../testdata/prometheus.txt"));
        // The answer made whole again is the one it came from.
        assert_eq!(stats.to_value(), v);
        // Without tenants: no tenant's sample, every metric's header still there.
        let mut none = v;
        none["tenants"] = serde_json::json!({});
        let text = prometheus(&Stats::from_value(none), &workers, 5);
        assert!(!text.contains("{tenant="), "{text}");
        assert!(text.contains("# TYPE joypath_tenant_dropped_total counter\n"));
    }
}
