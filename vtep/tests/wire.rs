//! Byte-exact wire tests of the vtep crate against reference packets built with etherparse (and, where
//! noted, against bytes written out by hand). Every test compares whole byte strings or every field, so
//! a broken implementation fails it.

use etherparse as ep;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vtep::{
    encapsulate, parse_inner, parse_overlay, set_inner_vlan, EncapError, Flow, Inner, InnerKind,
    Mac, Overlay, OverlayError, Underlay, WireError, OUTER_LEN_V4, OUTER_LEN_V6,
};

// ---------------------------------------------------------------------------------------------------
// Helpers: reference builders and an independent checksum
// ---------------------------------------------------------------------------------------------------

const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const VTEP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW4: [u8; 4] = [198, 18, 0, 254];
const VTEP4: [u8; 4] = [198, 18, 0, 1];
const GW6: &str = "2001:2::fe";
const VTEP6: &str = "2001:2::1";

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// RFC 1071 one's-complement sum, written out the slow and obvious way (independent of vtep::checksum).
fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
    let mut all = Vec::new();
    for c in chunks {
        all.extend_from_slice(c);
    }
    if all.len() % 2 == 1 {
        all.push(0);
    }
    let mut s: u64 = 0;
    for w in all.chunks(2) {
        s += u64::from(w[0]) << 8 | u64::from(w[1]);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The UDP-over-IPv6 checksum (RFC 8200 §8.1) of `udp` whose checksum field is zero; 0 is sent as 0xffff.
fn udp6_checksum(src: &[u8; 16], dst: &[u8; 16], udp: &[u8]) -> u16 {
    let len = (udp.len() as u32).to_be_bytes();
    let c = !ones_complement_sum(&[src, dst, &len, &[0, 0, 0, 17], udp]);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

fn vxlan_bytes(vni: u32, group: Option<u16>) -> [u8; 8] {
    let v = vni.to_be_bytes();
    match group {
        Some(g) => {
            let g = g.to_be_bytes();
            [0x88, 0x08, g[0], g[1], v[1], v[2], v[3], 0]
        }
        None => [0x08, 0, 0, 0, v[1], v[2], v[3], 0],
    }
}

fn underlay_v4(vni: u32, group: Option<u16>) -> Underlay {
    Underlay {
        src_mac: Mac(GW_MAC),
        dst_mac: Mac(VTEP_MAC),
        src_ip: IpAddr::V4(Ipv4Addr::from(GW4)),
        dst_ip: IpAddr::V4(Ipv4Addr::from(VTEP4)),
        src_port: 0xc123,
        dst_port: 4789,
        vni,
        group,
        ttl: 64,
    }
}

fn underlay_v6(vni: u32, group: Option<u16>) -> Underlay {
    Underlay {
        src_ip: IpAddr::V6(GW6.parse().unwrap()),
        dst_ip: IpAddr::V6(VTEP6.parse().unwrap()),
        ..underlay_v4(vni, group)
    }
}

/// A reference outer frame built from etherparse headers: Ethernet, IPv4 (checksum computed by
/// etherparse, DF, id 0) or IPv6, UDP (checksum 0 over IPv4, computed by etherparse over IPv6), VXLAN.
fn reference_outer(u: &Underlay, inner: &[u8]) -> Vec<u8> {
    let mut payload = vxlan_bytes(u.vni, u.group).to_vec();
    payload.extend_from_slice(inner);
    let mut out = Vec::new();
    match (u.src_ip, u.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(
                &ep::Ethernet2Header {
                    source: u.src_mac.0,
                    destination: u.dst_mac.0,
                    ether_type: ep::EtherType::IPV4,
                }
                .to_bytes(),
            );
            let mut ip = ep::Ipv4Header::new(
                (8 + payload.len()) as u16,
                u.ttl,
                ep::IpNumber::UDP,
                s.octets(),
                d.octets(),
            )
            .unwrap();
            assert!(ip.dont_fragment && ip.identification == 0);
            ip.header_checksum = ip.calc_header_checksum();
            out.extend_from_slice(&ip.to_bytes());
            let udp = ep::UdpHeader {
                source_port: u.src_port,
                destination_port: u.dst_port,
                length: (8 + payload.len()) as u16,
                checksum: 0,
            };
            out.extend_from_slice(&udp.to_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(
                &ep::Ethernet2Header {
                    source: u.src_mac.0,
                    destination: u.dst_mac.0,
                    ether_type: ep::EtherType::IPV6,
                }
                .to_bytes(),
            );
            let ip = ep::Ipv6Header {
                traffic_class: 0,
                flow_label: ep::Ipv6FlowLabel::ZERO,
                payload_length: (8 + payload.len()) as u16,
                next_header: ep::IpNumber::UDP,
                hop_limit: u.ttl,
                source: s.octets(),
                destination: d.octets(),
            };
            out.extend_from_slice(&ip.to_bytes());
            let udp =
                ep::UdpHeader::with_ipv6_checksum(u.src_port, u.dst_port, &ip, &payload).unwrap();
            out.extend_from_slice(&udp.to_bytes());
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(&payload);
    out
}

/// Runs `encapsulate` on `inner` placed after `headroom` filler bytes (and followed by filler), and
/// returns (the whole buffer after the call, start returned, inner start).
fn run_encap(u: &Underlay, inner: &[u8], headroom: usize) -> (Vec<u8>, usize, usize) {
    let mut buf = vec![0xa5u8; headroom];
    buf.extend_from_slice(inner);
    buf.extend_from_slice(&[0x5a; 7]);
    let start = encapsulate(&mut buf, headroom, inner.len(), u).expect("encapsulate");
    (buf, start, headroom)
}

fn encap_bytes(u: &Underlay, inner: &[u8]) -> Vec<u8> {
    let (buf, start, is) = run_encap(u, inner, 96);
    buf[start..is + inner.len()].to_vec()
}

fn tcp4_inner(payload_len: usize) -> Vec<u8> {
    let b = ep::PacketBuilder::ethernet2([2, 0, 0, 0, 0x0a, 1], [2, 0, 0, 0, 0x14, 1])
        .ipv4([198, 19, 0, 1], [198, 19, 1, 1], 64)
        .tcp(40000, 443, 0x0102_0304, 65535);
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

fn udp6_inner(payload_len: usize) -> Vec<u8> {
    let b = ep::PacketBuilder::ethernet2([2, 0, 0, 0, 0x0a, 1], [2, 0, 0, 0, 0x46, 1])
        .ipv6(v6("2001:2:0:2::1"), v6("2001:2:0:1::1"), 64)
        .udp(5353, 53);
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

// ---------------------------------------------------------------------------------------------------
// encapsulate
// ---------------------------------------------------------------------------------------------------

const SMALL_INNER: [u8; 20] = [
    2, 0, 0, 0, 0x0a, 1, 2, 0, 0, 0, 0x0a, 2, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01,
];

#[test]
fn encap_v4_gbp_hand_written_bytes() {
    let u = underlay_v4(100, Some(10));
    #[rustfmt::skip]
    let mut expected = vec![
        // Ethernet: dst, src, IPv4
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0xfe, 0x08, 0x00,
        // IPv4: v4 IHL5, tos 0, total 56, id 0, DF, TTL 64, UDP, checksum ad91, 198.18.0.254 -> 198.18.0.1
        0x45, 0x00, 0x00, 0x38, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xad, 0x91,
        198, 18, 0, 254, 198, 18, 0, 1,
        // UDP: c123 -> 4789 (12b5), length 36, checksum 0
        0xc1, 0x23, 0x12, 0xb5, 0x00, 0x24, 0x00, 0x00,
        // VXLAN-GBP: G|I, A, group 10, VNI 100, reserved
        0x88, 0x08, 0x00, 0x0a, 0x00, 0x00, 0x64, 0x00,
    ];
    expected.extend_from_slice(&SMALL_INNER);
    assert_eq!(encap_bytes(&u, &SMALL_INNER), expected);
}

#[test]
fn encap_v4_plain_hand_written_bytes() {
    let u = underlay_v4(100, None);
    let got = encap_bytes(&u, &SMALL_INNER);
    // Only the VXLAN header differs from the GBP case; the IP checksum is the same.
    assert_eq!(&got[42..50], &[0x08, 0, 0, 0, 0, 0, 0x64, 0]);
    assert_eq!(&got[24..26], &[0xad, 0x91]);
    assert_eq!(&got[50..], &SMALL_INNER);
}

#[test]
fn encap_v6_gbp_hand_written_bytes() {
    let u = Underlay {
        vni: 1,
        group: Some(0x0a0b),
        ..underlay_v6(0, None)
    };
    #[rustfmt::skip]
    let mut expected = vec![
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0xfe, 0x86, 0xdd,
        // IPv6: version 6, tc 0, flow 0, payload 36, next UDP, hop limit 64
        0x60, 0, 0, 0, 0x00, 0x24, 0x11, 0x40,
        0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
        0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        // UDP with the checksum computed by a separate script (python, RFC 8200 pseudo-header)
        0xc1, 0x23, 0x12, 0xb5, 0x00, 0x24, 0x9a, 0x13,
        0x88, 0x08, 0x0a, 0x0b, 0x00, 0x00, 0x01, 0x00,
    ];
    expected.extend_from_slice(&SMALL_INNER);
    assert_eq!(encap_bytes(&u, &SMALL_INNER), expected);
}

#[test]
fn encap_v4_matches_etherparse_reference() {
    for group in [None, Some(0), Some(10), Some(0xffff), Some(0x1234)] {
        for vni in [0u32, 1, 100, 0x12_3456, 0xff_ffff] {
            for inner in [
                Vec::new(),
                SMALL_INNER.to_vec(),
                tcp4_inner(0),
                tcp4_inner(1401),
            ] {
                let u = underlay_v4(vni, group);
                let got = encap_bytes(&u, &inner);
                assert_eq!(
                    got,
                    reference_outer(&u, &inner),
                    "vni {vni} group {group:?}"
                );
                assert_eq!(got.len(), OUTER_LEN_V4 + inner.len());
                // Independently of the reference: what a receiver sees.
                let (ip, rest) = ep::Ipv4Header::from_slice(&got[14..]).unwrap();
                assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                assert_eq!(ones_complement_sum(&[&got[14..34]]), 0xffff);
                assert!(ip.dont_fragment && !ip.more_fragments);
                assert_eq!(ip.fragment_offset.value(), 0);
                assert_eq!(ip.identification, 0);
                assert_eq!(ip.time_to_live, 64);
                assert_eq!(ip.protocol, ep::IpNumber::UDP);
                assert_eq!(usize::from(ip.total_len), 20 + 16 + inner.len());
                let (udp, _) = ep::UdpHeader::from_slice(rest).unwrap();
                assert_eq!(udp.checksum, 0, "UDP checksum 0 over IPv4 (RFC 7348)");
                assert_eq!(usize::from(udp.length), 16 + inner.len());
                assert_eq!(&got[42..50], &vxlan_bytes(vni, group));
            }
        }
    }
}

#[test]
fn encap_v6_matches_etherparse_reference_and_checksum() {
    for group in [None, Some(0), Some(20), Some(0xffff)] {
        for vni in [0u32, 1, 300, 0xff_ffff] {
            for inner in [
                Vec::new(),
                vec![0x77],
                SMALL_INNER.to_vec(),
                udp6_inner(3),
                tcp4_inner(1000),
            ] {
                let u = underlay_v6(vni, group);
                let got = encap_bytes(&u, &inner);
                assert_eq!(
                    got,
                    reference_outer(&u, &inner),
                    "vni {vni} group {group:?}"
                );
                assert_eq!(got.len(), OUTER_LEN_V6 + inner.len());
                let (ip, _) = ep::Ipv6Header::from_slice(&got[14..]).unwrap();
                assert_eq!(ip.hop_limit, 64);
                assert_eq!(ip.next_header, ep::IpNumber::UDP);
                assert_eq!(usize::from(ip.payload_length), 16 + inner.len());
                // The checksum verified with the independent implementation.
                let mut udp = got[54..].to_vec();
                let sent = u16::from_be_bytes([udp[6], udp[7]]);
                udp[6] = 0;
                udp[7] = 0;
                assert_eq!(sent, udp6_checksum(&v6(GW6), &v6(VTEP6), &udp));
                assert_ne!(sent, 0, "a UDP checksum over IPv6 is never 0");
                // And a receiver's check: the sum over pseudo-header and datagram is all ones.
                let len = (udp.len() as u32).to_be_bytes();
                assert_eq!(
                    ones_complement_sum(&[&v6(GW6), &v6(VTEP6), &len, &[0, 0, 0, 17], &got[54..]]),
                    0xffff
                );
                assert_eq!(&got[62..70], &vxlan_bytes(vni, group));
            }
        }
    }
}

#[test]
fn encap_v6_checksum_that_computes_to_zero_is_sent_as_ffff() {
    let u = underlay_v6(7, Some(3));
    // Choose the inner frame's last 16-bit word so that the one's-complement sum is 0xffff.
    let mut inner = SMALL_INNER.to_vec();
    let n = inner.len();
    inner[n - 2] = 0;
    inner[n - 1] = 0;
    let mut udp = vec![0xc1, 0x23, 0x12, 0xb5, 0, (16 + n) as u8, 0, 0];
    udp.extend_from_slice(&vxlan_bytes(7, Some(3)));
    udp.extend_from_slice(&inner);
    let len = (udp.len() as u32).to_be_bytes();
    let s = ones_complement_sum(&[&v6(GW6), &v6(VTEP6), &len, &[0, 0, 0, 17], &udp]);
    inner[n - 2..].copy_from_slice(&(!s).to_be_bytes());
    let got = encap_bytes(&u, &inner);
    assert_eq!(&got[60..62], &[0xff, 0xff]);
    assert_eq!(got, reference_outer(&u, &inner));
}

#[test]
fn encap_gbp_header_bytes_exact() {
    for (vni, gid) in [
        (1u32, 1u16),
        (100, 10),
        (0xab_cdef, 0x1234),
        (0xff_ffff, 0xffff),
        (0, 0),
    ] {
        for u in [underlay_v4(vni, Some(gid)), underlay_v6(vni, Some(gid))] {
            let got = encap_bytes(&u, &SMALL_INNER);
            let off = u.outer_len() - 8;
            let g = gid.to_be_bytes();
            let v = vni.to_be_bytes();
            assert_eq!(
                &got[off..off + 8],
                &[0x88, 0x08, g[0], g[1], v[1], v[2], v[3], 0]
            );
        }
    }
}

#[test]
fn encap_vni_above_24_bits_does_not_leak_into_other_fields() {
    let got = encap_bytes(&underlay_v4(0xff00_0064, None), &SMALL_INNER);
    assert_eq!(&got[42..50], &[0x08, 0, 0, 0, 0, 0, 0x64, 0]);
}

#[test]
fn encap_passes_ttl_ports_and_macs_through() {
    let u = Underlay {
        src_mac: Mac([0x02, 1, 2, 3, 4, 5]),
        dst_mac: Mac([0x02, 6, 7, 8, 9, 10]),
        src_port: 65535,
        dst_port: 8472,
        ttl: 1,
        ..underlay_v4(5, None)
    };
    let got = encap_bytes(&u, &SMALL_INNER);
    assert_eq!(got, reference_outer(&u, &SMALL_INNER));
    let u6 = Underlay {
        src_ip: IpAddr::V6(GW6.parse().unwrap()),
        dst_ip: IpAddr::V6(VTEP6.parse().unwrap()),
        ttl: 255,
        ..u
    };
    assert_eq!(
        encap_bytes(&u6, &SMALL_INNER),
        reference_outer(&u6, &SMALL_INNER)
    );
}

#[test]
fn encap_touches_only_the_outer_header_bytes() {
    for u in [underlay_v4(9, Some(1)), underlay_v6(9, None)] {
        let inner = tcp4_inner(33);
        let (buf, start, is) = run_encap(&u, &inner, 200);
        assert_eq!(start, is - u.outer_len());
        assert!(
            buf[..start].iter().all(|&b| b == 0xa5),
            "headroom before the outer headers"
        );
        assert_eq!(&buf[is..is + inner.len()], &inner[..], "inner frame");
        assert!(
            buf[is + inner.len()..].iter().all(|&b| b == 0x5a),
            "bytes after the frame"
        );
    }
}

#[test]
fn encap_headroom_boundaries_and_errors() {
    let inner = SMALL_INNER;
    for (u, outer) in [
        (underlay_v4(1, None), OUTER_LEN_V4),
        (underlay_v6(1, None), OUTER_LEN_V6),
    ] {
        // Exactly enough headroom: the frame starts at 0.
        let mut buf = vec![0u8; outer + inner.len()];
        buf[outer..].copy_from_slice(&inner);
        assert_eq!(encapsulate(&mut buf, outer, inner.len(), &u), Ok(0));
        assert_eq!(buf, reference_outer(&u, &inner));
        // One byte short.
        let mut buf = vec![0u8; outer - 1 + inner.len()];
        assert_eq!(
            encapsulate(&mut buf, outer - 1, inner.len(), &u),
            Err(EncapError::NoHeadroom)
        );
        // Inner frame past the end of the buffer.
        let mut buf = vec![0u8; outer + inner.len()];
        assert_eq!(
            encapsulate(&mut buf, outer, inner.len() + 1, &u),
            Err(EncapError::TooLong)
        );
    }
    let mixed = Underlay {
        dst_ip: IpAddr::V6(VTEP6.parse().unwrap()),
        ..underlay_v4(1, None)
    };
    let mut buf = vec![0u8; 200];
    assert_eq!(
        encapsulate(&mut buf, 100, 20, &mixed),
        Err(EncapError::FamilyMismatch)
    );
    let mixed = Underlay {
        src_ip: IpAddr::V6(GW6.parse().unwrap()),
        ..underlay_v4(1, None)
    };
    assert_eq!(
        encapsulate(&mut buf, 100, 20, &mixed),
        Err(EncapError::FamilyMismatch)
    );
}

#[test]
fn encap_length_field_limits() {
    // IPv4 total length 20 + 8 + 8 + inner must fit 16 bits: 65499 fits exactly, 65500 does not.
    let u = underlay_v4(1, None);
    let mut buf = vec![0u8; OUTER_LEN_V4 + 65500];
    let s = encapsulate(&mut buf, OUTER_LEN_V4, 65499, &u).unwrap();
    assert_eq!(&buf[s + 16..s + 18], &[0xff, 0xff]);
    assert_eq!(&buf[s + 38..s + 40], &(65535u16 - 20).to_be_bytes());
    assert_eq!(
        encapsulate(&mut buf, OUTER_LEN_V4, 65500, &u),
        Err(EncapError::TooLong)
    );
    // IPv6 payload length 8 + 8 + inner must fit 16 bits: 65519 fits, 65520 does not.
    let u = underlay_v6(1, None);
    let mut buf = vec![0u8; OUTER_LEN_V6 + 65520];
    let s = encapsulate(&mut buf, OUTER_LEN_V6, 65519, &u).unwrap();
    assert_eq!(&buf[s + 18..s + 20], &[0xff, 0xff]);
    assert_eq!(&buf[s + 58..s + 60], &[0xff, 0xff]);
    assert_eq!(
        encapsulate(&mut buf, OUTER_LEN_V6, 65520, &u),
        Err(EncapError::TooLong)
    );
}

// ---------------------------------------------------------------------------------------------------
// set_inner_vlan
// ---------------------------------------------------------------------------------------------------

fn tagged_tcp4(pcp: u8, dei: bool, vid: u16, payload_len: usize) -> Vec<u8> {
    let b = ep::PacketBuilder::ethernet2([2, 0, 0, 0, 0x0a, 1], [2, 0, 0, 0, 0x14, 1])
        .vlan(ep::VlanHeader::Single(ep::SingleVlanHeader {
            pcp: ep::VlanPcp::try_new(pcp).unwrap(),
            drop_eligible_indicator: dei,
            vlan_id: ep::VlanId::try_new(vid).unwrap(),
            ether_type: ep::EtherType::IPV4,
        }))
        .ipv4([198, 19, 0, 1], [198, 19, 1, 1], 64)
        .tcp(40000, 443, 0x0102_0304, 65535);
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

/// `frame` placed at `start` in a buffer with filler around it.
fn placed(frame: &[u8], start: usize) -> Vec<u8> {
    let mut buf = vec![0xa5u8; start];
    buf.extend_from_slice(frame);
    buf.extend_from_slice(&[0x5a; 5]);
    buf
}

#[test]
fn vlan_push_is_byte_exact() {
    let untagged = tcp4_inner(10);
    for vid in [1u16, 10, 0x123, 4094] {
        let mut buf = placed(&untagged, 20);
        let (s, l) = set_inner_vlan(&mut buf, 20, untagged.len(), Some(vid)).unwrap();
        assert_eq!((s, l), (16, untagged.len() + 4));
        assert_eq!(
            &buf[s..s + l],
            &tagged_tcp4(0, false, vid, 10)[..],
            "vid {vid}"
        );
        assert!(buf[..16].iter().all(|&b| b == 0xa5));
        assert!(buf[s + l..].iter().all(|&b| b == 0x5a));
        // The hand-written tag bytes, too.
        let t = vid.to_be_bytes();
        assert_eq!(&buf[s + 12..s + 18], &[0x81, 0x00, t[0], t[1], 0x08, 0x00]);
    }
}

#[test]
fn vlan_push_needs_four_bytes_of_headroom() {
    let untagged = tcp4_inner(0);
    let mut buf = placed(&untagged, 3);
    let before = buf.clone();
    assert_eq!(
        set_inner_vlan(&mut buf, 3, untagged.len(), Some(5)),
        Err(EncapError::NoHeadroom)
    );
    assert_eq!(buf, before);
    let mut buf = placed(&untagged, 4);
    assert_eq!(
        set_inner_vlan(&mut buf, 4, untagged.len(), Some(5)),
        Ok((0, untagged.len() + 4))
    );
}

#[test]
fn vlan_rewrite_keeps_pcp_and_dei() {
    for (pcp, dei) in [(0u8, false), (5, true), (7, false), (3, true)] {
        let tagged = tagged_tcp4(pcp, dei, 10, 7);
        let mut buf = placed(&tagged, 8);
        let (s, l) = set_inner_vlan(&mut buf, 8, tagged.len(), Some(20)).unwrap();
        assert_eq!((s, l), (8, tagged.len()));
        assert_eq!(
            &buf[s..s + l],
            &tagged_tcp4(pcp, dei, 20, 7)[..],
            "pcp {pcp} dei {dei}"
        );
        let tci = (u16::from(pcp) << 13) | (u16::from(dei) << 12) | 20;
        assert_eq!(&buf[s + 14..s + 16], &tci.to_be_bytes());
        assert!(buf[..8].iter().all(|&b| b == 0xa5));
        assert!(buf[s + l..].iter().all(|&b| b == 0x5a));
    }
}

#[test]
fn vlan_pop_is_byte_exact() {
    let tagged = tagged_tcp4(5, true, 10, 12);
    let mut buf = placed(&tagged, 6);
    let (s, l) = set_inner_vlan(&mut buf, 6, tagged.len(), None).unwrap();
    assert_eq!((s, l), (10, tagged.len() - 4));
    assert_eq!(&buf[s..s + l], &tcp4_inner(12)[..]);
    assert!(buf[s + l..].iter().all(|&b| b == 0x5a));
    assert!(buf[..6].iter().all(|&b| b == 0xa5));
}

#[test]
fn vlan_none_on_untagged_is_a_no_op() {
    let untagged = tcp4_inner(3);
    let mut buf = placed(&untagged, 0);
    let before = buf.clone();
    assert_eq!(
        set_inner_vlan(&mut buf, 0, untagged.len(), None),
        Ok((0, untagged.len()))
    );
    assert_eq!(buf, before);
}

#[test]
fn vlan_round_trip_push_then_pop() {
    let untagged = udp6_inner(9);
    let mut buf = placed(&untagged, 30);
    let (s, l) = set_inner_vlan(&mut buf, 30, untagged.len(), Some(77)).unwrap();
    let (s, l) = set_inner_vlan(&mut buf, s, l, None).unwrap();
    assert_eq!((s, l), (30, untagged.len()));
    assert_eq!(&buf[s..s + l], &untagged[..]);
}

#[test]
fn vlan_rejects_short_or_out_of_bounds_frames() {
    let mut buf = vec![0u8; 64];
    assert_eq!(
        set_inner_vlan(&mut buf, 10, 13, Some(1)),
        Err(EncapError::TooLong)
    );
    assert_eq!(
        set_inner_vlan(&mut buf, 10, 55, Some(1)),
        Err(EncapError::TooLong)
    );
    // A tagged frame shorter than its tag cannot be rewritten or popped.
    buf[22] = 0x81;
    buf[23] = 0x00;
    assert_eq!(
        set_inner_vlan(&mut buf, 10, 17, Some(1)),
        Err(EncapError::TooLong)
    );
    assert_eq!(
        set_inner_vlan(&mut buf, 10, 17, None),
        Err(EncapError::TooLong)
    );
    assert_eq!(set_inner_vlan(&mut buf, 10, 18, None), Ok((14, 14)));
}

// ---------------------------------------------------------------------------------------------------
// parse_overlay
// ---------------------------------------------------------------------------------------------------

/// An outer VXLAN frame built with etherparse, with every field reachable for corruption.
#[derive(Clone)]
struct Outer {
    eth: ep::Ethernet2Header,
    ip: OuterIp,
    udp: ep::UdpHeader,
    vxlan: [u8; 8],
    inner: Vec<u8>,
    /// Bytes after the IP packet (Ethernet padding).
    trailer: Vec<u8>,
}

#[derive(Clone)]
enum OuterIp {
    V4(ep::Ipv4Header),
    V6(ep::Ipv6Header),
}

impl Outer {
    fn v4(vni: u32, group: Option<u16>, inner: &[u8]) -> Outer {
        let len = (16 + inner.len()) as u16;
        let mut ip = ep::Ipv4Header::new(len, 64, ep::IpNumber::UDP, VTEP4, GW4).unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        Outer {
            eth: ep::Ethernet2Header {
                source: VTEP_MAC,
                destination: GW_MAC,
                ether_type: ep::EtherType::IPV4,
            },
            ip: OuterIp::V4(ip),
            udp: ep::UdpHeader {
                source_port: 51234,
                destination_port: 4789,
                length: len,
                checksum: 0,
            },
            vxlan: vxlan_bytes(vni, group),
            inner: inner.to_vec(),
            trailer: Vec::new(),
        }
    }

    fn v6(vni: u32, group: Option<u16>, inner: &[u8]) -> Outer {
        let len = (16 + inner.len()) as u16;
        let ip = ep::Ipv6Header {
            traffic_class: 0,
            flow_label: ep::Ipv6FlowLabel::try_new(0x12345).unwrap(),
            payload_length: len,
            next_header: ep::IpNumber::UDP,
            hop_limit: 64,
            source: v6(VTEP6),
            destination: v6(GW6),
        };
        let mut payload = vxlan_bytes(vni, group).to_vec();
        payload.extend_from_slice(inner);
        let udp = ep::UdpHeader::with_ipv6_checksum(51234, 4789, &ip, &payload).unwrap();
        Outer {
            eth: ep::Ethernet2Header {
                source: VTEP_MAC,
                destination: GW_MAC,
                ether_type: ep::EtherType::IPV6,
            },
            ip: OuterIp::V6(ip),
            udp,
            vxlan: vxlan_bytes(vni, group),
            inner: inner.to_vec(),
            trailer: Vec::new(),
        }
    }

    fn ip4(&mut self) -> &mut ep::Ipv4Header {
        match &mut self.ip {
            OuterIp::V4(h) => h,
            OuterIp::V6(_) => panic!("not v4"),
        }
    }

    /// Recomputes the IPv4 header checksum after a change.
    fn fix4(mut self) -> Self {
        let h = self.ip4();
        h.header_checksum = h.calc_header_checksum();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = self.eth.to_bytes().to_vec();
        match &self.ip {
            OuterIp::V4(h) => v.extend_from_slice(&h.to_bytes()),
            OuterIp::V6(h) => v.extend_from_slice(&h.to_bytes()),
        }
        v.extend_from_slice(&self.udp.to_bytes());
        v.extend_from_slice(&self.vxlan);
        v.extend_from_slice(&self.inner);
        v.extend_from_slice(&self.trailer);
        v
    }
}

fn malformed(r: Result<Overlay, OverlayError>) -> bool {
    matches!(r, Err(OverlayError::Malformed(_)))
}

fn not_overlay(r: Result<Overlay, OverlayError>) -> bool {
    matches!(r, Err(OverlayError::NotOverlay(_)))
}

#[test]
fn overlay_v4_fields() {
    let inner = tcp4_inner(20);
    for group in [None, Some(0u16), Some(10), Some(0xffff)] {
        let f = Outer::v4(0xab_cdef, group, &inner).bytes();
        let o = parse_overlay(&f, 4789).unwrap();
        assert_eq!(
            o,
            Overlay {
                src_mac: Mac(VTEP_MAC),
                dst_mac: Mac(GW_MAC),
                src_ip: IpAddr::V4(Ipv4Addr::from(VTEP4)),
                dst_ip: IpAddr::V4(Ipv4Addr::from(GW4)),
                src_port: 51234,
                vni: 0xab_cdef,
                group,
                inner_off: 50,
                inner_len: inner.len(),
            }
        );
        assert_eq!(&f[o.inner_off..o.inner_off + o.inner_len], &inner[..]);
    }
}

#[test]
fn overlay_v6_fields() {
    let inner = udp6_inner(31);
    for group in [None, Some(1u16), Some(0x8000)] {
        let f = Outer::v6(7, group, &inner).bytes();
        let o = parse_overlay(&f, 4789).unwrap();
        assert_eq!(
            o,
            Overlay {
                src_mac: Mac(VTEP_MAC),
                dst_mac: Mac(GW_MAC),
                src_ip: IpAddr::V6(VTEP6.parse().unwrap()),
                dst_ip: IpAddr::V6(GW6.parse().unwrap()),
                src_port: 51234,
                vni: 7,
                group,
                inner_off: 70,
                inner_len: inner.len(),
            }
        );
        assert_eq!(&f[70..], &inner[..]);
    }
}

#[test]
fn overlay_udp_port_is_the_one_asked_for() {
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.udp.destination_port = 8472;
    let f = o.bytes();
    assert!(parse_overlay(&f, 8472).is_ok());
    assert!(not_overlay(parse_overlay(&f, 4789)));
}

#[test]
fn overlay_gbp_d_and_a_bits_are_accepted() {
    // PcapPlusPlus' VXLAN-GBP sample: 88 48 00 64 (D and A set), VNI 3000001.
    let mut o = Outer::v4(0, None, &SMALL_INNER);
    o.vxlan = [0x88, 0x48, 0x00, 0x64, 0x2d, 0xc6, 0xc1, 0x00];
    let r = parse_overlay(&o.bytes(), 4789).unwrap();
    assert_eq!((r.vni, r.group), (3_000_001, Some(100)));
}

#[test]
fn overlay_group_ignored_without_g_flag() {
    let mut o = Outer::v4(0, None, &SMALL_INNER);
    o.vxlan = [0x08, 0x48, 0x12, 0x34, 0, 0, 5, 0];
    let r = parse_overlay(&o.bytes(), 4789).unwrap();
    assert_eq!((r.vni, r.group), (5, None));
}

#[test]
fn overlay_ipv4_options_shift_the_inner_frame() {
    let mut o = Outer::v4(3, Some(4), &SMALL_INNER);
    o.ip4().options = [0x94, 0x04, 0x00, 0x00][..].try_into().unwrap(); // router alert
    o.ip4().total_len += 4;
    let f = o.fix4().bytes();
    assert_eq!(f[14], 0x46);
    let r = parse_overlay(&f, 4789).unwrap();
    assert_eq!(
        (r.inner_off, r.inner_len, r.vni, r.group),
        (54, 20, 3, Some(4))
    );
}

#[test]
fn overlay_padding_and_short_udp_length() {
    // Ethernet padding after the IP packet is ignored.
    let mut o = Outer::v4(3, None, &[]);
    o.inner = SMALL_INNER[..14].to_vec();
    o.ip4().total_len = (20 + 16 + 14) as u16;
    o.udp.length = 16 + 14;
    let mut o = o.fix4();
    o.trailer = vec![0; 10];
    let r = parse_overlay(&o.bytes(), 4789).unwrap();
    assert_eq!((r.inner_off, r.inner_len), (50, 14));
    // A UDP length shorter than the IP payload bounds the inner frame.
    let mut o = Outer::v6(3, None, &SMALL_INNER);
    o.udp.length = 16 + 15;
    let r = parse_overlay(&o.bytes(), 4789).unwrap();
    assert_eq!(r.inner_len, 15);
    // UDP length exactly 16: an empty inner frame (not the parser's business to reject).
    let mut o = Outer::v4(3, None, &SMALL_INNER);
    o.udp.length = 16;
    assert_eq!(parse_overlay(&o.bytes(), 4789).unwrap().inner_len, 0);
}

#[test]
fn overlay_truncated_at_every_length_is_malformed() {
    for o in [
        Outer::v4(100, Some(10), &tcp4_inner(5)),
        Outer::v4(100, None, &[]),
        Outer::v6(100, Some(10), &udp6_inner(5)),
        Outer::v6(100, None, &[]),
    ] {
        let f = o.bytes();
        assert!(parse_overlay(&f, 4789).is_ok());
        for n in 0..f.len() {
            let r = parse_overlay(&f[..n], 4789);
            assert!(malformed(r), "length {n} of {}: {r:?}", f.len());
        }
    }
}

#[test]
fn overlay_bad_ipv4_checksum_is_malformed() {
    for delta in [1u16, 0x100, 0x8000] {
        let mut o = Outer::v4(1, None, &SMALL_INNER);
        o.ip4().header_checksum ^= delta;
        assert!(malformed(parse_overlay(&o.bytes(), 4789)));
    }
    // A changed field without a new checksum, too.
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.ip4().time_to_live = 63;
    assert!(malformed(parse_overlay(&o.bytes(), 4789)));
}

#[test]
fn overlay_bad_ipv4_header_fields_are_malformed() {
    let good = Outer::v4(1, None, &SMALL_INNER).bytes();
    let fix = |f: &mut Vec<u8>| {
        f[24] = 0;
        f[25] = 0;
        let hl = usize::from(f[14] & 0x0f) * 4;
        let c = !ones_complement_sum(&[&f[14..14 + hl.max(20)]]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    // version 5
    let mut f = good.clone();
    f[14] = 0x55;
    fix(&mut f);
    assert!(malformed(parse_overlay(&f, 4789)));
    // IHL 4
    let mut f = good.clone();
    f[14] = 0x44;
    fix(&mut f);
    assert!(malformed(parse_overlay(&f, 4789)));
    // total length below the header length
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    fix(&mut f);
    assert!(malformed(parse_overlay(&f, 4789)));
    // total length beyond the frame
    let mut f = good.clone();
    let tl = (f.len() - 14 + 1) as u16;
    f[16..18].copy_from_slice(&tl.to_be_bytes());
    fix(&mut f);
    assert!(malformed(parse_overlay(&f, 4789)));
}

#[test]
fn overlay_wrong_udp_port_is_not_overlay() {
    for port in [0u16, 4788, 4790, 8472, 53] {
        let mut o = Outer::v4(1, None, &SMALL_INNER);
        o.udp.destination_port = port;
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)), "port {port}");
        let mut o = Outer::v6(1, None, &SMALL_INNER);
        o.udp.destination_port = port;
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)), "port {port}");
    }
    // The port is checked before the UDP length.
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.udp.destination_port = 53;
    o.udp.length = 3;
    assert!(not_overlay(parse_overlay(&o.bytes(), 4789)));
}

#[test]
fn overlay_i_flag_unset_is_not_overlay() {
    for vx in [[0u8, 0, 0, 0, 0, 0, 1, 0], [0x80, 0x08, 0, 10, 0, 0, 1, 0]] {
        let mut o = Outer::v4(1, None, &SMALL_INNER);
        o.vxlan = vx;
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)), "{vx:02x?}");
        let mut o = Outer::v6(1, None, &SMALL_INNER);
        o.vxlan = vx;
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)), "{vx:02x?}");
    }
}

#[test]
fn overlay_reserved_bits_are_malformed() {
    // Every flag bit of byte 0 other than G (0x80) and I (0x08), alone, and byte 7 non-zero.
    for bit in [0x40u8, 0x20, 0x10, 0x04, 0x02, 0x01] {
        for base in [0x08u8, 0x88] {
            let mut o = Outer::v4(1, None, &SMALL_INNER);
            o.vxlan[0] = base | bit;
            assert!(
                malformed(parse_overlay(&o.bytes(), 4789)),
                "flags {:02x}",
                base | bit
            );
        }
    }
    for b7 in [1u8, 0x80, 0xff] {
        let mut o = Outer::v4(1, Some(5), &SMALL_INNER);
        o.vxlan[7] = b7;
        assert!(
            malformed(parse_overlay(&o.bytes(), 4789)),
            "byte 7 = {b7:02x}"
        );
    }
}

#[test]
fn overlay_bad_udp_length_is_malformed() {
    // 0 (a GSO super-frame marker, never a valid VXLAN datagram), 8 (no VXLAN header), 15, and one
    // byte more than the IP payload, over both families.
    for mk in [Outer::v4 as fn(u32, Option<u16>, &[u8]) -> Outer, Outer::v6] {
        let o = mk(1, None, &SMALL_INNER);
        let full = o.udp.length;
        for len in [0u16, 1, 8, 15, full + 1, 0xffff] {
            let mut o = o.clone();
            o.udp.length = len;
            assert!(
                malformed(parse_overlay(&o.bytes(), 4789)),
                "UDP length {len}"
            );
        }
    }
}

#[test]
fn overlay_udp_truncated_inside_ip_is_malformed() {
    // IPv4 total length leaves fewer than 8 bytes of UDP although the frame goes on.
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.ip4().total_len = 20 + 7;
    assert!(malformed(parse_overlay(&o.fix4().bytes(), 4789)));
}

#[test]
fn overlay_ipv4_fragments_are_not_overlay() {
    let cases: [(bool, u16); 3] = [(true, 0), (false, 1), (true, 100)];
    for (mf, off) in cases {
        let mut o = Outer::v4(1, None, &SMALL_INNER);
        o.ip4().dont_fragment = false;
        o.ip4().more_fragments = mf;
        o.ip4().fragment_offset = ep::IpFragOffset::try_new(off).unwrap();
        let f = o.fix4().bytes();
        assert!(not_overlay(parse_overlay(&f, 4789)), "MF {mf} offset {off}");
    }
    // DF alone is not a fragment.
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.ip4().dont_fragment = false;
    assert!(parse_overlay(&o.fix4().bytes(), 4789).is_ok());
}

#[test]
fn overlay_not_ip_or_not_udp_is_not_overlay() {
    for et in [
        ep::EtherType::ARP,
        ep::EtherType::VLAN_TAGGED_FRAME,
        ep::EtherType(0x88b5),
    ] {
        let mut o = Outer::v4(1, None, &SMALL_INNER);
        o.eth.ether_type = et;
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)), "{et:?}");
    }
    let mut o = Outer::v4(1, None, &SMALL_INNER);
    o.ip4().protocol = ep::IpNumber::TCP;
    assert!(not_overlay(parse_overlay(&o.fix4().bytes(), 4789)));
    for nh in [ep::IpNumber::TCP, ep::IpNumber::IPV6_HEADER_HOP_BY_HOP] {
        let mut o = Outer::v6(1, None, &SMALL_INNER);
        if let OuterIp::V6(h) = &mut o.ip {
            h.next_header = nh;
        }
        assert!(not_overlay(parse_overlay(&o.bytes(), 4789)));
    }
}

#[test]
fn overlay_ipv6_bad_lengths_are_malformed() {
    for pl in [0u16, (16 + SMALL_INNER.len() + 1) as u16, 0xffff] {
        let mut o = Outer::v6(1, None, &SMALL_INNER);
        if let OuterIp::V6(h) = &mut o.ip {
            h.payload_length = pl;
        }
        assert!(
            malformed(parse_overlay(&o.bytes(), 4789)),
            "payload length {pl}"
        );
    }
    // Version 4 in an IPv6 ethertype.
    let mut f = Outer::v6(1, None, &SMALL_INNER).bytes();
    f[14] = 0x40;
    assert!(malformed(parse_overlay(&f, 4789)));
    // Payload length 7: not even a UDP header.
    let mut o = Outer::v6(1, None, &SMALL_INNER);
    if let OuterIp::V6(h) = &mut o.ip {
        h.payload_length = 7;
    }
    assert!(malformed(parse_overlay(&o.bytes(), 4789)));
}

// ---------------------------------------------------------------------------------------------------
// parse_inner
// ---------------------------------------------------------------------------------------------------

const A_MAC: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
const B_MAC: [u8; 6] = [2, 0, 0, 0, 0x14, 1];

macro_rules! write_pkt {
    ($b:expr, $payload:expr) => {{
        let b = $b;
        let p: &[u8] = $payload;
        let mut v = Vec::with_capacity(b.size(p.len()));
        b.write(&mut v, p).unwrap();
        v
    }};
}

fn flow(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> Flow {
    Flow {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        src_port: sp,
        dst_port: dp,
    }
}

fn ip_inner(frame: &[u8]) -> (Inner, Flow) {
    let i = parse_inner(frame).unwrap();
    match i.kind {
        InnerKind::Ip(f) => (i, f),
        k => panic!("expected IP, got {k:?}"),
    }
}

#[test]
fn inner_ipv4_tcp_udp_icmp() {
    let eth =
        || ep::PacketBuilder::ethernet2(A_MAC, B_MAC).ipv4([198, 19, 0, 1], [198, 19, 1, 1], 64);
    let tcp = write_pkt!(eth().tcp(40000, 443, 1, 1000), b"hello");
    let (i, f) = ip_inner(&tcp);
    assert_eq!(
        (i.dst_mac, i.src_mac, i.tci, i.l3_off),
        (Mac(B_MAC), Mac(A_MAC), None, 14)
    );
    assert_eq!(i.vid(), None);
    assert_eq!(f, flow("198.19.0.1", "198.19.1.1", 6, 40000, 443));
    let udp = write_pkt!(eth().udp(5353, 53), b"q");
    assert_eq!(
        ip_inner(&udp).1,
        flow("198.19.0.1", "198.19.1.1", 17, 5353, 53)
    );
    let icmp = write_pkt!(eth().icmpv4_echo_request(0x1234, 7), b"ping");
    assert_eq!(ip_inner(&icmp).1, flow("198.19.0.1", "198.19.1.1", 1, 0, 0));
}

#[test]
fn inner_ipv6_tcp_udp_icmp() {
    let (s, d) = ("2001:2:0:2::1", "2001:2:0:1::1");
    let eth = || ep::PacketBuilder::ethernet2(A_MAC, B_MAC).ipv6(v6(s), v6(d), 64);
    let tcp = write_pkt!(eth().tcp(50000, 8443, 1, 1000), b"");
    assert_eq!(ip_inner(&tcp).1, flow(s, d, 6, 50000, 8443));
    let udp = write_pkt!(eth().udp(1, 65535), b"xyz");
    assert_eq!(ip_inner(&udp).1, flow(s, d, 17, 1, 65535));
    let icmp = write_pkt!(eth().icmpv6_echo_request(1, 2), b"ping");
    assert_eq!(ip_inner(&icmp).1, flow(s, d, 58, 0, 0));
    assert_eq!(ip_inner(&icmp).0.l3_off, 14);
}

#[test]
fn inner_ipv4_with_options_and_padding() {
    let mut ip =
        ep::Ipv4Header::new(0, 64, ep::IpNumber::TCP, [198, 19, 0, 1], [198, 19, 1, 1]).unwrap();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    let mut f = write_pkt!(
        ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
            .ip(ep::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(1234, 22, 1, 1),
        b""
    );
    assert_eq!(f[14], 0x46);
    f.extend_from_slice(&[0; 6]); // Ethernet padding
    assert_eq!(
        ip_inner(&f).1,
        flow("198.19.0.1", "198.19.1.1", 6, 1234, 22)
    );
}

#[test]
fn inner_ipv4_fragments() {
    let mk = |mf: bool, off: u16| {
        let mut ip =
            ep::Ipv4Header::new(0, 64, ep::IpNumber::UDP, [198, 19, 0, 1], [198, 19, 1, 1])
                .unwrap();
        ip.dont_fragment = false;
        ip.more_fragments = mf;
        ip.fragment_offset = ep::IpFragOffset::try_new(off).unwrap();
        write_pkt!(
            ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
                .ip(ep::IpHeaders::Ipv4(ip, Default::default()))
                .udp(1000, 2000),
            &[0u8; 16]
        )
    };
    // The first fragment carries the ports; later ones do not.
    assert_eq!(
        ip_inner(&mk(true, 0)).1,
        flow("198.19.0.1", "198.19.1.1", 17, 1000, 2000)
    );
    assert_eq!(
        ip_inner(&mk(true, 3)).1,
        flow("198.19.0.1", "198.19.1.1", 17, 0, 0)
    );
    assert_eq!(
        ip_inner(&mk(false, 3)).1,
        flow("198.19.0.1", "198.19.1.1", 17, 0, 0)
    );
}

/// RFC 1858: a TCP first fragment too short for the TCP header, or a TCP fragment at offset 8
/// bytes, is refused by `parse_inner` as by the policy path's parser; longer first fragments and
/// later fragments past the header are not.
#[test]
fn inner_ipv4_tiny_tcp_fragments_are_refused() {
    let mk = |mf: bool, off: u16, payload: usize| {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 7, 0, 0, 64, 6, 0, 0, 198, 19, 0, 1, 198, 19, 1, 1,
        ];
        let tl = (20 + payload) as u16;
        ip[2..4].copy_from_slice(&tl.to_be_bytes());
        let fo = off | if mf { 0x2000 } else { 0 };
        ip[6..8].copy_from_slice(&fo.to_be_bytes());
        let mut f = B_MAC.to_vec();
        f.extend_from_slice(&A_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(ip);
        // TCP ports 1234 → 22, then zeros (flags 0).
        let mut tcp = vec![0x04, 0xd2, 0x00, 0x16];
        tcp.resize(payload, 0);
        f.extend(tcp);
        f
    };
    assert!(
        parse_inner(&mk(true, 0, 8)).is_err(),
        "8-byte first fragment"
    );
    assert!(
        parse_inner(&mk(true, 0, 19)).is_err(),
        "19-byte first fragment"
    );
    assert!(
        parse_inner(&mk(false, 1, 16)).is_err(),
        "fragment at offset 8"
    );
    assert!(
        parse_inner(&mk(true, 1, 16)).is_err(),
        "fragment at offset 8, more to come"
    );
    assert_eq!(
        ip_inner(&mk(true, 0, 24)).1,
        flow("198.19.0.1", "198.19.1.1", 6, 1234, 22)
    );
    assert_eq!(
        ip_inner(&mk(false, 3, 16)).1,
        flow("198.19.0.1", "198.19.1.1", 6, 0, 0)
    );
}

#[test]
fn inner_vlan_tagged() {
    let tagged = tagged_tcp4(5, true, 0x0abc, 4);
    let (i, f) = ip_inner(&tagged);
    assert_eq!(i.tci, Some(0xb000 | 0x0abc));
    assert_eq!(i.vid(), Some(0x0abc));
    assert_eq!(i.l3_off, 18);
    assert_eq!((i.src_mac, i.dst_mac), (Mac(A_MAC), Mac(B_MAC)));
    assert_eq!(f, flow("198.19.0.1", "198.19.1.1", 6, 40000, 443));
    let t6 = write_pkt!(
        ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
            .single_vlan(ep::VlanId::try_new(20).unwrap())
            .ipv6(v6("2001:2::a"), v6("2001:2::b"), 1)
            .udp(7, 8),
        b""
    );
    let (i, f) = ip_inner(&t6);
    assert_eq!((i.tci, i.l3_off), (Some(20), 18));
    assert_eq!(f, flow("2001:2::a", "2001:2::b", 17, 7, 8));
}

fn arp_frame(dst: [u8; 6], op: u16, tag: Option<u16>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&A_MAC);
    if let Some(t) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&t.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&A_MAC);
    f.extend_from_slice(&[198, 19, 0, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[198, 19, 0, 2]);
    f
}

#[test]
fn inner_arp() {
    for (dst, op, tag) in [
        ([0xff; 6], 1u16, None),
        (B_MAC, 1, None),
        ([0xff; 6], 2, Some(0x2005)),
    ] {
        let mut f = arp_frame(dst, op, tag);
        f.extend_from_slice(&[0; 18]); // padding to 60 bytes and more
        let i = parse_inner(&f).unwrap();
        assert_eq!(i.dst_mac, Mac(dst));
        assert_eq!(i.tci, tag);
        assert_eq!(i.l3_off, if tag.is_some() { 18 } else { 14 });
        assert_eq!(
            i.kind,
            InnerKind::Arp(vtep::ArpRequest {
                op,
                sender_mac: Mac(A_MAC),
                sender_ip: Ipv4Addr::new(198, 19, 0, 1),
                target_ip: Ipv4Addr::new(198, 19, 0, 2),
            })
        );
    }
}

#[test]
fn inner_bad_arp_is_an_error() {
    let good = arp_frame([0xff; 6], 1, None);
    for (at, v) in [(15usize, 6u8), (16, 0x86), (18, 8), (19, 16)] {
        let mut f = good.clone();
        f[at] = v;
        assert!(parse_inner(&f).is_err(), "byte {at} = {v}");
    }
    assert!(parse_inner(&good[..good.len() - 1]).is_err());
}

#[test]
fn inner_broadcast_multicast_and_non_ip() {
    let bcast = write_pkt!(
        ep::PacketBuilder::ethernet2(A_MAC, [0xff; 6])
            .ipv4([198, 19, 0, 1], [198, 19, 0, 255], 64)
            .udp(67, 68),
        b""
    );
    assert_eq!(parse_inner(&bcast).unwrap().kind, InnerKind::Group);
    let mcast6 = write_pkt!(
        ep::PacketBuilder::ethernet2(A_MAC, [0x33, 0x33, 0xff, 0, 0, 1])
            .ipv6(v6("2001:2::a"), v6("ff02::1:ff00:1"), 255)
            .icmpv6_echo_request(1, 1),
        b""
    );
    assert_eq!(parse_inner(&mcast6).unwrap().kind, InnerKind::Group);
    let mut mcast4 = bcast.clone();
    mcast4[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
    assert_eq!(parse_inner(&mcast4).unwrap().kind, InnerKind::Group);
    // A group frame is Group even if its IP header is garbage.
    let mut garbage = vec![0xffu8; 6];
    garbage.extend_from_slice(&A_MAC);
    garbage.extend_from_slice(&[0x08, 0x00, 0x00]);
    assert_eq!(parse_inner(&garbage).unwrap().kind, InnerKind::Group);
    // Unicast non-IP (local experimental ethertype), untagged and tagged; and a double tag.
    let mut nonip = B_MAC.to_vec();
    nonip.extend_from_slice(&A_MAC);
    nonip.extend_from_slice(&[0x88, 0xb5, 1, 2, 3]);
    let i = parse_inner(&nonip).unwrap();
    assert_eq!((i.kind, i.l3_off), (InnerKind::NonIp, 14));
    let mut qinq = B_MAC.to_vec();
    qinq.extend_from_slice(&A_MAC);
    qinq.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
    let i = parse_inner(&qinq).unwrap();
    assert_eq!((i.kind, i.vid()), (InnerKind::NonIp, Some(10)));
}

fn ipv6_with_exts(exts: ep::Ipv6Extensions, tcp: (u16, u16)) -> Vec<u8> {
    let ip = ep::Ipv6Header {
        traffic_class: 0,
        flow_label: ep::Ipv6FlowLabel::ZERO,
        payload_length: 0,
        next_header: ep::IpNumber::TCP,
        hop_limit: 64,
        source: v6("2001:2::a"),
        destination: v6("2001:2::b"),
    };
    write_pkt!(
        ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
            .ip(ep::IpHeaders::Ipv6(ip, exts))
            .tcp(tcp.0, tcp.1, 9, 9),
        b"data"
    )
}

#[test]
fn inner_ipv6_hop_by_hop_then_tcp() {
    let exts = ep::Ipv6Extensions {
        hop_by_hop_options: Some(
            ep::Ipv6RawExtHeader::new_raw(
                ep::IpNumber::TCP,
                &[1, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap(),
        ),
        ..Default::default()
    };
    let f = ipv6_with_exts(exts, (1111, 443));
    assert_eq!(f[14 + 6], 0, "next header is hop-by-hop");
    assert_eq!(f[14 + 40 + 1], 1, "a 16-byte hop-by-hop header");
    assert_eq!(ip_inner(&f).1, flow("2001:2::a", "2001:2::b", 6, 1111, 443));
}

#[test]
fn inner_ipv6_fragment_header() {
    // etherparse 0.16.0's Ipv6FragmentHeader::to_bytes puts the M flag at 0x80 of byte 3 and the low
    // offset bits in bits 0..4 (RFC 8200: offset in the top 13 bits, M in bit 0), so the header is
    // built by etherparse with offset 0 and its offset/M word is then written here by hand.
    let frag = |off: u16, mf: bool| {
        let exts = ep::Ipv6Extensions {
            fragment: Some(ep::Ipv6FragmentHeader::new(
                ep::IpNumber::TCP,
                ep::IpFragOffset::ZERO,
                false,
                0xdead_beef,
            )),
            ..Default::default()
        };
        let mut f = ipv6_with_exts(exts, (2222, 80));
        assert_eq!(f[14 + 6], 44);
        assert_eq!(f[14 + 40], 6);
        let word = (off << 3) | u16::from(mf);
        f[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&word.to_be_bytes());
        f
    };
    // First fragment (or an atomic fragment): the TCP header and its ports are there.
    for mf in [true, false] {
        assert_eq!(
            ip_inner(&frag(0, mf)).1,
            flow("2001:2::a", "2001:2::b", 6, 2222, 80)
        );
    }
    // Later fragments: the bytes after the fragment header are not a TCP header.
    for (off, mf) in [(2u16, true), (3, false), (0x1fff, false), (0x100, true)] {
        assert_eq!(
            ip_inner(&frag(off, mf)).1,
            flow("2001:2::a", "2001:2::b", 6, 0, 0),
            "offset {off} M {mf}"
        );
    }
    // A TCP fragment at offset 8 bytes would overlap the first one's header (RFC 1858): refused.
    for mf in [true, false] {
        assert!(parse_inner(&frag(1, mf)).is_err(), "offset 1 M {mf}");
    }
}

#[test]
fn inner_ipv6_four_extension_headers() {
    let opt = |nh| ep::Ipv6RawExtHeader::new_raw(nh, &[1, 4, 0, 0, 0, 0]).unwrap();
    let exts = ep::Ipv6Extensions {
        hop_by_hop_options: Some(opt(ep::IpNumber::TCP)),
        destination_options: Some(opt(ep::IpNumber::TCP)),
        routing: Some(ep::Ipv6RoutingExtensions {
            routing: ep::Ipv6RawExtHeader::new_raw(ep::IpNumber::TCP, &[0, 0, 0, 0, 0, 0]).unwrap(),
            final_destination_options: None,
        }),
        fragment: Some(ep::Ipv6FragmentHeader::new(
            ep::IpNumber::TCP,
            ep::IpFragOffset::ZERO,
            false,
            1,
        )),
        auth: None,
    };
    let f = ipv6_with_exts(exts, (3333, 25));
    assert_eq!(ip_inner(&f).1, flow("2001:2::a", "2001:2::b", 6, 3333, 25));
}

/// Hand-built IPv6 packet: `n` destination-options headers (8 bytes each) and then TCP.
fn ipv6_dest_opts_chain(n: usize, sport: u16, dport: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n { 6 } else { 60 };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let mut tcp = ep::TcpHeader::new(sport, dport, 1, 1);
    tcp.checksum = tcp
        .calc_checksum_ipv6_raw(v6("2001:2::a"), v6("2001:2::b"), &[])
        .unwrap();
    payload.extend_from_slice(&tcp.to_bytes());
    let mut f = B_MAC.to_vec();
    f.extend_from_slice(&A_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    let ip = ep::Ipv6Header {
        traffic_class: 0,
        flow_label: ep::Ipv6FlowLabel::ZERO,
        payload_length: payload.len() as u16,
        next_header: if n == 0 {
            ep::IpNumber::TCP
        } else {
            ep::IpNumber::IPV6_DESTINATION_OPTIONS
        },
        hop_limit: 64,
        source: v6("2001:2::a"),
        destination: v6("2001:2::b"),
    };
    f.extend_from_slice(&ip.to_bytes());
    f.extend_from_slice(&payload);
    f
}

#[test]
fn inner_ipv6_up_to_four_destination_options_headers() {
    for n in 0..=4 {
        let f = ipv6_dest_opts_chain(n, 4444, 23);
        assert_eq!(
            ip_inner(&f).1,
            flow("2001:2::a", "2001:2::b", 6, 4444, 23),
            "{n} headers"
        );
    }
}

/// A longer chain of extension headers must not make the flow look like a non-TCP protocol with no
/// ports: that lets a TCP flow slip past a port-specific deny rule (e.g. R8 "tcp/23 denied everywhere"
/// in pcap-fixtures/fixtures.toml) and be admitted by the intra-tenant default or a proto-less allow.
/// The right answer is the TCP flow, or an error (drop as malformed) if the chain is too long to walk.
#[test]

fn inner_ipv6_long_extension_chain_does_not_hide_the_transport() {
    for n in 5..=8 {
        let f = ipv6_dest_opts_chain(n, 4444, 23);
        match parse_inner(&f) {
            Ok(Inner {
                kind: InnerKind::Ip(fl),
                ..
            }) => assert_eq!(
                fl,
                flow("2001:2::a", "2001:2::b", 6, 4444, 23),
                "{n} headers"
            ),
            Err(_) => {}
            Ok(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn inner_truncations_are_errors() {
    // Ethernet and tag.
    assert!(parse_inner(&[0u8; 13]).is_err());
    let tagged = tagged_tcp4(0, false, 5, 0);
    assert_eq!(
        parse_inner(&tagged[..17]).unwrap_err(),
        WireError::Truncated("802.1Q")
    );
    // IPv4: cut anywhere inside the header or the TCP ports.
    let tcp = tcp4_inner(0);
    for n in 14..14 + 20 + 4 {
        assert!(parse_inner(&tcp[..n]).is_err(), "IPv4 TCP cut at {n}");
    }
    // IPv6 UDP: cut inside the header.
    let u6 = udp6_inner(0);
    for n in 14..14 + 40 + 8 {
        assert!(parse_inner(&u6[..n]).is_err(), "IPv6 UDP cut at {n}");
    }
    // A TCP packet whose IP total length leaves fewer than 4 bytes of TCP.
    let mut f = tcp4_inner(0);
    f[16..18].copy_from_slice(&23u16.to_be_bytes());
    assert!(parse_inner(&f).is_err());
    // IPv6 extension header longer than the payload.
    let mut f = ipv6_dest_opts_chain(1, 1, 2);
    f[14 + 40 + 1] = 200;
    assert!(parse_inner(&f).is_err());
}

// ---------------------------------------------------------------------------------------------------
// Round trip: parse_overlay(encapsulate(...))
// ---------------------------------------------------------------------------------------------------

fn arb_inner() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1600),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
            0usize..200
        )
            .prop_map(|(s, d, sp, dp, n)| write_pkt!(
                ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
                    .ipv4(s, d, 64)
                    .tcp(sp, dp, 1, 1),
                &vec![0x42u8; n]
            )),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            0u16..4096
        )
            .prop_map(|(s, d, sp, dp, vid)| write_pkt!(
                ep::PacketBuilder::ethernet2(A_MAC, B_MAC)
                    .single_vlan(ep::VlanId::try_new(vid).unwrap())
                    .ipv6(s, d, 64)
                    .udp(sp, dp),
                b"payload"
            )),
    ]
}

fn arb_underlay() -> impl Strategy<Value = Underlay> {
    let ips = prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>())
            .prop_map(|(s, d)| (IpAddr::V4(s.into()), IpAddr::V4(d.into()))),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(s, d)| (IpAddr::V6(s.into()), IpAddr::V6(d.into()))),
    ];
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        ips,
        any::<u16>(),
        any::<u16>(),
        0u32..(1 << 24),
        any::<Option<u16>>(),
        any::<u8>(),
    )
        .prop_map(|(sm, dm, (s, d), sp, dp, vni, group, ttl)| Underlay {
            src_mac: Mac(sm),
            dst_mac: Mac(dm),
            src_ip: s,
            dst_ip: d,
            src_port: sp,
            dst_port: dp,
            vni,
            group,
            ttl,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(u in arb_underlay(), inner in arb_inner(), extra in 0usize..64) {
        let headroom = u.outer_len() + extra;
        let (buf, start, is) = run_encap(&u, &inner, headroom);
        prop_assert_eq!(start, is - u.outer_len());
        let frame = &buf[start..is + inner.len()];
        prop_assert_eq!(frame, &reference_outer(&u, &inner)[..]);
        let o = parse_overlay(frame, u.dst_port).unwrap();
        prop_assert_eq!(
            o,
            Overlay {
                // parse_overlay reports the frame as seen by its receiver: src is the sender.
                src_mac: u.src_mac,
                dst_mac: u.dst_mac,
                src_ip: u.src_ip,
                dst_ip: u.dst_ip,
                src_port: u.src_port,
                vni: u.vni,
                group: u.group,
                inner_off: u.outer_len(),
                inner_len: inner.len(),
            }
        );
        prop_assert_eq!(&frame[o.inner_off..o.inner_off + o.inner_len], &inner[..]);
        // Whatever the inner frame is, the parse of it is the same before and after.
        prop_assert_eq!(parse_inner(&inner), parse_inner(&frame[o.inner_off..]));
        // The whole buffer (trailing filler included) parses the same: padding is ignored.
        let o2 = parse_overlay(&buf[start..], u.dst_port).unwrap();
        prop_assert_eq!(o2, o);
    }

    #[test]
    fn round_trip_through_vlan_changes(u in arb_underlay(), vid in proptest::option::of(0u16..4096),
                                       tag in proptest::option::of(0u16..4096), n in 0usize..100) {
        let inner = match tag {
            Some(t) => tagged_tcp4(3, true, t, n),
            None => tcp4_inner(n),
        };
        let headroom = u.outer_len() + 4;
        let mut buf = placed(&inner, headroom);
        let (s, l) = set_inner_vlan(&mut buf, headroom, inner.len(), vid).unwrap();
        let start = encapsulate(&mut buf, s, l, &u).unwrap();
        let o = parse_overlay(&buf[start..s + l], u.dst_port).unwrap();
        let i = parse_inner(&buf[start + o.inner_off..start + o.inner_off + o.inner_len]).unwrap();
        let expected_tci = match (vid, tag) {
            (Some(v), Some(_)) => Some(0x7000 | v),
            (Some(v), None) => Some(v),
            (None, _) => None,
        };
        prop_assert_eq!(i.tci, expected_tci);
        prop_assert_eq!(i.kind, InnerKind::Ip(flow("198.19.0.1", "198.19.1.1", 6, 40000, 443)));
    }
}
