//! Golden tests of the shipped fixtures: every frame's outcome against the hand-derived expectations
//! (`*.expect.tsv`, written from the policy contract, not from this implementation), the summary and
//! the transmitted frames against checked-in goldens (`JOYPATH_BLESS=1` rewrites those two), and every
//! transmitted frame checked for well-formed headers toward the right VTEP.

use datapath::replay::{self, Captured};
use datapath::{Disposition, Outcome};
use policy::{Document, Table};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcap-fixtures")
}

fn table() -> Table {
    let doc = Document::load(&fixtures().join("fixtures.toml")).expect("fixtures.toml is valid");
    Table::compile(Arc::new(doc), 1, None).unwrap()
}

const CAPTURES: &[&str] = &[
    "identity.pcap",
    "verdicts.pcap",
    "drops.pcap",
    "arp.pcap",
    "overlap.pcap",
    "ipv6.pcapng",
];

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
    let table = table();
    let mut failures = Vec::new();
    let mut total = 0;
    for name in CAPTURES {
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
    assert!(total > 200, "fixtures cover {total} frames");
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
    let table = table();
    for name in CAPTURES {
        let stem = name.split('.').next().unwrap();
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        let out = replay::replay(&table, &frames);
        let summary = out.worker.counters.summary(&table);
        let dropped: u64 = summary.dropped.values().sum();
        assert_eq!(
            summary.forwarded + summary.arp_replied + dropped,
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
    let table = table();
    let doc = table.document().clone();
    for name in CAPTURES {
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
                d => panic!("{name} #{i}: transmitted with disposition {d:?}"),
            }
        }
    }
}

#[test]
fn fixtures_cover_every_drop_reason_and_outcome() {
    let table = table();
    let mut total = datapath::Counters::default();
    for name in CAPTURES {
        let frames = replay::read_capture(&fixtures().join(name)).unwrap();
        total.add(&replay::replay(&table, &frames).worker.counters);
    }
    for r in datapath::DropReason::ALL {
        assert!(
            total.dropped[*r as usize] > 0,
            "no fixture frame is dropped as {r}"
        );
    }
    assert!(total.forwarded > 0 && total.arp_replied > 0);
}
