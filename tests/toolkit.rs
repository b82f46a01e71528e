//! The operator's toolkit against the fixtures: `explain` agrees with the fixtures' expectations
//! (written from the contract) frame by frame, and rules are addressed by name through the socket.

mod common;

use common::{err, fixtures, ok, Gateway};
use mgmt::{Client, ErrorCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// For every IP frame of every fixture whose expected outcome is a verdict (forward, policy_denied or
/// no_endpoint), `explain` with the frame's tenant, addresses, protocol and ports at the frame's time
/// says the same; for forwarded frames, its egress VTEP and VNI are those of the frame the replay
/// transmitted.
#[test]
fn explain_agrees_with_the_fixtures_expectations() {
    let table_of = |name: &str| {
        let doc = policy::Document::load(&fixtures().join(name)).unwrap();
        policy::Table::compile(Arc::new(doc), 1, None).unwrap()
    };
    let (tracked, stateless) = (table_of("fixtures.toml"), table_of("stateless.toml"));
    let mut checked = 0;
    for stem in ["verdicts", "identity", "overlap", "ipv6", "drops"] {
        // verdicts.pcap tests the stateless mirrors (pcap-fixtures/README.md).
        let table = if stem == "verdicts" {
            &stateless
        } else {
            &tracked
        };
        let cap = ["pcap", "pcapng"]
            .iter()
            .map(|e| fixtures().join(format!("{stem}.{e}")))
            .find(|p| p.exists())
            .unwrap();
        let frames = driver::replay::read_capture(&cap).unwrap();
        let out = driver::replay::replay(table, &frames);
        let expect =
            std::fs::read_to_string(fixtures().join(format!("{stem}.expect.tsv"))).unwrap();
        let mut transmitted = out.transmitted.iter();
        for line in expect
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split('\t').collect();
            let (i, outcome, reason, tenant) = (f[0].parse::<usize>().unwrap(), f[1], f[2], f[3]);
            let sent = matches!(outcome, "forward" | "arp_reply" | "nd_reply")
                .then(|| transmitted.next().unwrap());
            if !(outcome == "forward" || matches!(reason, "policy_denied" | "no_endpoint")) {
                continue;
            }
            // A tracked reply is admitted by a flow, which `explain` (the rules alone) cannot see.
            if out.outcomes[i].tracked_reply {
                continue;
            }
            let data = &frames[i].data;
            let Ok(o) = vtep::parse_overlay(data, 4789) else {
                continue;
            };
            let inner = vtep::parse_inner(&data[o.inner_off..o.inner_off + o.inner_len]).unwrap();
            let vtep::parse::InnerKind::Ip(flow) = inner.kind else {
                continue;
            };
            let proto: Value = match flow.proto {
                6 => "tcp".into(),
                17 => "udp".into(),
                n => n.into(),
            };
            let args = json!({"tenant": tenant, "src": flow.src.to_string(), "dst": flow.dst.to_string(),
                "proto": proto, "sport": flow.src_port, "dport": flow.dst_port});
            let now = frames[i].ts_ns as i64;
            let r = mgmt::explain::explain(table, &args, now).unwrap();
            let what = format!("{stem} frame {i} ({line}): {r}");
            assert_eq!(
                r["verdict"],
                if outcome == "forward" {
                    "forward"
                } else {
                    "drop"
                },
                "{what}"
            );
            if outcome == "drop" {
                assert_eq!(r["drop_reason"], reason, "{what}");
            } else {
                let (_, _, tx) = sent.unwrap();
                let ov = vtep::parse_overlay(tx, 4789).unwrap();
                assert_eq!(r["egress_vtep"], json!(ov.dst_ip), "{what}");
                assert_eq!(r["egress_vni"], json!(ov.vni), "{what}");
            }
            if r["verdict"] == "forward" || reason == "policy_denied" {
                assert!(r["rule"].is_string(), "{what}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} frames checked");
}

#[test]
fn rules_by_name_through_the_socket() {
    let g = Gateway::in_temp("jp-tk").start();
    let mut c = Client::connect(&g.socket()).unwrap();
    let doc = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
    let rules = doc["rule"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let mut uniq = names.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), names.len(), "{names:?}");
    assert!(names.contains(&"acme-globex-tcp-443"), "{names:?}");

    // A change by name is reported as a change of that rule, not a remove and an add.
    let mut new = doc.clone();
    new["rule"][0]["priority"] = json!(777);
    let target = names[0].to_string();
    let v = ok(c.call("policy.validate", json!({"document": new})).unwrap());
    let d = &v["diff"]["rules"];
    assert_eq!(d["changed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(d["changed"][0]["name"], json!(target));
    assert!(
        d["added"].as_array().unwrap().is_empty() && d["removed"].as_array().unwrap().is_empty()
    );

    // rule.update by name keeps the name when the new rule has none; by index still works.
    let r = ok(c
        .call(
            "rule.update",
            json!({"name": "acme-globex-tcp-443", "rule": {"from": "acme", "to": "globex", "proto": "tcp", "ports": "444", "action": "allow", "priority": 100}}),
        )
        .unwrap());
    assert_eq!(r["version"], 2);
    let doc = ok(c.call("policy.get", json!({})).unwrap())["document"].clone();
    let i = doc["rule"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["name"] == "acme-globex-tcp-443")
        .unwrap();
    assert_eq!(doc["rule"][i]["ports"], "444");
    // Explain names the rule.
    let e = ok(c
        .call("explain", json!({"tenant": "acme", "src": "198.19.0.1", "dst": "198.19.1.1", "proto": "tcp", "sport": 40000, "dport": 444}))
        .unwrap());
    assert_eq!(e["verdict"], "forward", "{e}");
    assert_eq!(e["rule"], "acme-globex-tcp-443", "{e}");
    assert_eq!(e["dst_tenant"], "globex", "{e}");

    // The same update again: no new version.
    let r = ok(c
        .call(
            "rule.update",
            json!({"index": "acme-globex-tcp-443", "rule": {"from": "acme", "to": "globex", "proto": "tcp", "ports": "444", "action": "allow", "priority": 100}}),
        )
        .unwrap());
    assert_eq!(
        (r["version"].clone(), r["unchanged"].clone()),
        (json!(2), json!(true))
    );

    // A name another rule has is refused; an unknown name is not_found.
    let other = names.iter().find(|n| **n != "acme-globex-tcp-443").unwrap();
    assert_eq!(
        err(c
            .call(
                "rule.update",
                json!({"name": "acme-globex-tcp-443", "rule": {"name": other, "from": "acme", "to": "globex", "action": "allow"}}),
            )
            .unwrap()),
        ErrorCode::InvalidPolicy
    );
    assert_eq!(
        err(c.call("rule.remove", json!({"name": "nope"})).unwrap()),
        ErrorCode::NotFound
    );
    // rule.add without a name gets one; remove it by that name.
    ok(c.call("rule.add", json!({"rule": {"from": "hooli", "to": "acme", "proto": "udp", "ports": "9", "action": "allow"}}))
        .unwrap());
    let r = ok(c
        .call("rule.remove", json!({"name": "hooli-acme-udp-9"}))
        .unwrap());
    assert_eq!(r["version"], 4);

    // The audit names its rules.
    let a = ok(c
        .call("audit.reachability", json!({"at": "2026-06-01T00:00:00Z"}))
        .unwrap());
    assert!(a["reach"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule_name"] == "acme-globex-tcp-443"));
    // Applying the document in force makes no new version.
    let cur = ok(c.call("policy.get", json!({})).unwrap());
    let r = ok(c
        .call("policy.apply", json!({"document": cur["document"]}))
        .unwrap());
    assert_eq!(
        (r["version"].clone(), r["unchanged"].clone()),
        (json!(4), json!(true))
    );
}
