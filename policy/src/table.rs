//! The compiled, immutable table the hot path queries: flat arrays and open-addressing maps with packed
//! keys and values of at most 16 bytes; names, strings and the document live on its cold side.
//!
//! Layout (what a frame touches, in order): the VNI's segment (a two-level direct index), the GBP/VLAN
//! id's tenant (a direct index), the sending VTEP's index (a flat map), the endpoints (flat map keyed by
//! address space and IPv4 address in one `u64`; IPv6 in a map of its own), the (source, destination)
//! tenant pair's rules (one flat-map probe that says "default", "one rule" inline, or "these rules"),
//! and the egress VTEP's header template. Identity lookups carry the tenant's address space and flags,
//! so the tenant's own record is not on the common path.

use crate::document::{Document, IdentityMode, Proto, Replies};
use crate::flat::{self, FlatMap};
use crate::huge::HugeBuf;
use hashbrown::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use vtep::{Flow, Mac};

pub use crate::compile::{
    digest, digest_in_format, DIGEST_FORMAT, UNLABELLED_FORMAT, UNLABELLED_MAY_BE,
};

/// A tenant's slot in a table. Slots stay the same across versions compiled from one another, so
/// per-tenant counters indexed by slot survive policy changes.
pub type TenantIdx = u32;
/// A VTEP's index in a table (into its egress records).
pub type VtepIdx = u32;

/// Largest tenant slot / VTEP index / address space the packed records hold.
pub const MAX_SLOTS: u32 = (1 << 24) - 1;

/// A tenant as the cold side sees it (names, for reports).
#[derive(Debug, Clone)]
pub struct TenantEntry {
    pub name: crate::section::TenantName,
    pub id: u32,
    /// Address space index (tenants sharing an index share inner addresses).
    pub space: u32,
    /// False for a slot whose tenant was removed in this version (kept so old counters keep a name).
    pub live: bool,
    /// No `vteps` list: any VTEP may send for this tenant.
    pub any_vtep: bool,
}

/// An ingress segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEntry {
    pub mode: IdentityMode,
    /// The tenant of a `vni` segment.
    pub tenant: Option<TenantIdx>,
}

/// A tenant identified on the hot path, with what the next checks need of it (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Ident {
    pub tenant: TenantIdx,
    /// Address space (low 24 bits) and flags (high 8 bits).
    meta: u32,
}

impl Default for Ident {
    fn default() -> Self {
        Ident::NONE
    }
}

const F_ANY_VTEP: u32 = 1 << 24;
const MODE_SHIFT: u32 = 25; // 2 bits: 0 none, 1 vni, 2 gbp, 3 vlan (segments only)

fn mode_bits(m: IdentityMode) -> u32 {
    match m {
        IdentityMode::Vni => 1,
        IdentityMode::Gbp => 2,
        IdentityMode::Vlan => 3,
    }
}

/// The mode of two bits: a table load rather than a branch (the hot path then branches once, on
/// the mode itself).
#[inline(always)]
fn mode_of(bits: u32) -> Option<IdentityMode> {
    const MODES: [Option<IdentityMode>; 4] = [
        None,
        Some(IdentityMode::Vni),
        Some(IdentityMode::Gbp),
        Some(IdentityMode::Vlan),
    ];
    MODES[(bits & 3) as usize]
}

impl Ident {
    pub const NONE: Ident = Ident {
        tenant: u32::MAX,
        meta: 0,
    };
    pub(crate) fn new(tenant: TenantIdx, space: u32, any_vtep: bool) -> Ident {
        Ident {
            tenant,
            meta: space | if any_vtep { F_ANY_VTEP } else { 0 },
        }
    }
    #[inline(always)]
    pub fn is_some(&self) -> bool {
        self.tenant != u32::MAX
    }
    #[inline(always)]
    pub fn space(&self) -> u32 {
        self.meta & MAX_SLOTS
    }
    #[inline(always)]
    pub fn any_vtep(&self) -> bool {
        self.meta & F_ANY_VTEP != 0
    }
}

/// A segment on the hot path: how identity is read on it and, for a `vni` segment, its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg(pub(crate) Ident);

impl Seg {
    #[inline(always)]
    pub fn mode(&self) -> Option<IdentityMode> {
        mode_of(self.0.meta >> MODE_SHIFT)
    }
    /// The tenant of a `vni` segment (with its space and flags).
    #[inline(always)]
    pub fn ident(&self) -> Ident {
        Ident {
            tenant: self.0.tenant,
            meta: self.0.meta & !(3 << MODE_SHIFT),
        }
    }
    pub(crate) fn new(mode: IdentityMode, ident: Ident) -> Seg {
        Seg(Ident {
            tenant: ident.tenant,
            meta: ident.meta | (mode_bits(mode) << MODE_SHIFT),
        })
    }
}

/// Where an endpoint lives and how to reach it: 16 bytes, bit-packed (tenant, VTEP index, egress VNI
/// and identity mode, inner MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Ep {
    w0: u32, // tenant (24) | mac[0]
    w1: u32, // vtep (24) | mac[1]
    w2: u32, // vni (24) | mode (8)
    w3: [u8; 4],
}

impl Ep {
    pub(crate) fn new(
        tenant: TenantIdx,
        vtep: VtepIdx,
        vni: u32,
        mode: IdentityMode,
        mac: Mac,
    ) -> Ep {
        let m = mac.0;
        Ep {
            w0: tenant | u32::from(m[0]) << 24,
            w1: vtep | u32::from(m[1]) << 24,
            w2: vni | mode_bits(mode) << 24,
            w3: [m[2], m[3], m[4], m[5]],
        }
    }
    #[inline(always)]
    pub fn tenant(&self) -> TenantIdx {
        self.w0 & MAX_SLOTS
    }
    #[inline(always)]
    pub fn vtep(&self) -> VtepIdx {
        self.w1 & MAX_SLOTS
    }
    #[inline(always)]
    pub fn vni(&self) -> u32 {
        self.w2 & 0x00ff_ffff
    }
    #[inline(always)]
    pub fn egress(&self) -> IdentityMode {
        mode_of(self.w2 >> 24).unwrap_or(IdentityMode::Vni)
    }
    #[inline(always)]
    pub fn mac(&self) -> Mac {
        // Assembled in one register: the bytes are stored in two moves, not six.
        let v = u64::from(self.w0 >> 24)
            | u64::from(self.w1 >> 24) << 8
            | u64::from(u32::from_le_bytes(self.w3)) << 16;
        let b = v.to_le_bytes();
        Mac([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

/// An endpoint as the cold side and tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointEntry {
    pub tenant: TenantIdx,
    pub vtep: IpAddr,
    pub vtep_idx: VtepIdx,
    pub mac: Mac,
    /// Egress VNI and how that segment carries the tenant.
    pub vni: u32,
    pub egress: IdentityMode,
}

/// The outcome of a verdict: allowed or not, and the rule (index in the document) that decided, or
/// `None` for the default (intra-tenant allow, cross-tenant deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub rule: Option<u32>,
}

/// The packet fields rules look at, with addresses as 128-bit numbers (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKey {
    pub src: u128,
    pub dst: u128,
    pub v6: bool,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FlowKey {
    #[inline(always)]
    pub fn v4(src: u32, dst: u32, proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey {
            src: u128::from(src),
            dst: u128::from(dst),
            v6: false,
            proto,
            src_port,
            dst_port,
        }
    }
    pub fn from_flow(f: &Flow) -> FlowKey {
        let a = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => u128::from(u32::from(*a)),
            IpAddr::V6(a) => u128::from(*a),
        };
        FlowKey {
            src: a(&f.src),
            dst: a(&f.dst),
            v6: f.src.is_ipv6(),
            proto: f.proto,
            src_port: f.src_port,
            dst_port: f.dst_port,
        }
    }
    /// The same flow seen from the other end.
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }
}

/// A compiled CIDR: network and prefix length, and its family (`fam` 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CCidr {
    pub net: u128,
    pub len: u8,
    pub v6: bool,
    pub set: bool,
}

impl CCidr {
    #[inline(always)]
    fn contains(&self, a: u128, v6: bool) -> bool {
        if !self.set {
            return true;
        }
        if v6 != self.v6 {
            return false;
        }
        let bits = if v6 { 128 } else { 32 };
        if self.len == 0 {
            return true;
        }
        (a >> (bits - u32::from(self.len))) == (self.net >> (bits - u32::from(self.len)))
    }
}

/// A compiled rule, in a bucket's contiguous range of the rule arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CRule {
    pub priority: i32,
    /// The rule's id in its rule set: its list index when the set was compiled, kept when rules are
    /// inserted or removed before it ([`RuleSet::index_of`] gives its list index).
    pub id: u32,
    pub allow: bool,
    pub proto: Proto,
    pub lo: u16,
    pub hi: u16,
    /// Validity window, Unix nanoseconds, inclusive.
    pub not_before: i64,
    pub not_after: i64,
    pub from: CCidr,
    pub to: CCidr,
}

impl CRule {
    #[inline(always)]
    fn matches(&self, k: &FlowKey, now: i64, mirrored: bool) -> bool {
        let (port, src, dst) = if mirrored {
            (k.src_port, k.dst, k.src)
        } else {
            (k.dst_port, k.src, k.dst)
        };
        self.proto.matches(k.proto)
            && self.lo <= port
            && port <= self.hi
            && self.from.contains(src, k.v6)
            && self.to.contains(dst, k.v6)
            && self.active(now)
    }
    #[inline(always)]
    pub(crate) fn active(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
    /// Whether this rule (a deny) wins over allow rule `a` for every frame `a` matches: it is of at
    /// least `a`'s priority (a deny wins a tie), and its protocol, ports and addresses hold all of
    /// `a`'s (a deny limited by a CIDR is taken to cover nothing: conservative, for the neighbour
    /// answers that ask).
    pub(crate) fn covers(&self, a: &CRule) -> bool {
        self.priority >= a.priority
            && (self.proto == Proto::Any || self.proto == a.proto)
            && self.lo <= a.lo
            && a.hi <= self.hi
            && !self.from.set
            && !self.to.set
    }
    /// No CIDR and no window: representable inline in a [`Bucket`].
    pub(crate) fn simple(&self) -> bool {
        !self.from.set && !self.to.set && self.not_before == i64::MIN && self.not_after == i64::MAX
    }
}

/// A bucket of rules (16 bytes): `len` 0 = no rules, otherwise `len` rules at `off` of the arena; a
/// single simple rule is also inline (`SIMPLE`), so the common case reads nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub(crate) struct Bucket {
    pub off: u32,
    pub len: u32,
    /// With `SIMPLE`: the rule's id ([`CRule::id`]), ports, protocol, action.
    pub id: u32,
    pub lo: u16,
    pub hi: u16,
}

// `Bucket::hi` … packing the inline rule's protocol and action needs a few more bits: they live in the
// top byte of `len` (at most 2^24 rules per bucket).
pub(crate) const B_SIMPLE: u32 = 1 << 31;
pub(crate) const B_ALLOW: u32 = 1 << 30;
pub(crate) const B_PROTO_SHIFT: u32 = 24; // 2 bits: tcp udp icmp any
pub(crate) const B_LEN: u32 = 0x00ff_ffff;

/// The rule buckets a verdict from one tenant to another scans: the pair's, and — when the policy
/// has wildcard rules — the source's `from any`, the destination's `to any` and the `any → any`
/// bucket (empty ones where it has none). Found by [`Table::scope`]; valid for that table only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scope([Bucket; 4]);

pub(crate) fn proto_bits(p: Proto) -> u32 {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Icmp => 2,
        Proto::Any => 3,
    }
}
fn proto_of(b: u32) -> Proto {
    match b & 3 {
        0 => Proto::Tcp,
        1 => Proto::Udp,
        2 => Proto::Icmp,
        _ => Proto::Any,
    }
}

impl Bucket {
    #[inline(always)]
    pub(crate) fn count(&self) -> usize {
        (self.len & B_LEN) as usize
    }
}

/// The rules, bucketed by (from, to); each bucket sorted by priority, deny first on ties, then list
/// index.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSet {
    /// Every bucket's rules, side by side; shared with the versions this one was changed from
    /// (a change appends the buckets it rewrites).
    pub arena: crate::huge::Appended<CRule>,
    /// Arena entries no bucket refers to any more (compacted when they outgrow the live ones).
    pub garbage: usize,
    /// Key: from slot << 32 | to slot.
    pub pairs: flat::PagedMap<Bucket>,
    /// Rules from a tenant to `*` and from `*` to a tenant, by tenant slot: direct indexes, empty
    /// while no such rule exists.
    pub from_any: Arc<[Bucket]>,
    pub to_any: Arc<[Bucket]>,
    /// Which tenant slots have a non-empty `from_any` / `to_any` bucket, one bit each: the hot path
    /// tests a bit (1M tenants: 128 KiB, which stays cached) before it reads a bucket (16 MiB).
    pub from_any_bits: Arc<[u64]>,
    pub to_any_bits: Arc<[u64]>,
    pub n_from_any: usize,
    pub n_to_any: usize,
    /// Tenant slots the direct indexes are sized for.
    pub slots: usize,
    pub any_any: Bucket,
    /// Σ of the rules' hashes (with their index): the rules' part of the digest.
    pub digest: u64,
    /// Each rule's content hash, in list order (8 bytes a rule, shared chunk by chunk with the
    /// versions this one was changed from): what a change that moves rules re-places.
    pub hashes: crate::section::Section<u64>,
    /// Every instant a rule's validity window opens or closes (sorted): decisions made between two
    /// of them stay true until the next.
    pub edges: Arc<Vec<i64>>,
    /// Where each rule id sits in the list, once a rule was inserted or removed in the middle of it
    /// (`None`: every rule's id is its list index).
    pub order: Option<RuleOrder>,
    /// The id the next rule added gets (the rule count while `order` is `None`).
    pub next_id: u32,
    /// The rules' names, made on the first lookup by name ([`Table::rule_index_by_name`]) and kept
    /// by one-rule changes from then on; a whole compile or a compaction starts without.
    pub names: std::sync::OnceLock<RuleNames>,
}

/// Rule names by hash, for looking a rule up by name without reading every rule's: the name's hash
/// → the rule's id ([`CRule::id`]).
#[derive(Debug, Clone)]
pub(crate) struct RuleNames {
    pub by_hash: flat::PagedMap<u32>,
    /// Two names hashed alike: lookups read every rule's name instead.
    pub collided: bool,
}

/// Where rules sit in the list once one was inserted into or removed from the middle of it. A
/// compiled rule keeps the id it was given (its list index then), so such a change rewrites these
/// two arrays, 4 bytes a rule, instead of every compiled rule and every bucket that holds its rule
/// inline; the buckets stay sorted, since the rules after the change all move alike.
#[derive(Debug, Clone)]
pub(crate) struct RuleOrder {
    /// By id: the rule's list index ([`REMOVED`] for a rule no longer in the list).
    pub index_of: Arc<[u32]>,
    /// By list index: the rule's id.
    pub id_at: crate::section::Section<u32>,
}

/// [`RuleOrder::index_of`] of a removed rule's id.
pub(crate) const REMOVED: u32 = u32::MAX;

impl RuleSet {
    #[inline(always)]
    pub(crate) fn has_wildcards(&self) -> bool {
        self.any_any.count() > 0 || self.n_from_any > 0 || self.n_to_any > 0
    }
    /// The list index of the rule with id `id`.
    #[inline(always)]
    pub(crate) fn index_of(&self, id: u32) -> u32 {
        match &self.order {
            None => id,
            Some(o) => o.index_of[id as usize],
        }
    }
    /// The id of the rule at list index `index`.
    pub(crate) fn id_at(&self, index: usize) -> u32 {
        match &self.order {
            None => index as u32,
            Some(o) => o.id_at[index],
        }
    }
    #[inline(always)]
    fn rules(&self, b: Bucket) -> &[CRule] {
        let off = b.off as usize;
        &self.arena[off..off + b.count()]
    }
    #[inline(always)]
    fn pair(&self, s: TenantIdx, d: TenantIdx) -> Bucket {
        self.pairs
            .get(u64::from(s) << 32 | u64::from(d))
            .unwrap_or_default()
    }
    /// Brings a non-empty bucket's first two rules toward the cache (a rule is 96 bytes: every line
    /// they touch).
    #[inline(always)]
    fn prefetch_bucket(&self, b: Bucket) {
        let p = self
            .arena
            .as_ptr()
            .wrapping_add(b.off as usize)
            .cast::<u8>();
        let bytes = b.count().min(2) * std::mem::size_of::<CRule>();
        let mut at = 0;
        while at < bytes {
            flat::prefetch(p.wrapping_add(at));
            at += 64;
        }
        flat::prefetch(p.wrapping_add(bytes - 1));
    }
    /// The buckets a verdict from `s` to `d` scans: the pair's, then (with wildcard rules) the
    /// source's `from any`, the destination's `to any` and `any → any`.
    #[inline(always)]
    pub(crate) fn buckets(&self, s: TenantIdx, d: TenantIdx) -> [Bucket; 4] {
        let pair = self.pair(s, d);
        if !self.has_wildcards() {
            return [
                pair,
                Bucket::default(),
                Bucket::default(),
                Bucket::default(),
            ];
        }
        [
            pair,
            wild(&self.from_any, &self.from_any_bits, s),
            wild(&self.to_any, &self.to_any_bits, d),
            self.any_any,
        ]
    }
}

/// Tenant slot `t`'s bucket of a direct index (`from_any` or `to_any`), read only when its bit says
/// it is not empty.
#[inline(always)]
fn wild(v: &[Bucket], bits: &[u64], t: TenantIdx) -> Bucket {
    let t = t as usize;
    match bits.get(t / 64) {
        Some(w) if w >> (t % 64) & 1 != 0 => v.get(t).copied().unwrap_or_default(),
        _ => Bucket::default(),
    }
}

/// The best candidate so far: (priority, is_deny, rule id).
type Best = Option<(i32, bool, u32)>;

#[inline(always)]
fn scan(rules: &[CRule], k: &FlowKey, now: i64, mirrored: bool, best: &mut Best) {
    for r in rules {
        if let Some((p, deny, _)) = *best {
            // Buckets are sorted: nothing further can beat the current best.
            if r.priority < p || (r.priority == p && (deny || r.allow)) {
                break;
            }
        }
        if mirrored && !r.allow {
            continue;
        }
        if r.matches(k, now, mirrored) {
            *best = Some((r.priority, !r.allow, r.id));
            break;
        }
    }
}

/// The hot half of a table but its endpoints: what frames are judged with. Its cold, big tables
/// (tenant entries and names) are shared between the versions that copy it.
#[derive(Debug, Clone)]
pub(crate) struct Core {
    pub underlay_ip: Ipv4Addr,
    pub underlay_ip6: Option<Ipv6Addr>,
    pub udp_port: u16,
    pub mtu: u16,
    pub replies: Replies,
    /// VNI → segment: directory by the VNI's top 12 bits, pages of 4096 segments.
    pub seg_dir: Vec<u32>,
    pub seg_pages: Vec<Box<[Seg; 4096]>>,
    /// GBP group id / VLAN id → tenant.
    pub ids: HugeBuf<Ident>,
    /// Tenant ids above 65535 (identified only by `vni` segments): for the cold side.
    pub big_ids: Arc<HashMap<u32, TenantIdx>>,
    /// VTEP address → index.
    pub vtep4: FlatMap<u32>,
    pub vtep6: HashMap<u128, VtepIdx>,
    pub vtep_ips: Vec<IpAddr>,
    /// Outer headers toward each VTEP (None: no underlay source of its family).
    pub egress: Vec<Option<vtep::OuterTemplate>>,
    /// Tenant id by slot (what GBP and VLAN egress write).
    pub tenant_ids: Vec<u32>,
    /// (tenant << 32 | vtep): VTEPs allowed to send for tenants that have a `vteps` list.
    pub tenant_vteps: FlatMap<u8>,
    /// Tenant entries by slot, in chunks shared between the versions that copy the core (a tenant
    /// added or edited copies one chunk).
    pub tenants: crate::section::Section<TenantEntry>,
    /// Address space name → index, for a tenant added in place, and the index a new space takes.
    pub spaces: Arc<HashMap<crate::section::TenantName, u32>>,
    pub next_space: u32,
    pub names: Arc<NameIndex>,
    /// Digest of the gateway, segments and tenants.
    pub digest: u64,
}

/// The endpoints of a table: apart from the rest, so a version that changes an endpoint copies these
/// maps and shares everything else.
#[derive(Debug, Clone, Default)]
pub(crate) struct Eps {
    /// (space << 32 | IPv4) → endpoint; paged, so that an endpoint change copies one page of it.
    pub ep4: flat::PagedMap<Ep>,
    pub ep6: HashMap<(u32, u128), Ep>,
    /// Σ of the endpoints' hashes: their part of the digest.
    pub digest: u64,
    /// The tenants with an endpoint on a GBP segment, made on the first in-place rule check that
    /// needs them (an allow rule reaching from a tenant wider than 16 bits: the identity-width
    /// rule) and shared by the versions that share these endpoints.
    pub gbp_tenants: std::sync::OnceLock<Arc<hashbrown::HashSet<TenantIdx>>>,
}

/// Tenant entries by slot, as a [`NameIndex`] reads them (a `Vec` while compiling, a
/// [`crate::section::Section`] in a table).
pub(crate) trait Slots: std::ops::Index<usize, Output = TenantEntry> {}
impl<T: std::ops::Index<usize, Output = TenantEntry>> Slots for T {}

/// Tenant name → slot, keeping no name of its own: a slot's name is its `TenantEntry`'s (at a million
/// tenants, a second copy of every name and a 24-byte bucket for it would cost ~45 MB). In shards
/// by hash shared between the copies of an index, so that a tenant added in place copies one shard
/// (1/256th of the index).
#[derive(Debug, Clone)]
pub(crate) struct NameIndex {
    shards: Vec<Arc<hashbrown::HashTable<TenantIdx>>>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// Shards of a [`NameIndex`].
const NAME_SHARDS: usize = 256;

impl Default for NameIndex {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl NameIndex {
    pub fn with_capacity(n: usize) -> Self {
        NameIndex {
            shards: (0..NAME_SHARDS)
                .map(|_| Arc::new(hashbrown::HashTable::with_capacity(n / NAME_SHARDS)))
                .collect(),
            hasher: Default::default(),
        }
    }
    fn hash(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }
    /// A hash's shard: bits 32–39, which a shard's own table leaves alone (it picks buckets by the
    /// low bits and tags them with the top seven).
    fn shard(h: u64) -> usize {
        (h >> 32) as usize % NAME_SHARDS
    }
    /// The slot named `name` among `tenants` (the entries this index was built over).
    pub fn get(&self, tenants: &impl Slots, name: &str) -> Option<TenantIdx> {
        let h = self.hash(name);
        self.shards[Self::shard(h)]
            .find(h, |&i| &*tenants[i as usize].name == name)
            .copied()
    }
    /// Indexes slot `i` under its name, `tenants[i].name` (replacing a slot of the same name).
    pub fn insert(&mut self, tenants: &impl Slots, i: TenantIdx) {
        let name = &*tenants[i as usize].name;
        let h = self.hash(name);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[Self::shard(h)]);
        match shard.entry(
            h,
            |&j| &*tenants[j as usize].name == name,
            |&j| {
                use std::hash::BuildHasher;
                hasher.hash_one(&*tenants[j as usize].name)
            },
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = i,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
}

/// An immutable, compiled policy version.
#[derive(Debug)]
pub struct Table {
    pub(crate) version: u64,
    pub(crate) doc: Arc<Document>,
    pub(crate) core: Arc<Core>,
    pub(crate) eps: Arc<Eps>,
    pub(crate) rules: Arc<RuleSet>,
}

pub(crate) fn combine(core: u64, rules: u64) -> u64 {
    core ^ rules.rotate_left(29).wrapping_mul(0x94d0_49bb_1331_11eb)
}

impl Table {
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Digest of the document this table was compiled from.
    pub fn digest(&self) -> u64 {
        combine(
            self.core.digest.wrapping_add(self.eps.digest),
            self.rules.digest,
        )
    }
    /// The document this table was compiled from.
    pub fn document(&self) -> &Arc<Document> {
        &self.doc
    }
    pub fn udp_port(&self) -> u16 {
        self.core.udp_port
    }
    pub fn mtu(&self) -> u16 {
        self.core.mtu
    }
    /// How replies of allowed flows are admitted.
    pub fn replies(&self) -> Replies {
        self.core.replies
    }
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.core.underlay_ip
    }
    pub fn underlay_ip6(&self) -> Option<Ipv6Addr> {
        self.core.underlay_ip6
    }
    /// The gateway's underlay source address toward a VTEP of `dst`'s family.
    #[inline]
    pub fn underlay_src(&self, dst: &IpAddr) -> Option<IpAddr> {
        if dst.is_ipv4() {
            Some(IpAddr::V4(self.core.underlay_ip))
        } else {
            self.core.underlay_ip6.map(IpAddr::V6)
        }
    }
    /// Number of tenant slots (live or not): the size of per-tenant counter arrays.
    pub fn tenant_slots(&self) -> usize {
        self.core.tenants.len()
    }
    pub fn tenant(&self, t: TenantIdx) -> &TenantEntry {
        &self.core.tenants[t as usize]
    }
    pub fn tenants(&self) -> impl Iterator<Item = (TenantIdx, &TenantEntry)> {
        self.core
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (i as TenantIdx, t))
    }
    pub fn tenant_by_name(&self, name: &str) -> Option<TenantIdx> {
        self.core
            .names
            .get(&self.core.tenants, name)
            .filter(|&i| self.core.tenants[i as usize].live)
    }
    /// Bytes the hot tables take (slots, arrays and rule arena; not the document).
    pub fn hot_bytes(&self) -> usize {
        let c = &self.core;
        let r = &self.rules;
        c.seg_dir.len() * 4
            + c.seg_pages.len() * 4096 * std::mem::size_of::<Seg>()
            + c.ids.len() * std::mem::size_of::<Ident>()
            + c.vtep4.bytes()
            + c.tenant_vteps.bytes()
            + self.eps.ep4.bytes()
            + self.eps.ep6.len() * 40
            + r.arena.len() * std::mem::size_of::<CRule>()
            + r.pairs.bytes()
            + (r.from_any.len() + r.to_any.len()) * std::mem::size_of::<Bucket>()
            + (r.from_any_bits.len() + r.to_any_bits.len()) * 8
            + r.order.as_ref().map_or(0, |o| o.index_of.len() * 4)
    }

    // ---- the hot path's queries ----

    /// The segment of an ingress VNI (hot form).
    #[inline(always)]
    pub fn seg(&self, vni: u32) -> Seg {
        let c = &self.core;
        let page = c.seg_dir[((vni >> 12) & 0xfff) as usize];
        if page == 0 {
            return Seg::default();
        }
        c.seg_pages[page as usize - 1][(vni & 0xfff) as usize]
    }
    /// Brings the segment entry of `vni` toward the cache (a hint: [`Table::seg`] reads it).
    #[inline(always)]
    pub fn prefetch_seg(&self, vni: u32) {
        let c = &self.core;
        let page = c.seg_dir[((vni >> 12) & 0xfff) as usize];
        if let Some(p) = (page as usize)
            .checked_sub(1)
            .and_then(|p| c.seg_pages.get(p))
        {
            flat::prefetch(&p[(vni & 0xfff) as usize] as *const Seg);
        }
    }
    /// The tenant with GBP group id / VLAN id `id` (hot form).
    #[inline(always)]
    pub fn ident_by_id(&self, id: u16) -> Ident {
        self.core.ids[usize::from(id)]
    }
    /// The index of a VTEP by its IPv4 address.
    #[inline(always)]
    pub fn vtep_index4(&self, ip: u32) -> Option<VtepIdx> {
        self.core.vtep4.get(u64::from(ip))
    }
    pub fn vtep_index(&self, ip: IpAddr) -> Option<VtepIdx> {
        match ip {
            IpAddr::V4(a) => self.vtep_index4(u32::from(a)),
            IpAddr::V6(a) => self.core.vtep6.get(&u128::from(a)).copied(),
        }
    }
    /// Number of VTEPs (the size of per-VTEP arrays: egress records, next hops).
    pub fn vteps(&self) -> usize {
        self.core.vtep_ips.len()
    }
    pub fn vtep_ip(&self, v: VtepIdx) -> IpAddr {
        self.core.vtep_ips[v as usize]
    }
    /// Anti-spoofing on the hot path: may VTEP `v` (`None`: a VTEP the policy does not name) send for
    /// the tenant of `id`?
    #[inline(always)]
    pub fn vtep_allowed_ident(&self, id: Ident, v: Option<VtepIdx>) -> bool {
        id.any_vtep()
            || v.is_some_and(|v| {
                self.core
                    .tenant_vteps
                    .get(u64::from(id.tenant) << 32 | u64::from(v))
                    .is_some()
            })
    }
    /// Brings the entry [`Table::vtep_allowed_ident`] reads for `(id, v)` toward the cache.
    #[inline(always)]
    pub fn prefetch_vtep_allowed(&self, id: Ident, v: Option<VtepIdx>) {
        if let (false, Some(v)) = (id.any_vtep(), v) {
            let c = &self.core;
            c.tenant_vteps
                .prefetch(flat::hash(u64::from(id.tenant) << 32 | u64::from(v)));
        }
    }
    /// The outer headers toward VTEP `v`.
    #[inline(always)]
    pub fn egress(&self, v: VtepIdx) -> Option<&vtep::OuterTemplate> {
        self.core.egress.get(v as usize).and_then(Option::as_ref)
    }
    /// The id (GBP group / VLAN id) of tenant slot `t`.
    #[inline(always)]
    pub fn tenant_id(&self, t: TenantIdx) -> u32 {
        self.core.tenant_ids[t as usize]
    }
    /// Whether tenant `s` may learn about tenant `d`'s endpoints by its own rules (see
    /// [`Table::may_reach`]), or — with `replies = "stateless"` — `d` may reach `s`.
    pub fn may_learn(&self, s: TenantIdx, d: TenantIdx, now: i64) -> bool {
        self.may_reach(s, d, now)
            || (self.core.replies == Replies::Stateless && self.may_reach(d, s, now))
    }
    /// Hash of the IPv4 endpoint key of (space, address), for [`Table::prefetch_ep4`].
    #[inline(always)]
    pub fn ep4_hash(space: u32, ip: u32) -> (u64, u64) {
        let k = u64::from(space) << 32 | u64::from(ip);
        (k, flat::hash(k))
    }
    #[inline(always)]
    pub fn prefetch_ep4(&self, h: u64) {
        self.eps.ep4.prefetch(h);
    }
    #[inline(always)]
    pub fn ep4(&self, key: u64, h: u64) -> Option<Ep> {
        self.eps.ep4.get_hashed(key, h)
    }
    #[inline]
    pub fn ep6(&self, space: u32, ip: u128) -> Option<Ep> {
        self.eps.ep6.get(&(space, ip)).copied()
    }
    /// Hash of the (source, destination) tenant pair, for [`Table::prefetch_pair`].
    #[inline(always)]
    pub fn pair_hash(s: TenantIdx, d: TenantIdx) -> u64 {
        flat::hash(u64::from(s) << 32 | u64::from(d))
    }
    #[inline(always)]
    pub fn prefetch_pair(&self, h: u64) {
        self.rules.pairs.prefetch(h);
    }
    /// The rule buckets a verdict from tenant `s` to tenant `d` scans (see [`Scope`]), found once so
    /// that [`Table::prefetch_scope`] and [`Table::decide_in`] do not each probe for the pair. The
    /// pair's slot is best brought by [`Table::prefetch_pair`] a stage before.
    #[inline(always)]
    pub fn scope(&self, s: TenantIdx, d: TenantIdx) -> Scope {
        Scope(self.rules.buckets(s, d))
    }
    /// Brings toward the cache the rules [`Table::decide_in`] reads for `scope` beyond the buckets
    /// themselves: the first rules of each bucket it scans.
    #[inline(always)]
    pub fn prefetch_scope(&self, scope: &Scope) {
        let r = &*self.rules;
        let pair = scope.0[0];
        if self.core.replies != Replies::Stateless && !r.has_wildcards() {
            // The common case reads an inline rule, or no rule, from the bucket itself.
            if pair.count() > 0 && pair.len & B_SIMPLE == 0 {
                r.prefetch_bucket(pair);
            } else if let (true, Some(o)) = (pair.count() > 0, &r.order) {
                // After a rule was inserted or removed mid-list, the verdict reads the inline
                // rule's list index.
                flat::prefetch(o.index_of.as_ptr().wrapping_add(pair.id as usize));
            }
            return;
        }
        for b in scope.0 {
            if b.count() > 0 {
                r.prefetch_bucket(b);
            }
        }
    }

    /// The verdict for a frame of `k` from tenant `s` to tenant `d` at Unix time `now` (nanoseconds).
    /// Forward rules from s to d compete — and, with `replies = "stateless"`, mirrored allow rules
    /// from d to s; the highest priority wins, deny wins ties; with no matching rule, intra-tenant
    /// traffic is allowed and cross-tenant denied.
    #[inline(always)]
    pub fn decide(&self, s: TenantIdx, d: TenantIdx, k: &FlowKey, now: i64) -> Decision {
        self.decide_in(&self.scope(s, d), s, d, k, now)
    }

    /// [`Table::decide`] over the buckets [`Table::scope`] found for `s` and `d` in this table.
    #[inline(always)]
    pub fn decide_in(
        &self,
        scope: &Scope,
        s: TenantIdx,
        d: TenantIdx,
        k: &FlowKey,
        now: i64,
    ) -> Decision {
        let r = &*self.rules;
        let pair = scope.0[0];
        let stateless = self.core.replies == Replies::Stateless;
        if !stateless && !r.has_wildcards() {
            // The common case: one probe, and an inline rule or none.
            if pair.count() == 0 {
                return Decision {
                    allow: s == d,
                    rule: None,
                };
            }
            if pair.len & B_SIMPLE != 0 {
                let hit = proto_of(pair.len >> B_PROTO_SHIFT).matches(k.proto)
                    && pair.lo <= k.dst_port
                    && k.dst_port <= pair.hi;
                return if hit {
                    Decision {
                        allow: pair.len & B_ALLOW != 0,
                        rule: Some(r.index_of(pair.id)),
                    }
                } else {
                    Decision {
                        allow: s == d,
                        rule: None,
                    }
                };
            }
        }
        let mut best: Best = None;
        for &b in &scope.0 {
            if b.count() > 0 {
                scan(r.rules(b), k, now, false, &mut best);
            }
        }
        if stateless {
            for b in r.buckets(d, s) {
                if b.count() > 0 {
                    scan(r.rules(b), k, now, true, &mut best);
                }
            }
        }
        match best {
            Some((_, deny, id)) => Decision {
                allow: !deny,
                rule: Some(r.index_of(id)),
            },
            None => Decision {
                allow: s == d,
                rule: None,
            },
        }
    }

    /// Whether any rule has a validity window (then decisions may change with the clock alone).
    #[inline(always)]
    pub fn has_window_edges(&self) -> bool {
        !self.rules.edges.is_empty()
    }

    /// The first instant after `now` at which some rule's validity window opens or closes
    /// (`i64::MAX`: never): a decision made at `now` holds until then.
    pub fn next_window_edge(&self, now: i64) -> i64 {
        self.window_around(now).1
    }

    /// The span of instants around `now` that no rule's validity window opens or closes in: from
    /// the last edge at or before `now` (`i64::MIN`: none) to the first after it (`i64::MAX`:
    /// none), end excluded. Every decision is the same throughout it.
    pub fn window_around(&self, now: i64) -> (i64, i64) {
        let e = &self.rules.edges;
        let i = e.partition_point(|&t| t <= now);
        let start = if i > 0 { e[i - 1] } else { i64::MIN };
        (start, e.get(i).copied().unwrap_or(i64::MAX))
    }

    /// Whether a rule (forward only) would admit `k` from `s` to `d` at `now`: the verdict a tracked
    /// flow is re-judged with.
    #[inline]
    pub fn forward_allows(&self, s: TenantIdx, d: TenantIdx, k: &FlowKey, now: i64) -> bool {
        let r = &*self.rules;
        let mut best: Best = None;
        for b in r.buckets(s, d) {
            if b.count() > 0 {
                scan(r.rules(b), k, now, false, &mut best);
            }
        }
        match best {
            Some((_, deny, _)) => !deny,
            None => s == d,
        }
    }

    // ---- the cold side's queries (management, audit, tests) ----

    /// Makes the rule names' index now, if it is not made yet (it is otherwise made by the first
    /// lookup by name): a pass over the names, ≈ 30 ms at 100k rules.
    pub fn index_rule_names(&self) {
        self.rule_names();
    }

    /// Whether the rule names' index is made (it then follows one-rule changes).
    pub fn rule_names_indexed(&self) -> bool {
        self.rules.names.get().is_some()
    }

    fn rule_names(&self) -> &RuleNames {
        (self.rules.names).get_or_init(|| crate::compile::rule_names(&self.rules, &self.doc.rules))
    }

    /// The list index of the rule named `name` in this table's document: one probe of the rule
    /// names' index (made on the first call, a pass over the names; kept by one-rule changes from
    /// then on), or `None`.
    pub fn rule_index_by_name(&self, name: &str) -> Option<usize> {
        let rules = &self.doc.rules;
        let names = self.rule_names();
        if names.collided {
            return rules.iter().position(|r| r.name.as_deref() == Some(name));
        }
        let id = names.by_hash.get(crate::compile::name_key(name))?;
        let i = self.rules.index_of(id) as usize;
        (rules.get(i)?.name.as_deref() == Some(name)).then_some(i)
    }

    /// The segment of an ingress VNI.
    pub fn segment(&self, vni: u32) -> Option<SegmentEntry> {
        let s = self.seg(vni);
        let mode = s.mode()?;
        Some(SegmentEntry {
            mode,
            tenant: (mode == IdentityMode::Vni).then_some(s.ident().tenant),
        })
    }
    /// The tenant with a GBP group id / VLAN id.
    pub fn tenant_by_id(&self, id: u32) -> Option<TenantIdx> {
        match u16::try_from(id) {
            Ok(i) => Some(self.ident_by_id(i))
                .filter(|x| x.is_some())
                .map(|x| x.tenant),
            Err(_) => self.core.big_ids.get(&id).copied(),
        }
    }
    fn ident_of(&self, t: TenantIdx) -> Ident {
        let e = &self.core.tenants[t as usize];
        Ident::new(t, e.space, e.any_vtep)
    }
    /// Anti-spoofing: may `vtep` send on behalf of tenant `t`?
    pub fn vtep_allowed(&self, t: TenantIdx, vtep: IpAddr) -> bool {
        self.vtep_allowed_ident(self.ident_of(t), self.vtep_index(vtep))
    }
    fn entry(&self, e: Ep) -> EndpointEntry {
        EndpointEntry {
            tenant: e.tenant(),
            vtep: self.core.vtep_ips[e.vtep() as usize],
            vtep_idx: e.vtep(),
            mac: e.mac(),
            vni: e.vni(),
            egress: e.egress(),
        }
    }
    /// The endpoint with inner address `ip` in the address space of tenant `t`.
    pub fn endpoint(&self, t: TenantIdx, ip: IpAddr) -> Option<EndpointEntry> {
        let space = self.core.tenants[t as usize].space;
        let e = match ip {
            IpAddr::V4(a) => {
                let (k, h) = Self::ep4_hash(space, u32::from(a));
                self.ep4(k, h)
            }
            IpAddr::V6(a) => self.ep6(space, u128::from(a)),
        }?;
        Some(self.entry(e))
    }

    /// The verdict for a frame of `flow` from tenant `s` to tenant `d` at Unix time `now` (ns).
    pub fn verdict(&self, s: TenantIdx, d: TenantIdx, flow: &Flow, now: i64) -> Decision {
        self.decide(s, d, &FlowKey::from_flow(flow), now)
    }

    /// May tenant `s` learn about (ARP for) endpoints of tenant `d`: its own tenant always, another
    /// when some allow rule from s (or `*`) to d (or `*`) is in force at `now` (ns) and lets some
    /// traffic through — not one that a deny of at least its priority, in force, covers whole.
    pub fn may_reach(&self, s: TenantIdx, d: TenantIdx, now: i64) -> bool {
        if s == d {
            return true;
        }
        let buckets = self.rules.buckets(s, d);
        let rules = || buckets.iter().flat_map(|&b| self.rules.rules(b));
        rules().any(|a| {
            a.allow && a.active(now) && !rules().any(|x| !x.allow && x.active(now) && x.covers(a))
        })
    }

    /// The rules that can apply from `s` to `d` (forward direction), for the audit: (document index,
    /// allow, priority, proto, ports, has CIDRs, not_before, not_after) with the window in whole
    /// seconds (the first and last second wholly inside it).
    pub(crate) fn forward_rules(
        &self,
        s: TenantIdx,
        d: TenantIdx,
    ) -> impl Iterator<Item = (u32, bool, i32, Proto, (u16, u16), bool, i64, i64)> + '_ {
        let secs_up = |t: i64| {
            if t == i64::MIN {
                i64::MIN
            } else {
                t.div_euclid(1_000_000_000) + i64::from(t.rem_euclid(1_000_000_000) != 0)
            }
        };
        let secs_down = |t: i64| {
            if t == i64::MAX {
                i64::MAX
            } else {
                t.div_euclid(1_000_000_000)
            }
        };
        self.rules.buckets(s, d).into_iter().flat_map(move |b| {
            self.rules.rules(b).iter().map(move |r| {
                (
                    self.rules.index_of(r.id),
                    r.allow,
                    r.priority,
                    r.proto,
                    (r.lo, r.hi),
                    r.from.set || r.to.set,
                    secs_up(r.not_before),
                    secs_down(r.not_after),
                )
            })
        })
    }

    /// Pairs of tenants that have a rule naming both (for the audit).
    pub(crate) fn rule_pairs(&self) -> impl Iterator<Item = (TenantIdx, TenantIdx)> + '_ {
        self.rules
            .pairs
            .iter()
            .map(|(k, _)| ((k >> 32) as TenantIdx, k as TenantIdx))
    }
    /// Whether any wildcard rule exists (then every pair must be audited).
    pub(crate) fn has_wildcards(&self) -> bool {
        self.rules.has_wildcards()
    }
}

#[cfg(test)]
mod name_index_tests {
    use super::*;

    fn entry(name: &str) -> TenantEntry {
        TenantEntry {
            name: name.into(),
            id: 1,
            space: 0,
            live: true,
            any_vtep: true,
        }
    }

    #[test]
    fn a_copy_that_indexes_one_more_name_copies_one_shard() {
        let mut tenants: Vec<TenantEntry> = (0..5000).map(|i| entry(&format!("t{i}"))).collect();
        let mut a = NameIndex::with_capacity(tenants.len());
        for i in 0..tenants.len() {
            a.insert(&tenants, i as TenantIdx);
        }
        let mut b = a.clone();
        tenants.push(entry("newcomer"));
        b.insert(&tenants, 5000);
        let copied = a
            .shards
            .iter()
            .zip(&b.shards)
            .filter(|(x, y)| !Arc::ptr_eq(x, y))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(b.get(&tenants, "newcomer"), Some(5000));
        assert_eq!(a.get(&tenants, "newcomer"), None);
        for i in [0usize, 17, 4999] {
            assert_eq!(b.get(&tenants, &format!("t{i}")), Some(i as TenantIdx));
            assert_eq!(a.get(&tenants, &format!("t{i}")), Some(i as TenantIdx));
        }
        assert_eq!(NameIndex::default().get(&tenants, "t0"), None);
        let mut d = NameIndex::default();
        d.insert(&tenants, 3);
        assert_eq!(d.get(&tenants, "t3"), Some(3));
    }
}
