//! Where an onboarding's time goes at scale: each of `tenant.add`, `tenant.update`, `segment.add`,
//! `segment.remove` and `tenant.remove` timed as its document edit and its table change in place.
//! `cargo run --release -p synth --example tenant_edit_phases -- TENANTS ENDPOINTS [ROUNDS]`
use std::sync::Arc;
use std::time::Instant;

/// A change made in place: the table, the new version, the document before and after.
type Apply<'a> = dyn Fn(&policy::Table, u64, &policy::Document, Arc<policy::Document>) -> Option<policy::Table>
    + 'a;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let a: Vec<u32> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("a number"))
        .collect();
    let tenants = a.first().copied().unwrap_or(1_000_000);
    let endpoints = a.get(1).copied().unwrap_or(tenants);
    let rounds = a.get(2).copied().unwrap_or(3);
    let mut p = synth::Params::scale(tenants, endpoints, 1000);
    p.flows = 16;
    p.frames = 16;
    let w = synth::generate(&p).expect("workload");
    let mut doc = Arc::new(w.doc);
    let t = Instant::now();
    let mut table = Arc::new(policy::Table::compile(doc.clone(), 1, None).expect("compiles"));
    eprintln!(
        "{tenants} tenants, {endpoints} endpoints: whole compile {:.0} ms",
        ms(t.elapsed())
    );
    let max_id = doc.tenants.iter().map(|t| t.id).max().unwrap_or(0);
    let max_vni = doc.segments.iter().map(|s| s.vni).max().unwrap_or(0);
    let mut version = 1;
    for r in 0..rounds {
        let name = format!("onboarded{r}");
        let (id, vni) = (max_id + 1 + r, max_vni + 1 + r);
        let tenant: policy::Tenant =
            serde_json::from_value(serde_json::json!({"name": name, "id": id})).unwrap();
        let pinned: policy::Tenant = serde_json::from_value(
            serde_json::json!({"name": name, "id": id, "vteps": ["198.18.0.1"]}),
        )
        .unwrap();
        let segment: policy::Segment = serde_json::from_value(
            serde_json::json!({"vni": vni, "identity": "vni", "tenant": name}),
        )
        .unwrap();
        let mut line = format!("round {r}:");
        let mut step = |what: &str, edit: &dyn Fn(&mut policy::Document), apply: &Apply<'_>| {
            version += 1;
            let t0 = Instant::now();
            let mut d = (*doc).clone();
            edit(&mut d);
            let d = Arc::new(d);
            let t1 = Instant::now();
            let next = apply(&table, version, &doc, d.clone()).expect("made in place");
            let t2 = Instant::now();
            line += &format!(
                " {what} doc {:.2} table {:.2} ms;",
                ms(t1 - t0),
                ms(t2 - t1)
            );
            (doc, table) = (d, Arc::new(next));
        };
        step(
            "tenant.add",
            &|d| d.tenants.push(tenant.clone()),
            &|t, v, _, d| {
                t.with_addition(v, policy::Addition::Tenant(d.tenants.last()?), d.clone())
            },
        );
        step(
            "tenant.update",
            &|d| *d.tenants.find_mut(|x| x.name == pinned.name).unwrap() = pinned.clone(),
            &|t, v, old, d| {
                let o = old.tenants.iter().find(|x| x.name == pinned.name)?;
                let n = d.tenants.iter().find(|x| x.name == pinned.name)?;
                t.with_tenant_edit(v, policy::TenantEdit::Update { old: o, new: n }, d.clone())
            },
        );
        step(
            "segment.add",
            &|d| d.segments.push(segment.clone()),
            &|t, v, _, d| {
                t.with_addition(v, policy::Addition::Segment(d.segments.last()?), d.clone())
            },
        );
        step(
            "segment.remove",
            &|d| d.segments.retain(|s| s.vni != vni),
            &|t, v, old, d| {
                let s = old.segments.iter().find(|s| s.vni == vni)?;
                t.with_segment_edit(v, policy::SegmentEdit::Remove(s), d.clone())
            },
        );
        step(
            "tenant.remove",
            &|d| d.tenants.retain(|x| x.name != pinned.name),
            &|t, v, old, d| {
                let o = old.tenants.iter().find(|x| x.name == pinned.name)?;
                t.with_tenant_edit(v, policy::TenantEdit::Remove(o), d.clone())
            },
        );
        eprintln!("{line}");
    }
}
