//! Rewriting one frame: `set_inner_vlan` + `encapsulate`, as the pipeline does after a verdict.

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use datapath::HEADROOM;
use std::net::IpAddr;
use synth::{self, Params};
use vtep::{encapsulate, set_inner_vlan, Mac, Underlay};

fn rewrite(c: &mut Criterion) {
    let w = synth::generate(&Params {
        flows: 16,
        frames: 16,
        ..Params::default()
    })
    .expect("synth");
    let frame = &w.frames[0].data;
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let ov = vtep::parse_overlay(frame, 4789).expect("overlay");
    let inner_start = HEADROOM + ov.inner_off;
    let u = Underlay {
        src_mac: ov.dst_mac,
        dst_mac: Mac([0x02, 0x18, 0, 0, 0, 7]),
        src_ip: IpAddr::V4(synth::GATEWAY_IP),
        dst_ip: "198.18.1.7".parse().unwrap(),
        src_port: 50000,
        dst_port: 4789,
        vni: 1,
        group: Some(42),
        ttl: 64,
    };
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(1));
    // Untagged in, untagged out (GBP or VNI egress): set_inner_vlan is a check, encapsulate writes
    // the 50 outer bytes in place. Idempotent, so the same buffer serves every iteration.
    g.bench_function("untagged_gbp", |b| {
        b.iter(|| {
            let (s, l) =
                set_inner_vlan(&mut buf, black_box(inner_start), ov.inner_len, None).expect("vlan");
            black_box(encapsulate(&mut buf, s, l, black_box(&u)).expect("encap"))
        })
    });
    // Untagged in, VLAN egress: a tag is pushed (12 MAC bytes move). The frame is restored from a
    // copy first (a 114-byte memcpy, included).
    let orig = buf.clone();
    let vni_u = Underlay { group: None, ..u };
    g.bench_function("push_tag_vni", |b| {
        b.iter(|| {
            buf.copy_from_slice(&orig);
            let (s, l) = set_inner_vlan(&mut buf, black_box(inner_start), ov.inner_len, Some(100))
                .expect("vlan");
            black_box(encapsulate(&mut buf, s, l, black_box(&vni_u)).expect("encap"))
        })
    });
    g.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
