//! The pipeline: a function over a batch of frame buffers, a policy table and a worker's state — parse,
//! identify, check the sender, look up, decide, track, rewrite — in stages over the batch, so that
//! each stage's table lines are prefetched while the previous stage's frames are worked on.
//! No I/O, no locks, no allocation per frame.

use crate::counters::{Counters, DropReason, Event, TenantCounters};
use crate::flows::{FlowId, FlowRef, FlowTable, Timeouts, Tracked};
use crate::frags::{FragKey, FragVerdict, Frags};
use hashbrown::HashMap;
use policy::huge::HugeBuf;
use policy::{Ep, FlowKey, Ident, IdentityMode, Replies, Scope, Table, TenantIdx, VtepIdx};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use vtep::inner::{self, tcp, Frag, IcmpKind, IpInfo};
use vtep::{
    encapsulate, ethertype, ipproto, parse_overlay, set_inner_vlan, vxlan_header, ArpPacket,
    EncapError, EthernetFrame, Mac, OverlayError, Underlay, OUTER_LEN_V4,
};

/// Bytes a driver must leave free before each frame: an IPv4→IPv6 underlay change grows the outer
/// headers by 20 bytes and a pushed inner 802.1Q tag by 4 more.
pub const HEADROOM: usize = 64;

/// Frames worked on together, stage by stage (a batch is cut into chunks of this size).
const CHUNK: usize = 32;
const _: () = assert!(CHUNK <= 256); // frame indices of a chunk fit a byte

/// One frame buffer: the frame is `buf[start..start + len]`; the bytes before `start` are headroom.
/// The pipeline rewrites the frame in place and moves `start`/`len` accordingly. `ts` is the frame's
/// time (Unix ns; 0: the batch's `now`).
#[derive(Debug)]
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
    pub ts: i64,
}

impl<'a> Frame<'a> {
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        debug_assert!(start + len <= buf.len());
        Frame {
            buf,
            start,
            len,
            ts: 0,
        }
    }
    /// The frame, stamped with its own time (Unix ns).
    pub fn at(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disposition {
    /// Re-encapsulated toward the destination VTEP: transmit.
    Forward,
    /// Turned into an ARP reply toward the asking VTEP: transmit.
    ArpReply,
    /// Turned into an IPv6 neighbour advertisement toward the asking VTEP: transmit.
    NdReply,
    Drop(DropReason),
    #[default]
    Pending,
}

impl Disposition {
    pub fn transmits(self) -> bool {
        matches!(
            self,
            Disposition::Forward | Disposition::ArpReply | Disposition::NdReply
        )
    }
}

/// The outcome of one frame: disposition, source tenant (once identified), the deciding rule and
/// where the frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub disposition: Disposition,
    pub tenant: Option<TenantIdx>,
    /// Index in the policy document of the rule that decided; `None` for defaults or non-verdicts.
    pub rule: Option<u32>,
    /// The VTEP the frame leaves toward, by its index in the table (None: one the table does not
    /// name, such as an asker's VTEP of a tenant without a `vteps` list; the frame then goes back
    /// the way it came).
    pub egress: Option<VtepIdx>,
    /// Admitted as the reply of a tracked flow (or an ICMP error quoting one).
    pub tracked_reply: bool,
}

/// Underlay next hops: the MAC a VTEP's frames came from, learnt from frames that passed every
/// check, and static ones set by the driver. Indexed by VTEP for the table in use.
#[derive(Debug)]
pub struct Neighbors {
    by_ip: HashMap<IpAddr, Mac>,
    /// Each VTEP's next hop as a word ([`Mac::word`]); 0: none.
    by_vtep: Vec<u64>,
    cap: usize,
    /// The table `by_vtep` is indexed for (address, version).
    indexed_for: (usize, u64),
}

impl Neighbors {
    pub fn with_capacity(cap: usize) -> Self {
        Neighbors {
            by_ip: HashMap::with_capacity(cap),
            by_vtep: Vec::new(),
            cap,
            indexed_for: (0, 0),
        }
    }
    /// Sets a next hop by hand (static neighbour, or one read from the kernel's table).
    pub fn insert(&mut self, ip: IpAddr, mac: Mac) {
        self.by_ip.insert(ip, mac);
        self.indexed_for = (0, 0);
    }
    pub fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.by_ip.get(ip).copied()
    }
    /// The learnt next hop of VTEP `v` of the table in use.
    #[inline(always)]
    pub fn of_vtep(&self, v: VtepIdx) -> Option<Mac> {
        Some(self.word_of_vtep(v))
            .filter(|&w| w != 0)
            .map(Mac::from_word)
    }
    /// [`Neighbors::of_vtep`] as a word ([`Mac::word`]); 0: none.
    #[inline(always)]
    fn word_of_vtep(&self, v: VtepIdx) -> u64 {
        self.by_vtep.get(v as usize).copied().unwrap_or(0)
    }
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
    /// Re-indexes by the VTEPs of `table` (once per table change).
    fn index(&mut self, table: &Table) {
        let id = (table as *const Table as usize, table.version());
        if self.indexed_for == id && self.by_vtep.len() == table.vteps() {
            return;
        }
        self.by_vtep.clear();
        self.by_vtep.resize(table.vteps(), 0);
        for (ip, mac) in &self.by_ip {
            if let Some(v) = table.vtep_index(*ip) {
                self.by_vtep[v as usize] = mac.word();
            }
        }
        self.indexed_for = id;
    }
    /// Learns `mac` (a word: [`Mac::word`]) as VTEP `v`'s next hop.
    #[inline(always)]
    fn learn(&mut self, table: &Table, v: VtepIdx, mac: u64) {
        // Unchanged (nearly always), or a VTEP the table does not index: nothing to learn.
        if self.by_vtep.get(v as usize).is_none_or(|&w| w == mac) {
            return;
        }
        self.learn_new(table, v, mac);
    }

    /// [`Neighbors::learn`] of a next hop that changed (out of line: the per-frame check stays
    /// small).
    #[cold]
    #[inline(never)]
    fn learn_new(&mut self, table: &Table, v: VtepIdx, mac: u64) {
        if mac & 1 != 0 || mac == 0 {
            // A group or zero source, which no next hop has.
            return;
        }
        self.by_vtep[v as usize] = mac;
        let mac = Mac::from_word(mac);
        let ip = table.vtep_ip(v);
        if self.by_ip.len() < self.cap || self.by_ip.contains_key(&ip) {
            self.by_ip.insert(ip, mac);
        }
    }
}

/// A worker's own state: counters, learnt next hops, fragment memory, the shared flow table and the
/// policy version it runs.
#[derive(Debug)]
pub struct Worker {
    pub counters: Counters,
    pub neighbors: Neighbors,
    /// Version of the table of the last batch (0 before the first).
    pub active_version: u64,
    pub flows: Arc<FlowTable>,
    frags: Frags,
    /// The last sending VTEP seen (VPP's last-tunnel cache): outer source, its index in the table
    /// `cache_for` names.
    last_vtep: (u32, Option<VtepIdx>),
    /// Per-frame scratch of a chunk, kept between batches (nothing to clear but `kind`).
    meta: Option<Box<[Meta; CHUNK]>>,
    /// The decision cache (on 2 MB pages where the host offers them: a frame's set is a random one
    /// of 6 MiB), its epoch (bumped when the table changes) and the table it is for.
    cache: HugeBuf<Set>,
    /// False: nothing is remembered, every frame takes the full path (`cache_slots` 0).
    caching: bool,
    cache_epoch: u32,
    cache_for: (usize, u64),
    /// For the table the cache is for: the rule-validity window last asked about, `[.0, .1)`
    /// (see [`Table::window_around`]).
    edge: (i64, i64),
    /// The latest start of a window the cache's entries were made in: an entry serves a frame from
    /// `floor` on (and before its `expires`), so never one stamped before its own window opened.
    floor: i64,
    /// The table's UDP port as [`lane4`] compares it ([`lane_port`]), made when the table changes.
    lane_port: u64,
    /// Decisions served from the cache, and made by the full path.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

/// The flow table a gateway's workers share, sized and timed by the policy's `[gateway]` settings.
pub fn flow_table_for(table: &Table) -> Arc<FlowTable> {
    let g = &table.document().gateway;
    let mut t = Timeouts::default();
    if let Some(ft) = &g.flow_timeouts {
        let s = |v: Option<u32>, d: i64| v.map(|x| i64::from(x) * 1_000_000_000).unwrap_or(d);
        t = Timeouts {
            tcp: s(ft.tcp, t.tcp),
            tcp_opening: s(ft.tcp_opening, t.tcp_opening),
            tcp_closing: s(ft.tcp_closing, t.tcp_closing),
            udp: s(ft.udp, t.udp),
            icmp: s(ft.icmp, t.icmp),
            other: s(ft.other, t.other),
        };
    }
    Arc::new(FlowTable::new(
        g.max_flows.unwrap_or(DEFAULT_MAX_FLOWS) as usize,
        t,
    ))
}

/// Entries of a worker's decision cache, as the policy's `[gateway] decision_cache` says (0: none;
/// [`Worker::with_flows_and_cache`] rounds up to a power of two). Read when a worker starts.
pub fn decision_cache_for(table: &Table) -> usize {
    let g = &table.document().gateway;
    g.decision_cache.unwrap_or(DEFAULT_DECISION_CACHE) as usize
}

/// Entries of a worker's decision cache when `[gateway] decision_cache` is not set (12 MB: twice the
/// flows a 10k replay or a 131 072-flow bench keeps).
pub const DEFAULT_DECISION_CACHE: u32 = 1 << 17;

/// Flows tracked at most, when `[gateway] max_flows` is not set.
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;

/// A frame's judgement: the verdict, the tracked flow it relied on (and whether the frame is that
/// flow's reply), and for a deny under tracked replies the flow whose birth would lift it.
struct Judged {
    v: FragVerdict,
    flow: Option<(FlowRef, bool)>,
    watch: Option<FlowRef>,
}

/// What stage 1 learnt of a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Done,
    Ip,
    /// An IPv4 frame read at fixed offsets only (its decision-cache key), not yet parsed nor
    /// identified: the cache is probed before anything else is looked at.
    Fast,
    Arp,
    Nd,
}

/// A set of the decision cache: two entries a key may be in (two-way set-associative, so that two
/// flows whose keys hash alike do not evict each other on every frame), on three whole cache lines.
/// Way 0 holds the set's newest decision.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set([Cached; 2]);
const _: () = assert!(std::mem::size_of::<Set>() == 192);

/// A cached decision (OPTE-style): the outcome of the full path for one (VNI, outer source, GBP
/// group, inner VLAN id, inner IPv4 5-tuple) — the first four decide the tenant and the sending
/// VTEP, which the entry keeps — valid for one table (the worker's epoch) within the rule-validity
/// window it was made in, and — for tracked flows — while the flow it relied on still lives.
#[derive(Debug, Clone, Copy, Default)]
struct Cached {
    key: [u64; 4],
    /// The worker's table epoch at insertion (0: empty).
    epoch: u32,
    rule: u32,
    /// The end of the rule-validity window the decision was made in (its next window edge). Its
    /// start is at most the worker's `floor`, before which no entry serves a frame: so a frame
    /// stamped before the window opened (an out-of-order capture or clock) takes the full path.
    expires: i64,
    ep: Ep,
    flow: FlowRef,
    /// The outer UDP source port for the flow (see [`entropy`]).
    sport: u16,
    /// The VXLAN header the rewrite writes: the egress VNI, and the group when the egress segment
    /// carries one (see [`Worker::egress_id`]).
    vx: [u8; 8],
    /// The frame's tenant and sending VTEP, which the key's identity words decide.
    ident: Ident,
    vtep: u32,
    /// FLOW, REPLY, TRACKED, DENY, WATCH: see there.
    flags: u8,
}

/// What a frame takes from the cache entry that holds its decision.
#[derive(Clone, Copy)]
struct Hit {
    ident: Ident,
    vtep: u32,
    ep: Ep,
    rule: u32,
    sport: u16,
    vx: [u8; 8],
    flags: u8,
}

/// The decision relied on tracked flow `flow`: it holds while that flow lives.
const C_FLOW: u8 = 1;
/// The frame is the reply of `flow` (it refreshes the flow as its responder).
const C_REPLY: u8 = 2;
/// The decision is a deny (`rule`: the deciding rule).
const C_DENY: u8 = 4;
/// A deny under tracked replies: it holds while no flow is born whose reply the frame would be;
/// `flow` then holds that flow's hash (`slot`) and its birth counter (`seq`).
const C_WATCH: u8 = 8;
/// The frame is admitted as a tracked reply (not by a rule of its own).
const C_TRACKED: u8 = 16;
/// The frame that made the decision was rewritten in place ([`Worker::rewrite_in_place`]): the
/// key's frames are untagged over an IPv4 underlay, toward an IPv4 VTEP whose segment wants no tag,
/// so a hit checks only what the key does not fix ([`Worker::rewrite_v4`]).
const C_INPLACE: u8 = 32;
const NO_RULE: u32 = u32::MAX;

/// A frame's scratch, filled stage by stage. A fast-lane frame's `vni`, `group`, `l3_off`, `vid`
/// and `src4` are set only once the cache has missed (stage 1d, [`Meta::unpack_key`]).
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    kind: Kind,
    ident: Ident,
    vtep: Option<VtepIdx>,
    vni: u32,
    group: Option<u16>,
    /// The inner frame, relative to the frame's start.
    inner_off: u16,
    inner_len: u16,
    /// The inner L3 header, relative to the inner frame.
    l3_off: u16,
    tagged: bool,
    /// The inner VLAN id (when `tagged`).
    vid: u16,
    /// The outer IPv4 source (the sending VTEP's address; 0 under an IPv6 underlay).
    src4: u32,
    outer_v6: bool,
    ip: IpInfo,
    src_key: u64,
    src_h: u64,
    dst_key: u64,
    dst_h: u64,
    src_ep: Option<Ep>,
    dst_ep: Option<Ep>,
    /// The rule buckets the verdict scans (set in stage 2b, for frames with a destination).
    scope: Scope,
    /// Under tracked replies, the hash of the frame's flow — and of its mirror, which hashes alike
    /// (set in stage 2, its home slot prefetched for stage 3).
    flow_h: u64,
    now: i64,
    /// The outer source MAC (the sender's next hop), as a word ([`Mac::word`]).
    src_mac: u64,
    /// Decision-cache key and slot (IPv4 frames whose decision can be cached).
    cacheable: bool,
    ckey: [u64; 4],
    cslot: u32,
    /// The way of the set whose key is `ckey` (set in stage 1b), or [`NO_WAY`].
    way: u8,
}

/// No way of a frame's set holds its key.
const NO_WAY: u8 = u8::MAX;

/// What the outer headers say, read at fixed offsets for IPv4 without options.
struct Outer {
    src4: u32,
    v6: bool,
    vni: u32,
    group: Option<u16>,
    inner_off: usize,
    inner_len: usize,
}

/// The outer source MAC of a frame at least 14 bytes long, as a word ([`Mac::word`]).
#[inline(always)]
fn src_mac_word(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[6..14].try_into().expect("8 bytes")) & 0xffff_ffff_ffff
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn outer(data: &[u8], udp_port: u16) -> Result<Outer, DropReason> {
    // Fast path: untagged IPv4 without options, everything present, read through one fixed-size
    // view (no bounds check per field).
    if let Some(h) = data.first_chunk::<50>() {
        if be16(h, 12) == ethertype::IPV4 && h[14] == 0x45 {
            let tl = usize::from(be16(h, 16));
            if tl >= 20 && 14 + tl <= data.len() {
                if ipv4_header_sum(h) != 0xffff {
                    return Err(DropReason::Malformed);
                }
                if be16(h, 20) & 0x3fff != 0 || h[23] != ipproto::UDP {
                    return Err(DropReason::NotOverlay);
                }
                if tl >= 36 {
                    if be16(h, 36) != udp_port {
                        return Err(DropReason::NotOverlay);
                    }
                    let ulen = usize::from(be16(h, 38));
                    if ulen < 16 || ulen > tl - 20 {
                        return Err(DropReason::Malformed);
                    }
                    if h[42] & 0x08 == 0 {
                        return Err(DropReason::NotOverlay);
                    }
                    if h[42] & !0x88 != 0 || h[49] != 0 {
                        return Err(DropReason::Malformed);
                    }
                    return Ok(Outer {
                        src4: u32::from_be_bytes([h[26], h[27], h[28], h[29]]),
                        v6: false,
                        vni: u32::from_be_bytes([0, h[46], h[47], h[48]]),
                        group: (h[42] & 0x80 != 0).then(|| be16(h, 44)),
                        inner_off: 50,
                        inner_len: ulen - 16,
                    });
                }
            }
        }
    }
    let ov = parse_overlay(data, udp_port).map_err(|e| match e {
        OverlayError::Malformed(_) => DropReason::Malformed,
        OverlayError::NotOverlay(_) => DropReason::NotOverlay,
    })?;
    Ok(Outer {
        src4: match ov.src_ip {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(_) => 0,
        },
        v6: ov.src_ip.is_ipv6(),
        vni: ov.vni,
        group: ov.group,
        inner_off: ov.inner_off,
        inner_len: ov.inner_len,
    })
}

/// The one's-complement sum, folded to 16 bits, of the IPv4 header at `h[14..34]`: 0xffff when its
/// checksum is right. Summed as two 64-bit words and one 32-bit word in the machine's byte order, with
/// end-around carries (an add and an add of its carry each): the one's-complement sum is the same in
/// either byte order, byte-swapped (RFC 1071 §2(B)), and 0xffff reads the same both ways.
#[inline(always)]
fn ipv4_header_sum(h: &[u8; 50]) -> u16 {
    let w8 = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let w4 = u64::from(u32::from_ne_bytes([h[30], h[31], h[32], h[33]]));
    // An end-around carry never carries again: after a carry out, the sum is at most 2^64 - 2.
    let (s, c) = w8(14).overflowing_add(w8(22));
    let (s, c2) = (s + u64::from(c)).overflowing_add(w4);
    let s = s + u64::from(c2);
    let (t, c) = (s as u32).overflowing_add((s >> 32) as u32);
    let t = t + u32::from(c);
    let (u, c) = (t as u16).overflowing_add((t >> 16) as u16);
    u + u16::from(c)
}

/// The decision-cache key's address and transport words of an inner IPv4 packet, read at fixed
/// offsets: only for packets without options or fragmentation that are TCP (no SYN, FIN or RST),
/// UDP or ICMP echo, whose fields lie where [`inner::parse_ipv4`] finds them. These are the values
/// stage 1 computes from a full parse, so either way finds the same cache entries; anything else
/// (`None`) takes the full parse.
#[inline(always)]
fn fast_tuple4(l3: &[u8]) -> Option<[u64; 2]> {
    if l3.len() < 28 || l3[0] != 0x45 {
        return None;
    }
    let tl = usize::from(be16(l3, 2));
    if tl < 28 || tl > l3.len() || be16(l3, 6) & 0x3fff != 0 {
        return None;
    }
    let addrs = u64::from_be_bytes([
        l3[12], l3[13], l3[14], l3[15], l3[16], l3[17], l3[18], l3[19],
    ]);
    let proto = l3[9];
    let (ports, icmp) = match proto {
        ipproto::TCP if tl >= 34 && l3[33] & (tcp::SYN | tcp::FIN | tcp::RST) == 0 => {
            (u32::from_be_bytes([l3[20], l3[21], l3[22], l3[23]]), 0u64)
        }
        ipproto::UDP => (u32::from_be_bytes([l3[20], l3[21], l3[22], l3[23]]), 0),
        ipproto::ICMP if l3[20] == 8 || l3[20] == 0 => {
            let id = u32::from(be16(l3, 24));
            (id << 16 | id, if l3[20] == 8 { 1 } else { 2 })
        }
        _ => return None,
    };
    Some([
        addrs,
        u64::from(ports) << 32 | u64::from(proto) << 24 | icmp,
    ])
}

/// What the fast lane reads of a frame: its decision-cache key (which also holds what a miss
/// resolves from: see [`Meta::unpack_key`]), the inner frame's length and whether it is tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lane {
    key: [u64; 4],
    inner_len: u16,
    tagged: bool,
}

/// What [`lane4`] expects of the little-endian word at bytes 36..44 under its mask: `udp_port` as
/// the UDP destination port, and the VXLAN I flag.
#[inline(always)]
fn lane_port(udp_port: u16) -> u64 {
    0x08_0000_0000_0000 | u64::from(u16::from_le_bytes(udp_port.to_be_bytes()))
}

/// The fast lane: an IPv4 underlay frame (no outer VLAN tag, no IP options) that [`outer`] accepts,
/// carrying from one station an IPv4 packet whose key [`fast_tuple4`] reads — checked with a few
/// masked word loads over one fixed-size view. Exactly the frames, and the key, that `outer`, the
/// station checks and `fast_tuple4` give (a property test holds it to that); anything else
/// (`None`) takes the longer way. `port`: the table's UDP port, as [`lane_port`] gives it (once
/// per table).
#[inline(always)]
fn lane4(data: &[u8], port: u64) -> Option<Lane> {
    // Outer Ethernet, IPv4, UDP and VXLAN (50 bytes), inner Ethernet (14) and IPv4 (20) + 8.
    let h = data.first_chunk::<92>()?;
    let w = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    // EtherType IPv4, version 4 with no options (bytes 12..15); neither more fragments nor an
    // offset, UDP (20..24); our port (36..38); the I flag and no other but G (42); reserved (49).
    if w(12) & 0xff_ffff != 0x45_0008
        || w(20) & 0xff00_ff3f != 0x1100_0000
        || w(36) & 0x7f_0000_0000_ffff != port
        || h[49] != 0
    {
        return None;
    }
    let tl = usize::from(be16(h, 16));
    let ulen = usize::from(be16(h, 38));
    if tl < 36 || 14 + tl > data.len() || ulen < 16 || ulen > tl - 20 {
        return None;
    }
    if ipv4_header_sum(h.first_chunk::<50>().expect("50 bytes")) != 0xffff {
        return None;
    }
    // The inner frame: to a station (or one of ours), from a station, IPv4 behind at most one tag.
    let inner_len = ulen - 16;
    let src_mac = w(56) & 0xffff_ffff_ffff;
    if h[50] & 1 != 0 || src_mac & 1 != 0 || src_mac == 0 {
        return None;
    }
    let tagged = be16(h, 62) == ethertype::VLAN;
    let (l3_off, vid) = if tagged {
        if inner_len < 18 || be16(data, 66) != ethertype::IPV4 {
            return None;
        }
        (18, be16(h, 64) & 0x0fff)
    } else {
        if be16(h, 62) != ethertype::IPV4 {
            return None;
        }
        (14, 0)
    };
    let [addrs, l4] = fast_tuple4(data.get(50 + l3_off..50 + inner_len)?)?;
    let src4 = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
    let vni = u32::from_be_bytes([0, h[46], h[47], h[48]]);
    let g = if h[42] & 0x80 != 0 {
        0x1_0000 | u64::from(be16(h, 44))
    } else {
        0
    };
    Some(Lane {
        key: [
            u64::from(src4) << 32 | u64::from(vni),
            addrs,
            l4 | u64::from(tagged) << 16,
            g | u64::from(vid) << 17,
        ],
        inner_len: inner_len as u16,
        tagged,
    })
}

/// The decision-cache key's identity words: what decides a frame's tenant and sending VTEP under
/// one table — the VNI and the outer source (its IPv4 address, or under an IPv6 underlay the VTEP's
/// index), then the GBP group and the inner VLAN id.
#[inline(always)]
fn ident_words(m: &Meta) -> (u64, u64) {
    let src = if m.outer_v6 {
        m.vtep.unwrap_or(u32::MAX)
    } else {
        m.src4
    };
    let w0 = u64::from(src) << 32 | u64::from(m.outer_v6) << 31 | u64::from(m.vni);
    let group = m.group.map_or(0, |g| 0x1_0000 | u64::from(g));
    let vid = if m.tagged { u64::from(m.vid) } else { 0 };
    (w0, group | vid << 17)
}

/// The outer UDP source port for an inner flow: the same hash as [`vtep::Flow::entropy_port`].
#[inline(always)]
fn entropy(ip: &IpInfo) -> u16 {
    let w = |a: u128| {
        if ip.v6 {
            (a as u64) ^ ((a >> 64) as u64).rotate_left(17)
        } else {
            a as u64
        }
    };
    let (sp, dp) = if matches!(ip.proto, ipproto::TCP | ipproto::UDP) {
        (ip.src_port, ip.dst_port)
    } else {
        (0, 0)
    };
    let mut h = w(ip.src).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= w(ip.dst).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= (u64::from(sp) << 24) | (u64::from(dp) << 8) | u64::from(ip.proto);
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    vtep::parse::entropy_port(h as u32)
}

impl Worker {
    /// A worker with a flow table of its own (replay, tests).
    pub fn new() -> Self {
        Self::with_flows(Arc::new(FlowTable::new(
            DEFAULT_MAX_FLOWS as usize,
            Timeouts::default(),
        )))
    }

    /// A worker sharing `flows` with the gateway's other workers.
    pub fn with_flows(flows: Arc<FlowTable>) -> Self {
        Self::with_flows_and_cache(flows, DEFAULT_DECISION_CACHE as usize)
    }

    /// [`Worker::with_flows`] with a decision cache of `cache_slots` entries (a power of two; small
    /// ones for tests and fuzzing, where every input gets a fresh worker). 0: no decision cache,
    /// every frame takes the full path (the reference the cache is tested against).
    pub fn with_flows_and_cache(flows: Arc<FlowTable>, cache_slots: usize) -> Self {
        let caching = cache_slots > 0;
        let cache_slots = cache_slots.max(1).next_power_of_two();
        Worker {
            counters: Counters::default(),
            neighbors: Neighbors::with_capacity(4096),
            active_version: 0,
            flows,
            frags: Frags::default(),
            last_vtep: (0, None),
            meta: Some(Box::new([Meta::default(); CHUNK])),
            cache: HugeBuf::filled(cache_slots.div_ceil(2), Set::default()),
            caching,
            cache_epoch: 0,
            cache_for: (0, 0),
            edge: (i64::MAX, i64::MIN),
            floor: i64::MIN,
            lane_port: 0,
            cache_hits: 0,
            cache_misses: 0,
        }
    }

    /// Runs the pipeline over a batch. `outcomes[i]` receives frame `i`'s outcome; `now` is the Unix
    /// time (nanoseconds) frames without a time of their own are judged at.
    pub fn process(
        &mut self,
        table: &Table,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        now: i64,
    ) {
        // Per batch: the version we run, counter slots for tenants new in this version, room for
        // the batch's events, next hops indexed for this table, a slice of the flow table swept.
        self.active_version = table.version();
        if self.counters.tenants.len() < table.tenant_slots() {
            // A random tenant's counters per frame (32 MB at 1M tenants): on 2 MB pages where the
            // host offers them, asked for before the new room is first written.
            let t = &mut self.counters.tenants;
            t.reserve_exact(table.tenant_slots() - t.len());
            policy::huge::advise(t.spare_capacity_mut());
            t.resize(table.tenant_slots(), TenantCounters::default());
        }
        self.counters.events.reserve(frames.len());
        self.neighbors.index(table);
        // What is worked out from one table is valid for that table only: known by its address and
        // version together (a newer table may be allocated where an older one was freed).
        let tid = table as *const Table as usize;
        if self.cache_for != (tid, table.version()) {
            self.cache_for = (tid, table.version());
            self.last_vtep = (0, table.vtep_index4(0));
            self.lane_port = lane_port(table.udp_port());
            self.edge = (i64::MAX, i64::MIN);
            self.floor = i64::MIN;
            self.cache_epoch = self.cache_epoch.wrapping_add(1).max(1);
        }
        self.flows.sweep(frames.len(), now);
        for (fs, os) in frames.chunks_mut(CHUNK).zip(outcomes.chunks_mut(CHUNK)) {
            self.chunk(table, fs, os, now);
        }
    }

    fn chunk(&mut self, table: &Table, frames: &mut [Frame<'_>], outs: &mut [Outcome], now: i64) {
        let n = frames.len().min(outs.len());
        // The scratch is lent out of the worker for the chunk (a pointer move, no copy).
        let mut meta = self
            .meta
            .take()
            .unwrap_or_else(|| Box::new([Meta::default(); CHUNK]));
        for m in meta.iter_mut().take(n) {
            m.kind = Kind::Done;
        }
        let meta_n = &mut meta[..n];
        self.lanes(table, frames, outs, meta_n, now);
        self.ways(table, meta_n);
        let mut pending = [0u8; CHUNK];
        let np = self.hits(table, frames, outs, meta_n, &mut pending);
        self.misses(table, frames, outs, meta_n, &pending[..np]);
        self.meta = Some(meta);
    }

    // The stages of a chunk, each a loop over its frames in a function of its own (not inlined into
    // one body: each keeps what it uses in registers).

    /// Stage 1, over a chunk's frames.
    #[inline(never)]
    fn lanes(
        &mut self,
        table: &Table,
        frames: &[Frame<'_>],
        outs: &mut [Outcome],
        meta: &mut [Meta],
        now: i64,
    ) {
        let n = meta.len();
        let mut bytes = 0u64;
        // Stage 1: outer headers and the decision-cache key (the fast lane: `lane4` under an IPv4
        // underlay, else after `outer`); for other frames identity, sender and inner headers, and
        // the endpoints prefetched.
        let port = self.lane_port;
        for ((f, o), m) in frames.iter().zip(outs.iter_mut()).zip(meta.iter_mut()) {
            bytes += f.len as u64;
            m.now = if f.ts != 0 { f.ts } else { now };
            if let Err(r) = self.stage1(table, port, f, m, o) {
                self.drop_frame(o, m, r);
            }
        }
        self.counters.frames += n as u64;
        self.counters.bytes += bytes;
    }

    /// Stage 1b, over a chunk's frames.
    #[inline(never)]
    fn ways(&mut self, table: &Table, meta: &mut [Meta]) {
        // Stage 1b: the decision cache's ways (their set prefetched by stage 1). The entry whose key
        // a frame matches has what a hit reads beyond it prefetched: the flow it relies on, its
        // tenant's counters (and, for a deny, its drop count). A fast-lane frame no way holds has
        // its segment prefetched.
        for m in meta.iter_mut() {
            m.way = NO_WAY;
            if !matches!(m.kind, Kind::Fast | Kind::Ip) || !m.cacheable {
                continue;
            }
            match self.way_of(m) {
                Some(w) => {
                    m.way = w;
                    let e = &self.cache[m.cslot as usize].0[usize::from(w)];
                    if e.flags & C_FLOW != 0 {
                        self.flows.prefetch_slot(e.flow.slot);
                    }
                    let t = e.ident.tenant;
                    policy::flat::prefetch(self.counters.tenants.as_ptr().wrapping_add(t as usize));
                    if e.flags & C_DENY != 0 {
                        let denied = Event::Drop(DropReason::PolicyDenied);
                        self.counters.events.prefetch(t, denied);
                    }
                }
                None if m.kind == Kind::Fast => table.prefetch_seg(m.key_vni()),
                None => {}
            }
        }
    }

    /// Stage 1c, over a chunk's frames: the frames still pending are listed in `pending`, their
    /// number returned.
    #[inline(never)]
    fn hits(
        &mut self,
        table: &Table,
        frames: &mut [Frame<'_>],
        outs: &mut [Outcome],
        meta: &mut [Meta],
        pending: &mut [u8; CHUNK],
    ) -> usize {
        // Stage 1c: a frame whose held decision is still good needs nothing more from the tables:
        // rewritten now. The frames still pending after it are listed (in order) for the later
        // stages, which hits then cost nothing.
        let mut np = 0usize;
        let frames_outs = frames.iter_mut().zip(outs.iter_mut());
        for (i, (m, (f, o))) in meta.iter_mut().zip(frames_outs).enumerate() {
            if m.kind == Kind::Done {
                continue;
            }
            if !matches!(m.kind, Kind::Fast | Kind::Ip) || !m.cacheable {
                pending[np] = i as u8;
                np += 1;
                continue;
            }
            if let Some(way) = self.probe(m) {
                let fast = m.kind == Kind::Fast;
                // The common hit: a fast-lane frame forwarded by a decision made in place (read
                // where the entry lies, not copied out).
                let flags = self.cache[m.cslot as usize].0[usize::from(way)].flags;
                if fast
                    && flags & (C_DENY | C_INPLACE) == C_INPLACE
                    && self.inplace_hit(table, f, m, o, way)
                {
                    continue;
                }
                self.other_hit(table, f, m, o, way);
                continue;
            }
            if m.kind == Kind::Fast && m.way != NO_WAY {
                // A held decision gone stale: its segment was not prefetched in 1b.
                table.prefetch_seg(m.key_vni());
            }
            pending[np] = i as u8;
            np += 1;
        }
        np
    }

    /// Every other hit: a deny, a frame that came another way, or one the in-place rewrite refused
    /// — out of line, so that the common hit's loop keeps what it uses in registers.
    #[inline(never)]
    fn other_hit(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &mut Meta,
        o: &mut Outcome,
        way: u8,
    ) {
        let hit = self.hit(m, way);
        let fast = m.kind == Kind::Fast;
        if fast {
            // A fast-lane frame's outcome is first written here, or in stage 1d.
            *o = Outcome::default();
            m.ident = hit.ident;
            m.vtep = (hit.vtep != u32::MAX).then_some(hit.vtep);
        }
        let r = self.cached(table, f, m, o, &hit);
        if fast {
            self.count_in(m, o);
        }
        self.finish(table, f.len, m, o, r);
    }

    /// Stages 1d to 3, over the frames stage 1c left pending.
    #[inline(never)]
    fn misses(
        &mut self,
        table: &Table,
        frames: &mut [Frame<'_>],
        outs: &mut [Outcome],
        meta: &mut [Meta],
        pending: &[u8],
    ) {
        // Stage 1d: the cache's misses in the fast lane: the segment (prefetched in 1b or 1c) gives the
        // tenant, the last-sender cache the sending VTEP; their VTEP check and the tenant's
        // counters are prefetched.
        for &i in pending {
            let i = usize::from(i);
            let m = &mut meta[i];
            if m.kind != Kind::Fast {
                continue;
            }
            outs[i] = Outcome::default();
            m.unpack_key();
            match self.locate(table, m) {
                Ok(()) => {
                    table.prefetch_vtep_allowed(m.ident, m.vtep);
                    let t = m.ident.tenant as usize;
                    policy::flat::prefetch(self.counters.tenants.as_ptr().wrapping_add(t));
                }
                Err(r) => self.drop_frame(&mut outs[i], m, r),
            }
        }
        // Stage 1e: counted in, the VTEP checked, the inner packet read (from its key: `fast_tuple4`
        // checked it); the endpoints prefetched.
        for &i in pending {
            let i = usize::from(i);
            let m = &mut meta[i];
            if m.kind != Kind::Fast {
                continue;
            }
            self.count_in(m, &mut outs[i]);
            if !table.vtep_allowed_ident(m.ident, m.vtep) {
                self.drop_frame(&mut outs[i], m, DropReason::SpoofedIdentity);
                continue;
            }
            let f = &frames[i];
            let start = f.start + usize::from(m.inner_off);
            let l3 = &f.buf[start + usize::from(m.l3_off)..start + usize::from(m.inner_len)];
            m.ip = Meta::ip_of_key(m.ckey, l3);
            m.kind = Kind::Ip;
            Self::prefetch_eps(table, m);
        }
        // Stage 2: endpoints (source validation, destination); prefetch the tenant pair, the
        // egress record and the flow's slot.
        for &i in pending {
            let i = usize::from(i);
            let m = &mut meta[i];
            if let Err(r) = self.stage2(table, m) {
                self.drop_frame(&mut outs[i], m, r);
            }
        }
        // Stage 2b: the rule buckets the verdict scans (the pair's prefetched in stage 2), and their
        // first rules prefetched.
        for &i in pending {
            let m = &mut meta[usize::from(i)];
            if let (Kind::Ip, Some(d)) = (m.kind, m.dst_ep) {
                m.scope = table.scope(m.ident.tenant, d.tenant());
                table.prefetch_scope(&m.scope);
            }
        }
        // Stage 3: answer neighbours, decide, track, rewrite.
        for &i in pending {
            let i = usize::from(i);
            let m = &mut meta[i];
            let r = match m.kind {
                Kind::Done | Kind::Fast => continue,
                Kind::Ip => self.forward(table, &mut frames[i], m, &mut outs[i]),
                Kind::Arp => self.arp(table, &mut frames[i], m),
                Kind::Nd => self.nd(table, &mut frames[i], m),
            };
            self.finish(table, frames[i].len, m, &mut outs[i], r);
        }
    }

    /// A judged frame's end: its disposition counted, the sender's next hop learnt (only frames
    /// that passed every check teach one).
    #[inline(always)]
    fn finish(
        &mut self,
        table: &Table,
        len: usize,
        m: &mut Meta,
        o: &mut Outcome,
        r: Result<Disposition, DropReason>,
    ) {
        match r {
            Ok(d) => {
                o.disposition = d;
                let t = m.ident.tenant;
                match d {
                    Disposition::Forward => {
                        self.counters.forwarded += 1;
                        let tc = &mut self.counters.tenants[t as usize];
                        tc.frames_out += 1;
                        tc.bytes_out += len as u64;
                    }
                    Disposition::ArpReply => {
                        self.counters.arp_replied += 1;
                        self.counters.events.count(t, Event::ArpReplied);
                    }
                    Disposition::NdReply => {
                        self.counters.nd_replied += 1;
                        self.counters.events.count(t, Event::NdReplied);
                    }
                    _ => {}
                }
                if let Some(v) = m.vtep {
                    self.neighbors.learn(table, v, m.src_mac);
                }
            }
            Err(reason) => self.drop_frame(o, m, reason),
        }
        m.kind = Kind::Done;
    }

    /// A fast-lane frame whose held decision (way `way` of its set, made by an in-place rewrite, read
    /// where it lies) forwards it: rewritten in place, its outcome written whole, counted in and out
    /// for its tenant in one visit and its sender's next hop learnt. False: the rewrite's checks
    /// refused it (nothing was written; the frame takes [`Worker::other_hit`]).
    #[inline(always)]
    fn inplace_hit(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        o: &mut Outcome,
        way: u8,
    ) -> bool {
        let e = &self.cache[m.cslot as usize].0[usize::from(way)];
        let Some(len) = self.rewrite_v4(table, f, m, (e.ep, e.sport, e.vx)) else {
            return false;
        };
        let t = e.ident.tenant;
        let tracked = e.flags & C_TRACKED != 0;
        *o = Outcome {
            disposition: Disposition::Forward,
            tenant: Some(t),
            rule: (e.rule != NO_RULE).then_some(e.rule),
            egress: Some(e.ep.vtep()),
            tracked_reply: tracked,
        };
        self.counters.replies_tracked += u64::from(tracked);
        self.counters.forwarded += 1;
        self.counters.tenants[t as usize].add(&TenantCounters {
            frames_in: 1,
            bytes_in: u64::from(m.inner_len),
            frames_out: 1,
            bytes_out: len as u64,
        });
        if e.vtep != u32::MAX {
            self.neighbors.learn(table, e.vtep, m.src_mac);
        }
        true
    }

    #[inline(always)]
    fn drop_frame(&mut self, o: &mut Outcome, m: &mut Meta, r: DropReason) {
        o.disposition = Disposition::Drop(r);
        self.counters.dropped[r as usize] += 1;
        if let Some(t) = o.tenant {
            self.counters.events.count(t, Event::Drop(r));
        }
        m.kind = Kind::Done;
    }

    #[inline(always)]
    fn stage1(
        &mut self,
        table: &Table,
        port: u64,
        f: &Frame<'_>,
        m: &mut Meta,
        o: &mut Outcome,
    ) -> Result<(), DropReason> {
        let data = &f.buf[f.start..f.start + f.len];
        if let Some(l) = lane4(data, port) {
            // What only a miss needs (segment, identity, sender) stays in the key until stage 1d.
            m.outer_v6 = false;
            m.inner_off = OUTER_LEN_V4 as u16;
            m.inner_len = l.inner_len;
            m.tagged = l.tagged;
            m.src_mac = src_mac_word(data);
            m.vtep = None;
            m.kind = Kind::Fast;
            m.cacheable = true;
            self.cache_key(m, l.key);
            // Its outcome is written once the cache has answered (stage 1c or 1d).
            return Ok(());
        }
        self.stage1_general(table, data, m, o)
    }

    /// Stage 1 of a frame the fast lane does not take (an IPv6 underlay, outer options, a frame
    /// that is not IPv4 inside, or one to drop): out of line, so that the lane's loop keeps what it
    /// uses in registers.
    #[inline(never)]
    fn stage1_general(
        &mut self,
        table: &Table,
        data: &[u8],
        m: &mut Meta,
        o: &mut Outcome,
    ) -> Result<(), DropReason> {
        *o = Outcome::default();
        let ov = outer(data, table.udp_port())?;
        let inner = &data[ov.inner_off..ov.inner_off + ov.inner_len];
        m.vni = ov.vni;
        m.group = ov.group;
        m.src4 = ov.src4;
        m.outer_v6 = ov.v6;
        m.inner_off = ov.inner_off as u16;
        m.inner_len = ov.inner_len as u16;
        m.src_mac = src_mac_word(data);

        // The common case, under an IPv6 underlay or outer IPv4 options (`lane4` took the rest): an
        // IPv4 frame from one station whose decision-cache key lies at fixed offsets. The key holds
        // what decides the frame's tenant and sending VTEP (VNI, group, VLAN id, outer source), so
        // the segment, identity and VTEP lookups, the parse and the VTEP check (which a cached
        // decision implies) all wait for a miss.
        if let Some(h) = inner.first_chunk::<14>() {
            let tagged = be16(h, 12) == ethertype::VLAN;
            let l3_off = if tagged { 18 } else { 14 };
            // A frame's source is one station: a group or zero source MAC makes no Ethernet frame
            // (and an answer to it would go to a group). Such a frame takes the general path.
            let mut src = [0u8; 6];
            src.copy_from_slice(&h[6..12]);
            if inner.len() >= l3_off
                && be16(inner, l3_off - 2) == ethertype::IPV4
                && h[0] & 1 == 0
                && Mac(src).is_station()
            {
                if let Some([addrs, l4]) = fast_tuple4(&inner[l3_off..]) {
                    m.tagged = tagged;
                    m.vid = if tagged { be16(inner, 14) & 0x0fff } else { 0 };
                    m.vtep = if ov.v6 {
                        Self::sender6(table, data)
                    } else {
                        None
                    };
                    m.kind = Kind::Fast;
                    m.cacheable = true;
                    let (w0, w3) = ident_words(m);
                    self.cache_key(m, [w0, addrs, l4 | u64::from(tagged) << 16, w3]);
                    return Ok(());
                }
            }
        }

        // The general path: segment, identity, sender, in the order their drops are counted.
        let seg = table.seg(ov.vni);
        let mode = seg.mode().ok_or(DropReason::UnknownSegment)?;
        if inner.len() < 14 || (be16(inner, 12) == ethertype::VLAN && inner.len() < 18) {
            return Err(DropReason::Malformed);
        }
        let tagged = be16(inner, 12) == ethertype::VLAN;
        m.tagged = tagged;
        m.vid = if tagged { be16(inner, 14) & 0x0fff } else { 0 };
        self.identify(table, m, seg, mode, o)?;
        let ident = m.ident;
        let v = if ov.v6 {
            Self::sender6(table, data)
        } else {
            self.sender4(table, ov.src4)
        };
        m.vtep = v;

        // The inner frame.
        let l3_off = if tagged { 18 } else { 14 };
        m.l3_off = l3_off as u16;
        let et = be16(inner, l3_off - 2);
        let l3 = &inner[l3_off..];
        let group_dst = inner[0] & 1 == 1;
        let mut src = [0u8; 6];
        src.copy_from_slice(&inner[6..12]);
        let station_src = Mac(src).is_station();
        if !table.vtep_allowed_ident(ident, v) {
            return Err(DropReason::SpoofedIdentity);
        }
        if !station_src {
            return Err(DropReason::Malformed);
        }
        if et == ethertype::ARP {
            ArpPacket::new_checked(l3).map_err(|_| DropReason::Malformed)?;
            m.kind = Kind::Arp;
            return Ok(());
        }
        let ip = match et {
            ethertype::IPV4 if !group_dst => {
                inner::parse_ipv4(l3).map_err(|_| DropReason::Malformed)?
            }
            ethertype::IPV6 => match inner::parse_ipv6(l3) {
                Ok(ip) if ip.icmp == Some(IcmpKind::NeighborSolicit) => {
                    m.ip = ip;
                    m.kind = Kind::Nd;
                    return Ok(());
                }
                _ if group_dst => return Err(DropReason::Unsupported),
                Ok(ip) => ip,
                Err(_) => return Err(DropReason::Malformed),
            },
            _ => return Err(DropReason::Unsupported),
        };
        m.ip = ip;
        m.kind = Kind::Ip;
        m.cacheable = false;
        if !ip.v6 {
            let icmp = match ip.icmp {
                None => 0u64,
                Some(IcmpKind::EchoRequest) => 1,
                Some(IcmpKind::EchoReply) => 2,
                Some(_) => 3,
            };
            // Cacheable: whole IPv4 packets that are not TCP opens or closes, nor ICMP errors.
            m.cacheable = ip.frag == Frag::Whole
                && icmp < 3
                && ip.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0;
            if m.cacheable {
                let (w0, w3) = ident_words(m);
                self.cache_key(
                    m,
                    [
                        w0,
                        (ip.src as u64) << 32 | (ip.dst as u64 & 0xffff_ffff),
                        u64::from(ip.src_port) << 48
                            | u64::from(ip.dst_port) << 32
                            | u64::from(ip.proto) << 24
                            | u64::from(tagged) << 16
                            | icmp,
                        w3,
                    ],
                );
            }
            Self::prefetch_eps(table, m);
        }
        Ok(())
    }

    /// The frame's tenant by its segment's rule (`seg`, of `mode`): noted in the frame's outcome
    /// and counted in.
    #[inline(always)]
    fn identify(
        &mut self,
        table: &Table,
        m: &mut Meta,
        seg: policy::table::Seg,
        mode: IdentityMode,
        o: &mut Outcome,
    ) -> Result<(), DropReason> {
        m.ident = Self::tenant_by(table, m, seg, mode)?;
        self.count_in(m, o);
        Ok(())
    }

    /// The frame's tenant by its segment's rule (`seg`, of `mode`).
    #[inline(always)]
    fn tenant_by(
        table: &Table,
        m: &Meta,
        seg: policy::table::Seg,
        mode: IdentityMode,
    ) -> Result<Ident, DropReason> {
        let ident = match mode {
            IdentityMode::Vni => seg.ident(),
            IdentityMode::Gbp => m.group.map(|g| table.ident_by_id(g)).unwrap_or_default(),
            IdentityMode::Vlan if m.tagged => table.ident_by_id(m.vid),
            IdentityMode::Vlan => Ident::NONE,
        };
        if !ident.is_some() {
            return Err(DropReason::NoIdentity);
        }
        Ok(ident)
    }

    /// Counts a frame in for its tenant (`m.ident`).
    #[inline(always)]
    fn count_in(&mut self, m: &Meta, o: &mut Outcome) {
        let t = m.ident.tenant;
        o.tenant = Some(t);
        let tc = &mut self.counters.tenants[t as usize];
        tc.frames_in += 1;
        tc.bytes_in += u64::from(m.inner_len);
    }

    /// The sending VTEP of an IPv4 underlay frame (through the last-sender cache).
    #[inline(always)]
    fn sender4(&mut self, table: &Table, src4: u32) -> Option<VtepIdx> {
        if self.last_vtep.0 == src4 {
            return self.last_vtep.1;
        }
        let v = table.vtep_index4(src4);
        self.last_vtep.0 = src4;
        self.last_vtep.1 = v;
        v
    }

    /// The sending VTEP of an IPv6 underlay frame (`data` starts with its outer Ethernet header).
    #[inline(always)]
    fn sender6(table: &Table, data: &[u8]) -> Option<VtepIdx> {
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[22..38]);
        table.vtep_index(IpAddr::V6(Ipv6Addr::from(a)))
    }

    /// A fast-lane frame the cache did not hold: its segment, tenant and sending VTEP, as the
    /// general path finds them (the frame is counted in, and its VTEP checked, by the caller).
    #[inline(always)]
    fn locate(&mut self, table: &Table, m: &mut Meta) -> Result<(), DropReason> {
        let seg = table.seg(m.vni);
        let mode = seg.mode().ok_or(DropReason::UnknownSegment)?;
        m.ident = Self::tenant_by(table, m, seg, mode)?;
        if !m.outer_v6 {
            m.vtep = self.sender4(table, m.src4);
        }
        Ok(())
    }

    /// Sets a frame's decision-cache key and slot, and prefetches the slot.
    #[inline(always)]
    fn cache_key(&self, m: &mut Meta, key: [u64; 4]) {
        m.ckey = key;
        let h = crate::hash64(
            key[0] ^ key[1].rotate_left(21) ^ key[2].rotate_left(42) ^ key[3].rotate_left(7),
        );
        m.cslot = (h >> 40) as u32 & (self.cache.len() as u32 - 1);
        // The whole set: way 0 and way 1's key (its first two lines), and the rest of way 1, which
        // stage 1b reads on a hit in way 1 and a miss's insertion writes (the older decision moves
        // there).
        let set = self.cache.as_ptr().wrapping_add(m.cslot as usize) as *const u8;
        policy::flat::prefetch(set);
        policy::flat::prefetch(set.wrapping_add(64));
        policy::flat::prefetch(set.wrapping_add(128));
    }

    /// Hashes an IPv4 frame's endpoint keys and prefetches their slots.
    #[inline(always)]
    fn prefetch_eps(table: &Table, m: &mut Meta) {
        let space = m.ident.space();
        (m.src_key, m.src_h) = Table::ep4_hash(space, m.ip.src as u32);
        (m.dst_key, m.dst_h) = Table::ep4_hash(space, m.ip.dst as u32);
        table.prefetch_ep4(m.src_h);
        table.prefetch_ep4(m.dst_h);
    }

    /// The way of a cacheable frame's set whose key is the frame's (not yet checked for staleness).
    #[inline(always)]
    fn way_of(&self, m: &Meta) -> Option<u8> {
        let set = &self.cache[m.cslot as usize].0;
        if set[0].key == m.ckey {
            Some(0)
        } else if set[1].key == m.ckey {
            Some(1)
        } else {
            None
        }
    }

    /// Looks a cacheable frame's decision up in the cache (the way stage 1b found): that way,
    /// when its entry holds one that is still good.
    #[inline(always)]
    fn probe(&mut self, m: &Meta) -> Option<u8> {
        let set = &self.cache[m.cslot as usize].0;
        let way = set.get(usize::from(m.way));
        if way.is_some_and(|e| {
            e.epoch == self.cache_epoch
                && self.floor <= m.now
                && m.now < e.expires
                && (if e.flags & C_FLOW != 0 {
                    self.flows.touch_ref(e.flow, m.now, e.flags & C_REPLY != 0)
                } else {
                    e.flags & C_WATCH == 0
                        || self.flows.births(u64::from(e.flow.slot)) == e.flow.seq
                })
        }) {
            self.cache_hits += 1;
            return Some(m.way);
        }
        self.cache_misses += 1;
        None
    }

    /// What a frame takes from way `way` of its set, copied out (for the hits that go on to
    /// [`Worker::cached`]).
    #[inline(always)]
    fn hit(&self, m: &Meta, way: u8) -> Hit {
        let e = &self.cache[m.cslot as usize].0[usize::from(way)];
        Hit {
            ident: e.ident,
            vtep: e.vtep,
            ep: e.ep,
            rule: e.rule,
            sport: e.sport,
            vx: e.vx,
            flags: e.flags,
        }
    }

    /// Looks up an endpoint in the sender's address space.
    #[inline(always)]
    fn ep(table: &Table, m: &Meta, src: bool) -> Option<Ep> {
        if m.ip.v6 {
            table.ep6(m.ident.space(), if src { m.ip.src } else { m.ip.dst })
        } else if src {
            table.ep4(m.src_key, m.src_h)
        } else {
            table.ep4(m.dst_key, m.dst_h)
        }
    }

    /// Source validation: `addr` must be an endpoint of the frame's tenant at the sending VTEP.
    #[inline(always)]
    fn valid_source(m: &Meta, ep: Option<Ep>) -> Result<(), DropReason> {
        match (ep, m.vtep) {
            (Some(e), Some(v)) if e.tenant() == m.ident.tenant && e.vtep() == v => Ok(()),
            _ => Err(DropReason::SpoofedSource),
        }
    }

    #[inline(always)]
    fn stage2(&mut self, table: &Table, m: &mut Meta) -> Result<(), DropReason> {
        if m.kind != Kind::Ip {
            return Ok(()); // neighbour requests are answered in stage 3, cached frames rewritten
        }
        let src = Self::ep(table, m, true);
        Self::valid_source(m, src)?;
        let dst = Self::ep(table, m, false).ok_or(DropReason::NoEndpoint)?;
        m.src_ep = src;
        m.dst_ep = Some(dst);
        table.prefetch_pair(Table::pair_hash(m.ident.tenant, dst.tenant()));
        if table.replies() == Replies::Tracked {
            // Stage 3 looks the flow up (a request) or its mirror (a reply), which hash alike.
            m.flow_h = Self::flow_id(m).hash();
            self.flows.prefetch(m.flow_h);
        }
        if let Some(t) = table.egress(dst.vtep()) {
            policy::flat::prefetch(t as *const _);
        }
        Ok(())
    }

    /// The tracked flow an IP frame belongs to, as its sender started it.
    #[inline(always)]
    fn flow_id(m: &Meta) -> FlowId {
        let (ip, space) = (&m.ip, m.ident.space());
        FlowId::new(
            space,
            space,
            ip.src,
            ip.dst,
            ip.v6,
            ip.proto,
            ip.src_port,
            ip.dst_port,
        )
    }

    /// The verdict of an IP frame, with tracked replies and fragments, and the tracked flow it
    /// relied on (with whether the frame is that flow's reply). `l4` is the frame's transport header
    /// and what follows (for the packet an ICMP error quotes).
    #[inline(always)]
    fn judge(
        &mut self,
        table: &Table,
        m: &Meta,
        d: TenantIdx,
        l4: &[u8],
    ) -> Result<Judged, DropReason> {
        let s = m.ident.tenant;
        let ip = &m.ip;
        let now = m.now;
        let fkey = |id| FragKey {
            src: ip.src,
            dst: ip.dst,
            tenant: s,
            id,
            proto: ip.proto,
            v6: ip.v6,
        };
        if let Frag::Later(id) = ip.frag {
            return self
                .frags
                .get(&fkey(id), now)
                .map(|v| Judged {
                    v,
                    flow: None,
                    watch: None,
                })
                .ok_or(DropReason::OrphanFragment);
        }
        let k = FlowKey {
            src: ip.src,
            dst: ip.dst,
            v6: ip.v6,
            proto: ip.proto,
            src_port: ip.src_port,
            dst_port: ip.dst_port,
        };
        debug_assert_eq!(m.scope, table.scope(s, d));
        let dec = table.decide_in(&m.scope, s, d, &k, now);
        let mut v = FragVerdict {
            allow: dec.allow,
            rule: dec.rule,
            tracked_reply: false,
        };
        let mut flow = None;
        let mut watch = None;
        if table.replies() == Replies::Tracked {
            let id = Self::flow_id(m);
            debug_assert_eq!((id.hash(), id.mirrored().hash()), (m.flow_h, m.flow_h));
            if dec.allow {
                if dec.rule.is_some() || s != d {
                    flow = self.track(table, &id, m.flow_h, ip, now);
                }
            } else {
                // Read before looking: a reply's flow born from now on moves the counter.
                let h = m.flow_h;
                let birth = self.flows.births(h);
                if let Some(r) = self.is_reply(table, m, d, &id, l4) {
                    v = FragVerdict {
                        allow: true,
                        rule: None,
                        tracked_reply: true,
                    };
                    self.counters.replies_tracked += 1;
                    flow = Some((r, true));
                } else {
                    watch = Some(FlowRef {
                        slot: h as u32,
                        seq: birth,
                    });
                }
            }
        }
        if let Frag::First(fid) = ip.frag {
            self.frags.put(fkey(fid), now, v);
        }
        Ok(Judged { v, flow, watch })
    }

    /// Starts or refreshes the flow of an allowed frame (or, when the frame answers a flow the other
    /// side started, that flow). Returns the flow and whether the frame is its reply.
    #[inline(always)]
    fn track(
        &mut self,
        table: &Table,
        id: &FlowId,
        h: u64,
        ip: &IpInfo,
        now: i64,
    ) -> Option<(FlowRef, bool)> {
        let fl = &*self.flows;
        // One walk: the flow or its mirror, else the new flow inserted where the walk found room.
        match fl.find_or_insert(id, h, now, table.version(), ip.tcp_flags) {
            Tracked::Found(f, reply) => {
                // A new connection reusing a closed flow's ports: the flow begins again.
                let reopened = !reply && fl.reopen(&f, now, ip.tcp_flags);
                if reopened || fl.touch(&f, now, ip.tcp_flags, reply) {
                    let started = if reply { id.mirrored() } else { *id };
                    fl.note_hosts(&started.hosts(), now, table.version());
                }
                if !reply {
                    fl.judged(&f, table.version());
                }
                Some((f.reference(), reply))
            }
            Tracked::Inserted(r) => {
                self.counters.flows_created += 1;
                fl.note_hosts(&id.hosts(), now, table.version());
                Some((r, false))
            }
            Tracked::Refused => {
                self.counters.flows_refused += 1;
                None
            }
        }
    }

    /// Whether a frame the rules do not admit answers a live flow its destination started (or is an
    /// ICMP error about one): that flow. Re-judges the flow's request when the policy changed since.
    fn is_reply(
        &mut self,
        table: &Table,
        m: &Meta,
        d: TenantIdx,
        id: &FlowId,
        l4: &[u8],
    ) -> Option<FlowRef> {
        let ip = &m.ip;
        let s = m.ident.tenant;
        let space = m.ident.space();
        // Never a new connection from the other side, whatever its ports.
        if ip.proto == ipproto::TCP && ip.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN {
            return None;
        }
        let (initiator, error, h) = match ip.icmp {
            Some(IcmpKind::Error) => {
                // The quoted packet is the initiator's request, sent by this frame's destination.
                let (qs, qd, qp, qsp, qdp) =
                    l4.get(8..).and_then(|q| inner::parse_quote(ip.v6, q))?;
                if qs != ip.dst {
                    return None;
                }
                // An error about a flow comes from the flow's far side: the tenant the request went
                // to (its endpoint, or a router of that tenant's on the way). Another tenant cannot
                // speak for that flow, nor have it judged as if the request had gone to it.
                let responder = if ip.v6 {
                    table.ep6(space, qd)
                } else {
                    let (k, h) = Table::ep4_hash(space, qd as u32);
                    table.ep4(k, h)
                };
                if responder.map(|e| e.tenant()) != Some(s) {
                    return None;
                }
                let q = FlowId::new(space, space, qs, qd, ip.v6, qp, qsp, qdp);
                (q, true, q.hash())
            }
            Some(IcmpKind::EchoReply) | None => (id.mirrored(), false, m.flow_h),
            Some(_) => return None,
        };
        let fl = &*self.flows;
        let f = fl.find(&initiator, h, m.now)?;
        if FlowTable::is_dead(&f) {
            return None;
        }
        // Re-judge the request when the policy changed since, or may have by the clock (a rule's
        // validity window): a flow whose request is no longer allowed admits nothing more.
        if f.epoch != table.version() as u32 || table.has_window_edges() {
            let p = initiator.ports;
            let req = FlowKey {
                src: initiator.src,
                dst: initiator.dst,
                v6: ip.v6,
                proto: initiator.proto(),
                src_port: (p >> 16) as u16,
                dst_port: p as u16,
            };
            if !table.forward_allows(d, s, &req, m.now) {
                fl.cut(&f);
                return None;
            }
            fl.judged(&f, table.version());
        }
        if !error && fl.touch(&f, m.now, ip.tcp_flags, true) {
            fl.note_hosts(&initiator.hosts(), m.now, table.version());
        }
        Some(f.reference())
    }

    /// An IP frame on the full path: verdict, the rewrite toward the destination endpoint, and the
    /// decision remembered in the cache.
    #[inline(always)]
    fn forward(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        o: &mut Outcome,
    ) -> Result<Disposition, DropReason> {
        let ep = m.dst_ep.ok_or(DropReason::NoEndpoint)?;
        let d = ep.tenant();
        let inner_start = f.start + usize::from(m.inner_off);
        let l4_start = inner_start + usize::from(m.l3_off) + usize::from(m.ip.l4_off);
        let l4_end = inner_start + usize::from(m.l3_off) + usize::from(m.ip.ip_len);
        let Judged { v, flow, watch } = {
            let l4 = f.buf.get(l4_start..l4_end).unwrap_or(&[]);
            self.judge(table, m, d, l4)?
        };
        o.rule = v.rule;
        o.tracked_reply = v.tracked_reply;
        if !v.allow {
            if m.cacheable {
                // Remembered too: a denied flow's next frames cost a probe. Under tracked
                // replies the deny lapses when a flow it would answer is born.
                let flags = C_DENY | if watch.is_some() { C_WATCH } else { 0 };
                let w = watch.unwrap_or_default();
                self.remember(table, m, v.rule, (ep, [0; 8]), w, 0, flags);
            }
            return Err(DropReason::PolicyDenied);
        }
        let sport = entropy(&m.ip);
        let id = Self::egress_id(table, m, ep)?;
        let vx = vxlan_header(ep.vni(), (ep.egress() == IdentityMode::Gbp).then_some(id));
        let (r, inplace) = match self.rewrite_in_place(table, f, m, o, (ep, sport, vx)) {
            Some(r) => (r?, C_INPLACE),
            None => (self.rewrite(table, f, m, ep, id, o, sport)?, 0),
        };
        if m.cacheable {
            let (flow, mut flags) = match flow {
                Some((r, reply)) => (r, C_FLOW | if reply { C_REPLY } else { 0 }),
                None => (FlowRef::default(), 0),
            };
            flags |= inplace;
            if v.tracked_reply {
                flags |= C_REPLY | C_TRACKED;
            }
            self.remember(table, m, v.rule, (ep, vx), flow, sport, flags);
        }
        Ok(r)
    }

    /// [`Table::next_window_edge`], remembered for the span of instants that share it.
    #[inline(always)]
    fn next_window_edge(&mut self, table: &Table, now: i64) -> i64 {
        if self.edge.0 <= now && now < self.edge.1 {
            return self.edge.1;
        }
        self.edge = table.window_around(now);
        self.edge.1
    }

    /// Writes a frame's decision into its cache slot, valid within the frame's rule-validity window.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn remember(
        &mut self,
        table: &Table,
        m: &Meta,
        rule: Option<u32>,
        (ep, vx): (Ep, [u8; 8]),
        flow: FlowRef,
        sport: u16,
        flags: u8,
    ) {
        if !self.caching {
            return;
        }
        // Into the key's own entry, or an empty way 0; else the newest moves to way 1 (the older
        // one there is evicted) and this one takes way 0.
        let epoch = self.cache_epoch;
        let expires = self.next_window_edge(table, m.now);
        // `self.edge` is now the frame's window.
        self.floor = self.floor.max(self.edge.0);
        let set = &mut self.cache[m.cslot as usize].0;
        let way = if set[0].key == m.ckey {
            0
        } else if set[1].key == m.ckey {
            1
        } else if set[0].epoch != epoch {
            0
        } else {
            set[1] = set[0];
            0
        };
        set[way] = Cached {
            key: m.ckey,
            epoch,
            rule: rule.unwrap_or(NO_RULE),
            expires,
            ep,
            flow,
            sport,
            vx,
            ident: m.ident,
            vtep: m.vtep.unwrap_or(u32::MAX),
            flags,
        };
    }

    /// An IPv4 frame whose decision the cache held: straight to the rewrite.
    #[inline(always)]
    fn cached(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        o: &mut Outcome,
        e: &Hit,
    ) -> Result<Disposition, DropReason> {
        o.rule = (e.rule != NO_RULE).then_some(e.rule);
        if e.flags & C_DENY != 0 {
            return Err(DropReason::PolicyDenied);
        }
        let tracked = e.flags & C_TRACKED != 0;
        o.tracked_reply = tracked;
        if tracked {
            self.counters.replies_tracked += 1;
        }
        if e.flags & C_INPLACE != 0
            && self
                .rewrite_v4(table, f, m, (e.ep, e.sport, e.vx))
                .is_some()
        {
            o.egress = Some(e.ep.vtep());
            return Ok(Disposition::Forward);
        }
        let id = Self::egress_id(table, m, e.ep)?;
        self.rewrite(table, f, m, e.ep, id, o, e.sport)
    }

    /// [`Worker::rewrite`] in its common case — an untagged frame under an IPv4 underlay without
    /// options, toward an IPv4 VTEP whose segment wants no tag — where nothing moves: the outer
    /// headers are rewritten where they lie from the VTEP's template, UDP source port `sport` and
    /// VXLAN header `vx`, and the inner destination MAC set. `None`: not that case (the general
    /// rewrite runs; nothing was written).
    #[inline(always)]
    fn rewrite_in_place(
        &self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        o: &mut Outcome,
        (ep, sport, vx): (Ep, u16, [u8; 8]),
    ) -> Option<Result<Disposition, DropReason>> {
        if m.tagged || m.outer_v6 || ep.egress() == IdentityMode::Vlan {
            return None;
        }
        self.rewrite_v4(table, f, m, (ep, sport, vx))?;
        o.egress = Some(ep.vtep());
        Some(Ok(Disposition::Forward))
    }

    /// [`Worker::rewrite_in_place`] of a frame known to come untagged over an IPv4 underlay,
    /// toward endpoint `ep` whose segment wants no tag: what is left to check is that the outer
    /// IPv4 header has no options, the template is IPv4 and the frame fits the MTU. The frame's
    /// new length, or `None` (nothing was written).
    #[inline(always)]
    fn rewrite_v4(
        &self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        (ep, sport, vx): (Ep, u16, [u8; 8]),
    ) -> Option<usize> {
        if usize::from(m.inner_off) != OUTER_LEN_V4 {
            return None;
        }
        let tmpl = table.egress(ep.vtep())?;
        let inner_len = usize::from(m.inner_len);
        // An IPv4 template only; too big: dropped by the general rewrite.
        if tmpl.outer_len() != OUTER_LEN_V4 || tmpl.ip_len(inner_len) > usize::from(table.mtu()) {
            return None;
        }
        let b = f
            .buf
            .get_mut(f.start..)?
            .first_chunk_mut::<{ OUTER_LEN_V4 + 6 }>()?;
        let (hdr, inner_dst) = b.split_first_chunk_mut::<OUTER_LEN_V4>()?;
        tmpl.rewrite4(hdr, inner_len, sport, vx)?;
        // The outer MAC addresses as two words (little-endian): ours (the destination the frame
        // came to) becomes the source, the next hop the destination.
        let (macs, _) = hdr.split_first_chunk_mut::<12>()?;
        let w0 = u64::from_le_bytes(macs[0..8].try_into().expect("8 bytes"));
        let w1 = u32::from_le_bytes(macs[8..12].try_into().expect("4 bytes"));
        let ours = w0 & 0xffff_ffff_ffff;
        let next = match self.neighbors.word_of_vtep(ep.vtep()) {
            0 => w0 >> 48 | u64::from(w1) << 16, // back the way it came
            mac => mac,
        };
        macs[0..8].copy_from_slice(&(next | ours << 48).to_le_bytes());
        macs[8..12].copy_from_slice(&((ours >> 16) as u32).to_le_bytes());
        // The EtherType stays IPv4: the frame came in untagged over IPv4 (`inner_off`).
        inner_dst.copy_from_slice(&ep.mac().0);
        f.len = OUTER_LEN_V4 + inner_len;
        Some(f.len)
    }

    /// The identity a frame from `m`'s tenant carries on endpoint `ep`'s egress segment: its
    /// destination tenant's VLAN id (`vlan`), its source tenant's group (`gbp`), or none (`vni`).
    #[inline(always)]
    fn egress_id(table: &Table, m: &Meta, ep: Ep) -> Result<u16, DropReason> {
        match ep.egress() {
            IdentityMode::Vlan => Ok(table.tenant_id(ep.tenant()) as u16),
            // Validation refuses policies that would need it; never truncate an identity.
            IdentityMode::Gbp => {
                u16::try_from(table.tenant_id(m.ident.tenant)).map_err(|_| DropReason::NoIdentity)
            }
            IdentityMode::Vni => Ok(0),
        }
    }

    /// The rewrite of an allowed frame toward endpoint `ep`: inner destination MAC, inner tag as the
    /// egress segment wants it, the VTEP's outer header template.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &Meta,
        ep: Ep,
        id: u16,
        o: &mut Outcome,
        sport: u16,
    ) -> Result<Disposition, DropReason> {
        let inner_start = f.start + usize::from(m.inner_off);
        o.egress = Some(ep.vtep());
        let (egress_vid, group) = match ep.egress() {
            IdentityMode::Vlan => (Some(id), None),
            IdentityMode::Gbp => (None, Some(id)),
            IdentityMode::Vni => (None, None),
        };
        let tmpl = table.egress(ep.vtep()).ok_or(DropReason::NoEndpoint)?;
        let inner_len = usize::from(m.inner_len);
        let tag_delta: isize = match (m.tagged, egress_vid.is_some()) {
            (false, true) => 4,
            (true, false) => -4,
            _ => 0,
        };
        let new_inner_len = (inner_len as isize + tag_delta) as usize;
        if tmpl.ip_len(new_inner_len) > usize::from(table.mtu()) {
            return Err(DropReason::TooBig);
        }
        let dst_mac = self
            .neighbors
            .of_vtep(ep.vtep())
            .unwrap_or(Mac::from_word(m.src_mac));
        // Ours: the outer destination, read before the outer headers are written.
        let mut ours = Mac::default();
        ours.0.copy_from_slice(&f.buf[f.start..f.start + 6]);
        f.buf[inner_start..inner_start + 6].copy_from_slice(&ep.mac().0);
        let (st, l) = if !m.tagged && egress_vid.is_none() {
            (inner_start, inner_len) // nothing to push or pop: the common case
        } else {
            set_inner_vlan(f.buf, inner_start, inner_len, egress_vid)
                .map_err(|_| DropReason::TooBig)?
        };
        let start = tmpl
            .write(f.buf, st, l, dst_mac, ours, sport, ep.vni(), group)
            .map_err(|e| match e {
                EncapError::NoHeadroom | EncapError::TooLong => DropReason::TooBig,
                EncapError::FamilyMismatch => DropReason::NoEndpoint,
            })?;
        f.start = start;
        f.len = st + l - start;
        Ok(Disposition::Forward)
    }

    /// May the asker (tenant `s`, address `asker`) learn endpoint `ep` (address `target`)?
    fn may_learn(&self, table: &Table, m: &Meta, ep: &Ep, target: u128, asker: u128) -> bool {
        let s = m.ident.tenant;
        if table.may_learn(s, ep.tenant(), m.now) {
            return true;
        }
        // The endpoint has a flow toward the asker, which the policy still allows (a host-pair note
        // outlives a change that ends the flow): the asker must address its replies.
        if table.replies() == Replies::Tracked && table.may_reach(ep.tenant(), s, m.now) {
            let space = m.ident.space();
            let hosts = FlowId::new(space, space, target, asker, m.ip.v6, 0, 0, 0).hosts();
            return self.flows.has_hosts(&hosts, m.now);
        }
        false
    }

    /// The outer headers back to the asking VTEP, on the segment and with the identity it used.
    fn answer_underlay(
        &self,
        table: &Table,
        f: &Frame<'_>,
        m: &Meta,
        hash: u32,
    ) -> Result<Underlay, DropReason> {
        let data = f.data();
        let ov = parse_overlay(data, table.udp_port()).map_err(|_| DropReason::Malformed)?;
        Ok(Underlay {
            src_mac: ov.dst_mac,
            dst_mac: ov.src_mac,
            src_ip: table.underlay_src(&ov.src_ip).unwrap_or(ov.dst_ip),
            dst_ip: ov.src_ip,
            src_port: vtep::parse::entropy_port(hash),
            dst_port: table.udp_port(),
            vni: m.vni,
            group: m.group,
            ttl: 64,
        })
    }

    /// An inner ARP request for an endpoint the asker may learn: answered in place.
    fn arp(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &mut Meta,
    ) -> Result<Disposition, DropReason> {
        let inner_start = f.start + usize::from(m.inner_off);
        let inner_len = usize::from(m.inner_len);
        let l3 = inner_start + usize::from(m.l3_off);
        let a = ArpPacket::new_checked(&f.buf[l3..inner_start + inner_len])
            .map_err(|_| DropReason::Malformed)?;
        let (op, sender_mac, sender_ip, target_ip) =
            (a.op(), a.sender_mac(), a.sender_ip(), a.target_ip());
        if op != ArpPacket::<&[u8]>::OP_REQUEST || sender_ip == target_ip {
            return Err(DropReason::Unsupported);
        }
        if !sender_mac.is_station() {
            // The answer goes to the sender's hardware address: never a group.
            return Err(DropReason::Malformed);
        }
        let space = m.ident.space();
        let (sender, target) = (u32::from_be_bytes(sender_ip), u32::from_be_bytes(target_ip));
        let (k, h) = Table::ep4_hash(space, sender);
        Self::valid_source(m, table.ep4(k, h))?;
        let (k, h) = Table::ep4_hash(space, target);
        let ep = table.ep4(k, h).ok_or(DropReason::NoEndpoint)?;
        m.ip.v6 = false;
        if !self.may_learn(table, m, &ep, u128::from(target), u128::from(sender)) {
            return Err(DropReason::PolicyDenied);
        }
        // Answer in place: the request becomes "target is-at ep.mac", back to the asker's VTEP on the
        // segment it came from, carrying the same identity. Sized first, so a dropped request is
        // left as it came.
        let u = self.answer_underlay(table, f, m, sender ^ target.rotate_left(16))?;
        if u.ip_len(inner_len) > usize::from(table.mtu()) || inner_start < u.outer_len() {
            return Err(DropReason::TooBig);
        }
        let mac = ep.mac();
        let buf = &mut f.buf[inner_start..inner_start + inner_len];
        let mut e = EthernetFrame::new_checked(&mut *buf).map_err(|_| DropReason::Malformed)?;
        e.set_dst(sender_mac);
        e.set_src(mac);
        let hl = e.header_len();
        ArpPacket::new_checked(&mut buf[hl..])
            .map_err(|_| DropReason::Malformed)?
            .make_reply(mac);
        self.encap(table, f, inner_start, inner_len, &u, m)?;
        Ok(Disposition::ArpReply)
    }

    /// An IPv6 neighbour solicitation for an endpoint the asker may learn: answered with a solicited
    /// advertisement carrying the endpoint's MAC.
    fn nd(
        &mut self,
        table: &Table,
        f: &mut Frame<'_>,
        m: &mut Meta,
    ) -> Result<Disposition, DropReason> {
        let inner_start = f.start + usize::from(m.inner_off);
        let l3 = inner_start + usize::from(m.l3_off);
        let ip = m.ip;
        if ip.hop_limit != 255 || ip.frag != Frag::Whole {
            return Err(DropReason::Unsupported);
        }
        let icmp = &f.buf[l3 + usize::from(ip.l4_off)..l3 + usize::from(ip.ip_len)];
        let ns = inner::parse_solicit(icmp).ok_or(DropReason::Malformed)?;
        let link_local = |a: u128| a >> 118 == 0x3fa; // fe80::/10
        if ip.src == 0 || link_local(ip.src) || link_local(ns.target) {
            // Duplicate address detection, or link-local neighbours (hosts' own business on their
            // segment, never endpoints): nothing to answer, nothing spoofed.
            return Err(DropReason::Unsupported);
        }
        let space = m.ident.space();
        Self::valid_source(m, table.ep6(space, ip.src))?;
        let ep = table.ep6(space, ns.target).ok_or(DropReason::NoEndpoint)?;
        if !self.may_learn(table, m, &ep, ns.target, ip.src) {
            return Err(DropReason::PolicyDenied);
        }
        let asker_mac = ns.source_lla.unwrap_or(m.src_mac_inner(f));
        let new_len = usize::from(m.l3_off) + inner::ADVERT_LEN;
        let u = self.answer_underlay(
            table,
            f,
            m,
            (ip.src as u32) ^ (ns.target as u32).rotate_left(16),
        )?;
        if u.ip_len(new_len) > usize::from(table.mtu())
            || inner_start < u.outer_len()
            || inner_start + new_len > f.buf.len()
        {
            return Err(DropReason::TooBig);
        }
        let mac = ep.mac();
        let b = &mut f.buf[inner_start..inner_start + new_len];
        b[0..6].copy_from_slice(&asker_mac.0);
        b[6..12].copy_from_slice(&mac.0);
        inner::emit_advert(&mut b[usize::from(m.l3_off)..], ns.target, ip.src, mac);
        self.encap(table, f, inner_start, new_len, &u, m)?;
        Ok(Disposition::NdReply)
    }

    fn encap(
        &self,
        table: &Table,
        f: &mut Frame<'_>,
        inner_start: usize,
        inner_len: usize,
        u: &Underlay,
        m: &Meta,
    ) -> Result<(), DropReason> {
        if u.ip_len(inner_len) > usize::from(table.mtu()) {
            return Err(DropReason::TooBig);
        }
        let start = encapsulate(f.buf, inner_start, inner_len, u).map_err(|e| match e {
            EncapError::NoHeadroom | EncapError::TooLong => DropReason::TooBig,
            EncapError::FamilyMismatch => DropReason::NoEndpoint,
        })?;
        let _ = m;
        f.start = start;
        f.len = inner_start + inner_len - start;
        Ok(())
    }
}

impl Meta {
    /// The VNI in a fast-lane frame's decision-cache key (see [`ident_words`]).
    #[inline(always)]
    fn key_vni(&self) -> u32 {
        self.ckey[0] as u32 & 0x00ff_ffff
    }

    /// A fast-lane frame's VNI, outer IPv4 source (under an IPv4 underlay), GBP group, inner VLAN id
    /// and inner L3 offset, read back from its decision-cache key (which [`ident_words`] and
    /// `lane4` pack them into) once the cache has missed: a hit never needs them.
    #[inline(always)]
    fn unpack_key(&mut self) {
        let [w0, _, _, w3] = self.ckey;
        self.vni = self.key_vni();
        if !self.outer_v6 {
            self.src4 = (w0 >> 32) as u32;
        }
        self.group = (w3 & 0x1_0000 != 0).then_some(w3 as u16);
        self.vid = (w3 >> 17) as u16 & 0x0fff;
        self.l3_off = if self.tagged { 18 } else { 14 };
    }

    /// What [`inner::parse_ipv4`] gives for a fast-lane frame's inner packet `l3` (from its first
    /// byte to the inner frame's end), from its decision-cache key `key` and three fields: the
    /// packet passed [`fast_tuple4`], so it is whole, without options, and TCP (at least 20 header
    /// bytes), UDP or ICMP echo, and the key holds its addresses, protocol, ports (an echo's
    /// identifier twice) and echo kind. A property test holds it to `parse_ipv4`.
    #[inline(always)]
    fn ip_of_key(key: [u64; 4], l3: &[u8]) -> IpInfo {
        let [_, addrs, l4, _] = key;
        let proto = (l4 >> 24) as u8;
        let byte = |i: usize| l3.get(i).copied().unwrap_or(0);
        IpInfo {
            v6: false,
            src: u128::from((addrs >> 32) as u32),
            dst: u128::from(addrs as u32),
            proto,
            src_port: (l4 >> 48) as u16,
            dst_port: (l4 >> 32) as u16,
            tcp_flags: if proto == ipproto::TCP { byte(33) } else { 0 },
            frag: Frag::Whole,
            icmp: match l4 & 3 {
                1 => Some(IcmpKind::EchoRequest),
                2 => Some(IcmpKind::EchoReply),
                _ => None,
            },
            l4_off: 20,
            ip_len: u16::from_be_bytes([byte(2), byte(3)]),
            hop_limit: byte(8),
        }
    }

    /// The inner source MAC (the asker's own), read from the frame before any rewrite.
    fn src_mac_inner(&self, f: &Frame<'_>) -> Mac {
        let s = f.start + usize::from(self.inner_off) + 6;
        let mut m = [0u8; 6];
        m.copy_from_slice(&f.buf[s..s + 6]);
        Mac(m)
    }
}

/// The null forwarder the pipeline is measured against: touches each frame (swaps its MAC addresses)
/// and forwards it, with the same per-batch and per-frame bookkeeping shape.
pub fn null_forward(frames: &mut [Frame<'_>], outcomes: &mut [Outcome], counters: &mut Counters) {
    for (f, o) in frames.iter_mut().zip(outcomes.iter_mut()) {
        if f.len >= 12 {
            let b = &mut f.buf[f.start..f.start + 12];
            let (a, c) = b.split_at_mut(6);
            a.swap_with_slice(c);
        }
        counters.frames += 1;
        counters.bytes += f.len as u64;
        counters.forwarded += 1;
        *o = Outcome {
            disposition: Disposition::Forward,
            ..Outcome::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071's sum, 16 bits at a time in network order, folded (the complement of the header's
    /// checksum as `vtep::checksum` computes it).
    fn reference_sum(ip: &[u8]) -> u16 {
        !vtep::checksum::ipv4_header(ip)
    }

    /// The fast lane as the general path finds it: [`outer`], the station checks and
    /// [`fast_tuple4`] over the parsed inner frame, keyed by [`ident_words`].
    fn lane_by_parse(data: &[u8], port: u16) -> Option<Lane> {
        let ov = outer(data, port).ok()?;
        if ov.v6 || ov.inner_off != OUTER_LEN_V4 {
            return None;
        }
        let inner = &data[ov.inner_off..ov.inner_off + ov.inner_len];
        let h = inner.first_chunk::<14>()?;
        let tagged = be16(h, 12) == ethertype::VLAN;
        let l3_off = if tagged { 18 } else { 14 };
        let src = Mac(h[6..12].try_into().unwrap());
        if inner.len() < l3_off
            || be16(inner, l3_off - 2) != ethertype::IPV4
            || h[0] & 1 != 0
            || !src.is_station()
        {
            return None;
        }
        let [addrs, l4] = fast_tuple4(&inner[l3_off..])?;
        let vid = if tagged { be16(inner, 14) & 0x0fff } else { 0 };
        let m = Meta {
            vni: ov.vni,
            group: ov.group,
            src4: ov.src4,
            tagged,
            vid,
            ..Meta::default()
        };
        let (w0, w3) = ident_words(&m);
        Some(Lane {
            key: [w0, addrs, l4 | u64::from(tagged) << 16, w3],
            inner_len: ov.inner_len as u16,
            tagged,
        })
    }

    /// A VXLAN frame over IPv4 carrying an IPv4 packet of `proto` (ICMP: an echo request).
    fn overlay_frame(tagged: bool, gbp: bool, proto: u8, payload: usize) -> Vec<u8> {
        let l4 = match proto {
            ipproto::TCP => 20,
            _ => 8,
        } + payload;
        let mut inner = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a];
        if tagged {
            inner.extend_from_slice(&[0x81, 0x00, 0x20, 0x07]);
        }
        inner.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&[198, 19, 0, 1, 198, 19, 0, 2]);
        ip[2..4].copy_from_slice(&((20 + l4) as u16).to_be_bytes());
        let mut l4b = vec![0u8; l4];
        match proto {
            ipproto::ICMP => l4b[0] = 8,
            ipproto::TCP => {
                l4b[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
                l4b[12] = 0x50;
                l4b[13] = tcp::ACK;
            }
            _ => l4b[..4].copy_from_slice(&[0x9c, 0x40, 0, 53]),
        }
        inner.extend_from_slice(&ip);
        inner.extend_from_slice(&l4b);
        let mut f = vec![0x02, 0, 0, 0, 0, 0xfe, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
        let tl = (20 + 16 + inner.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, ipproto::UDP, 0, 0]);
        f[16..18].copy_from_slice(&tl.to_be_bytes());
        f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 254]);
        f.extend_from_slice(&[0xc0, 0x00, 0x12, 0xb5]);
        f.extend_from_slice(&(tl - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        if gbp {
            f.extend_from_slice(&[0x88, 0x08, 0x01, 0x2c]);
        } else {
            f.extend_from_slice(&[0x08, 0, 0, 0]);
        }
        f.extend_from_slice(&[0, 0x30, 0x39, 0]);
        f.extend_from_slice(&inner);
        fix_outer_checksum(&mut f);
        f
    }

    fn fix_outer_checksum(f: &mut [u8]) {
        f[24..26].fill(0);
        let c = vtep::checksum::ipv4_header(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    /// Byte values the fast lane's checks turn on.
    fn telling_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(0u8),
            Just(0x01),
            Just(0x06),
            Just(0x08),
            Just(0x11),
            Just(0x12),
            Just(0x20),
            Just(0x40),
            Just(0x45),
            Just(0x46),
            Just(0x80),
            Just(0x81),
            Just(0x86),
            Just(0x88),
            Just(0xb5),
            Just(0xff),
            any::<u8>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The fast lane takes exactly the frames the general path would put in it, with the same
        /// key and fields: a frame it wrongly took would be judged on a wrong key.
        #[test]
        fn fast_lane_agrees_with_the_general_path(
            tagged in any::<bool>(),
            gbp in any::<bool>(),
            proto in prop_oneof![Just(ipproto::TCP), Just(ipproto::UDP), Just(ipproto::ICMP)],
            payload in 0usize..24,
            src in 0u8..4,
            edits in proptest::collection::vec((0usize..100, telling_byte(), any::<bool>()), 0..4),
            fix in any::<bool>(),
            cut in proptest::option::of(40usize..130),
        ) {
            let mut f = overlay_frame(tagged, gbp, proto, payload);
            prop_assert!(lane4(&f, lane_port(4789)).is_some());
            match src {
                0 => f[56..62].fill(0),    // no station
                1 => f[56] |= 1,           // a group
                _ => {}
            }
            // Bytes set to telling values, or single bits flipped.
            for &(at, b, flip) in &edits {
                if let Some(x) = f.get_mut(at) {
                    *x = if flip { *x ^ 1 << (b & 7) } else { b };
                }
            }
            if fix {
                fix_outer_checksum(&mut f);
            }
            let whole = cut.is_none_or(|c| c >= f.len());
            if let Some(c) = cut {
                f.truncate(c);
            }
            let ours = lane4(&f, lane_port(4789));
            prop_assert_eq!(ours, lane_by_parse(&f, 4789));
            if let Some(l) = ours {
                // What a miss reads of the inner packet from the key is what a parse finds.
                let l3_at = OUTER_LEN_V4 + if l.tagged { 18 } else { 14 };
                let l3 = &f[l3_at..OUTER_LEN_V4 + usize::from(l.inner_len)];
                prop_assert_eq!(Meta::ip_of_key(l.key, l3), inner::parse_ipv4(l3).unwrap());
                // What a miss unpacks from the key is what the general path reads off the frame.
                let ov = outer(&f, 4789).unwrap();
                let mut m = Meta { ckey: l.key, tagged: l.tagged, ..Meta::default() };
                m.unpack_key();
                let l3_off = if l.tagged { 18 } else { 14 };
                let vid = if l.tagged { be16(&f, OUTER_LEN_V4 + 14) & 0x0fff } else { 0 };
                prop_assert_eq!(
                    (m.vni, m.src4, m.group, m.vid, m.l3_off),
                    (ov.vni, ov.src4, ov.group, vid, l3_off)
                );
            }
            if edits.is_empty() && whole && src > 1 {
                prop_assert!(ours.is_some());
            }
        }

        /// The word-at-a-time sum accepts exactly the headers whose checksum is right.
        #[test]
        fn header_sum_agrees_with_rfc1071(ip in any::<[u8; 20]>(), fix in any::<bool>()) {
            let mut f = [0u8; 50];
            f[14..34].copy_from_slice(&ip);
            if fix {
                f[24..26].fill(0);
                let c = !reference_sum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            let ours = ipv4_header_sum(&f);
            let theirs = reference_sum(&f[14..34]);
            // The same sum, read in the machine's byte order.
            prop_assert_eq!(ours, u16::from_be_bytes(theirs.to_ne_bytes()));
            prop_assert_eq!(ours == 0xffff, fix || theirs == 0xffff);
        }
    }
}
