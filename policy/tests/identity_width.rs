//! The identity-width rule (a tenant whose id is wider than GBP's 16-bit group id must not reach a
//! tenant with an endpoint on a GBP segment, either way) decided for one rule in place
//! (`Table::check_rule`) as `Document::validate` decides it for the whole document — same verdict,
//! same issue — and kept right by the in-place endpoint changes that move an endpoint off GBP.

use policy::{Action, Document, EndpointChange, Rule, RuleChange, Table};
use std::sync::Arc;

/// `g` has an endpoint on GBP segment 1 (and one on its `vni` segment); `n` has none on GBP;
/// `wide` and `wider` have ids over 16 bits.
const DOC: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 1
identity = "gbp"

[[segment]]
vni = 100
identity = "vni"
tenant = "g"

[[segment]]
vni = 200
identity = "vni"
tenant = "n"

[[tenant]]
name = "g"
id = 10

[[tenant]]
name = "n"
id = 20

[[tenant]]
name = "wide"
id = 70000

[[tenant]]
name = "wider"
id = 80000

[[endpoint]]
tenant = "g"
ip = "198.19.0.1"
mac = "02:00:00:00:00:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "g"
ip = "198.19.0.2"
mac = "02:00:00:00:00:02"
vtep = "198.18.0.1"
vni = 1

[[endpoint]]
tenant = "n"
ip = "198.19.1.1"
mac = "02:00:00:00:01:01"
vtep = "198.18.0.2"
vni = 200
"#;

fn rule(from: &str, to: &str, action: Action) -> Rule {
    Rule {
        name: Some(
            format!(
                "r-{}-{}-{action:?}",
                from.replace('*', "any"),
                to.replace('*', "any")
            )
            .to_lowercase(),
        ),
        from: from.into(),
        to: to.into(),
        proto: None,
        ports: None,
        from_cidr: None,
        to_cidr: None,
        action,
        priority: 1,
        not_before: None,
        not_after: None,
        owner: None,
    }
}

/// Every pair of parties (tenants and `*`), allow and deny: a rule checked against the running
/// table gives exactly the issues the whole document with the rule appended gives.
#[test]
fn the_in_place_check_and_the_whole_validation_agree() {
    let base = Document::from_toml(DOC, "w.toml").unwrap();
    let table = Table::compile(Arc::new(base.clone()), 1, None).unwrap();
    let parties = ["g", "n", "wide", "wider", "*"];
    let mut refused = 0;
    for from in parties {
        for to in parties {
            for action in [Action::Allow, Action::Deny] {
                let r = rule(from, to, action);
                let mut doc = base.clone();
                doc.rules.push(r.clone());
                let whole = doc.validate();
                let in_place = table.check_rule(doc.rules.len() - 1, &r);
                assert_eq!(in_place, whole, "{from} -> {to} {action:?}");
                refused += usize::from(!whole.is_empty());
            }
        }
    }
    // Allows only: g with wide, wider and `*` (both ways), wide and wider with `*` (both ways),
    // and `*` with `*`.
    assert_eq!(refused, 11);
    let r = rule("wide", "g", Action::Allow);
    let issues = table.check_rule(0, &r);
    assert_eq!(
        issues[0].message,
        "tenant \"wide\" (id 70000) could send to tenant \"g\"'s endpoints on GBP segment 1, whose group id holds 16 bits"
    );
    // Replies: g's allow toward wide is refused alike.
    assert!(!table
        .check_rule(0, &rule("g", "wide", Action::Allow))
        .is_empty());
    assert!(table
        .check_rule(0, &rule("n", "wide", Action::Allow))
        .is_empty());
}

/// Without a wide tenant nothing is refused, and the in-place check does not look for GBP
/// endpoints at all.
#[test]
fn without_a_wide_id_every_pair_passes() {
    let mut base = Document::from_toml(DOC, "w.toml").unwrap();
    base.tenants.retain(|t| t.id <= 0xffff);
    let table = Table::compile(Arc::new(base), 1, None).unwrap();
    for (from, to) in [("g", "n"), ("*", "g"), ("g", "*"), ("*", "*")] {
        assert!(table
            .check_rule(0, &rule(from, to, Action::Allow))
            .is_empty());
    }
}

/// What the in-place check knows of GBP endpoints follows the endpoint changes made in place: once
/// g's endpoint leaves the GBP segment (removed, or moved to its `vni` segment), wide may reach
/// g; the rule made in place then compiles whole to the same table.
#[test]
fn an_endpoint_leaving_gbp_in_place_lets_a_wide_tenant_reach_its_tenant() {
    let base = Arc::new(Document::from_toml(DOC, "w.toml").unwrap());
    let table = Table::compile(base.clone(), 1, None).unwrap();
    let r = rule("wide", "g", Action::Allow);
    assert!(!table.check_rule(base.rules.len(), &r).is_empty());
    let on_gbp = base.endpoints.iter().find(|e| e.vni == 1).unwrap().clone();

    // Removed.
    let mut removed = (*base).clone();
    removed.endpoints.retain(|e| e.vni != 1);
    let removed = Arc::new(removed);
    let t = table
        .with_endpoint_change(
            2,
            EndpointChange {
                old: Some(&on_gbp),
                new: None,
            },
            removed.clone(),
        )
        .expect("a removal is made in place");
    assert_eq!(t.check_rule(removed.rules.len(), &r), Vec::new());

    // Moved to g's `vni` segment (an update).
    let mut moved = (*base).clone();
    let mut e = on_gbp.clone();
    e.vni = 100;
    *moved
        .endpoints
        .iter_mut()
        .find(|x| x.ip == on_gbp.ip)
        .unwrap() = e.clone();
    let moved = Arc::new(moved);
    let t = table
        .with_endpoint_change(
            2,
            EndpointChange {
                old: Some(&on_gbp),
                new: Some(&e),
            },
            moved.clone(),
        )
        .expect("a move off GBP is made in place");
    assert_eq!(t.check_rule(moved.rules.len(), &r), Vec::new());
    let mut with_rule = (*moved).clone();
    with_rule.rules.push(r.clone());
    let with_rule = Arc::new(with_rule);
    let inc = t.with_rule_change(3, RuleChange::Append(&r), with_rule.clone());
    let whole = Table::compile(with_rule, 3, None).expect("valid as a whole");
    assert_eq!(inc.digest(), whole.digest());

    // A GBP endpoint for g now (wide reaches g) is not made in place, and is refused whole.
    let mut back = (**inc.document()).clone();
    let mut e2 = on_gbp.clone();
    e2.ip = "198.19.0.3".parse().unwrap();
    back.endpoints.push(e2.clone());
    let back = Arc::new(back);
    assert!(inc
        .with_endpoint_change(
            4,
            EndpointChange {
                old: None,
                new: Some(&e2),
            },
            back.clone(),
        )
        .is_none());
    let err = Table::compile(back, 4, Some(&inc)).unwrap_err().to_string();
    assert!(
        err.contains("\"wide\"") && err.contains("GBP segment 1"),
        "{err}"
    );
}
