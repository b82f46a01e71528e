//! Property test: a table onboarding tenants and segments in place (`Table::with_addition`),
//! updating and removing tenants and segments in place (`Table::with_tenant_edit`,
//! `with_segment_edit`), interleaved with endpoint and rule changes in place, answers identity, anti-spoofing, endpoint
//! and verdict queries as a whole compile of the same document does, with the same digest; an
//! addition that would not validate it refuses, and a rule's in-place check (`Table::check_rule`)
//! finds the issues the whole validation finds.

use policy::{
    Action, Addition, Document, Endpoint, EndpointChange, FlowKey, IdentityMode, Rule, RuleChange,
    Segment, SegmentEdit, Table, Tenant, TenantEdit,
};
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::Arc;

const BASE: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 1
identity = "gbp"

[[segment]]
vni = 100
identity = "vni"
tenant = "a"

[[tenant]]
name = "a"
id = 10
address_space = "shared"

[[tenant]]
name = "wide"
id = 70000

[[endpoint]]
tenant = "a"
ip = "198.19.0.1"
mac = "02:00:00:00:00:01"
vtep = "198.18.0.1"
vni = 100
"#;

const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "*", ""];
const IDS: [u32; 7] = [10, 20, 30, 0, 70001, 4000, 5000];
const SPACES: [Option<&str>; 3] = [None, Some("shared"), Some("other")];
const VTEPS: [&str; 3] = ["198.18.0.1", "198.18.0.2", "198.18.0.9"];
const VNIS: [u32; 5] = [1, 100, 200, 300, 0x0100_0000];
const IPS: [&str; 3] = ["198.19.0.1", "198.19.0.2", "198.19.0.3"];

#[derive(Debug, Clone)]
enum Op {
    Tenant(usize, usize, usize, Option<Vec<usize>>),
    Segment(usize, u8, usize),
    Endpoint(usize, usize, usize, usize),
    Rule(usize, usize, usize),
    /// Tenant `NAMES[n]` (when it exists) given id `IDS[i]`, VTEPs, and another address space.
    TenantUpdate(usize, usize, Option<Vec<usize>>, bool),
    TenantRemove(usize),
    /// The segment on `VNIS[v]` (when there is one) given identity `m` and tenant `NAMES[t]`.
    SegmentUpdate(usize, u8, usize),
    SegmentRemove(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..7usize, 0..7usize, 0..3usize, prop::option::of(prop::collection::vec(0..3usize, 0..3)))
            .prop_map(|(n, i, s, v)| Op::Tenant(n, i, s, v)),
        3 => (0..5usize, 0..4u8, 0..7usize).prop_map(|(v, m, t)| Op::Segment(v, m, t)),
        2 => (0..7usize, 0..3usize, 0..3usize, 0..5usize).prop_map(|(t, i, v, n)| Op::Endpoint(t, i, v, n)),
        2 => (0..7usize, 0..7usize, 0..2usize).prop_map(|(f, t, p)| Op::Rule(f, t, p)),
        2 => (0..5usize, 0..7usize, prop::option::of(prop::collection::vec(0..3usize, 0..3)), prop::bool::weighted(0.1))
            .prop_map(|(n, i, v, s)| Op::TenantUpdate(n, i, v, s)),
        1 => (0..5usize).prop_map(Op::TenantRemove),
        2 => (0..5usize, 0..4u8, 0..7usize).prop_map(|(v, m, t)| Op::SegmentUpdate(v, m, t)),
        1 => (0..5usize).prop_map(Op::SegmentRemove),
    ]
}

fn same_answers(inc: &Table, full: &Table) -> Result<(), TestCaseError> {
    prop_assert_eq!(inc.digest(), full.digest());
    prop_assert_eq!(inc.digest(), policy::digest(full.document()));
    let name = |t: &Table, i: Option<u32>| i.map(|i| t.tenant(i).name.to_string());
    for n in NAMES {
        let (i, f) = (inc.tenant_by_name(n), full.tenant_by_name(n));
        prop_assert_eq!(name(inc, i), name(full, f));
        let (Some(i), Some(f)) = (i, f) else { continue };
        let (ei, ef) = (inc.tenant(i), full.tenant(f));
        prop_assert_eq!((ei.id, ei.live, ei.any_vtep), (ef.id, ef.live, ef.any_vtep));
        for v in VTEPS {
            let v: IpAddr = v.parse().unwrap();
            prop_assert_eq!(
                inc.vtep_allowed(i, v),
                full.vtep_allowed(f, v),
                "{} {}",
                n,
                v
            );
        }
        // Address spaces are numbered differently, but the same tenants share them.
        for m in NAMES {
            if let (Some(j), Some(g)) = (inc.tenant_by_name(m), full.tenant_by_name(m)) {
                prop_assert_eq!(
                    inc.tenant(i).space == inc.tenant(j).space,
                    full.tenant(f).space == full.tenant(g).space
                );
                // Verdicts between them, through pair and wildcard buckets alike.
                for port in [22u16, 80] {
                    let k = FlowKey::v4(0xc613_0001, 0xc613_0002, 6, 40000, port);
                    let (di, df) = (inc.decide(i, j, &k, 0), full.decide(f, g, &k, 0));
                    prop_assert_eq!(
                        (di.allow, di.rule),
                        (df.allow, df.rule),
                        "{} -> {} :{}",
                        n,
                        m,
                        port
                    );
                }
            }
        }
        for ip in IPS {
            let ip: IpAddr = ip.parse().unwrap();
            let (a, b) = (inc.endpoint(i, ip), full.endpoint(f, ip));
            prop_assert_eq!(
                a.map(|e| (name(inc, Some(e.tenant)), e.vtep, e.vni, e.mac)),
                b.map(|e| (name(full, Some(e.tenant)), e.vtep, e.vni, e.mac))
            );
        }
    }
    for id in IDS {
        prop_assert_eq!(
            name(inc, inc.tenant_by_id(id)),
            name(full, full.tenant_by_id(id))
        );
    }
    for vni in VNIS {
        let (a, b) = (inc.segment(vni), full.segment(vni));
        prop_assert_eq!(a.map(|s| s.mode), b.map(|s| s.mode));
        prop_assert_eq!(
            a.and_then(|s| name(inc, s.tenant)),
            b.and_then(|s| name(full, s.tenant))
        );
        // The identity a `vni` segment gives its frames: may this VTEP send on it?
        for v in VTEPS {
            let v: IpAddr = v.parse().unwrap();
            prop_assert_eq!(
                inc.vtep_allowed_ident(inc.seg(vni).ident(), inc.vtep_index(v)),
                full.vtep_allowed_ident(full.seg(vni).ident(), full.vtep_index(v)),
                "segment {} from {}",
                vni,
                v
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn additions_in_place_equal_a_whole_compile(ops in prop::collection::vec(arb_op(), 1..20)) {
        let base = Document::from_toml(BASE, "base.toml").unwrap();
        let mut table = Table::compile(Arc::new(base), 1, None).unwrap();
        // Names whose slots a removal left dead: adding them again revives the slot in a whole
        // compile, by design.
        let mut removed = std::collections::HashSet::new();
        for (k, op) in ops.into_iter().enumerate() {
            let version = k as u64 + 2;
            let cur = table.document().clone();
            let mut doc = (*cur).clone();
            match &op {
                Op::Tenant(n, i, s, v) => doc.tenants.push(Tenant {
                    name: NAMES[*n].into(),
                    id: IDS[*i],
                    vteps: v.as_ref().map(|v| v.iter().map(|j| VTEPS[*j].parse().unwrap()).collect()),
                    address_space: SPACES[*s].map(Into::into),
                }),
                Op::Segment(v, m, t) => doc.segments.push(Segment {
                    vni: VNIS[*v],
                    identity: [IdentityMode::Vni, IdentityMode::Gbp, IdentityMode::Vlan, IdentityMode::Vni][*m as usize],
                    tenant: (*m == 0 || *m == 3 && *t == 6).then(|| NAMES[*t].to_string()),
                }),
                Op::Endpoint(t, i, v, n) => doc.endpoints.push(Endpoint {
                    tenant: NAMES[*t].into(),
                    ip: IPS[*i].parse().unwrap(),
                    mac: "02:00:00:00:00:0b".parse().unwrap(),
                    vtep: VTEPS[*v].parse().unwrap(),
                    vni: VNIS[*n],
                }),
                Op::Rule(f, t, p) => doc.rules.push(Rule {
                    name: None,
                    from: NAMES[*f].into(),
                    to: NAMES[*t].into(),
                    proto: Some(policy::Proto::Tcp),
                    ports: Some(["22", "80"][*p].into()),
                    from_cidr: None,
                    to_cidr: None,
                    action: if *p == 0 { Action::Deny } else { Action::Allow },
                    priority: k as i32,
                    not_before: None,
                    not_after: None,
                    owner: None,
                }),
                Op::TenantUpdate(n, i, v, other) => {
                    let Some(t) = doc.tenants.iter_mut().find(|t| *t.name == *NAMES[*n]) else { continue };
                    t.id = IDS[*i];
                    t.vteps = v.as_ref().map(|v| v.iter().map(|j| VTEPS[*j].parse().unwrap()).collect());
                    if *other {
                        t.address_space = Some(if t.space() == "other" { "shared" } else { "other" }.into());
                    }
                }
                Op::SegmentUpdate(v, m, t) => {
                    let Some(seg) = doc.segments.iter_mut().find(|s| s.vni == VNIS[*v]) else { continue };
                    seg.identity = [IdentityMode::Vni, IdentityMode::Gbp, IdentityMode::Vlan, IdentityMode::Vni][*m as usize];
                    seg.tenant = (*m == 0 || *m == 3 && *t == 6).then(|| NAMES[*t].to_string());
                }
                Op::SegmentRemove(v) => {
                    let before = doc.segments.len();
                    doc.segments.retain(|s| s.vni != VNIS[*v]);
                    if doc.segments.len() == before {
                        continue;
                    }
                }
                Op::TenantRemove(n) => {
                    let before = doc.tenants.len();
                    doc.tenants.retain(|t| *t.name != *NAMES[*n]);
                    if doc.tenants.len() == before {
                        continue;
                    }
                }
            }
            let doc = Arc::new(doc);
            let valid = doc.validate().is_empty();
            let inc = match &op {
                Op::Tenant(..) => table.with_addition(version, Addition::Tenant(doc.tenants.last().unwrap()), doc.clone()),
                Op::Segment(..) => table.with_addition(version, Addition::Segment(doc.segments.last().unwrap()), doc.clone()),
                Op::Endpoint(..) => table.with_endpoint_change(
                    version,
                    EndpointChange { old: None, new: doc.endpoints.last() },
                    doc.clone(),
                ),
                Op::TenantUpdate(n, ..) => {
                    let old = cur.tenants.iter().find(|t| *t.name == *NAMES[*n]).unwrap();
                    let new = doc.tenants.iter().find(|t| *t.name == *NAMES[*n]).unwrap();
                    table.with_tenant_edit(version, TenantEdit::Update { old, new }, doc.clone())
                }
                Op::TenantRemove(n) => {
                    let old = cur.tenants.iter().find(|t| *t.name == *NAMES[*n]).unwrap();
                    table.with_tenant_edit(version, TenantEdit::Remove(old), doc.clone())
                }
                Op::SegmentUpdate(v, ..) => {
                    let old = cur.segments.iter().find(|s| s.vni == VNIS[*v]).unwrap();
                    let new = doc.segments.iter().find(|s| s.vni == VNIS[*v]).unwrap();
                    table.with_segment_edit(version, SegmentEdit::Update { old, new }, doc.clone())
                }
                Op::SegmentRemove(v) => {
                    let old = cur.segments.iter().find(|s| s.vni == VNIS[*v]).unwrap();
                    table.with_segment_edit(version, SegmentEdit::Remove(old), doc.clone())
                }
                Op::Rule(..) => {
                    // The table's document is valid: what the appended rule brings is all the
                    // whole validation finds, and the in-place check finds the same.
                    let r = doc.rules.last().unwrap();
                    let issues = table.check_rule(doc.rules.len() - 1, r);
                    prop_assert_eq!(&issues, &doc.validate(), "{:?}", r);
                    if !issues.is_empty() {
                        None
                    } else {
                        Some(table.with_rule_change(version, RuleChange::Append(r), doc.clone()))
                    }
                }
            };
            if !valid {
                prop_assert!(inc.is_none(), "an invalid change was made in place: {:?} {:?}", op, doc.validate());
                continue;
            }
            let full = Table::compile(doc.clone(), version, Some(&table)).unwrap();
            // The base has a wide id, so every valid addition is made in place.
            let inc = match inc {
                Some(t) => t,
                // An endpoint on a GBP segment while an id is wide: whole compile, by design.
                None if matches!(op, Op::Endpoint(_, _, _, n)
                    if full.segment(VNIS[n]).map(|s| s.mode) == Some(IdentityMode::Gbp)) =>
                {
                    table = full;
                    continue;
                }
                // A segment with endpoints on it: whole compile, by design.
                None if matches!(op, Op::SegmentUpdate(v, ..) | Op::SegmentRemove(v)
                    if doc.endpoints.iter().any(|e| e.vni == VNIS[v])) =>
                {
                    table = full;
                    continue;
                }
                None if matches!(op, Op::Tenant(n, ..) if removed.contains(&n)) => {
                    table = full;
                    continue;
                }
                // Another address space (endpoints rekeyed), or an id wider than 16 bits (the
                // identity-width check of every rule): whole compile, by design.
                None if matches!(&op, Op::TenantUpdate(n, i, _, other)
                    if *other || (IDS[*i] != table.tenant(table.tenant_by_name(NAMES[*n]).unwrap()).id
                        && IDS[*i] > 0xffff)) =>
                {
                    table = full;
                    continue;
                }
                None => panic!("a valid {op:?} is made in place"),
            };
            prop_assert_eq!(inc.version(), version);
            same_answers(&inc, &full)?;
            if let Op::TenantRemove(n) = op {
                removed.insert(n);
            }
            table = inc;
        }
    }
}

/// A tenant with an endpoint on a VLAN segment cannot take an id above 4094 (its tag must hold
/// it): the edit is not made in place, and the whole compile names the endpoint. Without such an
/// endpoint the same id is made in place.
#[test]
fn an_id_a_vlan_tag_cannot_hold_is_refused() {
    let base = Document::from_toml(
        &format!(
            "{BASE}\n[[segment]]\nvni = 2\nidentity = \"vlan\"\n\n[[endpoint]]\ntenant = \"a\"\nip = \"198.19.0.2\"\nmac = \"02:00:00:00:00:02\"\nvtep = \"198.18.0.1\"\nvni = 2\n"
        ),
        "vlan.toml",
    )
    .unwrap();
    let table = Table::compile(Arc::new(base), 1, None).unwrap();
    let edit = |doc: &Document, id: u32| {
        let mut next = doc.clone();
        next.tenants
            .iter_mut()
            .find(|t| *t.name == *"a")
            .unwrap()
            .id = id;
        let next = Arc::new(next);
        let (old, new) = (
            doc.tenants.iter().find(|t| *t.name == *"a").unwrap(),
            next.tenants.iter().find(|t| *t.name == *"a").unwrap(),
        );
        let inc = table.with_tenant_edit(2, TenantEdit::Update { old, new }, next.clone());
        (inc, next)
    };
    let doc = table.document().clone();
    let (inc, next) = edit(&doc, 5000);
    assert!(inc.is_none());
    let err = Table::compile(next, 2, Some(&table))
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpoint[1].vni"), "{err}");
    let (inc, next) = edit(&doc, 4000);
    let inc = inc.expect("an id a tag holds is made in place");
    assert_eq!(inc.digest(), policy::digest(&next));
    assert_eq!(inc.tenant_by_id(4000), inc.tenant_by_name("a"));
    assert_eq!(inc.tenant_by_id(10), None);
}
