//! Parsing one frame: the outer overlay headers and the inner frame (`parse_overlay` + `parse_inner`).

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use synth::{self, Params};

fn parse(c: &mut Criterion) {
    let w = synth::generate(&Params {
        flows: 64,
        frames: 64,
        ..Params::default()
    })
    .expect("synth");
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    // One TCP frame on the GBP segment and one UDP frame, each 64-byte inner.
    let tcp = w
        .frames
        .iter()
        .find(|f| f.data[50 + 23] == 6 && f.data[42] & 0x80 != 0)
        .expect("a gbp tcp frame");
    let udp = w.frames.iter().find(|f| f.data[50 + 23] == 17);
    for (name, f) in [("gbp_tcp_64", Some(tcp)), ("udp_64", udp)] {
        let Some(f) = f else { continue };
        let data = f.data.as_slice();
        g.bench_function(name, |b| {
            b.iter(|| {
                let ov = vtep::parse_overlay(black_box(data), 4789).expect("overlay");
                let inner = vtep::parse_inner(&data[ov.inner_off..ov.inner_off + ov.inner_len])
                    .expect("inner");
                black_box((ov, inner))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
