//! What the pipeline's integration tests share: inner and outer frame builders (IPv4, UDP, TCP,
//! VXLAN with an optional GBP group and inner tag) and running one frame through a worker.
#![allow(dead_code)] // each test file uses its own part

use datapath::pipeline::{Disposition, Frame, Outcome, Worker, HEADROOM};
use datapath::DropReason;
use policy::Table;

/// acme's and globex's endpoints in the tests' policies.
pub const A: [u8; 4] = [198, 19, 0, 1];
pub const G: [u8; 4] = [198, 19, 1, 1];

/// The gateway's MAC, the inner destination of routed frames.
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

pub const DENIED: Disposition = Disposition::Drop(DropReason::PolicyDenied);

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// The Internet checksum (RFC 1071) of `b`.
pub fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 packet (`frag`: the flags and fragment-offset field).
pub fn ip4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let tl = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&tl.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram with an 8-byte payload (its checksum left 0).
pub fn udp(sp: u16, dp: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sp.to_be_bytes());
    u.extend_from_slice(&dp.to_be_bytes());
    u.extend_from_slice(&16u16.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(b"joypath!");
    u
}

/// A TCP header with `flags`.
pub fn tcp(sp: u16, dp: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t
}

/// A VXLAN frame from VTEP 198.18.0.`vtep` on `vni` (with GBP group `group`), carrying an inner
/// Ethernet frame to `dst_mac` from 02:00:00:00:00:`vtep` (tagged `vid`) of `et` and `l3`.
pub fn vxlan_frame(
    (vtep, vni, group): (u8, u32, Option<u16>),
    dst_mac: [u8; 6],
    vid: Option<u16>,
    et: u16,
    l3: &[u8],
) -> Vec<u8> {
    let mut inner = dst_mac.to_vec();
    inner.extend_from_slice(&[0x02, 0, 0, 0, 0, vtep]);
    if let Some(v) = vid {
        inner.extend_from_slice(&[0x81, 0x00]);
        inner.extend_from_slice(&v.to_be_bytes());
    }
    inner.extend_from_slice(&et.to_be_bytes());
    inner.extend_from_slice(l3);
    let mut oudp = Vec::new();
    oudp.extend_from_slice(&49152u16.to_be_bytes());
    oudp.extend_from_slice(&4789u16.to_be_bytes());
    oudp.extend_from_slice(&((8 + 8 + inner.len()) as u16).to_be_bytes());
    oudp.extend_from_slice(&[0, 0]);
    match group {
        Some(g) => oudp.extend_from_slice(&[0x88, 0, (g >> 8) as u8, g as u8]),
        None => oudp.extend_from_slice(&[0x08, 0, 0, 0]),
    }
    oudp.extend_from_slice(&vni.to_be_bytes()[1..]);
    oudp.push(0);
    oudp.extend(inner);
    let mut f = vec![
        0x02, 0, 0, 0, 0, 0xfe, 0x02, 0, 0, 0, 0x99, vtep, 0x08, 0x00,
    ];
    f.extend(ip4([198, 18, 0, vtep], [198, 18, 0, 254], 17, 0, 0, &oudp));
    f
}

/// [`vxlan_frame`] without group or tag.
pub fn frame(vtep: u8, vni: u32, dst_mac: [u8; 6], et: u16, l3: &[u8]) -> Vec<u8> {
    vxlan_frame((vtep, vni, None), dst_mac, None, et, l3)
}

/// An inner IPv4 packet `l3` to the gateway's MAC.
pub fn ip_frame(vtep: u8, vni: u32, l3: &[u8]) -> Vec<u8> {
    frame(vtep, vni, GW_MAC, 0x0800, l3)
}

/// A VXLAN frame from VTEP `vtep` (198.18.0.x) on `vni` carrying a UDP datagram.
pub fn udp_frame(vtep: u8, vni: u32, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
    ip_frame(vtep, vni, &ip4(src, dst, 17, 1, 0, &udp(sp, dp)))
}

/// [`udp_frame`] with a VXLAN-GBP group and an inner 802.1Q tag.
#[allow(clippy::too_many_arguments)]
pub fn tagged_frame(
    vtep: u8,
    vni: u32,
    group: Option<u16>,
    vid: Option<u16>,
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
) -> Vec<u8> {
    let l3 = ip4(src, dst, 17, 1, 0, &udp(sp, dp));
    vxlan_frame((vtep, vni, group), GW_MAC, vid, 0x0800, &l3)
}

/// A VXLAN frame carrying a TCP segment with `fl`.
pub fn tcp_frame(
    vtep: u8,
    vni: u32,
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    fl: u8,
) -> Vec<u8> {
    ip_frame(vtep, vni, &ip4(src, dst, 6, 1, 0, &tcp(sp, dp, fl)))
}

/// Runs one frame through `w` at `now` (ns); its outcome.
pub fn run_ns(w: &mut Worker, t: &Table, frame: &[u8], now: i64) -> Outcome {
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let mut frames = [Frame::new(&mut buf, HEADROOM, frame.len())];
    let mut out = [Outcome::default()];
    w.process(t, &mut frames, &mut out, now);
    out[0]
}

/// [`run_ns`] at `now` seconds.
pub fn run(w: &mut Worker, t: &Table, frame: &[u8], now: i64) -> Outcome {
    run_ns(w, t, frame, now * 1_000_000_000)
}

/// A TCP handshake through `w` at `now` (s): the SYN from `client`, the SYN-ACK from `server`, the
/// ACK from `client` (each a frame with the flags given), each asserted forwarded.
pub fn tcp_handshake(
    w: &mut Worker,
    t: &Table,
    client: impl Fn(u8) -> Vec<u8>,
    server: impl Fn(u8) -> Vec<u8>,
    now: i64,
) {
    for (f, what) in [
        (client(SYN), "the client's SYN"),
        (server(SYN | ACK), "the server's SYN-ACK"),
        (client(ACK), "the client's ACK"),
    ] {
        assert_eq!(
            run(w, t, &f, now).disposition,
            Disposition::Forward,
            "{what}"
        );
    }
}

/// The `[gateway]` of the tests' policies, with `replies` ("tracked" or "stateless").
pub fn gateway(replies: &str) -> String {
    format!(
        "[gateway]\nunderlay_ip = \"198.18.0.254\"\nudp_port = 4789\nmtu = 1500\nreplies = \"{replies}\"\n"
    )
}

/// A tenant of the tests' policies with its segment and its one endpoint: acme (id 10, VNI 100,
/// VTEP 198.18.0.1, 198.19.0.1), globex (20, 200, .2, 198.19.1.1) or initech (30, 300, .3,
/// 198.19.2.1).
pub fn tenant(name: &str) -> String {
    let (id, ip) = match name {
        "acme" => (10, "198.19.0.1"),
        "globex" => (20, "198.19.1.1"),
        "initech" => (30, "198.19.2.1"),
        _ => panic!("no test tenant {name:?}"),
    };
    let n = id / 10;
    format!(
        r#"
[[segment]]
vni = {vni}
identity = "vni"
tenant = "{name}"

[[tenant]]
name = "{name}"
id = {id}
vteps = ["198.18.0.{n}"]

[[endpoint]]
tenant = "{name}"
ip = "{ip}"
mac = "02:00:00:00:{id:02x}:01"
vtep = "198.18.0.{n}"
vni = {vni}
"#,
        vni = n * 100
    )
}

/// A policy of `tenants` (in that order: it sets their indexes) under `replies`, then `rest`.
pub fn policy(replies: &str, tenants: &[&str], rest: &str) -> String {
    let tenants: String = tenants.iter().map(|t| tenant(t)).collect();
    format!("{}{tenants}{rest}", gateway(replies))
}
