//! Worker::process over a sequence of arbitrary frames with the fixtures' policy (tracked replies:
//! the frames share one worker's flow table, fragment memory and decision cache, one second apart):
//! never panics, every frame gets exactly one disposition, and whatever is transmitted is a
//! well-formed VXLAN frame again; and a worker without a decision cache (every frame on the full
//! path, with a flow table of its own) gives every frame the same outcome and bytes. Input: frames each preceded by a 2-byte big-endian length; an input
//! whose first length does not fit is one frame (so single captured frames seed it).
#![no_main]

use datapath::{Disposition, FlowTable, Frame, Outcome, Timeouts, Worker, HEADROOM};
use libfuzzer_sys::fuzz_target;
use policy::{Document, Table};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use vtep::{parse_inner, parse_overlay, InnerKind};

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let doc = Document::from_toml(
        include_str!("../../pcap-fixtures/fixtures.toml"),
        "pcap-fixtures/fixtures.toml",
    )
    .expect("fixtures.toml is valid");
    Table::compile(Arc::new(doc), 1, None).expect("fixtures.toml compiles")
});

/// 2026-06-01T00:00:00Z, the fixtures' clock, and 2026-10-01, when other validity windows apply (ns).
const NOWS: [i64; 2] = [1_780_272_000_000_000_000, 1_790_812_800_000_000_000];

/// The frames of an input (see the module's doc).
fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if n > rest.len() - 2 {
            break;
        }
        out.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
        if out.len() == 16 {
            break;
        }
    }
    if out.is_empty() {
        out.push(data);
    }
    out
}

/// Ones'-complement sum folded to 16 bits.
fn sum16(parts: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for p in parts {
        let mut c = p.chunks_exact(2);
        for w in &mut c {
            s += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [x] = c.remainder() {
            s += u64::from(*x) << 8;
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fuzz_target!(|input: &[u8]| {
    let table = &*TABLE;
    for base in NOWS {
        let mut w =
            Worker::with_flows_and_cache(Arc::new(FlowTable::new(64, Timeouts::default())), 64);
        let mut full =
            Worker::with_flows_and_cache(Arc::new(FlowTable::new(64, Timeouts::default())), 0);
        for (k, data) in frames(input).into_iter().enumerate() {
            let now = base + k as i64 * 1_000_000_000;
            // Room after the frame too: a neighbour advertisement may be longer than its solicitation.
            let mut buf = vec![0u8; HEADROOM + data.len() + 64];
            buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
            let before = w.counters.clone();
            let mut outcomes = [Outcome::default()];
            let (start, len) = {
                let mut frames = [Frame::new(&mut buf, HEADROOM, data.len())];
                w.process(table, &mut frames, &mut outcomes, now);
                (frames[0].start, frames[0].len)
            };
            let o = outcomes[0];
            let mut reference = vec![0u8; buf.len()];
            reference[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
            let mut full_out = [Outcome::default()];
            let mut frames = [Frame::new(&mut reference, HEADROOM, data.len())];
            full.process(table, &mut frames, &mut full_out, now);
            assert_eq!(o, full_out[0], "the decision cache changes no outcome");
            assert_eq!(
                (start, len, &buf[start..start + len]),
                (
                    frames[0].start,
                    frames[0].len,
                    &frames[0].buf[frames[0].start..frames[0].start + frames[0].len]
                ),
                "the decision cache changes no byte"
            );
            let c = &w.counters;
            assert_eq!(c.frames, before.frames + 1);
            assert_eq!(
                c.forwarded + c.arp_replied + c.nd_replied + c.total_dropped(),
                before.forwarded
                    + before.arp_replied
                    + before.nd_replied
                    + before.total_dropped()
                    + 1
            );
            assert_ne!(o.disposition, Disposition::Pending);
            assert!(start + len <= buf.len(), "frame out of its buffer");
            if !o.disposition.transmits() {
                assert_eq!(
                    (start, len),
                    (HEADROOM, data.len()),
                    "a dropped frame does not move"
                );
                continue;
            }
            assert!(
                o.tenant.is_some(),
                "a transmitted frame has a source tenant"
            );
            let out = &buf[start..start + len];
            let ov =
                parse_overlay(out, table.udp_port()).expect("a transmitted frame parses again");
            assert_eq!(
                ov.inner_off + ov.inner_len,
                out.len(),
                "no bytes after the inner frame"
            );
            assert!(ov.src_port >= 49152, "entropy port in the dynamic range");
            assert!(
                table.segment(ov.vni).is_some(),
                "egress VNI is a configured segment"
            );
            let ip_len = out.len() - 14;
            assert!(
                ip_len <= usize::from(table.mtu()),
                "outer IP packet within the MTU"
            );
            match (ov.src_ip, ov.dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(_)) => {
                    assert_eq!(IpAddr::V4(s), table.underlay_src(&ov.dst_ip).unwrap());
                    assert_eq!(&out[40..42], &[0, 0], "UDP checksum 0 over IPv4");
                    assert_eq!(out[20] & 0x40, 0x40, "DF");
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let udp = &out[54..];
                    let l = (udp.len() as u32).to_be_bytes();
                    assert_eq!(
                        sum16(&[&s.octets(), &d.octets(), &l, &[0, 0, 0, 17], udp]),
                        0xffff,
                        "UDP checksum over IPv6"
                    );
                }
                _ => panic!("mixed families"),
            }
            if ov.group.is_some() {
                assert_eq!(
                    out[ov.inner_off - 7],
                    0x08,
                    "GBP: only the A flag in byte 1"
                );
            }
            let inner = parse_inner(&out[ov.inner_off..]).expect("transmitted inner frame parses");
            match o.disposition {
                Disposition::Forward => assert!(matches!(inner.kind, InnerKind::Ip(_))),
                Disposition::ArpReply => match inner.kind {
                    InnerKind::Arp(a) => {
                        assert_eq!(a.op, 2, "an ARP reply");
                        assert_eq!(ov.vni, parse_overlay(data, table.udp_port()).unwrap().vni);
                    }
                    k => panic!("ARP reply carries {k:?}"),
                },
                Disposition::NdReply => {
                    assert!(
                        matches!(inner.kind, InnerKind::Ip(_)),
                        "an advertisement is IPv6"
                    );
                    assert_eq!(ov.vni, parse_overlay(data, table.udp_port()).unwrap().vni);
                }
                _ => unreachable!(),
            }
        }
    }
});
