//! Golden tests of the shipped fixtures: every frame's outcome against the hand-derived expectations
//! (`*.expect.tsv`, written from the policy contract, not from this implementation), the summary and
//! the transmitted frames against checked-in goldens (`JOYPATH_BLESS=1` rewrites those two), and every
//! transmitted frame checked for well-formed headers toward the right VTEP.

mod common;

use common::fixtures;
use datapath::{Disposition, Outcome};
use driver::replay::{self, Captured};
use policy::{Document, Table};
use std::net::IpAddr;
use std::sync::Arc;

fn table(policy: &str) -> Table {
    let doc = Document::load(&fixtures().join(policy))
        .unwrap_or_else(|e| panic!("{policy} is valid: {e}"));
    Table::compile(Arc::new(doc), 1, None).unwrap()
}

/// Every capture and the policy it is replayed against: `fixtures.toml` tracks replies;
/// `stateless.toml` is the same policy with `replies = "stateless"`, for the mirrored match.
const CAPTURES: &[(&str, &str)] = &[
    ("identity.pcap", "fixtures.toml"),
    ("verdicts.pcap", "stateless.toml"),
    ("drops.pcap", "fixtures.toml"),
    ("arp.pcap", "fixtures.toml"),
    ("overlap.pcap", "fixtures.toml"),
    ("ipv6.pcapng", "fixtures.toml"),
    ("tracked.pcap", "fixtures.toml"),
    ("source.pcap", "fixtures.toml"),
    ("fragments.pcap", "fixtures.toml"),
    ("nd.pcap", "fixtures.toml"),
    ("windows.pcap", "fixtures.toml"),
];

#[test]
fn the_two_policies_differ_only_in_replies() {
    let tracked = Document::load(&fixtures().join("fixtures.toml")).unwrap();
    let mut stateless = Document::load(&fixtures().join("stateless.toml")).unwrap();
    assert_eq!(tracked.gateway.replies, policy::Replies::Tracked);
    assert_eq!(stateless.gateway.replies, policy::Replies::Stateless);
    stateless.gateway.replies = policy::Replies::Tracked;
    assert_eq!(
        serde_json::to_value(&tracked).unwrap(),
        serde_json::to_value(&stateless).unwrap()
    );
}

fn describe(table: &Table, o: &Outcome) -> (String, String, String) {
    let (d, r) = match o.disposition {
        Disposition::Forward => ("forward".to_string(), "-".to_string()),
        Disposition::ArpReply => ("arp_reply".to_string(), "-".to_string()),
        Disposition::NdReply => ("nd_reply".to_string(), "-".to_string()),
        Disposition::Drop(r) => ("drop".to_string(), r.name().to_string()),
        Disposition::Pending => ("pending".to_string(), "-".to_string()),
    };
    let t = o
        .tenant
        .map(|t| table.tenant(t).name.to_string())
        .unwrap_or_else(|| "-".into());
    (d, r, t)
}

#[test]
fn every_frame_gets_the_contracted_outcome() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, policy) in CAPTURES {
        let table = table(policy);
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        let stem = name.split('.').next().unwrap();
        let expect =
            std::fs::read_to_string(fixtures().join(format!("{stem}.expect.tsv"))).unwrap();
        let rows: Vec<Vec<&str>> = expect.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(
            rows.len(),
            frames.len(),
            "{name}: one expectation per frame"
        );
        let out = replay::replay(&table, &frames);
        for (row, o) in rows.iter().zip(&out.outcomes) {
            total += 1;
            let got = describe(&table, o);
            let want = (row[1].to_string(), row[2].to_string(), row[3].to_string());
            if got != want {
                failures.push(format!(
                    "{name} #{}: want {want:?} got {got:?} ({})",
                    row[0], row[4]
                ));
            }
        }
    }
    assert!(total > 300, "fixtures cover {total} frames");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn bless() -> bool {
    std::env::var_os("JOYPATH_BLESS").is_some()
}

#[test]
fn summaries_and_transmitted_frames_match_goldens() {
    for (name, policy) in CAPTURES {
        let table = table(policy);
        let stem = name.split('.').next().unwrap();
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        let out = replay::replay(&table, &frames);
        let summary = out.worker.counters.summary(&table);
        let dropped: u64 = summary.dropped.values().sum();
        assert_eq!(
            summary.forwarded + summary.arp_replied + summary.nd_replied + dropped,
            summary.frames,
            "{name} adds up"
        );
        assert_eq!(summary.frames, frames.len() as u64);

        let json = serde_json::to_string_pretty(&summary).unwrap() + "\n";
        let sum_path = fixtures().join(format!("{stem}.summary.json"));
        let out_path = fixtures().join(format!("{stem}.out.pcap"));
        let tmp =
            std::env::temp_dir().join(format!("joypath-golden-{}-{stem}.pcap", std::process::id()));
        replay::write_pcap(
            &tmp,
            out.transmitted.iter().map(|(_, ts, d)| (*ts, d.as_slice())),
        )
        .unwrap();
        let pcap = std::fs::read(&tmp).unwrap();
        std::fs::remove_file(&tmp).ok();
        if bless() {
            std::fs::write(&sum_path, &json).unwrap();
            std::fs::write(&out_path, &pcap).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&sum_path).unwrap_or_default();
        assert_eq!(
            json,
            want,
            "{name}: summary differs from {}",
            sum_path.display()
        );
        let want = std::fs::read(&out_path).unwrap_or_default();
        assert!(
            pcap == want,
            "{name}: transmitted frames differ from {}",
            out_path.display()
        );
    }
}

/// Independent checks of every transmitted frame's outer headers.
#[test]
fn transmitted_frames_are_well_formed() {
    for (name, policy) in CAPTURES {
        let table = table(policy);
        let doc = table.document().clone();
        let frames: Vec<Captured> = replay::read_capture(&fixtures().join(name)).unwrap();
        let out = replay::replay(&table, &frames);
        for (i, _, bytes) in &out.transmitted {
            let o = out.outcomes[*i];
            let ov = vtep::parse_overlay(bytes, doc.gateway.udp_port)
                .unwrap_or_else(|e| panic!("{name} #{i}: output does not parse: {e}"));
            assert!(
                ov.src_port >= 49152,
                "{name} #{i}: entropy port {}",
                ov.src_port
            );
            let ingress = vtep::parse_overlay(&frames[*i].data, 4789).unwrap();
            let inner =
                vtep::parse_inner(&bytes[ov.inner_off..ov.inner_off + ov.inner_len]).unwrap();
            // The outer source is the gateway's underlay address of the egress family.
            match ov.src_ip {
                IpAddr::V4(a) => assert_eq!(a, doc.gateway.underlay_ip, "{name} #{i}"),
                IpAddr::V6(a) => assert_eq!(Some(a), doc.gateway.underlay_ip6, "{name} #{i}"),
            }
            match bytes[12..14] {
                [0x08, 0x00] => {
                    let ip = vtep::Ipv4Packet::new_checked(&bytes[14..]).unwrap();
                    assert!(ip.verify_checksum(), "{name} #{i}: IPv4 header checksum");
                    assert_eq!(ip.total_len(), bytes.len() - 14);
                    assert!(ip.total_len() <= usize::from(doc.gateway.mtu));
                }
                [0x86, 0xdd] => {
                    let ip = vtep::Ipv6Packet::new_checked(&bytes[14..]).unwrap();
                    assert_eq!(ip.payload_len(), bytes.len() - 54);
                    assert!(ip.payload_len() + 40 <= usize::from(doc.gateway.mtu));
                    let mut udp = bytes[54..].to_vec();
                    let c = u16::from_be_bytes([udp[6], udp[7]]);
                    assert_ne!(c, 0, "{name} #{i}: UDP checksum is mandatory over IPv6");
                    udp[6] = 0;
                    udp[7] = 0;
                    assert_eq!(
                        vtep::checksum::udp_ipv6(&ip.src(), &ip.dst(), &udp),
                        c,
                        "{name} #{i}"
                    );
                }
                _ => panic!("{name} #{i}: outer ethertype"),
            }
            match o.disposition {
                Disposition::Forward => {
                    let flow = match inner.kind {
                        vtep::InnerKind::Ip(f) => f,
                        k => panic!("{name} #{i}: forwarded a non-IP frame {k:?}"),
                    };
                    let src = o.tenant.unwrap();
                    let ep = table
                        .endpoint(src, flow.dst)
                        .expect("forwarded to an endpoint");
                    assert_eq!(
                        ov.dst_ip, ep.vtep,
                        "{name} #{i}: toward the endpoint's VTEP"
                    );
                    assert_eq!(ov.vni, ep.vni, "{name} #{i}: on the endpoint's segment");
                    assert_eq!(inner.dst_mac, ep.mac, "{name} #{i}: inner destination MAC");
                    assert_eq!(ov.src_port, flow.entropy_port());
                    match ep.egress {
                        policy::IdentityMode::Gbp => {
                            assert_eq!(
                                ov.group,
                                Some(table.tenant(src).id as u16),
                                "{name} #{i}: GBP group = source tenant"
                            );
                            assert_eq!(bytes[ov.inner_off - 7] & 0x08, 0x08, "{name} #{i}: A bit");
                            assert_eq!(inner.tci, None);
                        }
                        policy::IdentityMode::Vlan => {
                            assert_eq!(ov.group, None);
                            assert_eq!(
                                inner.vid(),
                                Some(table.tenant(ep.tenant).id as u16),
                                "{name} #{i}: VLAN = destination tenant"
                            );
                        }
                        policy::IdentityMode::Vni => {
                            assert_eq!(ov.group, None);
                            assert_eq!(
                                inner.tci, None,
                                "{name} #{i}: no inner tag on a vni segment"
                            );
                        }
                    }
                }
                Disposition::ArpReply => {
                    assert_eq!(
                        ov.dst_ip, ingress.src_ip,
                        "{name} #{i}: reply goes back to the asker"
                    );
                    assert_eq!(ov.vni, ingress.vni);
                    assert_eq!(ov.dst_mac, ingress.src_mac);
                    let vtep::InnerKind::Arp(a) = inner.kind else {
                        panic!("{name} #{i}: not ARP")
                    };
                    assert_eq!(a.op, 2);
                    let vtep::InnerKind::Arp(q) = vtep::parse_inner(
                        &frames[*i].data[ingress.inner_off..ingress.inner_off + ingress.inner_len],
                    )
                    .unwrap()
                    .kind
                    else {
                        unreachable!()
                    };
                    assert_eq!(a.sender_ip, q.target_ip);
                    assert_eq!(a.target_ip, q.sender_ip);
                    let ep = table
                        .endpoint(o.tenant.unwrap(), IpAddr::V4(q.target_ip))
                        .unwrap();
                    assert_eq!(a.sender_mac, ep.mac);
                    assert_eq!(inner.dst_mac, q.sender_mac);
                }
                Disposition::NdReply => {
                    check_advert(
                        &table,
                        o.tenant.unwrap(),
                        name,
                        *i,
                        &frames[*i].data,
                        &ingress,
                        bytes,
                        &ov,
                    );
                }
                d => panic!("{name} #{i}: transmitted with disposition {d:?}"),
            }
        }
    }
}

#[test]
fn fixtures_cover_every_drop_reason_and_outcome() {
    let mut total = datapath::Counters::default();
    for (name, policy) in CAPTURES {
        let table = table(policy);
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        total.add(&replay::replay(&table, &frames).worker.counters);
    }
    for r in datapath::DropReason::ALL {
        assert!(
            total.dropped[*r as usize] > 0,
            "no fixture frame is dropped as {r}"
        );
    }
    assert!(total.forwarded > 0 && total.arp_replied > 0 && total.nd_replied > 0);
    for r in ["spoofed_source", "orphan_fragment"] {
        assert!(
            datapath::DropReason::ALL.iter().any(|d| d.name() == r),
            "{r} is a drop reason"
        );
    }
}

/// The inner frame of an overlay frame, and where its IP header starts (after an 802.1Q tag).
fn inner_l3<'a>(frame: &'a [u8], ov: &vtep::Overlay) -> (&'a [u8], usize) {
    let inner = &frame[ov.inner_off..ov.inner_off + ov.inner_len];
    let l3 = if inner[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    (inner, l3)
}

/// One's complement checksum of an ICMPv6 message with its pseudo-header: 0 when it verifies.
fn icmpv6_sum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A neighbour advertisement answering the solicitation `req`, checked byte by byte (RFC 4861 §4.4,
/// §7.2.4): back to the asking VTEP on its segment and identity, ICMPv6 type 136 code 0, hop limit
/// 255, S and O set (R not: the gateway is no router), the solicited target, a target link-layer
/// address option with the endpoint's MAC, a checksum that verifies.
#[allow(clippy::too_many_arguments)]
fn check_advert(
    table: &Table,
    tenant: policy::TenantIdx,
    name: &str,
    i: usize,
    req: &[u8],
    ingress: &vtep::Overlay,
    bytes: &[u8],
    ov: &vtep::Overlay,
) {
    assert_eq!(
        ov.dst_ip, ingress.src_ip,
        "{name} #{i}: NA back to the asker"
    );
    assert_eq!(ov.vni, ingress.vni, "{name} #{i}: on the asker's segment");
    assert_eq!(
        ov.group, ingress.group,
        "{name} #{i}: with the asker's identity"
    );
    assert_eq!(ov.dst_mac, ingress.src_mac, "{name} #{i}: outer next hop");
    let (q, ql3) = inner_l3(req, ingress);
    let ns = &q[ql3..];
    assert_eq!(ns[40], 135, "{name} #{i}: the request is a solicitation");
    let target = &ns[48..64];
    let asker = &ns[8..24];
    let slla = (ns.len() >= 72 && ns[64] == 1 && ns[65] == 1).then(|| &ns[66..72]);
    let (a, l3) = inner_l3(bytes, ov);
    assert_eq!(l3, ql3, "{name} #{i}: the tag is kept as it came");
    assert_eq!(&a[12..14], &[0x86, 0xdd], "{name} #{i}: inner IPv6");
    let ip = &a[l3..];
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    assert!(
        ip.len() >= 40 + plen && plen >= 32,
        "{name} #{i}: NA length"
    );
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(ip[6], 58, "{name} #{i}: ICMPv6");
    assert_eq!(ip[7], 255, "{name} #{i}: hop limit 255");
    assert_eq!(&ip[24..40], asker, "{name} #{i}: to the asker's address");
    let msg = &ip[40..40 + plen];
    assert_eq!(
        (msg[0], msg[1]),
        (136, 0),
        "{name} #{i}: neighbour advertisement"
    );
    assert_eq!(msg[4] & 0xe0, 0x60, "{name} #{i}: S and O set, R unset");
    assert_eq!(&msg[8..24], target, "{name} #{i}: the solicited target");
    assert_eq!(
        icmpv6_sum(&ip[8..24], &ip[24..40], msg),
        0,
        "{name} #{i}: checksum"
    );
    let t: [u8; 16] = target.try_into().unwrap();
    let ep = table
        .endpoint(tenant, IpAddr::from(t))
        .expect("the target is an endpoint");
    // The target link-layer address option (type 2) carries the endpoint's MAC.
    let mut opts = &msg[24..];
    let mut tlla = None;
    while opts.len() >= 8 && opts[1] != 0 {
        if opts[0] == 2 && opts[1] == 1 {
            tlla = Some(&opts[2..8]);
        }
        opts = &opts[usize::from(opts[1]) * 8..];
    }
    assert_eq!(
        tlla,
        Some(&ep.mac.0[..]),
        "{name} #{i}: TLLA = endpoint MAC"
    );
    assert_eq!(
        &a[6..12],
        &ep.mac.0[..],
        "{name} #{i}: from the endpoint's MAC"
    );
    let asker_mac = slla.unwrap_or(&q[6..12]);
    assert_eq!(&a[0..6], asker_mac, "{name} #{i}: to the asker's MAC");
}

/// Only frames that pass every check teach a next hop: in `source.pcap`, frames from VTEP
/// 198.18.0.2 through the outer MAC 02:00:00:00:66:66 are all dropped (spoofed source, malformed,
/// denied), so no transmitted frame is ever addressed to that MAC.
#[test]
fn dropped_frames_teach_no_next_hop() {
    let attacker = [2, 0, 0, 0, 0x66, 0x66];
    let table = table("fixtures.toml");
    let frames = replay::read_capture(&fixtures().join("source.pcap")).unwrap();
    let sent: Vec<_> = frames
        .iter()
        .filter(|f| f.data[6..12] == attacker)
        .collect();
    assert!(sent.len() >= 3, "source.pcap has the attacker's frames");
    let out = replay::replay(&table, &frames);
    let toward_g = out
        .transmitted
        .iter()
        .filter(|(_, _, b)| {
            vtep::parse_overlay(b, 4789).unwrap().dst_ip == "198.18.0.2".parse::<IpAddr>().unwrap()
        })
        .count();
    assert!(
        toward_g >= 1,
        "something is sent toward 198.18.0.2 after the attack"
    );
    for (i, _, bytes) in &out.transmitted {
        assert_ne!(
            bytes[0..6],
            attacker,
            "source.pcap #{i}: sent to the attacker's MAC"
        );
    }
}

const WIDE_BASE: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 1
identity = "gbp"

[[segment]]
vni = 600
identity = "vni"
tenant = "wide"

[[tenant]]
name = "narrow"
id = 10

[[tenant]]
name = "wide"
id = 65546

[[endpoint]]
tenant = "narrow"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 1

[[endpoint]]
tenant = "wide"
ip = "198.19.9.1"
mac = "02:00:00:00:09:01"
vtep = "198.18.0.9"
vni = 600
"#;

fn load_wide(extra: &str) -> Result<Document, String> {
    Document::from_toml(&format!("{WIDE_BASE}{extra}"), "width.toml").map_err(|e| e.to_string())
}

/// Identity on the way out is never truncated: a policy where tenant "wide" (id 65546, its own VNI
/// segment) could send to an endpoint on GBP segment 1 is refused, naming the tenant and the segment.
#[test]
fn a_tenant_too_wide_for_a_gbp_segment_it_could_reach_is_refused() {
    load_wide("").expect("no rule: wide cannot reach the GBP segment");
    load_wide("[[rule]]\nfrom = \"wide\"\nto = \"narrow\"\naction = \"deny\"\n")
        .expect("a deny lets nothing through");
    let named = |e: &str| {
        e.contains("wide")
            && (e.contains("segment 1") || e.contains("VNI 1") || e.contains("vni 1"))
    };
    for (what, rule) in [
        ("wide -> narrow", "from = \"wide\"\nto = \"narrow\"\n"),
        (
            "narrow -> wide (replies)",
            "from = \"narrow\"\nto = \"wide\"\n",
        ),
        ("* -> narrow", "from = \"*\"\nto = \"narrow\"\n"),
        ("wide -> *", "from = \"wide\"\nto = \"*\"\n"),
    ] {
        let e = load_wide(&format!(
            "[[rule]]\n{rule}proto = \"tcp\"\nports = \"443\"\naction = \"allow\"\n"
        ))
        .err()
        .unwrap_or_else(|| panic!("{what}: a policy truncating wide's id is accepted"));
        assert!(
            named(&e),
            "{what}: the error names the tenant and the segment: {e}"
        );
    }
}

/// The same refusal when the wide tenant has an endpoint of its own on the GBP segment (its
/// intra-tenant traffic would leave with a truncated group id).
#[test]
fn a_tenant_too_wide_for_its_own_gbp_endpoint_is_refused_by_name() {
    let e = load_wide(
        "[[endpoint]]\ntenant = \"wide\"\nip = \"198.19.9.2\"\nmac = \"02:00:00:00:09:02\"\nvtep = \"198.18.0.9\"\nvni = 1\n",
    )
    .expect_err("wide's own endpoint on a GBP segment is refused");
    assert!(
        e.contains("\"wide\"") && (e.contains("segment 1") || e.contains("VNI 1")),
        "the error names the tenant and the segment: {e}"
    );
}

/// A replay that keeps no transmitted frames (`joypath replay` without `--output`) judges every
/// frame of every fixture as the full replay does, counts the same, and keeps nothing it was not
/// asked for.
#[test]
fn a_replay_without_its_transmitted_frames_judges_and_counts_the_same() {
    for (name, policy) in CAPTURES {
        let table = table(policy);
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        let full = replay::replay(&table, &frames);
        let lean = replay::replay_outcomes(&table, &frames);
        assert!(!full.transmitted.is_empty(), "{name} transmits something");
        assert!(lean.transmitted.is_empty(), "{name}: nothing kept");
        assert_eq!(lean.outcomes, full.outcomes, "{name}");
        assert_eq!(
            lean.worker.counters.totals(),
            full.worker.counters.totals(),
            "{name}"
        );
    }
}
