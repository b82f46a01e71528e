//! parse_overlay and parse_inner on arbitrary bytes: never panic, stay in bounds, and what parses is
//! re-encapsulated and re-tagged consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtep::{
    encapsulate, parse_inner, parse_overlay, set_inner_vlan, InnerKind, OverlayError, Underlay,
    VXLAN_PORT,
};

fuzz_target!(|data: &[u8]| {
    // The whole input as an inner frame, too.
    let _ = parse_inner(data);

    let ov = match parse_overlay(data, VXLAN_PORT) {
        Ok(ov) => ov,
        Err(OverlayError::Malformed(_)) | Err(OverlayError::NotOverlay(_)) => return,
    };
    assert!(
        ov.inner_off + ov.inner_len <= data.len(),
        "inner frame out of bounds"
    );
    assert!(ov.vni < 1 << 24);
    let inner = &data[ov.inner_off..ov.inner_off + ov.inner_len];
    let parsed = parse_inner(inner);

    // Re-encapsulating the inner frame with what the outer headers said gives them back.
    let u = Underlay {
        src_mac: ov.src_mac,
        dst_mac: ov.dst_mac,
        src_ip: ov.src_ip,
        dst_ip: ov.dst_ip,
        src_port: ov.src_port,
        dst_port: VXLAN_PORT,
        vni: ov.vni,
        group: ov.group,
        ttl: 64,
    };
    let head = u.outer_len() + 4;
    let mut buf = vec![0u8; head + inner.len()];
    buf[head..].copy_from_slice(inner);
    let start = encapsulate(&mut buf, head, inner.len(), &u).expect("encapsulate what was parsed");
    let again = parse_overlay(&buf[start..], VXLAN_PORT).expect("re-encapsulated frame parses");
    assert_eq!(again.src_ip, ov.src_ip);
    assert_eq!(again.dst_ip, ov.dst_ip);
    assert_eq!((again.src_mac, again.dst_mac), (ov.src_mac, ov.dst_mac));
    assert_eq!(
        (again.vni, again.group, again.src_port),
        (ov.vni, ov.group, ov.src_port)
    );
    assert_eq!(again.inner_len, inner.len());
    assert_eq!(&buf[start + again.inner_off..], inner);

    // Tagging, re-tagging or untagging an IP or ARP inner frame keeps what it carries.
    if let Ok(before) = parsed {
        if matches!(before.kind, InnerKind::Ip(_) | InnerKind::Arp(_)) {
            let vid = data.last().map(|&b| u16::from(b) * 16 + 1);
            for want in [None, vid] {
                let mut b = vec![0u8; 4 + inner.len()];
                b[4..].copy_from_slice(inner);
                let (s, l) = set_inner_vlan(&mut b, 4, inner.len(), want).expect("set_inner_vlan");
                let after = parse_inner(&b[s..s + l]).expect("re-tagged frame parses");
                assert_eq!(after.kind, before.kind);
                assert_eq!(after.vid(), want);
                match (want, before.tci, after.tci) {
                    (Some(_), Some(old), Some(new)) => assert_eq!(old & 0xf000, new & 0xf000),
                    (Some(_), None, Some(new)) => assert_eq!(new & 0xf000, 0),
                    _ => {}
                }
            }
        }
    }
});
