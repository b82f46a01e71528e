//! Tracked flows: the table that lets an allow from A to B admit B's replies — and only those — shared
//! by every worker without a lock on the frame path (a sequence lock per slot: readers retry, a writer
//! claims a slot with one compare-and-swap), bounded, with per-protocol idle timeouts and TCP close.
//!
//! A flow is keyed by its initiator's view: (address spaces, source, destination, protocol, ports).
//! A reply is looked up with the key mirrored. Each slot remembers the policy version it was last
//! judged at, so a reply after a policy change re-judges the flow's request against the new table
//! (OPTE's epoch); a flow whose request is no longer allowed admits nothing more.

use policy::huge::ZeroedBuf;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};
use vtep::inner::tcp;

/// Idle timeouts, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the responder answered.
    pub tcp: i64,
    /// TCP before any answer (an unanswered SYN).
    pub tcp_opening: i64,
    /// TCP after FIN from both sides or a RST.
    pub tcp_closing: i64,
    pub udp: i64,
    pub icmp: i64,
    pub other: i64,
}

const S: i64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 3600 * S,
            tcp_opening: 30 * S,
            tcp_closing: 10 * S,
            udp: 120 * S,
            icmp: 30 * S,
            other: 120 * S,
        }
    }
}

/// A flow as its initiator sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub src: u128,
    pub dst: u128,
    /// space of src (24) | space of dst (24) << 24 | proto << 48 | v6 << 56 | host-pair marker << 57.
    pub meta: u64,
    /// src port << 16 | dst port.
    pub ports: u32,
}

const PAIR: u64 = 1 << 57;

impl FlowId {
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn new(
        src_space: u32,
        dst_space: u32,
        src: u128,
        dst: u128,
        v6: bool,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> FlowId {
        FlowId {
            src,
            dst,
            meta: u64::from(src_space)
                | u64::from(dst_space) << 24
                | u64::from(proto) << 48
                | u64::from(v6) << 56,
            ports: u32::from(sport) << 16 | u32::from(dport),
        }
    }
    /// The same flow seen from the other end.
    #[inline(always)]
    pub fn mirrored(&self) -> FlowId {
        let m = self.meta;
        FlowId {
            src: self.dst,
            dst: self.src,
            meta: (m & !0xffff_ffff_ffff) | (m & 0xff_ffff) << 24 | (m >> 24) & 0xff_ffff,
            ports: self.ports.rotate_left(16),
        }
    }
    /// The pair of hosts of this flow (any protocol, any ports): what neighbour answers consult.
    #[inline(always)]
    pub fn hosts(&self) -> FlowId {
        FlowId {
            src: self.src,
            dst: self.dst,
            meta: (self.meta & (0xffff_ffff_ffff | 1 << 56)) | PAIR,
            ports: 0,
        }
    }
    pub fn proto(&self) -> u8 {
        (self.meta >> 48) as u8
    }
    /// The key's hash — the same for a flow and its mirror (the ends are hashed in a canonical
    /// order), so that one hash and one prefetch serve a frame's lookup of its flow and of the flow
    /// it may answer, and a reply's lookup lands where its request lies.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let fold = |a: u128| (a as u64) ^ ((a >> 64) as u64).rotate_left(21);
        let src = (
            fold(self.src),
            (self.meta & 0xff_ffff) << 16 | u64::from(self.ports >> 16),
        );
        let dst = (
            fold(self.dst),
            (self.meta >> 24 & 0xff_ffff) << 16 | u64::from(self.ports & 0xffff),
        );
        let (lo, hi) = if src <= dst { (src, dst) } else { (dst, src) };
        let mut h = lo.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= hi.0;
        h = h.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        // Protocol, family and host-pair marker (10 bits) on top; the ends' spaces and ports.
        h ^= (self.meta >> 48) << 54 ^ lo.1 << 13 ^ hi.1;
        h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }
}

// TCP state bits of a slot.
const FIN_I: u32 = 1;
const FIN_R: u32 = 2;
const RST: u32 = 4;
const REPLIED: u32 = 8;
/// Cut by a policy change: admits nothing until it expires.
const DEAD: u32 = 16;

/// Whether a TCP flow with state bits `state` has ended: a RST seen, or a FIN from both ends. A
/// closed flow is refreshed by no frame any more, so it lapses a closing timeout after it closed.
/// One test (bit 0 holds FIN_I and FIN_R, or RST), for the decision cache's hit path.
#[inline(always)]
fn closed(state: u32) -> bool {
    const _: () = assert!(FIN_I == 1 && FIN_R == 2 && RST == 4);
    (state & (state >> 1) | state >> 2) & 1 != 0
}

#[repr(C, align(64))]
#[derive(Default)]
struct Slot {
    /// Sequence lock: odd while a writer fills the slot.
    seq: AtomicU32,
    /// Low 32 bits of the policy version the flow was last judged allowed at.
    epoch: AtomicU32,
    /// Last frame, Unix ns; 0 = empty.
    last: AtomicU64,
    meta: AtomicU64,
    ports: AtomicU32,
    state: AtomicU32,
    src: [AtomicU64; 2],
    dst: [AtomicU64; 2],
}

/// How many slots from a key's home a flow may sit (one or two cache-line pairs).
const WINDOW: usize = 8;

/// What [`FlowTable::claimable`] read of a slot that may take a flow.
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// Its last frame (0: empty).
    last: i64,
    /// It holds the flow being inserted (dead or expired).
    same: bool,
    /// Its flow has expired.
    expired: bool,
}

/// A slot that may take a flow: its index, its sequence when read, and what was read.
type Spare = (usize, u32, Claim);

impl Claim {
    /// An empty slot.
    const EMPTY: Claim = Claim {
        last: 0,
        same: false,
        expired: false,
    };
}

/// What [`FlowTable::find_or_insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// The flow (false) or its mirror (true) is live.
    Found(Found, bool),
    /// Neither was: the flow is now tracked.
    Inserted(FlowRef),
    /// Neither was, and there is no room for the flow (the table is full, or its window is).
    Refused,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    slot: usize,
    pub epoch: u32,
    state: u32,
    /// The slot's sequence when it was read: a cached reference to the flow is valid while it holds.
    seq: u32,
}

/// A flow remembered by a worker's decision cache: its slot and the slot's sequence then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowRef {
    pub slot: u32,
    pub seq: u32,
}

impl Found {
    pub fn reference(&self) -> FlowRef {
        FlowRef {
            slot: self.slot as u32,
            seq: self.seq,
        }
    }
}

/// Flow-table counters (process-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowStats {
    pub tracked: u64,
    pub created: u64,
    pub expired: u64,
    pub refused: u64,
    pub capacity: u64,
}

/// The flow table shared by a gateway's workers.
pub struct FlowTable {
    slots: ZeroedBuf<Slot>,
    mask: usize,
    max: u64,
    pub timeouts: Timeouts,
    /// The shortest timeout: a flow seen more recently than this is alive whatever its protocol
    /// and state (the sweep skips it; when it is at least a second, a decision cache's hit on a
    /// flow refreshed within the last second need not work its timeout out).
    shortest: i64,
    tracked: AtomicU64,
    created: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
    cursor: AtomicU64,
    /// Births by hash: `births[h & (BIRTHS - 1)]` counts the flows ever written for keys hashing
    /// there (host-pair notes are not counted). A decision that holds only while some flow does not
    /// exist (a cached deny, under tracked replies) remembers its counter and lapses when it moves.
    births: Box<[AtomicU32]>,
}

/// Counters in [`FlowTable::births`] (a power of two).
const BIRTHS: usize = 1 << 14;

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("stats", &self.stats())
            .finish()
    }
}

/// `n` empty slots in zeroed memory, on 2 MB pages where the host offers them (a frame's flow is a
/// random slot of a big table: one TLB entry covers 32 768 slots, not 64). An empty slot is all zero
/// bits, and the pages of a big table that no flow has reached yet are never touched (a 262 144-flow
/// table costs no RSS until used).
fn empty_slots(n: usize) -> ZeroedBuf<Slot> {
    // SAFETY: every field of `Slot` is an atomic integer, whose all-zero bit pattern is the valid
    // value 0 (what `Slot::default()` holds).
    unsafe { ZeroedBuf::new(n) }
}

impl FlowTable {
    /// A table for at most `max` flows (host-pair notes included).
    pub fn new(max: usize, timeouts: Timeouts) -> FlowTable {
        let n = (max.max(64) * 2).next_power_of_two();
        let all = [
            timeouts.tcp,
            timeouts.tcp_opening,
            timeouts.tcp_closing,
            timeouts.udp,
            timeouts.icmp,
            timeouts.other,
        ];
        let shortest = all.iter().copied().min().unwrap_or(0);
        FlowTable {
            slots: empty_slots(n),
            mask: n - 1,
            max: max as u64,
            timeouts,
            shortest,
            tracked: AtomicU64::new(0),
            created: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cursor: AtomicU64::new(0),
            births: (0..BIRTHS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The birth counter of keys with hash `h` (see [`FlowTable::births`]): it moves whenever an
    /// entry for a key with that hash is written.
    #[inline(always)]
    pub fn births(&self, h: u64) -> u32 {
        self.births[h as usize & (BIRTHS - 1)].load(Acquire)
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats {
            tracked: self.tracked.load(Relaxed),
            created: self.created.load(Relaxed),
            expired: self.expired.load(Relaxed),
            refused: self.refused.load(Relaxed),
            capacity: self.max,
        }
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        (h >> 20) as usize & self.mask
    }

    /// Brings a key's first slots toward the cache.
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        policy::flat::prefetch(self.slots.as_ptr().wrapping_add(self.home(h)));
    }

    /// Brings slot `i` (a [`FlowRef::slot`]) toward the cache.
    #[inline(always)]
    pub fn prefetch_slot(&self, i: u32) {
        policy::flat::prefetch(self.slots.as_ptr().wrapping_add(i as usize));
    }

    fn timeout(&self, meta: u64, state: u32) -> i64 {
        let t = &self.timeouts;
        if meta & PAIR != 0 {
            return t.other;
        }
        match (meta >> 48) as u8 {
            vtep::ipproto::TCP => {
                if closed(state) {
                    t.tcp_closing
                } else if state & REPLIED == 0 {
                    t.tcp_opening
                } else {
                    t.tcp
                }
            }
            vtep::ipproto::UDP => t.udp,
            vtep::ipproto::ICMP | vtep::ipproto::ICMPV6 => t.icmp,
            _ => t.other,
        }
    }

    /// Reads slot `i` consistently: (seq, key, last, state, epoch), or None while it is written.
    #[inline(always)]
    fn read(&self, i: usize) -> Option<(FlowId, i64, u32, u32)> {
        let s = &self.slots[i];
        for _ in 0..4 {
            let q = s.seq.load(Acquire);
            if q & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let last = s.last.load(Relaxed) as i64;
            let id = FlowId {
                src: u128::from(s.src[0].load(Relaxed)) | u128::from(s.src[1].load(Relaxed)) << 64,
                dst: u128::from(s.dst[0].load(Relaxed)) | u128::from(s.dst[1].load(Relaxed)) << 64,
                meta: s.meta.load(Relaxed),
                ports: s.ports.load(Relaxed),
            };
            let state = s.state.load(Relaxed);
            let epoch = s.epoch.load(Relaxed);
            fence(Acquire);
            if s.seq.load(Relaxed) == q {
                return Some((id, last, state, epoch));
            }
        }
        None
    }

    /// The live flow `id` (with hash `h`) at `now`. A slot never used ends the search (inserts
    /// never pass one); a slot whose cheap fields differ is skipped without a consistent read.
    #[inline]
    pub fn find(&self, id: &FlowId, h: u64, now: i64) -> Option<Found> {
        let home = self.home(h);
        for k in 0..WINDOW {
            let i = (home + k) & self.mask;
            let s = &self.slots[i];
            let q = s.seq.load(Acquire);
            if q == 0 {
                return None;
            }
            if s.meta.load(Relaxed) != id.meta || s.ports.load(Relaxed) != id.ports {
                continue;
            }
            match self.entry(i, q, now) {
                Some((key, found)) if key == *id => return found,
                _ => continue,
            }
        }
        None
    }

    /// The flow slot `i` holds (its sequence `q` as just loaded), read consistently, and the flow
    /// as found at `now` (None inside: expired). None: the slot is being written, or empty.
    #[inline(always)]
    fn entry(&self, i: usize, q: u32, now: i64) -> Option<(FlowId, Option<Found>)> {
        let (key, last, state, epoch) = self.read(i)?;
        if last == 0 {
            return None;
        }
        let found = (now - last <= self.timeout(key.meta, state)).then_some(Found {
            slot: i,
            epoch,
            state,
            seq: q,
        });
        Some((key, found))
    }

    /// [`FlowTable::find`] of `id`, or failing that of its mirror, in one walk of their home window
    /// (a flow and its mirror hash alike, `h`): the live flow that is not cut, and whether it is the
    /// mirror (the frame is then its reply). The answer `find(id)`, then `find(&id.mirrored())`,
    /// would give.
    #[inline]
    pub fn find_or_mirror(&self, id: &FlowId, h: u64, now: i64) -> Option<(Found, bool)> {
        self.walk::<false>(id, h, now, false).0
    }

    /// [`FlowTable::find_or_mirror`], and when neither is live, `id` inserted as
    /// [`FlowTable::insert_missing`] would — into the slot the same walk marked, so a new flow costs
    /// one search of its window (a second only when another writer took that slot meanwhile).
    #[inline]
    pub fn find_or_insert(
        &self,
        id: &FlowId,
        h: u64,
        now: i64,
        version: u64,
        tcp_flags: u8,
    ) -> Tracked {
        let full = self.tracked.load(Relaxed) >= self.max;
        let (found, spare) = self.walk::<true>(id, h, now, full);
        if let Some((f, reply)) = found {
            return Tracked::Found(f, reply);
        }
        if let Some((i, q, c)) = spare {
            if let Some(r) = self.claim(i, q, c, id, h, now, version, tcp_flags) {
                return Tracked::Inserted(r);
            }
        }
        match self.insert_missing(id, h, now, version, tcp_flags) {
            Some(r) => Tracked::Inserted(r),
            None => Tracked::Refused,
        }
    }

    /// The walk of [`FlowTable::find_or_mirror`]; with `SPARE`, also the first slot that may take
    /// `id` ([`FlowTable::claimable`] under `full`) among those walked — the slot
    /// [`FlowTable::insert_missing`] would take, as the walk ends only at a slot never used, at `id`'s
    /// own entry (either may take it) or at the window's end.
    #[inline(always)]
    fn walk<const SPARE: bool>(
        &self,
        id: &FlowId,
        h: u64,
        now: i64,
        full: bool,
    ) -> (Option<(Found, bool)>, Option<Spare>) {
        let mirror = id.mirrored();
        let home = self.home(h);
        // Whether `id`'s first consistent entry was met (expired or cut: no answer), and the
        // mirror's answer once its own was (None inside: expired).
        let mut ours_done = false;
        let mut theirs: Option<Option<Found>> = None;
        let mut spare = None;
        for k in 0..WINDOW {
            let i = (home + k) & self.mask;
            let s = &self.slots[i];
            let q = s.seq.load(Acquire);
            if q == 0 {
                if SPARE && spare.is_none() && !full {
                    spare = Some((i, q, Claim::EMPTY));
                }
                break;
            }
            if SPARE && spare.is_none() && q & 1 == 0 {
                spare = self.claimable(s, id, now, full).map(|c| (i, q, c));
            }
            let (meta, ports) = (s.meta.load(Relaxed), s.ports.load(Relaxed));
            let ours = !ours_done && meta == id.meta && ports == id.ports;
            let mirrored = theirs.is_none() && meta == mirror.meta && ports == mirror.ports;
            if !(ours || mirrored) {
                continue;
            }
            let Some((key, found)) = self.entry(i, q, now) else {
                continue;
            };
            if ours && key == *id {
                if let Some(f) = found.filter(|f| !Self::is_dead(f)) {
                    return (Some((f, false)), spare);
                }
                ours_done = true;
            }
            // (A flow that is its own mirror is answered by its first entry either way.)
            if mirrored && key == mirror {
                theirs = Some(found);
            }
            if ours_done && theirs.is_some() {
                break;
            }
        }
        match theirs {
            Some(Some(f)) if !Self::is_dead(&f) => (Some((f, true)), spare),
            _ => (None, spare),
        }
    }

    /// Refreshes a found flow: last-seen (at most once a millisecond per flow, to spare the shared
    /// line), TCP flags seen from the initiator (`reply` false) or the responder. True when the flow
    /// had been quiet for over a second (the caller then refreshes its host-pair note). A closed
    /// flow (RST, or FIN from both ends, before this frame) is not refreshed, nor is its host-pair
    /// note: it ends a closing timeout after it closed, whatever either end goes on sending.
    #[inline]
    pub fn touch(&self, f: &Found, now: i64, tcp_flags: u8, reply: bool) -> bool {
        let s = &self.slots[f.slot];
        let last = s.last.load(Relaxed) as i64;
        let open = !closed(f.state);
        if open && now - last > 1_000_000 {
            s.last.store(now as u64, Relaxed);
        }
        let mut add = 0;
        if reply && f.state & REPLIED == 0 {
            add |= REPLIED;
        }
        if tcp_flags & tcp::FIN != 0 {
            add |= if reply { FIN_R } else { FIN_I };
        }
        if tcp_flags & tcp::RST != 0 {
            add |= RST;
        }
        if add & !f.state != 0 {
            s.state.fetch_or(add, Relaxed);
        }
        open && now - last > S
    }

    /// A decision cache's hit on flow `r`: if the slot still holds that flow, alive and not cut,
    /// and it was refreshed within the last second, refreshes it like [`FlowTable::touch`] (a
    /// closed flow not) and says true; otherwise the frame takes the full path (which, after a
    /// quiet second, refreshes the flow and also notes its host pair — so this leaves such a flow
    /// untouched).
    #[inline(always)]
    pub fn touch_ref(&self, r: FlowRef, now: i64, reply: bool) -> bool {
        let Some(s) = self.slots.get(r.slot as usize) else {
            return false;
        };
        if s.seq.load(Acquire) != r.seq {
            return false;
        }
        let state = s.state.load(Relaxed);
        let last = s.last.load(Relaxed) as i64;
        let idle = now - last;
        if state & DEAD != 0 || last == 0 || idle > S {
            return false;
        }
        if self.shortest < S && idle > self.timeout(s.meta.load(Relaxed), state) {
            return false;
        }
        if idle > 1_000_000 && !closed(state) {
            s.last.store(now as u64, Relaxed);
        }
        if reply && state & REPLIED == 0 {
            s.state.fetch_or(REPLIED, Relaxed);
        }
        true
    }

    /// Reopens a closed flow (RST, or FIN from both ends) on a new connection's first frame from
    /// its initiator — a SYN without ACK, reusing the same ports within the closing timeout — as
    /// Linux's conntrack takes a SYN in CLOSE or TIME_WAIT for a new connection: its close is
    /// forgotten and it is refreshed as if just begun. True when it was reopened (the caller
    /// notes its host pair again). An open flow is left as it is.
    pub fn reopen(&self, f: &Found, now: i64, tcp_flags: u8) -> bool {
        if !closed(f.state) || tcp_flags & (tcp::SYN | tcp::ACK) != tcp::SYN {
            return false;
        }
        let s = &self.slots[f.slot];
        // Its close and its answer forgotten; a cut (by another worker meanwhile) stays.
        s.state.fetch_and(!(FIN_I | FIN_R | RST | REPLIED), Relaxed);
        s.last.store(now.max(1) as u64, Relaxed);
        true
    }

    /// Records that the flow was judged allowed at policy `version`.
    pub fn judged(&self, f: &Found, version: u64) {
        self.slots[f.slot].epoch.store(version as u32, Relaxed);
    }

    /// Cuts a flow whose request the policy no longer allows.
    pub fn cut(&self, f: &Found) {
        self.slots[f.slot].state.fetch_or(DEAD, Relaxed);
    }

    pub fn is_dead(f: &Found) -> bool {
        f.state & DEAD != 0
    }

    /// Tracks `id` (seen at `now`, allowed at `version`); an existing entry is refreshed. Returns
    /// the flow, or None when there is no room (the table is full, or the key's window is).
    pub fn insert(
        &self,
        id: &FlowId,
        h: u64,
        now: i64,
        version: u64,
        tcp_flags: u8,
    ) -> Option<FlowRef> {
        if let Some(f) = self.find(id, h, now) {
            if !Self::is_dead(&f) {
                self.touch(&f, now, tcp_flags, false);
                self.judged(&f, version);
                return Some(f.reference());
            }
        }
        self.insert_missing(id, h, now, version, tcp_flags)
    }

    /// Whether slot `s` (not being written) may take `id`: empty, expired, or holding `id` itself
    /// (dead or expired, replaced in place). `full`: the table holds `max` flows, so an empty slot
    /// may not be taken.
    #[inline(always)]
    fn claimable(&self, s: &Slot, id: &FlowId, now: i64, full: bool) -> Option<Claim> {
        let last = s.last.load(Relaxed) as i64;
        if last == 0 {
            return (!full).then_some(Claim::EMPTY);
        }
        let meta = s.meta.load(Relaxed);
        let same = meta == id.meta
            && s.ports.load(Relaxed) == id.ports
            && s.src[0].load(Relaxed) == id.src as u64
            && s.src[1].load(Relaxed) == (id.src >> 64) as u64
            && s.dst[0].load(Relaxed) == id.dst as u64
            && s.dst[1].load(Relaxed) == (id.dst >> 64) as u64;
        let expired = now - last > self.timeout(meta, s.state.load(Relaxed));
        (expired || same).then_some(Claim {
            last,
            same,
            expired,
        })
    }

    /// Takes slot `i` (whose sequence was `q` when [`FlowTable::claimable`] said `c`) for `id`:
    /// None when another writer took it first.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn claim(
        &self,
        i: usize,
        q: u32,
        c: Claim,
        id: &FlowId,
        h: u64,
        now: i64,
        version: u64,
        tcp_flags: u8,
    ) -> Option<FlowRef> {
        let s = &self.slots[i];
        s.seq
            .compare_exchange(q, q.wrapping_add(1), Acquire, Relaxed)
            .ok()?;
        fence(Release);
        if c.last == 0 {
            self.tracked.fetch_add(1, Relaxed);
        } else if c.expired && !c.same {
            self.expired.fetch_add(1, Relaxed);
        }
        s.src[0].store(id.src as u64, Relaxed);
        s.src[1].store((id.src >> 64) as u64, Relaxed);
        s.dst[0].store(id.dst as u64, Relaxed);
        s.dst[1].store((id.dst >> 64) as u64, Relaxed);
        s.meta.store(id.meta, Relaxed);
        s.ports.store(id.ports, Relaxed);
        let mut st = 0;
        if tcp_flags & tcp::FIN != 0 {
            st |= FIN_I;
        }
        if tcp_flags & tcp::RST != 0 {
            st |= RST;
        }
        s.state.store(st, Relaxed);
        s.epoch.store(version as u32, Relaxed);
        s.last.store(now.max(1) as u64, Relaxed);
        s.seq.store(q.wrapping_add(2), Release);
        if id.meta & PAIR == 0 {
            // A host-pair note is no flow a watched deny waits for: its birth is not counted.
            self.births[h as usize & (BIRTHS - 1)].fetch_add(1, Release);
            self.created.fetch_add(1, Relaxed);
        }
        Some(FlowRef {
            slot: i as u32,
            seq: q.wrapping_add(2),
        })
    }

    /// [`FlowTable::insert`] for a flow the caller's own [`FlowTable::find`] has just not found
    /// live: claims a slot without searching again. Should another worker insert it meanwhile, the
    /// outcome is that of two workers racing in `insert`: this one replaces the other's entry in
    /// place, or the window holds both until the one `find` does not reach lapses.
    pub fn insert_missing(
        &self,
        id: &FlowId,
        h: u64,
        now: i64,
        version: u64,
        tcp_flags: u8,
    ) -> Option<FlowRef> {
        let home = self.home(h);
        let full = self.tracked.load(Relaxed) >= self.max;
        for k in 0..WINDOW {
            let i = (home + k) & self.mask;
            let s = &self.slots[i];
            let q = s.seq.load(Acquire);
            if q & 1 == 1 {
                continue;
            }
            if q == 0 && full {
                // Never pass a slot never used (find stops there): no room.
                break;
            }
            let Some(c) = self.claimable(s, id, now, full) else {
                continue;
            };
            if let Some(r) = self.claim(i, q, c, id, h, now, version, tcp_flags) {
                return Some(r);
            }
        }
        if id.meta & PAIR == 0 {
            self.refused.fetch_add(1, Relaxed);
        }
        None
    }

    /// Notes that `hosts` (a [`FlowId::hosts`]) has a live flow: refreshed at most once a second.
    /// One walk of the key's window both finds the note (as [`FlowTable::find`] would) and marks the
    /// slot [`FlowTable::insert_missing`] would take, so a new note is written without a second
    /// search (the second search runs only when another writer took that slot meanwhile).
    pub fn note_hosts(&self, hosts: &FlowId, now: i64, version: u64) {
        let h = hosts.hash();
        let home = self.home(h);
        let full = self.tracked.load(Relaxed) >= self.max;
        let mut spare: Option<Spare> = None;
        for k in 0..WINDOW {
            let i = (home + k) & self.mask;
            let s = &self.slots[i];
            let q = s.seq.load(Acquire);
            if q == 0 {
                if spare.is_none() && !full {
                    spare = Some((i, q, Claim::EMPTY));
                }
                break;
            }
            if s.meta.load(Relaxed) == hosts.meta && s.ports.load(Relaxed) == hosts.ports {
                if let Some((key, found)) = self.entry(i, q, now) {
                    if key == *hosts {
                        if let Some(f) = found {
                            let s = &self.slots[f.slot];
                            if now - s.last.load(Relaxed) as i64 > S {
                                s.last.store(now as u64, Relaxed);
                            }
                            return;
                        }
                        // Expired: `find` answers none here; this slot may take the note anew.
                        if spare.is_none() {
                            spare = self.claimable(s, hosts, now, full).map(|c| (i, q, c));
                        }
                        break;
                    }
                }
            }
            if spare.is_none() && q & 1 == 0 {
                spare = self.claimable(s, hosts, now, full).map(|c| (i, q, c));
            }
        }
        if let Some((i, q, c)) = spare {
            if self.claim(i, q, c, hosts, h, now, version, 0).is_some() {
                return;
            }
        }
        self.insert_missing(hosts, h, now, version, 0);
    }

    /// Whether the initiator of `hosts` has had a live flow toward its responder lately.
    pub fn has_hosts(&self, hosts: &FlowId, now: i64) -> bool {
        self.find(hosts, hosts.hash(), now).is_some()
    }

    /// Reclaims expired slots among the next `n` (workers call this once per batch, so the table
    /// is swept continuously without a thread of its own).
    pub fn sweep(&self, n: usize, now: i64) {
        let n = n.min(self.slots.len());
        let start = self.cursor.fetch_add(n as u64, Relaxed) as usize & self.mask;
        // The next `n` slots from the cursor, as at most two runs (the second after wrapping).
        let end = start + n;
        let (a, b) = if end <= self.slots.len() {
            (&self.slots[start..end], &self.slots[..0])
        } else {
            (&self.slots[start..], &self.slots[..end - self.slots.len()])
        };
        for run in [a, b] {
            for s in run {
                let last = s.last.load(Relaxed) as i64;
                // Empty, or seen within the shortest timeout: nothing to reclaim.
                if last == 0 || now - last <= self.shortest {
                    continue;
                }
                let meta = s.meta.load(Relaxed);
                if now - last <= self.timeout(meta, s.state.load(Relaxed)) {
                    continue;
                }
                let q = s.seq.load(Acquire);
                if q & 1 == 1
                    || s.seq
                        .compare_exchange(q, q.wrapping_add(1), Acquire, Relaxed)
                        .is_err()
                {
                    continue;
                }
                fence(Release);
                // Re-check under the claim: a reply may have refreshed it meanwhile.
                let last = s.last.load(Relaxed) as i64;
                if last != 0 && now - last > self.timeout(meta, s.state.load(Relaxed)) {
                    s.last.store(0, Relaxed);
                    self.tracked.fetch_sub(1, Relaxed);
                    if meta & PAIR == 0 {
                        self.expired.fetch_add(1, Relaxed);
                    }
                }
                s.seq.store(q.wrapping_add(2), Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_slots_are_default_slots() {
        let fields = |s: &Slot| {
            (
                s.seq.load(Relaxed),
                s.epoch.load(Relaxed),
                s.last.load(Relaxed),
                s.meta.load(Relaxed),
                s.ports.load(Relaxed),
                s.state.load(Relaxed),
                [s.src[0].load(Relaxed), s.src[1].load(Relaxed)],
                [s.dst[0].load(Relaxed), s.dst[1].load(Relaxed)],
            )
        };
        let slots = empty_slots(256);
        assert_eq!(slots.len(), 256);
        for s in slots.iter() {
            assert_eq!(fields(s), fields(&Slot::default()));
        }
        assert_eq!(
            slots.as_ptr() as usize % 64,
            0,
            "slots keep their cache-line alignment"
        );
    }

    fn id(sport: u16) -> FlowId {
        FlowId::new(0, 1, 0xc613_0001, 0xc613_0002, false, 6, sport, 443)
    }

    #[test]
    fn mirror_swaps_ends_and_spaces() {
        let a = id(1000);
        let m = a.mirrored();
        assert_eq!(m.src, a.dst);
        assert_eq!(m.ports, 443 << 16 | 1000);
        assert_eq!(m.meta & 0xff_ffff, 1);
        assert_eq!(m.meta >> 24 & 0xff_ffff, 0);
        assert_eq!(m.proto(), 6);
        assert_eq!(m.mirrored(), a);
    }

    #[test]
    fn a_flow_moves_its_birth_counter_and_a_host_pair_note_does_not() {
        let t = FlowTable::new(64, Timeouts::default());
        let a = id(1000);
        let (h, pair) = (a.hash(), a.hosts());
        let (born, noted) = (t.births(h), t.births(pair.hash()));
        t.note_hosts(&pair, S, 1);
        assert!(t.has_hosts(&pair, S));
        assert_eq!(t.births(pair.hash()), noted, "a note is no flow");
        assert!(t.insert_missing(&a, h, S, 1, tcp::SYN).is_some());
        assert_eq!(t.births(h), born.wrapping_add(1));
    }

    proptest::proptest! {
        /// One walk for a flow or its mirror answers as `find` of the flow, then of its mirror:
        /// over small tables (every key in one window) of flows, mirrors and flows that are their
        /// own mirror, inserted, cut and aged.
        #[test]
        fn find_or_mirror_answers_as_two_finds(
            ops in proptest::collection::vec((0u16..6, 0u8..4, 0i64..40), 1..24),
            ask in 0u16..6,
            at in 0i64..60,
        ) {
            // Keys 0..3: flows 1000.. toward port 443, and 3..6 their mirrors; key 5 is also
            // symmetric (the same ports both ways between one host and itself).
            let key = |k: u16| match k {
                0..=2 => id(1000 + k),
                5 => FlowId::new(0, 0, 0xc613_0001, 0xc613_0001, false, 17, 53, 53),
                _ => id(1000 + k - 3).mirrored(),
            };
            let t = FlowTable::new(64, Timeouts::default());
            for &(k, op, dt) in &ops {
                let f = key(k);
                let h = f.hash();
                match op {
                    0 | 1 => {
                        t.insert_missing(&f, h, S + dt * S, 1, 0);
                    }
                    2 => {
                        if let Some(x) = t.find(&f, h, S + dt * S) {
                            t.cut(&x);
                        }
                    }
                    _ => {
                        t.insert(&f, h, S + dt * S, 1, tcp::ACK);
                    }
                }
            }
            let f = key(ask);
            let (h, now) = (f.hash(), S + at * S);
            let live = |x: Option<Found>| x.filter(|x| !FlowTable::is_dead(x));
            let reference = live(t.find(&f, h, now))
                .map(|x| (x, false))
                .or_else(|| live(t.find(&f.mirrored(), h, now)).map(|x| (x, true)));
            let ours = t.find_or_mirror(&f, h, now);
            let slot = |x: Option<(Found, bool)>| x.map(|(x, r)| (x.slot, x.seq, r));
            proptest::prop_assert_eq!(slot(ours), slot(reference));
        }
    }

    /// [`FlowTable::note_hosts`] as two walks: `find`, then a refresh or `insert_missing` (what its
    /// single walk must equal).
    fn note_hosts_in_two_walks(t: &FlowTable, hosts: &FlowId, now: i64, version: u64) {
        let h = hosts.hash();
        match t.find(hosts, h, now) {
            Some(f) => {
                let s = &t.slots[f.slot];
                if now - s.last.load(Relaxed) as i64 > S {
                    s.last.store(now as u64, Relaxed);
                }
            }
            None => {
                t.insert_missing(hosts, h, now, version, 0);
            }
        }
    }

    /// Every slot's fields and the table's counts.
    fn dump(t: &FlowTable) -> Vec<[u64; 10]> {
        let mut v: Vec<[u64; 10]> = t
            .slots
            .iter()
            .map(|s| {
                [
                    u64::from(s.seq.load(Relaxed)),
                    u64::from(s.epoch.load(Relaxed)),
                    s.last.load(Relaxed),
                    s.meta.load(Relaxed),
                    u64::from(s.ports.load(Relaxed)),
                    u64::from(s.state.load(Relaxed)),
                    s.src[0].load(Relaxed),
                    s.src[1].load(Relaxed),
                    s.dst[0].load(Relaxed),
                    s.dst[1].load(Relaxed),
                ]
            })
            .collect();
        v.push([
            t.tracked.load(Relaxed),
            t.created.load(Relaxed),
            t.expired.load(Relaxed),
            t.refused.load(Relaxed),
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        v
    }

    proptest::proptest! {
        /// A host-pair note written in one walk leaves the table exactly as `find` and then a
        /// refresh or `insert_missing` would, and a flow found or inserted in one walk as
        /// `find_or_mirror` and then `insert_missing` would (the same answer too): over keys that
        /// share a window (notes, flows and their mirrors), among empty, live, expired, cut and
        /// swept slots, in a table that fills up.
        #[test]
        fn one_walk_finds_or_inserts_as_a_find_then_an_insert(
            ops in proptest::collection::vec((0u8..4, 0usize..8, 0i64..12), 1..40),
            max in 2usize..12,
        ) {
            // Notes and flows whose home is one of the first four slots of a 128-slot table.
            let t = FlowTable::new(max, Timeouts { other: 6 * S, tcp_opening: 4 * S, ..Timeouts::default() });
            let near = |k: &FlowId| t.home(k.hash()) < 4;
            let notes: Vec<FlowId> = (0..4000u128)
                .map(|a| FlowId::new(0, 0, 0xc613_0000 + a, 0xc613_8000, false, 6, 1, 2).hosts())
                .filter(|k| near(k))
                .take(4)
                .collect();
            let flows: Vec<FlowId> = (0..4000u16)
                .map(|p| FlowId::new(0, 0, 0xc613_0001, 0xc613_0002, false, 6, p, 443))
                .filter(|k| near(k))
                .take(4)
                .collect();
            proptest::prop_assume!(notes.len() == 4 && flows.len() == 4);
            let ours = FlowTable::new(max, t.timeouts);
            let reference = FlowTable::new(max, t.timeouts);
            let mut now = S;
            for &(op, k, dt) in &ops {
                now += dt * S / 2;
                match op {
                    0 | 1 => {
                        let n = &notes[k % 4];
                        ours.note_hosts(n, now, 1);
                        note_hosts_in_two_walks(&reference, n, now, 1);
                    }
                    2 => {
                        // A frame of flow k (k < 4) or of its mirror: found, or inserted.
                        let f = if k < 4 { flows[k] } else { flows[k % 4].mirrored() };
                        let h = f.hash();
                        let got = ours.find_or_insert(&f, h, now, 1, 0);
                        let want = match reference.find_or_mirror(&f, h, now) {
                            Some((x, reply)) => Tracked::Found(x, reply),
                            None => match reference.insert_missing(&f, h, now, 1, 0) {
                                Some(r) => Tracked::Inserted(r),
                                None => Tracked::Refused,
                            },
                        };
                        proptest::prop_assert_eq!(got, want);
                    }
                    _ if k < 4 => {
                        for t in [&ours, &reference] {
                            if let Some(x) = t.find(&flows[k], flows[k].hash(), now) {
                                t.cut(&x);
                            }
                        }
                    }
                    _ => {
                        ours.sweep(k * 16, now);
                        reference.sweep(k * 16, now);
                    }
                }
                proptest::prop_assert_eq!(dump(&ours), dump(&reference));
            }
        }
    }

    #[test]
    fn insert_find_expire_and_close() {
        let t = FlowTable::new(64, Timeouts::default());
        let a = id(1000);
        let h = a.hash();
        assert!(t.find(&a, h, S).is_none());
        assert!(t.insert(&a, h, S, 1, tcp::SYN).is_some());
        let f = t.find(&a, h, S).unwrap();
        assert_eq!(f.epoch, 1);
        // Unanswered: the opening timeout applies.
        assert!(t.find(&a, h, S + 31 * S).is_none());
        assert!(t.find(&a, h, S + 29 * S).is_some());
        t.touch(&f, 2 * S, tcp::ACK, true);
        let f = t.find(&a, h, 2 * S).unwrap();
        assert!(t.find(&a, h, 2 * S + 100 * S).is_some());
        t.touch(&f, 3 * S, tcp::FIN, false);
        let f = t.find(&a, h, 3 * S).unwrap();
        t.touch(&f, 3 * S, tcp::FIN | tcp::ACK, true);
        assert!(t.find(&a, h, 3 * S + 11 * S).is_none());
        assert_eq!(t.stats().tracked, 1);
        t.sweep(1 << 20, 20 * S);
        assert_eq!(t.stats().tracked, 0);
        assert_eq!(t.stats().expired, 1);
        assert_eq!(t.stats().created, 1);
    }

    #[test]
    fn closed_is_a_rst_or_a_fin_from_both_ends() {
        for state in 0..64 {
            assert_eq!(
                closed(state),
                state & RST != 0 || state & (FIN_I | FIN_R) == FIN_I | FIN_R,
                "{state:#b}"
            );
        }
    }

    /// Once a flow has closed (RST, or FIN from both ends), no frame refreshes it — neither end's,
    /// on the full path (`touch`) or a decision cache's hit (`touch_ref`) — so it ends a closing
    /// timeout (10 s) after the frame that closed it; frames within that grace still find it. A
    /// half-closed flow (FIN from one end) is still refreshed.
    #[test]
    fn a_closed_flow_ends_a_closing_timeout_after_it_closed_whoever_sends() {
        let t = FlowTable::new(64, Timeouts::default());
        let ms = S / 1000;
        // Opened and answered at 1 s; closed at 2 s by `closing` (from the initiator, then the
        // responder when two frames are given); then `after` (reply or not) every 500 ms to 30 s.
        let run = |port: u16, closing: &[(u8, bool)], after: (u8, bool), cached: bool| {
            let a = id(port);
            let h = a.hash();
            let r = t.insert(&a, h, S, 1, tcp::SYN).unwrap();
            t.touch(&t.find(&a, h, S).unwrap(), S, tcp::SYN | tcp::ACK, true);
            for &(flags, reply) in closing {
                t.touch(&t.find(&a, h, 2 * S).unwrap(), 2 * S, flags, reply);
            }
            let mut now = 2 * S;
            while now < 30 * S {
                now += 500 * ms;
                let (flags, reply) = after;
                // A cached hit where the cache would serve one; the full path otherwise (as
                // the pipeline does when `touch_ref` declines).
                if cached && t.touch_ref(r, now, reply) {
                    continue;
                }
                match t.find(&a, h, now) {
                    Some(f) => assert!(!t.touch(&f, now, flags, reply), "no host-pair refresh"),
                    None => return now,
                }
            }
            now
        };
        let rst = [(tcp::RST | tcp::ACK, false)];
        let rst_r = [(tcp::RST, true)];
        let fins = [(tcp::FIN | tcp::ACK, false), (tcp::FIN | tcp::ACK, true)];
        let mut port = 1000;
        for closing in [&rst[..], &rst_r, &fins] {
            for after in [(tcp::ACK, true), (tcp::ACK, false)] {
                for cached in [false, true] {
                    port += 1;
                    // Closed at 2 s: found through 12 s, gone at 12.5 s.
                    assert_eq!(
                        run(port, closing, after, cached),
                        12 * S + 500 * ms,
                        "{closing:?} then {after:?}, cached {cached}"
                    );
                }
            }
        }
        // Half-closed: a FIN from the initiator only; the responder's frames keep it alive.
        for cached in [false, true] {
            port += 1;
            let half = [(tcp::FIN | tcp::ACK, false)];
            assert_eq!(run(port, &half, (tcp::ACK, true), cached), 30 * S);
        }
    }

    #[test]
    fn touch_ref_admits_a_closed_flow_within_a_second_without_refreshing_it() {
        let t = FlowTable::new(64, Timeouts::default());
        let a = id(2000);
        let h = a.hash();
        let r = t.insert(&a, h, S, 1, tcp::SYN).unwrap();
        t.touch(&t.find(&a, h, S).unwrap(), S, tcp::SYN | tcp::ACK, true);
        t.touch(&t.find(&a, h, 2 * S).unwrap(), 2 * S, tcp::RST, false);
        let last = |t: &FlowTable| t.slots[r.slot as usize].last.load(Relaxed) as i64;
        assert_eq!(last(&t), 2 * S);
        // Within a second of its last refresh: a hit, and the flow is left as it was.
        assert!(t.touch_ref(r, 2 * S + S / 2, true));
        assert!(t.touch_ref(r, 3 * S, false));
        assert_eq!(last(&t), 2 * S);
        // Past a second: the full path (which finds it until 12 s, and does not refresh it).
        assert!(!t.touch_ref(r, 3 * S + 1, true));
        // An open flow is refreshed by a hit.
        let b = id(2001);
        let rb = t.insert(&b, b.hash(), S, 1, tcp::SYN).unwrap();
        assert!(t.touch_ref(rb, S + S / 2, true));
        assert_eq!(
            t.slots[rb.slot as usize].last.load(Relaxed) as i64,
            S + S / 2
        );
        // With a closing timeout under a second, a hit works the timeout out from the close.
        let t = FlowTable::new(
            64,
            Timeouts {
                tcp_closing: S / 2,
                ..Timeouts::default()
            },
        );
        let r = t.insert(&a, h, S, 1, tcp::SYN).unwrap();
        t.touch(&t.find(&a, h, S).unwrap(), S, tcp::ACK, true);
        t.touch(&t.find(&a, h, 2 * S).unwrap(), 2 * S, tcp::RST, true);
        assert!(t.touch_ref(r, 2 * S + S / 4, true));
        assert!(t.touch_ref(r, 2 * S + S / 2, true));
        assert!(!t.touch_ref(r, 2 * S + S / 2 + 1, true));
        assert!(t.find(&a, h, 2 * S + S / 2 + 1).is_none());
    }

    #[test]
    fn a_claim_after_a_failed_search_takes_a_dead_or_expired_entry_of_the_key_in_place() {
        let t = FlowTable::new(64, Timeouts::default());
        let (a, b) = (id(1000), id(1001));
        let r = t.insert_missing(&a, a.hash(), S, 1, tcp::SYN).unwrap();
        assert_eq!(t.find(&a, a.hash(), S).unwrap().slot, r.slot as usize);
        assert!(t.insert_missing(&b, b.hash(), S, 1, tcp::SYN).is_some());
        // Cut: `find` still returns it, dead; the claim replaces it where it lies, as one flow.
        t.cut(&t.find(&a, a.hash(), S).unwrap());
        let again = t.insert_missing(&a, a.hash(), 2 * S, 2, tcp::SYN).unwrap();
        assert_eq!(again.slot, r.slot);
        assert_ne!(
            again.seq, r.seq,
            "a new entry: references to the old one lapse"
        );
        let f = t.find(&a, a.hash(), 2 * S).unwrap();
        assert!(!FlowTable::is_dead(&f));
        assert_eq!(f.epoch, 2);
        // Expired (unanswered past 30 s): not found, and claimed in place again.
        assert!(t.find(&a, a.hash(), 40 * S).is_none());
        assert_eq!(
            t.insert_missing(&a, a.hash(), 40 * S, 3, tcp::SYN)
                .unwrap()
                .slot,
            r.slot
        );
        assert_eq!(t.stats().tracked, 2);
    }

    #[test]
    fn sweeps_in_uneven_steps_reach_every_slot_past_the_wrap_and_spare_the_live() {
        // 128 slots; UDP flows (120 s) and TCP flows waiting for an answer (30 s).
        let t = FlowTable::new(64, Timeouts::default());
        let udp = |p: u16| FlowId::new(1, 1, 0xc613_0001, 0xc613_0002, false, 17, p, 53);
        for p in 0..40u16 {
            let a = udp(p);
            assert!(t.insert(&a, a.hash(), S, 1, 0).is_some());
        }
        for p in 0..20u16 {
            let a = id(p);
            assert!(t.insert(&a, a.hash(), S, 1, tcp::SYN).is_some());
        }
        assert_eq!(t.stats().tracked, 60);
        // 60 s on: past TCP's opening timeout, within UDP's. Steps of 50 cross the wrap at 128.
        for _ in 0..3 {
            t.sweep(50, 61 * S);
        }
        assert_eq!(
            t.stats().tracked,
            40,
            "only the unanswered TCP flows expire"
        );
        assert_eq!(t.stats().expired, 20);
        assert!(t.find(&udp(7), udp(7).hash(), 61 * S).is_some());
        // 150 s on: sweeps of 50, 50 and 28 (slots 22..72, 72..122, then 122..128 and 0..22 after
        // the wrap) reach every slot once.
        t.sweep(50, 151 * S);
        t.sweep(50, 151 * S);
        assert!(t.stats().tracked > 0);
        t.sweep(28, 151 * S);
        assert_eq!(t.stats().tracked, 0);
        assert_eq!(t.stats().expired, 60);
    }

    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// A request of flow `k` (allowed), with TCP flags.
        Request(u16, u8),
        /// A reply of flow `k` (mirrored key), with TCP flags.
        Reply(u16, u8),
        /// Time passes (seconds).
        Wait(u8),
        /// The policy changes and flow `k`'s request is no longer allowed (cut on its next reply).
        Revoke(u16),
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        let flags = prop_oneof![
            Just(tcp::ACK),
            Just(tcp::SYN),
            Just(tcp::FIN | tcp::ACK),
            Just(tcp::RST)
        ];
        prop_oneof![
            3 => (0u16..6, flags.clone()).prop_map(|(k, f)| Op::Request(k, f)),
            3 => (0u16..6, flags).prop_map(|(k, f)| Op::Reply(k, f)),
            2 => (0u8..40).prop_map(Op::Wait),
            1 => (0u16..6).prop_map(Op::Revoke),
            1 => Just(Op::Sweep),
        ]
    }

    /// The reference: per flow, last seen, flags seen, revoked — straight from the contract.
    #[derive(Debug, Default, Clone)]
    struct Model {
        last: i64,
        fin_i: bool,
        fin_r: bool,
        rst: bool,
        replied: bool,
        cut: bool,
    }

    impl Model {
        /// Ended (RST, or FIN from both ends): no frame refreshes it any more.
        fn closed(&self) -> bool {
            self.rst || (self.fin_i && self.fin_r)
        }
        fn timeout(&self, t: &Timeouts) -> i64 {
            if self.closed() {
                t.tcp_closing
            } else if !self.replied {
                t.tcp_opening
            } else {
                t.tcp
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A flow and its mirror hash alike (one lookup hash and one prefetch serve both), and so
        /// do their host pairs; swapping one end's port alone does not.
        #[test]
        fn a_flow_and_its_mirror_hash_alike(
            src in any::<u128>(), dst in any::<u128>(), ss in 0u32..1 << 24, ds in 0u32..1 << 24,
            v6 in any::<bool>(), proto in any::<u8>(), sp in any::<u16>(), dp in any::<u16>(),
        ) {
            let id = FlowId::new(ss, ds, src, dst, v6, proto, sp, dp);
            prop_assert_eq!(id.hash(), id.mirrored().hash());
            prop_assert_eq!(id.hosts().hash(), id.mirrored().hosts().hash());
            if sp != dp && (src, ss) != (dst, ds) {
                let other = FlowId::new(ss, ds, src, dst, v6, proto, dp, sp);
                prop_assert_ne!(id.hash(), other.hash());
            }
            if ss != ds && (src, sp) != (dst, dp) {
                prop_assert_ne!(id.hash(), FlowId::new(ds, ss, src, dst, v6, proto, sp, dp).hash());
            }
        }

        /// Whether a reply is admitted equals the reference model through requests, replies, TCP
        /// closes, idle expiry, sweeps and policy changes.
        #[test]
        fn replies_admitted_as_the_model_says(ops in proptest::collection::vec(op(), 1..60)) {
            let t = Timeouts { tcp: 100 * S, tcp_opening: 20 * S, tcp_closing: 5 * S, ..Timeouts::default() };
            let table = FlowTable::new(64, t);
            let mut model: HashMap<u16, Model> = HashMap::new();
            let mut now = S;
            let mut version = 1u64;
            let mut revoked: std::collections::HashSet<u16> = Default::default();
            for o in ops {
                match o {
                    Op::Wait(s) => now += i64::from(s) * S,
                    Op::Sweep => table.sweep(1 << 10, now),
                    Op::Revoke(k) => {
                        version += 1;
                        revoked.insert(k);
                    }
                    Op::Request(k, f) => {
                        if revoked.contains(&k) {
                            continue; // the policy denies it: nothing is tracked
                        }
                        let a = id(1000 + k);
                        let live = model.get(&k).is_some_and(|m| !m.cut && now - m.last <= m.timeout(&t));
                        if !live {
                            model.insert(k, Model::default());
                        }
                        let m = model.get_mut(&k).unwrap();
                        if !m.closed() {
                            m.last = now;
                        }
                        m.fin_i |= f & tcp::FIN != 0;
                        m.rst |= f & tcp::RST != 0;
                        prop_assert!(table.insert(&a, a.hash(), now, version, f).is_some());
                    }
                    Op::Reply(k, f) => {
                        let a = id(1000 + k);
                        let want = model.get(&k).is_some_and(|m| {
                            !m.cut && now - m.last <= m.timeout(&t)
                        }) && f & (tcp::SYN | tcp::ACK) != tcp::SYN;
                        // What the pipeline does: find the initiator's flow, re-judge on a new
                        // version (revoked: cut), touch as a reply.
                        let got = f & (tcp::SYN | tcp::ACK) != tcp::SYN
                            && match table.find(&a, a.hash(), now) {
                                Some(found) if !FlowTable::is_dead(&found) => {
                                    if found.epoch != version as u32 && revoked.contains(&k) {
                                        table.cut(&found);
                                        false
                                    } else {
                                        table.judged(&found, version);
                                        table.touch(&found, now, f, true);
                                        true
                                    }
                                }
                                _ => false,
                            };
                        let want = want && !revoked.contains(&k);
                        if let Some(m) = model.get_mut(&k) {
                            if revoked.contains(&k) {
                                m.cut = true;
                            } else if want {
                                if !m.closed() {
                                    m.last = now;
                                }
                                m.replied = true;
                                m.fin_r |= f & tcp::FIN != 0;
                                m.rst |= f & tcp::RST != 0;
                            }
                        }
                        prop_assert_eq!(got, want, "reply of flow {} at {}s", k, now / S);
                    }
                }
            }
        }
    }

    #[test]
    fn bounded() {
        let t = FlowTable::new(64, Timeouts::default());
        let mut ok = 0;
        for p in 0..200 {
            let a = id(p);
            if t.insert(&a, a.hash(), S, 1, 0).is_some() {
                ok += 1;
            }
        }
        assert_eq!(ok, 64);
        assert_eq!(t.stats().refused, 136);
        assert_eq!(t.stats().tracked, 64);
    }
}
