//! Where a one-rule change's time goes at scale: the document's copy and the table's incremental
//! compile, timed apart. `cargo run --release -p synth --example rule_change_phases -- RULES ENDPOINTS [TENANTS] [ROUNDS] [mid]`
//! (`mid`: in turn, a rule inserted in the middle of the list and removed again, instead of one
//! appended).
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .take_while(|s| s != "mid")
        .map(|s| {
            s.parse()
                .expect("RULES ENDPOINTS [TENANTS] [ROUNDS] are numbers")
        })
        .collect();
    let (rules, endpoints) = (
        a.first().copied().unwrap_or(100_000),
        a.get(1).copied().unwrap_or(1_000_000),
    );
    let tenants = a
        .get(2)
        .copied()
        .unwrap_or((endpoints / 10).clamp(10, 100_000));
    let rounds = a.get(3).copied().unwrap_or(7);
    let mid = std::env::args().any(|m| m == "mid");
    let mut p = synth::Params::scale(tenants as u32, endpoints as u32, rules as u32);
    p.flows = 16;
    p.frames = 16;
    let w = synth::generate(&p).expect("workload");
    let mut doc = Arc::new(w.doc);
    let t = Instant::now();
    let mut table = Arc::new(policy::Table::compile(doc.clone(), 1, None).expect("compiles"));
    eprintln!(
        "{rules} rules, {endpoints} endpoints, {tenants} tenants: whole compile {:?}",
        t.elapsed()
    );
    for r in 0..rounds {
        let rule: policy::Rule = serde_json::from_value(serde_json::json!({"from": "t0", "to": format!("t{}", 1 + r), "proto": "tcp", "ports": format!("{}", 10_000 + r), "action": "allow", "priority": 5})).expect("a rule");
        if mid {
            let at = doc.rules.len() / 2;
            let t0 = Instant::now();
            let mut d = (*doc).clone();
            let removed = if r % 2 == 0 {
                d.rules.insert(at, rule.clone());
                None
            } else {
                Some(d.rules.remove(at))
            };
            let t1 = Instant::now();
            policy::names::name_new_rules(&mut d, &doc);
            let t2 = Instant::now();
            assert!(d != *doc);
            let t3 = Instant::now();
            let d = Arc::new(d);
            let change = match &removed {
                None => policy::RuleChange::Insert {
                    index: at,
                    new: &d.rules[at],
                },
                Some(old) => policy::RuleChange::Remove { index: at, old },
            };
            let next = table.with_rule_change(2 + r as u64, change, d.clone());
            let t4 = Instant::now();
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            eprintln!(
                "round {r} ({}): document {:.3} ms, names {:.3} ms, compare {:.3} ms, table {:.3} ms",
                if removed.is_some() { "remove" } else { "insert" },
                ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4)
            );
            (doc, table) = (d, Arc::new(next));
            continue;
        }
        let t0 = Instant::now();
        let issues = table.check_rule(doc.rules.len(), &rule);
        assert!(issues.is_empty(), "{issues:?}");
        let t1 = Instant::now();
        let mut d = (*doc).clone();
        d.rules.push(rule.clone());
        let d = Arc::new(d);
        let t2 = Instant::now();
        let next =
            table.with_rule_change(2 + r as u64, policy::RuleChange::Append(&rule), d.clone());
        let t3 = Instant::now();
        eprintln!(
            "round {r}: check {:.3} ms, document {:.3} ms, table {:.3} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3
        );
        (doc, table) = (d, Arc::new(next));
    }
}
