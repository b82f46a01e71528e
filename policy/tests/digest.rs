//! The digest's formats, pinned: a store or a fleet written by one build is checked by another in
//! the format it was recorded in (`policy::table::digest_in_format`), so each format's values must
//! never move. A change to the formula is a new `DIGEST_FORMAT`, the old one kept here.

use policy::table::{digest, digest_in_format, DIGEST_FORMAT};
use policy::Document;
use std::path::Path;

fn fixtures() -> Document {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures/fixtures.toml");
    Document::load(&p).unwrap()
}

#[test]
fn each_format_gives_the_value_its_build_recorded() {
    let d = fixtures();
    // Recorded by 8021336 (format 1, before formats were recorded) for version 1 of fixtures.toml.
    assert_eq!(digest_in_format(&d, 1), Some(0x2203_9c51_975b_3d34));
    // Format 2, this build's.
    assert_eq!(DIGEST_FORMAT, 2);
    assert_eq!(digest(&d), 0x9f80_fb54_a8d7_8cd7);
    assert_eq!(digest_in_format(&d, DIGEST_FORMAT), Some(digest(&d)));
    assert_eq!(digest_in_format(&d, 0), None);
    assert_eq!(digest_in_format(&d, DIGEST_FORMAT + 1), None);
}

#[test]
fn a_setting_added_later_moves_the_digest_only_when_set() {
    let d = fixtures();
    let mut set = d.clone();
    set.gateway.decision_cache = Some(0);
    let mut other = d.clone();
    other.gateway.decision_cache = Some(4096);
    for f in [1, DIGEST_FORMAT] {
        let (a, b, c) = (
            digest_in_format(&d, f),
            digest_in_format(&set, f),
            digest_in_format(&other, f),
        );
        assert!(a != b && b != c && a != c, "format {f}");
    }
}

#[test]
fn both_formats_see_a_rule_move() {
    let d = fixtures();
    let mut moved = d.clone();
    let r = moved.rules.remove(0);
    moved.rules.push(r);
    for f in [1, DIGEST_FORMAT] {
        assert_ne!(
            digest_in_format(&d, f),
            digest_in_format(&moved, f),
            "format {f}"
        );
    }
}
