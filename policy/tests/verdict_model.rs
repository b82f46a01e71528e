//! Property tests: the compiled table's verdicts and ARP reachability equal a plain reference model
//! written straight from DESIGN.md's policy semantics (a linear scan of the document's rules).

use policy::document::{parse_ports, Cidr};
use policy::{
    Action, Document, Endpoint, Gateway, IdentityMode, Proto, Replies, Rule, Segment, Table, Tenant,
};
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::Arc;
use vtep::Flow;

const TENANTS: [&str; 4] = ["a", "b", "c", "d"];
const CIDRS: [&str; 4] = [
    "198.19.0.0/24",
    "198.19.0.0/25",
    "198.19.1.0/24",
    "198.19.0.128/25",
];
const CIDRS6: [&str; 4] = [
    "2001:2::/64",
    "2001:2::/65",
    "2001:2:0:1::/64",
    "2001:2::8000:0:0:0/65",
];
/// Seconds; validity windows are judged in nanoseconds.
const T0: i64 = 1_780_000_000;
const NS: i64 = 1_000_000_000;

fn time(t: i64) -> String {
    policy::time::format_rfc3339(t)
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    let tenant = prop_oneof![
        Just("*".to_string()),
        (0..4usize).prop_map(|i| TENANTS[i].to_string())
    ];
    let proto = prop_oneof![
        Just(None),
        Just(Some(Proto::Tcp)),
        Just(Some(Proto::Udp)),
        Just(Some(Proto::Icmp)),
        Just(Some(Proto::Any))
    ];
    let ports = prop_oneof![
        Just(None),
        (0u16..6, 0u16..4).prop_map(|(lo, w)| Some((lo, lo + w)))
    ];
    let cidr = prop_oneof![3 => Just(None), 1 => (0..4usize).prop_map(Some)];
    let window = prop_oneof![
        3 => Just((None, None)),
        1 => (-2i64..3, 0i64..3).prop_map(|(a, w)| (Some(time(T0 + a * 100)), Some(time(T0 + (a + w) * 100)))),
        1 => (-2i64..3).prop_map(|a| (Some(time(T0 + a * 100)), None)),
        1 => (-2i64..3).prop_map(|a| (None, Some(time(T0 + a * 100)))),
    ];
    (
        tenant.clone(),
        tenant,
        any::<bool>(),
        proto,
        ports,
        cidr.clone(),
        cidr,
        any::<bool>(),
        -2i32..3,
        window,
    )
        .prop_map(
            |(from, to, v6, proto, ports, from_cidr, to_cidr, allow, priority, (nb, na))| {
                // One family per rule (the validator insists).
                let fam = if v6 { &CIDRS6 } else { &CIDRS };
                let from_cidr = from_cidr.map(|i: usize| fam[i].to_string());
                let to_cidr = to_cidr.map(|i: usize| fam[i].to_string());
                // Ports only with tcp/udp (the validator insists).
                let ports = match proto {
                    Some(Proto::Tcp | Proto::Udp) => ports.map(|(a, b): (u16, u16)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    }),
                    _ => None,
                };
                Rule {
                    name: None,
                    from: from.into(),
                    to: to.into(),
                    proto,
                    ports,
                    from_cidr,
                    to_cidr,
                    action: if allow { Action::Allow } else { Action::Deny },
                    priority,
                    not_before: nb,
                    not_after: na,
                    owner: None,
                }
            },
        )
}

fn doc(rules: Vec<Rule>) -> Document {
    doc_with(rules, Replies::Stateless)
}

fn doc_with(rules: Vec<Rule>, replies: Replies) -> Document {
    Document {
        gateway: Gateway {
            underlay_ip: "198.18.0.254".parse().unwrap(),
            underlay_ip6: None,
            udp_port: 4789,
            mtu: 1500,
            replies,
            max_flows: None,
            decision_cache: None,
            flow_timeouts: None,
        },
        segments: vec![Segment {
            vni: 1,
            identity: IdentityMode::Gbp,
            tenant: None,
        }]
        .into(),
        tenants: TENANTS
            .iter()
            .enumerate()
            .map(|(i, n)| Tenant {
                name: (*n).into(),
                id: i as u32 + 1,
                vteps: None,
                address_space: None,
            })
            .collect(),
        endpoints: Default::default(),
        rules: rules.into(),
    }
}

/// A rule's validity window in Unix nanoseconds, open ends as i64::MIN / i64::MAX.
fn window(r: &Rule) -> (i64, i64) {
    let t = |x: &Option<String>, d| {
        x.as_deref()
            .map(|x| policy::time::parse_rfc3339_ns(x).unwrap())
            .unwrap_or(d)
    };
    (t(&r.not_before, i64::MIN), t(&r.not_after, i64::MAX))
}

/// The reference: a linear scan, straight from the contract (mirrors of allow rules only with
/// `replies = "stateless"`).
fn model(d: &Document, s: &str, t: &str, f: &Flow, now: i64) -> bool {
    let stateless = d.gateway.replies == Replies::Stateless;
    let name_ok = |pat: &str, n: &str| pat == "*" || pat == n;
    let mut best: Option<(i32, bool)> = None; // (priority, deny)
    for r in &d.rules {
        let proto = r.proto.unwrap_or(Proto::Any);
        let (lo, hi) = r
            .ports
            .as_deref()
            .map(|p| parse_ports(p).unwrap())
            .unwrap_or((0, 65535));
        let (nb, na) = window(r);
        let in_cidr = |c: &Option<String>, ip: &IpAddr| {
            c.as_deref()
                .is_none_or(|c| Cidr::parse(c).unwrap().contains(ip))
        };
        let active = nb <= now && now <= na;
        let proto_ok = proto.matches(f.proto);
        let fwd = name_ok(&r.from, s)
            && name_ok(&r.to, t)
            && proto_ok
            && (lo..=hi).contains(&f.dst_port)
            && in_cidr(&r.from_cidr, &f.src)
            && in_cidr(&r.to_cidr, &f.dst)
            && active;
        let rev = stateless
            && r.action == Action::Allow
            && name_ok(&r.from, t)
            && name_ok(&r.to, s)
            && proto_ok
            && (lo..=hi).contains(&f.src_port)
            && in_cidr(&r.from_cidr, &f.dst)
            && in_cidr(&r.to_cidr, &f.src)
            && active;
        if fwd || rev {
            let cand = (r.priority, r.action == Action::Deny);
            if best.is_none_or(|b| cand > b) {
                best = Some(cand);
            }
        }
    }
    match best {
        Some((_, deny)) => !deny,
        None => s == t,
    }
}

fn model_reach(d: &Document, s: &str, t: &str, now: i64) -> bool {
    // Rules from s to t in force at `now`: (action, priority, protocol, ports, has a CIDR).
    let in_force = d.rules.iter().filter_map(|r| {
        let (nb, na) = window(r);
        let ports = r
            .ports
            .as_deref()
            .map(|p| parse_ports(p).unwrap())
            .unwrap_or((0, 65535));
        ((r.from == "*" || r.from == s) && (r.to == "*" || r.to == t) && nb <= now && now <= na)
            .then(|| {
                let cidr = r.from_cidr.is_some() || r.to_cidr.is_some();
                (
                    r.action,
                    r.priority,
                    r.proto.unwrap_or(Proto::Any),
                    ports,
                    cidr,
                )
            })
    });
    // An allow rule lets something through unless a deny of at least its priority, without a
    // CIDR, holds all its protocol and ports.
    s == t
        || in_force.clone().any(|(action, prio, proto, (lo, hi), _)| {
            action == Action::Allow
                && !in_force.clone().any(|(x, xp, xproto, (xlo, xhi), xcidr)| {
                    x == Action::Deny
                        && xp >= prio
                        && (xproto == Proto::Any || xproto == proto)
                        && xlo <= lo
                        && hi <= xhi
                        && !xcidr
                })
        })
}

fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        0u8..3,
        0u8..3,
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(58u8), Just(47u8)],
        0u16..8,
        0u16..8,
        any::<bool>(),
    )
        .prop_map(|(a, b, proto, sp, dp, v6)| {
            let ip = |k: u8| -> IpAddr {
                if v6 {
                    ["2001:2::5", "2001:2::8000:0:0:9", "2001:2:0:1::7"][k as usize]
                } else {
                    ["198.19.0.5", "198.19.0.200", "198.19.1.7"][k as usize]
                }
                .parse()
                .unwrap()
            };
            Flow {
                src: ip(a),
                dst: ip(b),
                proto,
                src_port: sp,
                dst_port: dp,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_verdict_equals_reference(
        rules in prop::collection::vec(arb_rule(), 0..12),
        stateless in any::<bool>(),
        probes in prop::collection::vec((0..4usize, 0..4usize, arb_flow(), -3i64..4, -1i64..2), 1..40),
    ) {
        let replies = if stateless { Replies::Stateless } else { Replies::Tracked };
        let d = doc_with(rules, replies);
        let table = Table::compile(Arc::new(d.clone()), 1, None).unwrap();
        for (s, t, flow, dt, ns) in probes {
            // On a window's edge, a nanosecond before it, or after it (bounds are inclusive).
            let now = (T0 + dt * 100) * NS + ns;
            let si = table.tenant_by_name(TENANTS[s]).unwrap();
            let ti = table.tenant_by_name(TENANTS[t]).unwrap();
            let got = table.verdict(si, ti, &flow, now);
            let want = model(&d, TENANTS[s], TENANTS[t], &flow, now);
            prop_assert_eq!(got.allow, want, "{} -> {} {:?} at {}", TENANTS[s], TENANTS[t], flow, now);
            if let Some(i) = got.rule {
                // The deciding rule is one whose action is the verdict.
                prop_assert_eq!(d.rules[i as usize].action == Action::Allow, got.allow);
            }
            prop_assert_eq!(table.may_reach(si, ti, now), model_reach(&d, TENANTS[s], TENANTS[t], now));
        }
    }

    /// Recompiling with the previous table keeps every tenant's slot.
    #[test]
    fn slots_survive_recompilation(rules in prop::collection::vec(arb_rule(), 0..4), drop_one in 0..4usize) {
        let d = doc(rules);
        let t1 = Table::compile(Arc::new(d.clone()), 1, None).unwrap();
        let mut d2 = d.clone();
        d2.tenants.remove(drop_one);
        d2.rules.retain(|r| r.from != TENANTS[drop_one] && r.to != TENANTS[drop_one]);
        d2.tenants.push(Tenant { name: "e".into(), id: 99, vteps: None, address_space: None });
        let t2 = Table::compile(Arc::new(d2), 2, Some(&t1)).unwrap();
        for (i, n) in TENANTS.iter().enumerate() {
            let a = t1.tenant_by_name(n).unwrap();
            if i == drop_one {
                prop_assert!(t2.tenant_by_name(n).is_none());
                prop_assert!(!t2.tenant(a).live);
            } else {
                prop_assert_eq!(t2.tenant_by_name(n), Some(a));
            }
        }
        prop_assert_eq!(t2.tenant_by_name("e"), Some(4));
    }
}

#[test]
fn deny_wins_ties_and_priority_beats_it() {
    let mut rules = vec![
        Rule {
            name: None,
            from: "a".into(),
            to: "b".into(),
            proto: None,
            ports: None,
            from_cidr: None,
            to_cidr: None,
            action: Action::Allow,
            priority: 5,
            not_before: None,
            not_after: None,
            owner: None,
        },
        Rule {
            name: None,
            from: "*".into(),
            to: "b".into(),
            proto: None,
            ports: None,
            from_cidr: None,
            to_cidr: None,
            action: Action::Deny,
            priority: 5,
            not_before: None,
            not_after: None,
            owner: None,
        },
    ];
    let f = Flow {
        src: "198.19.0.1".parse().unwrap(),
        dst: "198.19.0.2".parse().unwrap(),
        proto: 6,
        src_port: 1,
        dst_port: 2,
    };
    let t = Table::compile(Arc::new(doc(rules.clone())), 1, None).unwrap();
    let (a, b) = (
        t.tenant_by_name("a").unwrap(),
        t.tenant_by_name("b").unwrap(),
    );
    let v = t.verdict(a, b, &f, T0 * NS);
    assert!(!v.allow);
    assert_eq!(v.rule, Some(1));
    rules[0].priority = 6;
    let t = Table::compile(Arc::new(doc(rules)), 1, None).unwrap();
    assert_eq!(
        t.verdict(a, b, &f, T0 * NS),
        policy::Decision {
            allow: true,
            rule: Some(0)
        }
    );
    // Default: intra allowed, cross denied.
    let t = Table::compile(Arc::new(doc(vec![])), 1, None).unwrap();
    assert!(t.verdict(a, a, &f, T0 * NS).allow);
    assert!(!t.verdict(a, b, &f, T0 * NS).allow);
}

/// `base` (compiled from `before`) with one rule change made in place, as `version`, and the
/// document it is for. `kind`: 0 `rule` appended, 1 rule `at` replaced by `rule`, 2 rule `at`
/// removed, 3 `rule` inserted at `at` (before any rule, between two, or at the end); a change that
/// needs a rule there is an append when there is none.
fn rule_change(
    base: &Table,
    before: &policy::Document,
    version: u64,
    (kind, at, rule): (u8, prop::sample::Index, &policy::Rule),
) -> (Table, policy::Document) {
    let mut after = before.clone();
    let n = before.rules.len();
    let change = match kind {
        1 if n > 0 => {
            let i = at.index(n);
            after.rules[i] = rule.clone();
            policy::RuleChange::Replace {
                index: i,
                old: &before.rules[i],
                new: rule,
            }
        }
        2 if n > 0 => {
            let i = at.index(n);
            after.rules.remove(i);
            policy::RuleChange::Remove {
                index: i,
                old: &before.rules[i],
            }
        }
        3 => {
            let i = at.index(n + 1);
            after.rules.insert(i, rule.clone());
            policy::RuleChange::Insert {
                index: i,
                new: rule,
            }
        }
        _ => {
            after.rules.push(rule.clone());
            policy::RuleChange::Append(rule)
        }
    };
    let t = base.with_rule_change(version, change, Arc::new(after.clone()));
    (t, after)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A one-rule change applied incrementally gives the same verdicts and digest as compiling the
    /// changed document from scratch.
    #[test]
    fn incremental_rule_change_equals_full_compile(
        rules in prop::collection::vec(arb_rule(), 0..10),
        new_rule in arb_rule(),
        at in any::<prop::sample::Index>(),
        kind in 0..4u8,
        probes in prop::collection::vec((0..4usize, 0..4usize, arb_flow(), -3i64..4, -1i64..2), 1..30),
    ) {
        let before = doc(rules);
        let t1 = Table::compile(Arc::new(before.clone()), 1, None).unwrap();
        let (t_inc, after) = rule_change(&t1, &before, 2, (kind, at, &new_rule));
        let t_full = Table::compile(Arc::new(after.clone()), 2, Some(&t1)).unwrap();
        prop_assert_eq!(t_inc.digest(), t_full.digest());
        prop_assert_eq!(t_full.digest(), policy::digest(&after));
        for (s, t, flow, dt, ns) in probes {
            let now = (T0 + dt * 100) * NS + ns;
            let si = t_full.tenant_by_name(TENANTS[s]).unwrap();
            let ti = t_full.tenant_by_name(TENANTS[t]).unwrap();
            prop_assert_eq!(t_inc.verdict(si, ti, &flow, now), t_full.verdict(si, ti, &flow, now));
            prop_assert_eq!(t_inc.may_reach(si, ti, now), t_full.may_reach(si, ti, now));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Endpoint lookups in the flat tables equal a plain map of (address space, address), IPv4 and
    /// IPv6, with tenants of different spaces holding the same addresses.
    #[test]
    fn endpoint_lookup_equals_reference(
        eps in prop::collection::vec((0..4usize, 0u8..6, any::<bool>(), 0u8..4), 0..24),
        probes in prop::collection::vec((0..4usize, 0u8..6, any::<bool>()), 1..40),
    ) {
        let mut d = doc(vec![]);
        d.gateway.underlay_ip6 = Some("2001:2::fe".parse().unwrap());
        // a, b share the default space; c and d each have their own: overlapping addresses.
        d.tenants[2].address_space = Some("c".into());
        d.tenants[3].address_space = Some("d".into());
        let space = |t: usize| d.tenants[t].space().to_string();
        let ip = |k: u8, v6: bool| -> IpAddr {
            if v6 { format!("2001:2::{}", k + 1) } else { format!("198.19.0.{}", k + 1) }.parse().unwrap()
        };
        let mut reference = std::collections::HashMap::new();
        for (t, k, v6, vt) in eps {
            let key = (space(t), ip(k, v6));
            if reference.contains_key(&key) {
                continue;
            }
            let vtep: IpAddr = if vt == 3 { "2001:2::1:1".parse().unwrap() } else { format!("198.18.0.{}", vt + 1).parse().unwrap() };
            let mac: vtep::Mac = format!("02:00:00:00:{:02x}:{:02x}", t, k).parse().unwrap();
            reference.insert(key, (TENANTS[t], vtep, mac));
            d.endpoints.push(Endpoint { tenant: TENANTS[t].into(), ip: ip(k, v6), mac, vtep, vni: 1 });
        }
        let table = Table::compile(Arc::new(d.clone()), 1, None).unwrap();
        for (t, k, v6, ) in probes {
            let ti = table.tenant_by_name(TENANTS[t]).unwrap();
            let got = table.endpoint(ti, ip(k, v6));
            let want = reference.get(&(space(t), ip(k, v6)));
            match (got, want) {
                (None, None) => {}
                (Some(e), Some((owner, vtep, mac))) => {
                    prop_assert_eq!(table.tenant(e.tenant).name.as_str(), *owner);
                    prop_assert_eq!(e.vtep, *vtep);
                    prop_assert_eq!(e.mac, *mac);
                    prop_assert_eq!(e.vni, 1);
                    prop_assert_eq!(e.egress, IdentityMode::Gbp);
                    prop_assert_eq!(table.vtep_ip(e.vtep_idx), *vtep);
                }
                (g, w) => prop_assert!(false, "{:?} vs {:?}", g, w),
            }
        }
    }
}

/// `table` gives the same verdicts and reachability as `reference` for every probe.
fn same_verdicts(
    table: &Table,
    reference: &Table,
    probes: &[(usize, usize, Flow, i64, i64)],
) -> Result<(), TestCaseError> {
    for (s, t, flow, dt, ns) in probes {
        let now = (T0 + dt * 100) * NS + ns;
        let si = reference.tenant_by_name(TENANTS[*s]).unwrap();
        let ti = reference.tenant_by_name(TENANTS[*t]).unwrap();
        prop_assert_eq!(
            table.verdict(si, ti, flow, now),
            reference.verdict(si, ti, flow, now)
        );
        prop_assert_eq!(
            table.may_reach(si, ti, now),
            reference.may_reach(si, ti, now)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Versions made by one-rule changes share their rule arena and pair map with the versions they
    /// came from: a chain of changes, a second change made from an older version (a branch, which
    /// must not write over what the first appended), and every older version read again afterwards
    /// all give the verdicts and digest of their own documents compiled from scratch.
    #[test]
    fn chained_and_branching_rule_changes_leave_every_version_intact(
        rules in prop::collection::vec(arb_rule(), 0..8),
        changes in prop::collection::vec((arb_rule(), any::<prop::sample::Index>(), 0..4u8, 0..3usize), 1..8),
        probes in prop::collection::vec((0..4usize, 0..4usize, arb_flow(), -3i64..4, -1i64..2), 1..20),
    ) {
        let first = doc(rules);
        let mut versions = vec![(Table::compile(Arc::new(first.clone()), 1, None).unwrap(), first)];
        for (n, (rule, at, kind, back)) in changes.into_iter().enumerate() {
            // Build on the newest version, or (a branch) on one a little older.
            let from = versions.len() - 1 - back.min(versions.len() - 1);
            let (base, before) = (&versions[from].0, &versions[from].1);
            let next = rule_change(base, before, 2 + n as u64, (kind, at, &rule));
            versions.push(next);
        }
        for (table, d) in &versions {
            let full = Table::compile(Arc::new(d.clone()), table.version(), None).unwrap();
            prop_assert_eq!(table.digest(), full.digest());
            same_verdicts(table, &full, &probes)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A long chain of one-rule changes — rules inserted and removed in the middle of the list, so
    /// that compiled rules keep ids that are no longer their list index, and enough of them for the
    /// rule set to be compacted (and its ids renumbered) on the way — reports every verdict's rule
    /// by its list index and gives the digest of the document compiled from scratch, at every
    /// tenth version and at the end.
    #[test]
    fn a_long_chain_of_mid_list_changes_reports_list_indexes(
        rules in prop::collection::vec(arb_rule(), 0..8),
        changes in prop::collection::vec((arb_rule(), any::<prop::sample::Index>(), 0..4u8), 100..200),
        probes in prop::collection::vec((0..4usize, 0..4usize, arb_flow(), -3i64..4, -1i64..2), 1..20),
    ) {
        let mut d = doc(rules);
        let mut table = Table::compile(Arc::new(d.clone()), 1, None).unwrap();
        let last = changes.len() - 1;
        for (n, (rule, at, kind)) in changes.into_iter().enumerate() {
            // Every other change an insertion or a removal (removals of an empty list append).
            let kind = if n % 2 == 0 { kind } else { 2 + kind % 2 };
            (table, d) = rule_change(&table, &d, 2 + n as u64, (kind, at, &rule));
            if n % 10 == 9 || n == last {
                let full = Table::compile(Arc::new(d.clone()), table.version(), None).unwrap();
                prop_assert_eq!(table.digest(), full.digest());
                same_verdicts(&table, &full, &probes)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A rule looked up by name through the table's name index is found at its list index, along
    /// a chain of one-rule changes (appends, replacements that keep or change the name, insertions
    /// and removals mid-list, through compactions) from a table whose index was made first; a name
    /// no rule has is not found.
    #[test]
    fn rules_are_found_by_name_along_a_chain_of_changes(
        rules in prop::collection::vec(arb_rule(), 0..8),
        changes in prop::collection::vec((arb_rule(), any::<prop::sample::Index>(), 0..4u8, any::<bool>()), 1..150),
    ) {
        let named = |r: policy::Rule, n: String| policy::Rule { name: Some(n), ..r };
        let mut d = doc(rules.into_iter().enumerate().map(|(k, r)| named(r, format!("r{k}"))).collect());
        let mut table = Table::compile(Arc::new(d.clone()), 1, None).unwrap();
        prop_assert_eq!(table.rule_index_by_name("nobody"), None);
        for (n, (rule, at, kind, rename)) in changes.into_iter().enumerate() {
            // A replacement keeps its rule's name unless `rename`.
            let name = match kind {
                1 if !rename && !d.rules.is_empty() => d.rules[at.index(d.rules.len())].name.clone().unwrap(),
                _ => format!("n{n}"),
            };
            (table, d) = rule_change(&table, &d, 2 + n as u64, (kind, at, &named(rule, name)));
            for (i, r) in d.rules.iter().enumerate() {
                prop_assert_eq!(table.rule_index_by_name(r.name.as_deref().unwrap()), Some(i));
            }
            prop_assert_eq!(table.rule_index_by_name("nobody"), None);
        }
    }
}
