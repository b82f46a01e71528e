//! The worker's decision cache gives the outcomes of the full path: a cached allow or deny is
//! served without a parse, a cached deny lapses when a flow it would answer is born (tracked
//! replies), a new table version drops every cached decision, and a decision is served only to
//! frames with the same identity fields and sender.

use datapath::pipeline::{Disposition, Frame, Outcome, Worker, HEADROOM};
use datapath::DropReason;
use policy::{Document, Table};
use std::sync::Arc;

mod common;
use common::*;

/// acme may send udp to globex's port 5000; EXTRA: more rules.
const RULES: &str = r#"
[[rule]]
from = "acme"
to = "globex"
proto = "udp"
ports = "5000"
action = "allow"
priority = 100
EXTRA
"#;

/// An extra rule: globex may send udp to acme (any port), so that its replies need no tracking.
const GLOBEX_MAY_ANSWER: &str =
    "[[rule]]\nfrom = \"globex\"\nto = \"acme\"\nproto = \"udp\"\naction = \"allow\"\npriority = 10\n";

fn table(replies: &str, extra: &str, version: u64) -> Table {
    let text = policy(replies, &["acme", "globex"], &RULES.replace("EXTRA", extra));
    let doc = Document::from_toml(&text, "test.toml").expect("valid policy");
    Table::compile(Arc::new(doc), version, None).expect("compiles")
}

fn acme_to_globex() -> Vec<u8> {
    udp_frame(1, 100, A, G, 50000, 5000)
}
fn globex_to_acme() -> Vec<u8> {
    udp_frame(2, 200, G, A, 5000, 50000)
}

#[test]
fn a_cached_deny_lapses_when_the_flow_it_would_answer_is_born() {
    let t = table("tracked", "", 1);
    let mut w = Worker::new();
    let now = 1_800_000_000;
    assert_eq!(run(&mut w, &t, &globex_to_acme(), now).disposition, DENIED);
    assert_eq!(run(&mut w, &t, &globex_to_acme(), now).disposition, DENIED);
    assert_eq!(
        (w.cache_hits, w.cache_misses),
        (1, 1),
        "the second deny is served from the cache"
    );

    let o = run(&mut w, &t, &acme_to_globex(), now);
    assert_eq!(o.disposition, Disposition::Forward);
    // The flow acme started is born: globex's frame is now its reply, cached deny or not.
    let o = run(&mut w, &t, &globex_to_acme(), now);
    assert_eq!(o.disposition, Disposition::Forward);
    assert!(o.tracked_reply);
    let hits = w.cache_hits;
    let o = run(&mut w, &t, &globex_to_acme(), now);
    assert_eq!(
        (o.disposition, o.tracked_reply),
        (Disposition::Forward, true)
    );
    assert_eq!(
        w.cache_hits,
        hits + 1,
        "the reply's decision is cached in turn"
    );

    // The flow goes idle (udp: 30 s by default): the cached reply lapses with it.
    let o = run(&mut w, &t, &globex_to_acme(), now + 3600);
    assert_eq!(o.disposition, DENIED);
}

#[test]
fn a_deny_born_flow_seen_by_another_worker_lifts_the_cached_deny() {
    // Requests and replies arrive on different queues: the deny cached by one worker must lapse
    // when another worker's frame starts the flow.
    let t = table("tracked", "", 1);
    let mut replies = Worker::new();
    let mut requests = Worker::with_flows(replies.flows.clone());
    let now = 1_800_000_000;
    assert_eq!(
        run(&mut replies, &t, &globex_to_acme(), now).disposition,
        DENIED
    );
    assert_eq!(
        run(&mut replies, &t, &globex_to_acme(), now).disposition,
        DENIED
    );
    assert_eq!(replies.cache_hits, 1);
    let o = run(&mut requests, &t, &acme_to_globex(), now);
    assert_eq!(o.disposition, Disposition::Forward);
    let o = run(&mut replies, &t, &globex_to_acme(), now);
    assert_eq!(
        (o.disposition, o.tracked_reply),
        (Disposition::Forward, true)
    );
}

#[test]
fn a_cached_decision_keeps_the_outcome_and_the_bytes_of_the_full_path() {
    let t = table("tracked", "", 1);
    let mut w = Worker::new();
    let now = 1_800_000_000;
    let frame = acme_to_globex();
    let mut first = vec![0u8; HEADROOM + frame.len()];
    first[HEADROOM..].copy_from_slice(&frame);
    let mut second = first.clone();
    let mut out = [Outcome::default()];
    let mut f = [Frame::new(&mut first, HEADROOM, frame.len())];
    w.process(&t, &mut f, &mut out, now * 1_000_000_000);
    let (a_start, a_len, a_out) = (f[0].start, f[0].len, out[0]);
    assert_eq!(w.cache_misses, 1);
    let mut f = [Frame::new(&mut second, HEADROOM, frame.len())];
    w.process(&t, &mut f, &mut out, now * 1_000_000_000);
    assert_eq!(w.cache_hits, 1);
    assert_eq!((f[0].start, f[0].len, out[0]), (a_start, a_len, a_out));
    assert_eq!(first, second, "the cached rewrite writes the same bytes");
    assert_eq!(a_out.rule, Some(0));
}

#[test]
fn stateless_denies_are_cached_and_a_new_version_drops_them() {
    let t = table("stateless", "", 1);
    let mut w = Worker::new();
    let now = 1_800_000_000;
    // Stateless: globex from port 5000 is admitted as the mirror of the allow; from 5001 denied.
    let deny = udp_frame(2, 200, G, A, 5001, 50000);
    assert_eq!(run(&mut w, &t, &deny, now).disposition, DENIED);
    assert_eq!(run(&mut w, &t, &deny, now).disposition, DENIED);
    assert_eq!(w.cache_hits, 1);
    let t2 = table("stateless", GLOBEX_MAY_ANSWER, 2);
    let o = run(&mut w, &t2, &deny, now);
    assert_eq!((o.disposition, o.rule), (Disposition::Forward, Some(1)));
}

#[test]
fn a_cached_decision_serves_only_frames_of_the_same_identity_and_sender() {
    // The cache is keyed by what decides the tenant and the sending VTEP (VNI, GBP group, inner
    // VLAN id, outer source), not by the resolved tenant: frames that differ in any of these
    // alone must not share a decision.
    let extra = "[[segment]]\nvni = 300\nidentity = \"gbp\"\n\n[[segment]]\nvni = 400\nidentity = \"vlan\"\n";
    let t = table("tracked", extra, 1);
    let mut w = Worker::new();
    let now = 1_800_000_000;
    let spoofed = Disposition::Drop(DropReason::SpoofedIdentity);
    let cases = [
        // (allowed frame, the same frame but one identity field, what that frame gets)
        (
            udp_frame(1, 100, A, G, 50000, 5000),
            udp_frame(2, 100, A, G, 50000, 5000),
            spoofed,
        ),
        (
            tagged_frame(1, 300, Some(10), None, A, G, 50001, 5000),
            tagged_frame(1, 300, Some(20), None, A, G, 50001, 5000),
            spoofed,
        ),
        (
            tagged_frame(1, 400, None, Some(10), A, G, 50002, 5000),
            tagged_frame(1, 400, None, Some(20), A, G, 50002, 5000),
            spoofed,
        ),
        (
            tagged_frame(1, 300, Some(10), None, A, G, 50003, 5000),
            tagged_frame(1, 300, None, None, A, G, 50003, 5000),
            Disposition::Drop(DropReason::NoIdentity),
        ),
    ];
    for (i, (good, other, expect)) in cases.iter().enumerate() {
        for _ in 0..2 {
            let o = run(&mut w, &t, good, now);
            assert_eq!(o.disposition, Disposition::Forward, "case {i}");
            assert_eq!(o.tenant, Some(0), "case {i}: acme's frame");
        }
        let hits = w.cache_hits;
        let o = run(&mut w, &t, other, now);
        assert_eq!(o.disposition, *expect, "case {i}");
        assert_eq!(w.cache_hits, hits, "case {i}: not served from acme's entry");
    }
    assert_eq!(
        w.cache_hits, 4,
        "each allowed frame's second pass was a hit"
    );
}

#[test]
fn a_decision_made_before_a_window_opens_expires_when_it_opens_even_after_a_later_frame() {
    // The worker remembers the next window edge for a span of instants; a frame judged earlier
    // than that span (replayed captures are not always in time order) gets its own, earlier edge.
    let window = "[[rule]]\nfrom = \"acme\"\nto = \"globex\"\nproto = \"udp\"\nports = \"7000\"\naction = \"allow\"\npriority = 50\nnot_before = \"2027-01-01T00:00:00Z\"\nnot_after = \"2027-01-02T00:00:00Z\"\n";
    let t = table("tracked", window, 1);
    let mut w = Worker::new();
    let opens = 1_798_761_600; // 2027-01-01T00:00:00Z
    let x = udp_frame(1, 100, A, G, 40001, 7000);
    let y = udp_frame(1, 100, A, G, 40002, 7000);
    assert_eq!(
        run(&mut w, &t, &x, opens + 100).disposition,
        Disposition::Forward
    );
    assert_eq!(run(&mut w, &t, &y, opens - 100).disposition, DENIED);
    let o = run(&mut w, &t, &y, opens + 200);
    assert_eq!(
        (o.disposition, o.rule),
        (Disposition::Forward, Some(1)),
        "the deny cached before the window opened lapsed when it opened"
    );
}

#[test]
fn a_reply_a_rule_allows_is_reported_alike_from_the_cache() {
    // globex may answer acme by a rule of its own: its frames are admitted by that rule (not as
    // tracked replies), whether the full path or the cache decides them.
    let t = table("tracked", GLOBEX_MAY_ANSWER, 1);
    let mut w = Worker::new();
    let now = 1_800_000_000;
    assert_eq!(
        run(&mut w, &t, &acme_to_globex(), now).disposition,
        Disposition::Forward
    );
    let full = run(&mut w, &t, &globex_to_acme(), now);
    let cached = run(&mut w, &t, &globex_to_acme(), now);
    assert!(w.cache_hits >= 1);
    assert_eq!(
        (full.disposition, full.rule, full.tracked_reply),
        (Disposition::Forward, Some(1), false)
    );
    assert_eq!(cached, full);
    assert_eq!(w.counters.replies_tracked, 0);
}

#[test]
fn two_flows_whose_keys_share_a_set_are_both_kept() {
    // A cache of one set (two ways): every key maps to it. Two flows taking turns both stay
    // cached; a third one evicts the older of them.
    let t = table("tracked", "", 1);
    let mut w = Worker::with_flows_and_cache(Worker::new().flows.clone(), 2);
    let now = 1_800_000_000;
    let flow = |sp| udp_frame(1, 100, A, G, sp, 5000);
    for f in [flow(50000), flow(50001), flow(50000), flow(50001)] {
        assert_eq!(run(&mut w, &t, &f, now).disposition, Disposition::Forward);
    }
    assert_eq!((w.cache_hits, w.cache_misses), (2, 2));
    for f in [flow(50002), flow(50001), flow(50000)] {
        assert_eq!(run(&mut w, &t, &f, now).disposition, Disposition::Forward);
    }
    // 50002 took way 0 and pushed 50001 (the newest) to way 1, evicting 50000.
    assert_eq!((w.cache_hits, w.cache_misses), (3, 4));
}

#[test]
fn a_hit_after_a_quiet_second_renews_the_host_pair_note_as_the_full_path_does() {
    // A flow's frames two seconds apart: each comes after a quiet second, which the full path
    // answers by refreshing the flow *and* noting its host pair again (neighbour answers consult
    // that note, which expires after `other`, 120 s). A cached decision must not refresh the flow
    // on its own and so hide the quiet second from the full path.
    let t = table("tracked", "", 1);
    let mut cached = Worker::new();
    let mut reference = Worker::with_flows_and_cache(
        Arc::new(datapath::FlowTable::new(
            1024,
            datapath::Timeouts::default(),
        )),
        0,
    );
    let start = 1_800_000_000;
    for k in 0..70 {
        for w in [&mut cached, &mut reference] {
            let o = run(w, &t, &acme_to_globex(), start + 2 * k);
            assert_eq!(o.disposition, Disposition::Forward);
        }
    }
    let end = (start + 2 * 69) * 1_000_000_000;
    let hosts = |w: &Worker| {
        let id = datapath::flows::FlowId::new(
            0,
            0,
            u128::from(u32::from_be_bytes(A)),
            u128::from(u32::from_be_bytes(G)),
            false,
            0,
            0,
            0,
        );
        w.flows.has_hosts(&id.hosts(), end)
    };
    assert!(hosts(&reference), "the full path keeps the host pair noted");
    assert!(
        hosts(&cached),
        "so does the cached worker, 138 s after the flow's birth"
    );
}

#[test]
fn a_hit_on_a_flow_past_a_sub_second_timeout_takes_the_full_path() {
    // With a timeout under a second, "refreshed within the last second" no longer means alive: a
    // hit must work the flow's timeout out, and find this one expired (the full path then starts
    // the flow anew), as a worker without a cache does.
    let t = table("tracked", "\n[gateway.flow_timeouts]\nudp = 0\n", 1);
    let flows = || {
        let ft = datapath::Timeouts {
            udp: 0,
            ..datapath::Timeouts::default()
        };
        Arc::new(datapath::FlowTable::new(1024, ft))
    };
    let mut cached = Worker::with_flows(flows());
    let mut reference = Worker::with_flows_and_cache(flows(), 0);
    let start = 1_800_000_000;
    for k in 0..3 {
        for w in [&mut cached, &mut reference] {
            let o = run(w, &t, &acme_to_globex(), start + k);
            assert_eq!(o.disposition, Disposition::Forward);
        }
    }
    assert_eq!(
        reference.counters.flows_created, 3,
        "each frame outlives its flow"
    );
    assert_eq!(cached.counters.flows_created, 3);
}

/// `frame` with four bytes of options (NOPs) in its outer IPv4 header: the same decision-cache key,
/// but its inner frame lies four bytes further.
fn with_outer_options(frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 1]);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x46;
    let tl = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&tl.to_be_bytes());
    f[24..26].fill(0);
    let c = csum(&f[14..38]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Runs `frames` in turn through a worker with a decision cache and one without: each frame's
/// outcome and bytes must agree, and be `want` (the outer options are not carried over).
fn agree_with_the_full_path(frames: &[Vec<u8>], want: &(Outcome, Vec<u8>)) {
    let t = table("tracked", "", 1);
    let mut cached = Worker::new();
    let flows = Arc::new(datapath::FlowTable::new(
        1024,
        datapath::Timeouts::default(),
    ));
    let mut full = Worker::with_flows_and_cache(flows, 0);
    for (i, frame) in frames.iter().enumerate() {
        let got = [&mut cached, &mut full].map(|w| rewritten(w, &t, frame));
        assert_eq!(
            got[0], got[1],
            "frame {i}: the cache and the full path differ"
        );
        assert_eq!(&got[0], want, "frame {i}");
    }
    assert!(cached.cache_hits >= 2, "hits: {}", cached.cache_hits);
}

/// Runs `frame` through `w`: its outcome and the bytes it leaves with.
fn rewritten(w: &mut Worker, t: &Table, frame: &[u8]) -> (Outcome, Vec<u8>) {
    let now = 1_800_000_000i64 * 1_000_000_000;
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let mut f = [Frame::new(&mut buf, HEADROOM, frame.len())];
    let mut out = [Outcome::default()];
    w.process(t, &mut f, &mut out, now);
    let (s, l) = (f[0].start, f[0].len);
    (out[0], buf[s..s + l].to_vec())
}

#[test]
fn a_decision_made_in_place_serves_a_frame_with_outer_options_and_back() {
    let plain = acme_to_globex();
    let opts = with_outer_options(&plain);
    assert_eq!(opts.len(), plain.len() + 4);
    let want = rewritten(&mut Worker::new(), &table("tracked", "", 1), &plain);
    assert_eq!(want.0.disposition, Disposition::Forward);
    let (p, o) = (plain, opts);
    agree_with_the_full_path(&[p.clone(), o.clone(), p.clone(), o.clone()], &want);
    agree_with_the_full_path(&[o.clone(), p.clone(), o, p], &want);
}
