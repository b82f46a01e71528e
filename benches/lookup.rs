//! One frame's worth of table lookups (segment, tenant by id, anti-spoofing, endpoint, verdict) at
//! 10, 10k and 1M tenants. Keys come from the synthetic workload's frames and rotate every iteration,
//! so caches see many entries, as they would under real traffic.

mod common;

use common::{setup, SCALES};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use policy::IdentityMode;
use std::net::IpAddr;
use std::sync::OnceLock;
use vtep::{parse_inner, parse_overlay, Flow, InnerKind};

struct Key {
    vni: u32,
    group: Option<u16>,
    src_vtep: IpAddr,
    flow: Flow,
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    for (label, t, e, r) in SCALES {
        // Built on first use, so a filter that skips this scale skips its set-up too.
        let cell: OnceLock<(common::Setup, Vec<Key>)> = OnceLock::new();
        let get = || {
            cell.get_or_init(|| {
                let s = setup(label, t, e, r);
                let keys = s
                    .frames
                    .iter()
                    .map(|f| {
                        let ov = parse_overlay(&f.data, 4789).unwrap();
                        let inner = parse_inner(&f.data[ov.inner_off..]).unwrap();
                        let InnerKind::Ip(flow) = inner.kind else {
                            panic!("synth frames are IP")
                        };
                        Key {
                            vni: ov.vni,
                            group: ov.group,
                            src_vtep: ov.src_ip,
                            flow,
                        }
                    })
                    .collect();
                (s, keys)
            })
        };
        g.bench_function(label, |b| {
            let (s, keys) = get();
            let table = &s.table;
            let now = s.now;
            let mut i = 0usize;
            b.iter(|| {
                let k = &keys[i % keys.len()];
                i = i.wrapping_add(1);
                let seg = table.segment(black_box(k.vni)).expect("segment");
                let tenant = match seg.mode {
                    IdentityMode::Vni => seg.tenant,
                    _ => k.group.and_then(|g| table.tenant_by_id(u32::from(g))),
                }
                .expect("tenant");
                let ok = table.vtep_allowed(tenant, k.src_vtep);
                let ep = table.endpoint(tenant, k.flow.dst).expect("endpoint");
                let d = table.verdict(tenant, ep.tenant, &k.flow, now);
                black_box((ok, ep.vni, d))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
