//! Every capture of ../shared/pcaps/real-world/ replayed: every frame accounted for, none panicking,
//! and each capture's summary under `pcap-fixtures/real-world.toml` equal to its checked-in golden
//! (`JOYPATH_BLESS=1` rewrites them). Set JOYPATH_REAL_WORLD to read the captures from elsewhere.

use driver::replay;
use policy::{Document, Table};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn captures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("JOYPATH_REAL_WORLD") {
        return PathBuf::from(d);
    }
    // Beside the checkout (../shared), or where the workplace keeps it.
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/real-world");
    let workplace = PathBuf::from("/work/shared/pcaps/real-world");
    if !beside.is_dir() && workplace.is_dir() {
        workplace
    } else {
        beside
    }
}

fn table(name: &str) -> Table {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pcap-fixtures")
        .join(name);
    Table::compile(Arc::new(Document::load(&p).unwrap()), 1, None).unwrap()
}

#[test]
fn every_real_world_frame_is_accounted_for() {
    let dir = captures_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set JOYPATH_REAL_WORLD)", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 25,
        "expected the real-world captures in {}",
        dir.display()
    );
    let real = table("real-world.toml");
    let fixtures = table("fixtures.toml");
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcap-fixtures/real-world");
    let mut forwarded = 0;
    let mut arp = 0;
    let mut diffs = Vec::new();
    for name in &names {
        let frames = replay::read_capture(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        for t in [&real, &fixtures] {
            let out = replay::replay(t, &frames);
            let s = out.worker.counters.summary(t);
            let dropped: u64 = s.dropped.values().sum();
            assert_eq!(s.frames, frames.len() as u64, "{name}");
            assert_eq!(
                s.forwarded + s.arp_replied + s.nd_replied + dropped,
                s.frames,
                "{name}: outcomes add up"
            );
            for (i, _, bytes) in &out.transmitted {
                assert!(
                    vtep::parse_overlay(bytes, 4789).is_ok(),
                    "{name} #{i}: output parses"
                );
            }
        }
        let out = replay::replay(&real, &frames);
        let s = out.worker.counters.summary(&real);
        forwarded += s.forwarded;
        arp += s.arp_replied;
        let json = serde_json::to_string_pretty(&s).unwrap() + "\n";
        let golden = golden_dir.join(format!("{name}.summary.json"));
        if std::env::var_os("JOYPATH_BLESS").is_some() {
            std::fs::write(&golden, &json).unwrap();
        } else if std::fs::read_to_string(&golden).unwrap_or_default() != json {
            diffs.push(format!(
                "{name}: summary differs from {}:\n{json}",
                golden.display()
            ));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // Real Linux and Zeek VXLAN traffic is carried: ICMP forwarded, ARP requests answered.
    assert!(
        forwarded >= 8 && arp >= 2,
        "forwarded {forwarded}, arp {arp}"
    );
}
