//! A tenant's `vteps` list names the only VTEPs allowed to send for it, so each of its endpoints
//! must sit behind one of them: `Document::validate` refuses an endpoint behind another VTEP
//! (naming the endpoint, its VTEP and the tenant), and the in-place paths — an endpoint added or
//! changed (`Table::with_endpoint_change`), a tenant's list changed (`Table::with_tenant_edit`) —
//! decline what it refuses, so the whole compile names it.

use policy::{ConfigError, Document, Endpoint, EndpointChange, Issue, Table, TenantEdit};
use std::sync::Arc;

const BASE: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"
underlay_ip6 = "2001:2::fe"

[[segment]]
vni = 100
identity = "vni"
tenant = "acme"

[[segment]]
vni = 1
identity = "gbp"

[[tenant]]
name = "acme"
id = 10
vteps = ["198.18.0.1", "2001:2::1"]

[[tenant]]
name = "open"
id = 20

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "acme"
ip = "198.19.0.2"
mac = "02:00:00:00:0a:02"
vtep = "2001:2::1"
vni = 1

[[endpoint]]
tenant = "open"
ip = "198.19.1.1"
mac = "02:00:00:00:14:01"
vtep = "198.18.0.77"
vni = 1
"#;

fn endpoint(tenant: &str, ip: &str, vtep: &str) -> Endpoint {
    Endpoint {
        tenant: tenant.into(),
        ip: ip.parse().unwrap(),
        mac: "02:00:00:00:0a:09".parse().unwrap(),
        vtep: vtep.parse().unwrap(),
        vni: if tenant == "acme" { 100 } else { 1 },
    }
}

fn issues(e: ConfigError) -> Vec<Issue> {
    match e {
        ConfigError::Invalid { issues, .. } => issues,
        e => panic!("not a validation error: {e}"),
    }
}

/// The whole validation: an endpoint behind a VTEP its tenant does not list is an issue at
/// `endpoint[i].vtep` (with its line, from a file) naming the endpoint, its VTEP and the tenant's
/// list; a tenant without a list takes any VTEP.
#[test]
fn validate_refuses_an_endpoint_behind_a_vtep_its_tenant_does_not_list() {
    let base = Document::from_toml(BASE, "base.toml").expect("the base is valid");
    assert!(base.validate().is_empty());

    let text = format!(
        "{BASE}\n[[endpoint]]\ntenant = \"acme\"\nip = \"198.19.0.9\"\nmac = \"02:00:00:00:0a:09\"\nvtep = \"198.18.0.9\"\nvni = 100\n"
    );
    let found = issues(Document::from_toml(&text, "t.toml").unwrap_err());
    assert_eq!(found.len(), 1, "{found:?}");
    let i = &found[0];
    assert_eq!(i.path, "endpoint[3].vtep");
    assert_eq!(
        i.line,
        Some(
            text.lines()
                .position(|l| l == "vtep = \"198.18.0.9\"")
                .unwrap()
                + 1
        )
    );
    assert!(
        i.message.starts_with(
            "endpoint 198.19.0.9 of tenant \"acme\" is behind VTEP 198.18.0.9, which is not in \
             the tenant's vteps [198.18.0.1, 2001:2::1]"
        ),
        "{}",
        i.message
    );

    // Either family, by the address listed.
    let mut doc = base.clone();
    doc.endpoints[1].vtep = "198.18.0.1".parse().unwrap();
    assert!(doc.validate().is_empty(), "{:?}", doc.validate());
    doc.endpoints[0].vtep = "2001:2::2".parse().unwrap();
    let found = doc.validate();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "endpoint[0].vtep");

    // A list that leaves out an endpoint's VTEP (an empty one too) names every endpoint left out.
    let mut doc = base.clone();
    doc.tenants[0].vteps = Some(vec![].into());
    let paths: Vec<String> = doc.validate().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["endpoint[0].vtep", "endpoint[1].vtep"]);
}

/// An endpoint added, or moved, behind a VTEP its tenant does not list is not made in place: the
/// whole compile refuses it with the validation's issue. Within the list, or for a tenant without
/// one, it is made in place, as the whole compile makes it.
#[test]
fn an_endpoint_changed_in_place_is_held_to_its_tenants_vteps() {
    let base = Arc::new(Document::from_toml(BASE, "base.toml").unwrap());
    let table = Table::compile(base.clone(), 1, None).unwrap();
    let change = |old: Option<usize>, new: Endpoint| {
        let mut doc = (*base).clone();
        let at = match old {
            Some(i) => {
                doc.endpoints[i] = new;
                i
            }
            None => {
                doc.endpoints.push(new);
                doc.endpoints.len() - 1
            }
        };
        let doc = Arc::new(doc);
        let inc = table.with_endpoint_change(
            2,
            EndpointChange {
                old: old.map(|i| &base.endpoints[i]),
                new: Some(&doc.endpoints[at]),
            },
            doc.clone(),
        );
        (inc, doc, at)
    };
    for (old, new) in [
        // Added behind a VTEP the table knows (the open tenant's), and behind a new one.
        (None, endpoint("acme", "198.19.0.9", "198.18.0.77")),
        (None, endpoint("acme", "198.19.0.9", "198.18.0.99")),
        // Moved out of the list.
        (Some(0), endpoint("acme", "198.19.0.1", "198.18.0.77")),
    ] {
        let (inc, doc, at) = change(old, new.clone());
        assert!(inc.is_none(), "{new:?} was made in place");
        let found = issues(Table::compile(doc, 2, Some(&table)).err().unwrap());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, format!("endpoint[{at}].vtep"));
        assert!(found[0].message.contains(&new.vtep.to_string()));
    }
    for (old, new) in [
        (None, endpoint("acme", "198.19.0.9", "2001:2::1")),
        (Some(0), endpoint("acme", "198.19.0.1", "2001:2::1")),
        (None, endpoint("open", "198.19.1.9", "198.18.0.99")),
    ] {
        let (inc, doc, _) = change(old, new.clone());
        let inc = inc.unwrap_or_else(|| panic!("{new:?} was not made in place"));
        let full = Table::compile(doc, 2, Some(&table)).unwrap();
        assert_eq!(inc.digest(), full.digest());
    }
}

/// A tenant.update made in place that leaves one of its endpoints' VTEPs out of the list (a
/// narrower list, another list, a first list) is declined, and the whole compile names the
/// endpoint; a list that keeps every endpoint's VTEP is made in place.
#[test]
fn a_tenants_vteps_changed_in_place_must_keep_its_endpoints() {
    let base = Arc::new(Document::from_toml(BASE, "base.toml").unwrap());
    let table = Table::compile(base.clone(), 1, None).unwrap();
    let update = |t: usize, vteps: Option<Vec<&str>>| {
        let mut doc = (*base).clone();
        doc.tenants[t].vteps = vteps.map(|v| v.iter().map(|ip| ip.parse().unwrap()).collect());
        let doc = Arc::new(doc);
        let inc = table.with_tenant_edit(
            2,
            TenantEdit::Update {
                old: &base.tenants[t],
                new: &doc.tenants[t],
            },
            doc.clone(),
        );
        (inc, doc)
    };
    for (t, vteps, left_out) in [
        (0, vec!["198.18.0.1"], "endpoint[1].vtep"),
        (0, vec!["198.18.0.5", "2001:2::1"], "endpoint[0].vtep"),
        (1, vec!["198.18.0.5"], "endpoint[2].vtep"),
    ] {
        let (inc, doc) = update(t, Some(vteps.clone()));
        assert!(inc.is_none(), "{vteps:?} was made in place");
        let found = issues(Table::compile(doc, 2, Some(&table)).err().unwrap());
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, [left_out], "{vteps:?}");
    }
    for (t, vteps) in [
        (0, Some(vec!["2001:2::1", "198.18.0.1", "198.18.0.5"])),
        (0, None),
        (1, Some(vec!["198.18.0.77"])),
    ] {
        let (inc, doc) = update(t, vteps.clone());
        let inc = inc.unwrap_or_else(|| panic!("{vteps:?} was not made in place"));
        let full = Table::compile(doc, 2, Some(&table)).unwrap();
        assert_eq!(inc.digest(), full.digest());
        for e in full.document().endpoints.iter() {
            let t = inc.tenant_by_name(&e.tenant).unwrap();
            assert!(inc.vtep_allowed(t, e.vtep), "{e:?}");
        }
    }
}
