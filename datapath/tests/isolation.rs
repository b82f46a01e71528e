//! Isolation against a hostile tenant: frames crafted to be forwarded (or answered) where the
//! contract (DESIGN.md) says they must be dropped. Each test states the hole it probes.

use datapath::pipeline::{Disposition, Frame, Outcome, Worker, HEADROOM};
use datapath::DropReason;
use policy::{Document, Table};
use std::sync::Arc;

mod common;
use common::*;

const I: [u8; 4] = [198, 19, 2, 1];

fn rule(from: &str, to: &str, proto: &str, ports: &str, action: &str, prio: i32) -> String {
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("ports = \"{ports}\"\n")
    };
    format!(
        "\n[[rule]]\nfrom = \"{from}\"\nto = \"{to}\"\nproto = \"{proto}\"\n{ports}action = \"{action}\"\npriority = {prio}\n"
    )
}

/// A table of the three tenants (in the usual order) with `rules`, at `version`.
fn table(rules: &str, version: u64) -> Table {
    table_ordered(&["acme", "globex", "initech"], rules, version)
}

fn table_ordered(tenants: &[&str], rules: &str, version: u64) -> Table {
    let text = policy("tracked", tenants, rules);
    let doc = Document::from_toml(&text, "hostile.toml").expect("valid policy");
    Table::compile(Arc::new(doc), version, None).expect("compiles")
}

/// An inner ARP request (broadcast) from `sender` asking for `target`.
fn arp_frame(vtep: u8, vni: u32, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&[0x02, 0, 0, 0, 0, vtep]);
    a.extend_from_slice(&sender);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    frame(vtep, vni, [0xff; 6], 0x0806, &a)
}

/// An ICMP destination unreachable (port unreachable) from `src` to `dst` quoting `quoted`
/// (an IPv4 header and the first 8 bytes of its payload).
fn icmp_error_frame(vtep: u8, vni: u32, src: [u8; 4], dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quoted[..28]);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(vtep, vni, &ip4(src, dst, 1, 7, 0, &m))
}

/// A frame stamped with its own time (`ts` s) in a batch whose `now` is `batch_now` (s).
fn run_stamped(w: &mut Worker, t: &Table, frame: &[u8], ts: i64, batch_now: i64) -> Outcome {
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let mut frames = [Frame::new(&mut buf, HEADROOM, frame.len()).at(ts * 1_000_000_000)];
    let mut out = [Outcome::default()];
    w.process(t, &mut frames, &mut out, batch_now * 1_000_000_000);
    out[0]
}

const NOW: i64 = 1_800_000_000;

/// A worker without a decision cache (the full path: the reference).
fn full_path_worker() -> Worker {
    Worker::with_flows_and_cache(
        Arc::new(datapath::FlowTable::new(
            1024,
            datapath::Timeouts::default(),
        )),
        0,
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Tracked replies: an ICMP error from a *third* tenant.
// ---------------------------------------------------------------------------------------------

/// `is_reply` (pipeline.rs) admits an ICMP error when the flow it quotes exists and the quote's
/// source is the error's destination — it never checks that the error comes from the flow's other
/// end (or its tenant). acme's allow toward globex thus lets initech, which no rule lets reach
/// acme, inject ICMP errors (port unreachable, frag-needed with a tiny MTU, …) into acme.
#[test]
fn an_icmp_error_from_a_third_tenant_quoting_a_flow_is_not_admitted() {
    let t = table(&rule("acme", "globex", "udp", "5000", "allow", 100), 1);
    for mut w in [Worker::new(), full_path_worker()] {
        let req = udp_frame(1, 100, A, G, 50000, 5000);
        assert_eq!(run(&mut w, &t, &req, NOW).disposition, Disposition::Forward);
        // The same error from globex (the flow's responder) is what the contract admits.
        let quoted = ip4(A, G, 17, 1, 0, &udp(50000, 5000));
        let from_initech = icmp_error_frame(3, 300, I, A, &quoted);
        let o = run(&mut w, &t, &from_initech, NOW);
        assert_eq!(
            (o.disposition, o.tracked_reply),
            (DENIED, false),
            "initech injected an ICMP error into acme's flow with globex"
        );
    }
}

/// Worse: the re-judge of a flow after a policy change (`is_reply`) asks `forward_allows(d, s,
/// request)` with `s` the *error's sender*, not the flow's responder. After acme→globex is
/// removed, an ICMP error sent by initech (which acme may still reach) re-judges acme's flow to
/// globex as allowed and stamps it with the new version — after which globex's plain replies are
/// admitted again: a flow outlives the policy change that should have ended it.
#[test]
fn a_third_tenants_icmp_error_does_not_revive_a_flow_the_policy_ended() {
    let both = rule("acme", "globex", "udp", "5000", "allow", 100)
        + &rule("acme", "initech", "udp", "5000", "allow", 100);
    let v1 = table(&both, 1);
    let v2 = table(&rule("acme", "initech", "udp", "5000", "allow", 100), 2);
    let reply = udp_frame(2, 200, G, A, 5000, 50000);
    let req = udp_frame(1, 100, A, G, 50000, 5000);
    // Control: without initech's error, v2 ends the flow.
    let mut w = Worker::new();
    assert_eq!(
        run(&mut w, &v1, &req, NOW).disposition,
        Disposition::Forward
    );
    assert_eq!(
        run(&mut w, &v1, &reply, NOW).disposition,
        Disposition::Forward
    );
    assert_eq!(run(&mut w, &v2, &reply, NOW + 1).disposition, DENIED);
    for mut w in [Worker::new(), full_path_worker()] {
        assert_eq!(
            run(&mut w, &v1, &req, NOW).disposition,
            Disposition::Forward
        );
        assert_eq!(
            run(&mut w, &v1, &reply, NOW).disposition,
            Disposition::Forward
        );
        // v2: acme may no longer send to globex; initech's error re-judges the flow on its behalf.
        let quoted = ip4(A, G, 17, 1, 0, &udp(50000, 5000));
        let err = icmp_error_frame(3, 300, I, A, &quoted);
        let _ = run(&mut w, &v2, &err, NOW + 1);
        let o = run(&mut w, &v2, &reply, NOW + 1);
        assert_eq!(
            (o.disposition, o.tracked_reply),
            (DENIED, false),
            "globex's replies outlived the removal of acme→globex"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Neighbour answers.
// ---------------------------------------------------------------------------------------------

/// ARP answers by a tracked flow consult the flow table's host-pair note (`may_learn` →
/// `has_hosts`), which is neither re-judged against the policy nor dropped when the flow is cut:
/// after the rule that allowed acme's flow to globex is removed (and globex's replies are refused),
/// globex can still learn acme's MAC for the note's lifetime (120 s).
#[test]
fn an_arp_answer_by_a_flow_stops_when_the_policy_ends_the_flow() {
    let v1 = table(&rule("acme", "globex", "udp", "5000", "allow", 100), 1);
    let v2 = table("", 2);
    for mut w in [Worker::new(), full_path_worker()] {
        let req = udp_frame(1, 100, A, G, 50000, 5000);
        assert_eq!(
            run(&mut w, &v1, &req, NOW).disposition,
            Disposition::Forward
        );
        // While the flow lives, globex may learn acme's MAC (to address its replies).
        let arp = arp_frame(2, 200, G, A);
        assert_eq!(
            run(&mut w, &v1, &arp, NOW).disposition,
            Disposition::ArpReply
        );
        // v2 ends the flow: its replies are refused ...
        let reply = udp_frame(2, 200, G, A, 5000, 50000);
        assert_eq!(run(&mut w, &v2, &reply, NOW + 1).disposition, DENIED);
        // ... and so must be the neighbour answer that only that flow justified.
        let o = run(&mut w, &v2, &arp, NOW + 2);
        assert_eq!(
            o.disposition, DENIED,
            "globex still learns acme's MAC after the policy ended the flow"
        );
    }
}

/// `Table::may_reach` (what ARP/ND answers consult) says yes when *any* allow rule from the asker
/// to the endpoint's tenant is in force, even one wholly outranked by a deny of every protocol
/// and port (a compliance block): acme, which can send nothing at all to globex, still learns
/// globex's MACs.
#[test]
fn an_allow_rule_outranked_by_a_total_deny_does_not_answer_arp() {
    let rules = rule("acme", "globex", "udp", "5000", "allow", 100)
        + &rule("acme", "globex", "any", "", "deny", 1000);
    let t = table(&rules, 1);
    let mut w = Worker::new();
    let req = udp_frame(1, 100, A, G, 50000, 5000);
    assert_eq!(
        run(&mut w, &t, &req, NOW).disposition,
        DENIED,
        "the deny wins"
    );
    let o = run(&mut w, &t, &arp_frame(1, 100, A, G), NOW);
    assert_eq!(
        o.disposition, DENIED,
        "acme learnt globex's MAC though no frame of it may reach globex"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The decision cache.
// ---------------------------------------------------------------------------------------------

/// A cached decision holds for `m.now < e.expires` only: it has an end (the next window edge) but
/// no start. A frame stamped *before* the window of the rule that allowed a cached flow opened
/// (replayed captures out of order, several capture files, per-frame driver timestamps) hits the
/// entry and is forwarded, where the full path (and the contract: "judged at the frame's time")
/// denies it.
#[test]
fn a_cached_allow_does_not_serve_a_frame_from_before_its_window_opened() {
    let mut window = rule("acme", "globex", "udp", "7000", "allow", 50);
    window
        .push_str("not_before = \"2027-01-01T00:00:00Z\"\nnot_after = \"2027-01-02T00:00:00Z\"\n");
    let t = table(&window, 1);
    let opens = 1_798_761_600; // 2027-01-01T00:00:00Z
    let x = udp_frame(1, 100, A, G, 40001, 7000);
    let mut reference = full_path_worker();
    assert_eq!(
        run_stamped(&mut reference, &t, &x, opens + 100, opens + 100).disposition,
        Disposition::Forward
    );
    assert_eq!(
        run_stamped(&mut reference, &t, &x, opens - 100, opens + 100).disposition,
        DENIED
    );

    let mut w = Worker::new();
    assert_eq!(
        run_stamped(&mut w, &t, &x, opens + 100, opens + 100).disposition,
        Disposition::Forward
    );
    let o = run_stamped(&mut w, &t, &x, opens - 100, opens + 100);
    assert_eq!(
        o.disposition, DENIED,
        "a frame from before the window opened was forwarded by the decision cache"
    );
}

/// The worker's last-sender cache (`last_vtep`: outer IPv4 source → VTEP index) is reset only when
/// the *address* of the table changes, not its version (the decision cache and the next hops key
/// on both). A new version whose `Table` lands where an old one lay (the allocator reuses freed
/// memory; here: the same `Box`) keeps the old version's VTEP index for the last sender — an index
/// that may now name another VTEP. globex's VTEP then passes as acme's: acme's identity and
/// endpoints spoofed from 198.18.0.2.
#[test]
fn the_sending_vtep_is_not_taken_from_an_older_table_at_the_same_address() {
    let rules = rule("acme", "globex", "udp", "5000", "allow", 100);
    // v1: 198.18.0.1 is VTEP 0, 198.18.0.2 is VTEP 1. v2: the other way round.
    let v1 = table_ordered(&["acme", "globex", "initech"], &rules, 1);
    let v2 = table_ordered(&["globex", "acme", "initech"], &rules, 2);
    let spoofed = udp_frame(2, 100, A, G, 50000, 5000);
    // Control: a worker that starts on v2 refuses the spoofed frame.
    let o = run(&mut Worker::new(), &v2, &spoofed, NOW);
    assert_eq!(
        o.disposition,
        Disposition::Drop(DropReason::SpoofedIdentity)
    );
    let mut slot = Box::new(v1);
    let mut w = Worker::new();
    // globex's VTEP sends anything (its last-sender entry: 198.18.0.2 → VTEP 1).
    let benign = udp_frame(2, 200, G, A, 5000, 50000);
    let _ = run(&mut w, &slot, &benign, NOW);
    // The policy moves on (the worker idle meanwhile); the new table lies where the old one did.
    *slot = v2;
    // From globex's VTEP, acme's segment and acme's endpoint address.
    let o = run(&mut w, &slot, &spoofed, NOW);
    assert_eq!(
        o.disposition,
        Disposition::Drop(DropReason::SpoofedIdentity),
        "198.18.0.2 sent for acme (VTEP index of the previous version)"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. TCP close, fragments.
// ---------------------------------------------------------------------------------------------

/// "until the flow ends (TCP FIN/RST)": after acme resets its connection, globex's frames keep
/// refreshing the flow's `last` (`FlowTable::touch` refreshes in every state), so the 10 s closing
/// timeout never runs out while globex keeps sending: the responder keeps a reset flow open forever.
#[test]
fn the_responder_cannot_keep_a_reset_flow_alive() {
    let t = table(&rule("acme", "globex", "tcp", "443", "allow", 100), 1);
    for mut w in [Worker::new(), full_path_worker()] {
        let a = |f| tcp_frame(1, 100, A, G, 50000, 443, f);
        let g = |f| tcp_frame(2, 200, G, A, 443, 50000, f);
        tcp_handshake(&mut w, &t, a, g, NOW); // each step asserted forwarded
        assert_eq!(
            run(&mut w, &t, &a(RST | ACK), NOW).disposition,
            Disposition::Forward
        );
        // globex goes on sending every 5 s for two minutes.
        let mut last = Disposition::Forward;
        for k in 1..=24 {
            last = run(&mut w, &t, &g(ACK), NOW + 5 * k).disposition;
        }
        assert_eq!(
            last, DENIED,
            "globex's frames still pass 120 s after acme reset the flow"
        );
    }
}

/// A first fragment whose TCP header stops after 8 bytes has no flags to read (`transport` leaves
/// them 0), so `is_reply`'s "never a new connection from B" (SYN without ACK) cannot see the SYN
/// that the next fragment (offset 8 bytes) carries: both fragments pass, and acme's host
/// reassembles a SYN from globex. (RFC 1858 / 3128: drop such tiny TCP first fragments.)
#[test]
fn a_syn_split_over_tiny_fragments_is_not_admitted_as_a_reply() {
    let t = table(&rule("acme", "globex", "tcp", "443", "allow", 100), 1);
    for mut w in [Worker::new(), full_path_worker()] {
        let a = |f| tcp_frame(1, 100, A, G, 50000, 443, f);
        assert_eq!(
            run(&mut w, &t, &a(SYN), NOW).disposition,
            Disposition::Forward
        );
        assert_eq!(
            run(&mut w, &t, &a(ACK), NOW).disposition,
            Disposition::Forward
        );
        // The same SYN, whole: refused (it is no reply).
        let syn = tcp_frame(2, 200, G, A, 443, 50000, SYN);
        assert_eq!(run(&mut w, &t, &syn, NOW).disposition, DENIED);
        // Split after 8 bytes of TCP header.
        let seg = tcp(443, 50000, SYN);
        let first = ip_frame(2, 200, &ip4(G, A, 6, 99, 0x2000, &seg[..8]));
        let later = ip_frame(2, 200, &ip4(G, A, 6, 99, 1, &seg[8..]));
        let o1 = run(&mut w, &t, &first, NOW);
        let o2 = run(&mut w, &t, &later, NOW);
        assert!(
            !(o1.disposition.transmits() && o2.disposition.transmits()),
            "a SYN from globex reached acme in two fragments: {:?} {:?}",
            o1.disposition,
            o2.disposition
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Probes the code gets right (kept: a broken implementation would fail them).
// ---------------------------------------------------------------------------------------------

/// An ICMP echo frame: `kind` 8 (request) or 0 (reply), identifier `id`.
fn echo_frame(vtep: u8, vni: u32, src: [u8; 4], dst: [u8; 4], kind: u8, id: u16) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(b"joypath!");
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(vtep, vni, &ip4(src, dst, 1, 3, 0, &m))
}

/// An echo flow's key is the same both ways (ports = the identifier twice): only the echo kind in
/// the decision-cache key keeps globex's echo *request* with acme's identifier from inheriting the
/// cached verdict of globex's echo *reply* (a tracked reply) — a new "connection" from globex.
#[test]
fn a_cached_echo_reply_does_not_admit_an_echo_request_with_the_same_identifier() {
    let t = table(&rule("acme", "globex", "icmp", "", "allow", 100), 1);
    let mut w = Worker::new();
    assert_eq!(
        run(&mut w, &t, &echo_frame(1, 100, A, G, 8, 7), NOW).disposition,
        Disposition::Forward
    );
    let reply = echo_frame(2, 200, G, A, 0, 7);
    for _ in 0..2 {
        let o = run(&mut w, &t, &reply, NOW);
        assert_eq!(
            (o.disposition, o.tracked_reply),
            (Disposition::Forward, true)
        );
    }
    assert!(w.cache_hits >= 1, "the reply's decision was cached");
    let o = run(&mut w, &t, &echo_frame(2, 200, G, A, 8, 7), NOW);
    assert_eq!((o.disposition, o.tracked_reply), (DENIED, false));
}

/// A tracked reply served from the decision cache stops with the policy version that removes the
/// rule that allowed its request (the cache's epoch, and the flow's re-judge on the full path).
#[test]
fn a_cached_tracked_reply_stops_when_the_rule_goes() {
    let v1 = table(&rule("acme", "globex", "udp", "5000", "allow", 100), 1);
    let v2 = table(&rule("acme", "globex", "udp", "6000", "allow", 100), 2);
    let mut w = Worker::new();
    let req = udp_frame(1, 100, A, G, 50000, 5000);
    let reply = udp_frame(2, 200, G, A, 5000, 50000);
    assert_eq!(
        run(&mut w, &v1, &req, NOW).disposition,
        Disposition::Forward
    );
    for _ in 0..2 {
        assert_eq!(
            run(&mut w, &v1, &reply, NOW).disposition,
            Disposition::Forward
        );
    }
    assert!(w.cache_hits >= 1);
    assert_eq!(run(&mut w, &v2, &reply, NOW).disposition, DENIED);
    // Nor does the request, which a new rule on another port does not cover, revive it.
    assert_eq!(run(&mut w, &v2, &req, NOW).disposition, DENIED);
    assert_eq!(run(&mut w, &v2, &reply, NOW).disposition, DENIED);
}

/// Fragments are remembered per tenant: a later fragment from acme is not forwarded on the verdict
/// of a first fragment with the same addresses, protocol and id sent by a tenant of another address
/// space (overlapping inner addresses) whose own rules allowed it.
#[test]
fn a_first_fragment_of_another_address_space_does_not_admit_a_later_fragment() {
    let other = r#"
[[segment]]
vni = 400
identity = "vni"
tenant = "umbrella"

[[segment]]
vni = 500
identity = "vni"
tenant = "hooli"

[[tenant]]
name = "umbrella"
id = 40
vteps = ["198.18.0.4"]
address_space = "other"

[[tenant]]
name = "hooli"
id = 50
vteps = ["198.18.0.5"]
address_space = "other"

[[endpoint]]
tenant = "umbrella"
ip = "198.19.0.1"
mac = "02:00:00:00:28:01"
vtep = "198.18.0.4"
vni = 400

[[endpoint]]
tenant = "hooli"
ip = "198.19.1.1"
mac = "02:00:00:00:32:01"
vtep = "198.18.0.5"
vni = 500
"#;
    let rules = rule("umbrella", "hooli", "udp", "5000", "allow", 100);
    let text = policy(
        "tracked",
        &["acme", "globex", "initech"],
        &format!("{other}{rules}"),
    );
    let doc = Document::from_toml(&text, "hostile.toml").expect("valid policy");
    let t = Table::compile(Arc::new(doc), 1, None).expect("compiles");
    let mut w = Worker::new();
    let dgram = udp(50000, 5000);
    // umbrella's first fragment (same inner addresses as acme → globex): allowed.
    let first = ip_frame(4, 400, &ip4(A, G, 17, 42, 0x2000, &dgram[..8]));
    assert_eq!(
        run(&mut w, &t, &first, NOW).disposition,
        Disposition::Forward
    );
    // acme's later fragment with the same (source, destination, protocol, id).
    let later = ip_frame(1, 100, &ip4(A, G, 17, 42, 1, &dgram[8..]));
    assert_eq!(
        run(&mut w, &t, &later, NOW).disposition,
        Disposition::Drop(DropReason::OrphanFragment)
    );
    // umbrella's own later fragment passes.
    let later = ip_frame(4, 400, &ip4(A, G, 17, 42, 1, &dgram[8..]));
    assert_eq!(
        run(&mut w, &t, &later, NOW).disposition,
        Disposition::Forward
    );
}

/// A client that reuses its ports for a new connection soon after the last one closed (within
/// the 10 s closing timeout) starts a new flow, as Linux's conntrack reopens a closed entry on a
/// SYN: the old close must not end the new connection 10 s later, while the server is still
/// answering it.
#[test]
fn a_new_connection_on_a_closed_flows_ports_is_tracked_afresh() {
    let t = table(&rule("acme", "globex", "tcp", "443", "allow", 100), 1);
    for mut w in [Worker::new(), full_path_worker()] {
        let a = |f| tcp_frame(1, 100, A, G, 50000, 443, f);
        let g = |f| tcp_frame(2, 200, G, A, 443, 50000, f);
        tcp_handshake(&mut w, &t, a, g, NOW); // each step asserted forwarded
        assert_eq!(
            run(&mut w, &t, &a(RST | ACK), NOW).disposition,
            Disposition::Forward
        );
        // Two seconds later, the same ports again: a new connection.
        assert_eq!(
            run(&mut w, &t, &a(SYN), NOW + 2).disposition,
            Disposition::Forward
        );
        assert_eq!(
            run(&mut w, &t, &g(SYN | ACK), NOW + 2).disposition,
            Disposition::Forward
        );
        // globex answers every 5 s (acme only listens) well past the old close's timeout.
        for k in 1..=6 {
            let o = run(&mut w, &t, &g(ACK), NOW + 2 + 5 * k);
            assert_eq!(
                o.disposition,
                Disposition::Forward,
                "globex's answer {} s after the new connection began",
                5 * k
            );
            assert!(o.tracked_reply);
        }
        // A SYN from the responder's side reopens nothing: after a reset, globex's frames lapse.
        assert_eq!(
            run(&mut w, &t, &a(RST | ACK), NOW + 40).disposition,
            Disposition::Forward
        );
        assert_eq!(run(&mut w, &t, &g(SYN), NOW + 41).disposition, DENIED);
        assert_eq!(run(&mut w, &t, &g(ACK), NOW + 52).disposition, DENIED);
    }
}
