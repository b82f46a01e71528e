//! Compiling a validated document into a [`Table`], and deriving a table with one rule or one endpoint
//! changed from another (sharing everything else), with the digests the store and workers compare.

use crate::document::{
    Action, Cidr, Document, Endpoint, IdentityMode, Proto, Rule, Segment, Tenant, ANY_TENANT,
};
use crate::error::{ConfigError, Issue};
use crate::flat::{FlatMap, PagedMap};
use crate::huge::{Appended, HugeBuf};
use crate::section::Section;
use crate::table::*;
use hashbrown::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A one-rule change `Table::with_rule_change` can apply without recompiling everything.
#[derive(Debug, Clone, Copy)]
pub enum RuleChange<'a> {
    /// The rule appended at the end of the rule list (it gets index = number of rules before).
    Append(&'a Rule),
    /// Rule `index` replaced.
    Replace {
        index: usize,
        old: &'a Rule,
        new: &'a Rule,
    },
    /// Rule `index` (`old`) removed: the rules after it move up one place.
    Remove { index: usize, old: &'a Rule },
    /// `new` inserted at `index` (≤ the number of rules before): the rules from `index` on move
    /// down one place.
    Insert { index: usize, new: &'a Rule },
}

/// A one-endpoint change `Table::with_endpoint_change` can apply without recompiling everything: an
/// endpoint added (`old` none), removed (`new` none) or replaced.
#[derive(Debug, Clone, Copy)]
pub struct EndpointChange<'a> {
    pub old: Option<&'a Endpoint>,
    pub new: Option<&'a Endpoint>,
}

/// A tenant or a segment appended to its list: what `Table::with_addition` applies in place.
#[derive(Debug, Clone, Copy)]
pub enum Addition<'a> {
    Tenant(&'a Tenant),
    Segment(&'a Segment),
}

/// A tenant replaced by one of the same name, or removed: what `Table::with_tenant_edit` applies in
/// place.
#[derive(Debug, Clone, Copy)]
pub enum TenantEdit<'a> {
    Update { old: &'a Tenant, new: &'a Tenant },
    Remove(&'a Tenant),
}

/// A segment replaced by one of the same VNI, or removed: what `Table::with_segment_edit` applies
/// in place.
#[derive(Debug, Clone, Copy)]
pub enum SegmentEdit<'a> {
    Update { old: &'a Segment, new: &'a Segment },
    Remove(&'a Segment),
}

/// The digests' hasher: 64-bit words folded in with a wide multiply (wyhash-style), so hashing an
/// entry is a few multiplications per field instead of a serialisation. Deterministic for a build
/// (digests are only compared between processes of the same build).
struct Fold(u64);

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Fold {
    #[inline]
    fn word(&mut self, v: u64) {
        self.0 = fold_mul(self.0 ^ v, K1).wrapping_add(K0);
    }
}

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length in the top byte (a tail holds ≤ 7 bytes): "a\0" and "a" differ.
            self.word(u64::from_le_bytes(w) ^ (rest.len() as u64) << 56);
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.word(u64::from(v));
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.word(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.word(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.word(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.word(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.0, K0 ^ 0x5555_5555_5555_5555)
    }
}

/// One entry's hash, salted by its kind (or, for rules, its position).
fn hash_of<T: Hash + ?Sized>(salt: u64, v: &T) -> u64 {
    let mut h = Fold(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ K0);
    v.hash(&mut h);
    let h = h.finish();
    (h ^ h >> 31).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// A rule's part of the digest: its content's hash placed at its index. The two are apart so that
/// a change that moves rules (an insertion or removal mid-list) re-places the later rules' cached
/// content hashes ([`RuleSet::hashes`]) instead of rehashing their strings.
fn rule_hash(index: usize, r: &Rule) -> u64 {
    placed(index, content_hash(r))
}

/// The hash of what a rule says (its name aside).
fn content_hash(r: &Rule) -> u64 {
    hash_of(0, &rule_key(r))
}

/// What a rule's hashes cover: everything it says but its name.
#[allow(clippy::type_complexity)]
fn rule_key(
    r: &Rule,
) -> (
    (
        &str,
        &str,
        Option<Proto>,
        &Option<String>,
        &Option<String>,
        &Option<String>,
    ),
    (Action, i32, &Option<String>, &Option<String>),
) {
    (
        (&r.from, &r.to, r.proto, &r.ports, &r.from_cidr, &r.to_cidr),
        (r.action, r.priority, &r.not_before, &r.not_after),
    )
}

/// A rule's content hash `h` at list index `index`: a few multiplications.
#[inline]
fn placed(index: usize, h: u64) -> u64 {
    let x = fold_mul(
        h ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        K1,
    );
    let x = fold_mul(x ^ K0, K1 ^ h);
    (x ^ x >> 31).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

fn core_digest(doc: &Document) -> u64 {
    let g = &doc.gateway;
    let ft = g
        .flow_timeouts
        .map(|f| (f.tcp, f.tcp_opening, f.tcp_closing, f.udp, f.icmp, f.other));
    let gkey = (
        g.underlay_ip,
        g.underlay_ip6,
        g.udp_port,
        g.mtu,
        g.replies,
        g.max_flows,
        ft,
    );
    let mut d = hash_of(1, &gkey);
    // Settings added after the digest's values were pinned count only when set: a document
    // without them keeps the digest it always had (`tests/digest.rs`).
    if let Some(n) = g.decision_cache {
        d = d.wrapping_add(hash_of(0x6463_6163, &n));
    }
    for s in &doc.segments {
        d = d.wrapping_add(segment_hash(s));
    }
    for t in &doc.tenants {
        d = d.wrapping_add(tenant_hash(t));
    }
    d
}

fn segment_hash(s: &Segment) -> u64 {
    hash_of(2, &(s.vni, s.identity, &s.tenant))
}

fn tenant_hash(t: &Tenant) -> u64 {
    hash_of(3, &(&t.name, t.id, &t.vteps, &t.address_space))
}

fn endpoint_hash(e: &Endpoint) -> u64 {
    hash_of(4, &(&e.tenant, e.ip, e.mac, e.vtep, e.vni))
}

/// The digest the store and workers compare (`audit.verify`): a sum of per-entry hashes, so that a
/// one-entry change updates it without rehashing the document. Independent of the order of
/// segments, tenants and endpoints; rules count with their index (their order matters).
pub fn digest(doc: &Document) -> u64 {
    digest_with(doc, rule_hash)
}

/// The digest with `rule_term(index, rule)` as each rule's part: what the formats differ in.
fn digest_with(doc: &Document, rule_term: impl Fn(usize, &Rule) -> u64) -> u64 {
    let rules = doc
        .rules
        .iter()
        .enumerate()
        .fold(0u64, |a, (i, r)| a.wrapping_add(rule_term(i, r)));
    combine(core_digest(doc).wrapping_add(endpoints_digest(doc)), rules)
}

/// The format of [`digest`] in this build. A recorded digest says which format it is in, so that a
/// store or a fleet written by another build is checked in that build's format rather than
/// mistaken for another document: 1 hashed a rule's index with its content (joypath up to stop 28),
/// 2 places a rule's content hash at its index.
pub const DIGEST_FORMAT: u32 = 2;

/// What a record that does not say its format is taken to be (`digest_format` absent).
pub const UNLABELLED_FORMAT: u32 = 1;

/// The formats a record that does not say its format may be in, the cheaper to check first: 1,
/// and 2, which one build (73cd899) wrote before records said their format.
pub const UNLABELLED_MAY_BE: [u32; 2] = [2, 1];

/// `doc`'s digest in `format` ([`DIGEST_FORMAT`] or an earlier one); `None` for a format this
/// build does not know (a later build's). Reads every entry: for checking a record, not per change.
pub fn digest_in_format(doc: &Document, format: u32) -> Option<u64> {
    match format {
        DIGEST_FORMAT => Some(digest(doc)),
        1 => Some(digest_with(doc, |i, r| hash_of(i as u64 + 1, &rule_key(r)))),
        _ => None,
    }
}

fn endpoints_digest(doc: &Document) -> u64 {
    doc.endpoints
        .iter()
        .fold(0u64, |d, e| d.wrapping_add(endpoint_hash(e)))
}

fn ccidr(c: Option<&str>) -> CCidr {
    match c.and_then(|c| Cidr::parse(c).ok()) {
        None => CCidr::default(),
        Some(c) => CCidr {
            net: match c.addr {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            },
            len: c.len,
            v6: c.addr.is_ipv6(),
            set: true,
        },
    }
}

/// Compiles a validated rule as id `id` (fields that do not parse count as absent: validation
/// refused them).
fn compile_rule(id: u32, r: &Rule) -> CRule {
    let time = |t: &Option<String>, dflt| {
        t.as_deref()
            .and_then(|s| crate::time::parse_rfc3339_ns(s).ok())
            .unwrap_or(dflt)
    };
    let (lo, hi) = r
        .ports
        .as_deref()
        .and_then(|p| crate::document::parse_ports(p).ok())
        .unwrap_or((0, u16::MAX));
    CRule {
        priority: r.priority,
        id,
        allow: r.action == Action::Allow,
        proto: r.proto.unwrap_or(Proto::Any),
        lo,
        hi,
        not_before: time(&r.not_before, i64::MIN),
        not_after: time(&r.not_after, i64::MAX),
        from: ccidr(r.from_cidr.as_deref()),
        to: ccidr(r.to_cidr.as_deref()),
    }
}

/// Sorts a bucket's rules: priority, deny first on ties, then list index (`order`: where the ids
/// sit, as [`RuleSet::index_of`] says).
fn sort_bucket(v: &mut [CRule], order: Option<&RuleOrder>) {
    let index = |id: u32| order.map_or(id, |o| o.index_of[id as usize]);
    v.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.allow.cmp(&b.allow))
            .then(index(a.id).cmp(&index(b.id)))
    });
}

#[derive(PartialEq, Eq, Hash, Clone, Copy, PartialOrd, Ord, Debug)]
enum Key {
    Pair(TenantIdx, TenantIdx),
    FromAny(TenantIdx),
    ToAny(TenantIdx),
    AnyAny,
}

fn key_of(core: &Core, r: &Rule) -> Option<Key> {
    let idx = |n: &str| -> Option<Option<TenantIdx>> {
        if n == ANY_TENANT {
            Some(None)
        } else {
            core.names.get(&core.tenants, n).map(Some)
        }
    };
    Some(match (idx(&r.from)?, idx(&r.to)?) {
        (Some(a), Some(b)) => Key::Pair(a, b),
        (Some(a), None) => Key::FromAny(a),
        (None, Some(b)) => Key::ToAny(b),
        (None, None) => Key::AnyAny,
    })
}

impl RuleSet {
    /// Lays `rules` (sorted) out at the end of the arena and returns their bucket.
    fn push_bucket(&mut self, rules: &[CRule]) -> Bucket {
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(rules);
        let mut b = Bucket {
            off,
            len: rules.len() as u32,
            id: 0,
            lo: 0,
            hi: 0,
        };
        if let [r] = rules {
            if r.simple() {
                b.len |= B_SIMPLE
                    | if r.allow { B_ALLOW } else { 0 }
                    | proto_bits(r.proto) << B_PROTO_SHIFT;
                b.id = r.id;
                b.lo = r.lo;
                b.hi = r.hi;
            }
        }
        b
    }

    fn get(&self, k: Key) -> Bucket {
        match k {
            Key::Pair(a, b) => self.pairs.get(u64::from(a) << 32 | u64::from(b)),
            Key::FromAny(a) => self.from_any.get(a as usize).copied(),
            Key::ToAny(b) => self.to_any.get(b as usize).copied(),
            Key::AnyAny => Some(self.any_any),
        }
        .unwrap_or_default()
    }

    fn set(&mut self, k: Key, b: Bucket) {
        let empty = b.count() == 0;
        let slots = self.slots;
        let dense = |v: &mut Arc<[Bucket]>, bits: &mut Arc<[u64]>, n: &mut usize, i: u32| {
            // Sized for the tenant slots on first use, and grown for a slot added since (a
            // tenant added in place): a missing entry reads as an empty bucket.
            if v.len() <= i as usize && empty {
                return;
            }
            // Shared with the version this one is changed from: copied on the first change (and
            // grown to the tenant slots).
            // (Collected from a range, an `Arc<[_]>` is allocated once, at its size: at a million
            // tenants a `Vec` turned into one would hold 16 MB twice more.)
            let len = v.len().max(slots).max(i as usize + 1);
            if v.len() < len || Arc::get_mut(v).is_none() {
                *v = (0..len)
                    .map(|k| v.get(k).copied().unwrap_or_default())
                    .collect();
            }
            let words = len.div_ceil(64);
            if bits.len() < words || Arc::get_mut(bits).is_none() {
                *bits = (0..words)
                    .map(|k| bits.get(k).copied().unwrap_or(0))
                    .collect();
            }
            let (v, bits) = (
                Arc::get_mut(v).expect("unshared"),
                Arc::get_mut(bits).expect("unshared"),
            );
            let was = v[i as usize].count() > 0;
            v[i as usize] = b;
            let bit = 1u64 << (i % 64);
            if empty {
                bits[i as usize / 64] &= !bit;
            } else {
                bits[i as usize / 64] |= bit;
            }
            match (was, !empty) {
                (false, true) => *n += 1,
                (true, false) => *n -= 1,
                _ => {}
            }
        };
        match k {
            Key::Pair(a, t) => {
                let key = u64::from(a) << 32 | u64::from(t);
                if empty {
                    self.pairs.remove(key);
                } else {
                    self.pairs.insert(key, b);
                }
            }
            Key::FromAny(a) => dense(
                &mut self.from_any,
                &mut self.from_any_bits,
                &mut self.n_from_any,
                a,
            ),
            Key::ToAny(t) => dense(
                &mut self.to_any,
                &mut self.to_any_bits,
                &mut self.n_to_any,
                t,
            ),
            Key::AnyAny => self.any_any = b,
        }
    }

    /// Replaces bucket `k` by `f` applied to its rules, kept sorted; the old range becomes garbage.
    fn edit_bucket(&mut self, k: Key, f: impl FnOnce(&mut Vec<CRule>)) {
        let old = self.get(k);
        let mut v: Vec<CRule> =
            self.arena[old.off as usize..old.off as usize + old.count()].to_vec();
        f(&mut v);
        sort_bucket(&mut v, self.order.as_ref());
        self.garbage += old.count();
        let b = self.push_bucket(&v);
        self.set(k, b);
    }

    /// The rule order, made explicit (every id its list index) if it was not.
    fn order_mut(&mut self) -> &mut RuleOrder {
        let n = self.next_id;
        self.order.get_or_insert_with(|| RuleOrder {
            index_of: (0..n).collect(),
            id_at: (0..n).collect(),
        })
    }

    /// A rule with a new id placed at list index `index`, the rules from there on moved one down:
    /// its id (linear in the rules, 4 bytes each; the compiled rules are not touched).
    fn insert_id(&mut self, index: usize) -> u32 {
        let id = self.next_id;
        let at = index as u32;
        let o = self.order_mut();
        o.index_of = o
            .index_of
            .iter()
            .map(|&i| if i != REMOVED && i >= at { i + 1 } else { i })
            .chain(std::iter::once(at))
            .collect();
        o.id_at.insert(index, id);
        self.next_id += 1;
        id
    }

    /// The rule at list index `index` taken out of the list, the rules after it moved one up: its
    /// id (linear in the rules, 4 bytes each).
    fn remove_id(&mut self, index: usize) -> u32 {
        let at = index as u32;
        let o = self.order_mut();
        let id = o.id_at.remove(index);
        o.index_of = o
            .index_of
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                if k == id as usize {
                    REMOVED
                } else if i != REMOVED && i > at {
                    i - 1
                } else {
                    i
                }
            })
            .collect();
        id
    }

    /// Ids no rule has any more (removed from the middle of the list): compacted away with the
    /// arena's garbage.
    fn dead_ids(&self) -> usize {
        self.next_id as usize - self.hashes.len()
    }

    /// Rewrites the arena without garbage (when garbage outgrows the live rules), each rule's id
    /// its list index again. Buckets keep their arena order (pairs of one source tenant side by
    /// side, as the whole compile lays them out).
    fn compact(&mut self) {
        let mut fresh = RuleSet {
            arena: Appended::with_capacity(headroom(self.arena.len() - self.garbage)),
            digest: self.digest,
            hashes: self.hashes.clone(),
            pairs: PagedMap::with_capacity(self.pairs.len()),
            slots: self.slots,
            next_id: self.hashes.len() as u32,
            ..RuleSet::default()
        };
        let dense = |v: &[Bucket], f: fn(u32) -> Key| {
            v.iter()
                .enumerate()
                .filter(|(_, b)| b.count() > 0)
                .map(move |(i, _)| f(i as u32))
                .collect::<Vec<Key>>()
        };
        let mut keys: Vec<Key> = self
            .pairs
            .iter()
            .map(|(k, _)| Key::Pair((k >> 32) as u32, k as u32))
            .collect();
        keys.extend(dense(&self.from_any, Key::FromAny));
        keys.extend(dense(&self.to_any, Key::ToAny));
        keys.push(Key::AnyAny);
        keys.sort_by_key(|&k| self.get(k).off);
        let mut scratch: Vec<CRule> = Vec::new();
        for k in keys {
            let old = self.get(k);
            if old.count() == 0 {
                continue; // `any → any` when there is no such rule
            }
            let rules = &self.arena[old.off as usize..old.off as usize + old.count()];
            let b = if self.order.is_some() {
                scratch.clear();
                scratch.extend(rules.iter().map(|r| CRule {
                    id: self.index_of(r.id),
                    ..*r
                }));
                fresh.push_bucket(&scratch)
            } else {
                fresh.push_bucket(rules)
            };
            fresh.set(k, b);
        }
        fresh.edges = window_edges(&fresh.arena);
        *self = fresh;
    }
}

/// A rule name's key in [`RuleNames`] (never the flat map's empty key).
pub(crate) fn name_key(name: &str) -> u64 {
    hash_of(0x6e61_6d65, name).min(crate::flat::EMPTY - 1)
}

/// The names of `rules` (the list `set` was compiled from and changed with), by hash.
pub(crate) fn rule_names(set: &RuleSet, rules: &Section<Rule>) -> RuleNames {
    let mut names = RuleNames {
        by_hash: PagedMap::with_capacity(rules.len()),
        collided: false,
    };
    for (i, r) in rules.iter().enumerate() {
        if let Some(n) = &r.name {
            names.add(n, set.id_at(i));
        }
    }
    names
}

impl RuleNames {
    fn add(&mut self, name: &str, id: u32) {
        let k = name_key(name);
        // Names are unique in a valid document: a key already held is another name's.
        self.collided |= self.by_hash.get(k).is_some();
        self.by_hash.insert(k, id);
    }
    fn remove(&mut self, name: &str, id: u32) {
        let k = name_key(name);
        if self.by_hash.get(k) == Some(id) {
            self.by_hash.remove(k);
        }
    }
}

/// Room for an arena of `n` rules and the changes after it: half as much again, which the garbage
/// of rewritten buckets fills about when it is compacted (memory past what is written costs nothing
/// where the arena is mapped).
fn headroom(n: usize) -> usize {
    n + n / 2 + 1024
}

/// The instants at which validity windows open (`not_before`) or close (`not_after` + 1 ns).
fn window_edges(arena: &[CRule]) -> Arc<Vec<i64>> {
    let mut e: Vec<i64> = arena
        .iter()
        .flat_map(|r| [r.not_before, r.not_after.saturating_add(1)])
        .filter(|&t| t != i64::MIN && t != i64::MAX)
        .collect();
    e.sort_unstable();
    e.dedup();
    Arc::new(e)
}

fn build_rules(core: &Core, doc_rules: &Section<Rule>) -> RuleSet {
    let slots = core.tenants.len();
    // Every rule that names existing tenants as (bucket, rule index), sorted: a bucket's rules come
    // out side by side, in bucket order, with no list per bucket (at a million rules, a million small
    // allocations would outlive the compile as heap fragmentation: ~350 MB of RSS).
    let mut keyed: Vec<(Key, u32)> = Vec::with_capacity(doc_rules.len());
    let mut digest = 0u64;
    let hashes: Section<u64> = doc_rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if let Some(k) = key_of(core, r) {
                keyed.push((k, i as u32));
            }
            let h = content_hash(r);
            digest = digest.wrapping_add(placed(i, h));
            h
        })
        .collect();
    keyed.sort_unstable();
    let buckets = || keyed.chunk_by(|a, b| a.0 == b.0);
    let mut rules = RuleSet {
        arena: Appended::with_capacity(headroom(keyed.len())),
        digest,
        hashes,
        pairs: PagedMap::with_capacity(
            buckets()
                .filter(|b| matches!(b[0].0, Key::Pair(..)))
                .count(),
        ),
        slots,
        next_id: doc_rules.len() as u32,
        ..RuleSet::default()
    };
    // Pairs of one source tenant end up side by side in the arena.
    let mut scratch: Vec<CRule> = Vec::new();
    for bucket in buckets() {
        scratch.clear();
        scratch.extend(
            bucket
                .iter()
                .map(|&(_, i)| compile_rule(i, &doc_rules[i as usize])),
        );
        sort_bucket(&mut scratch, None);
        let b = rules.push_bucket(&scratch);
        rules.set(bucket[0].0, b);
    }
    rules.edges = window_edges(&rules.arena);
    rules
}

fn too_many(what: &str, n: usize) -> ConfigError {
    ConfigError::Invalid {
        file: "<document>".into(),
        issues: vec![Issue {
            path: what.into(),
            line: None,
            message: format!("{n} {what} exceed what a table holds ({MAX_SLOTS})"),
        }],
    }
}

impl Table {
    /// Validates and compiles `doc` as `version`. With `prev`, tenants keep their slots from it.
    pub fn compile(
        doc: Arc<Document>,
        version: u64,
        prev: Option<&Table>,
    ) -> Result<Table, ConfigError> {
        doc.check()?;
        let (core, eps) = build_core(&doc, prev)?;
        let rules = build_rules(&core, &doc.rules);
        Ok(Table {
            version,
            doc,
            core: Arc::new(core),
            eps: Arc::new(eps),
            rules: Arc::new(rules),
        })
    }

    /// The problems a rule at `index` would have in this table's policy: the rule on its own
    /// (tenants must exist), and the identity-width rule `Document::validate` applies to every
    /// rule ([`crate::document::identity_width_conflict`], decided here from the table's tenant
    /// ids and the tenants it has on GBP segments, without reading the other rules).
    pub fn check_rule(&self, index: usize, r: &Rule) -> Vec<crate::Issue> {
        let mut out =
            crate::document::validate_rule(index, r, &|t| self.tenant_by_name(t).is_some());
        let c = &*self.core;
        let wide = |t: Option<&str>| match t {
            None => !c.big_ids.is_empty(),
            Some(n) => self
                .tenant_by_name(n)
                .is_some_and(|i| c.tenant_ids[i as usize] > crate::document::GBP_MAX_ID),
        };
        let on_gbp = |t: Option<&str>| {
            let set = self.gbp_tenants();
            match t {
                None => !set.is_empty(),
                Some(n) => self.tenant_by_name(n).is_some_and(|i| set.contains(&i)),
            }
        };
        if let Some((a, b)) = crate::document::identity_width_conflict(r, &wide, &on_gbp) {
            // Refused: the parties are named as the whole validation names them (one pass).
            let is_gbp = |vni| self.seg(vni).mode() == Some(IdentityMode::Gbp);
            if let Some((s, t)) = self.doc.identity_width_parties(a, b, &is_gbp) {
                out.push(crate::document::identity_width_issue(index, s, t));
            }
        }
        out
    }

    /// The live tenants with an endpoint on a GBP segment (made by one pass over the endpoints on
    /// first use, then kept by the versions that share this table's endpoints).
    fn gbp_tenants(&self) -> &hashbrown::HashSet<TenantIdx> {
        self.eps.gbp_tenants.get_or_init(|| {
            let set = (self.doc.endpoints.iter())
                .filter(|e| self.seg(e.vni).mode() == Some(IdentityMode::Gbp))
                .filter_map(|e| self.tenant_by_name(&e.tenant))
                .collect();
            Arc::new(set)
        })
    }

    /// This table with one rule changed, as `version`, for the document `doc` (which must be this
    /// table's document with the change made): identity and endpoints are shared as they are. Each
    /// change rebuilds only the changed rule's bucket; a removal or an insertion also moves every
    /// later rule's list index, which rewrites the rule order (4 bytes a rule) and
    /// not the compiled rules. A new rule must have passed [`Table::check_rule`], and its name must
    /// be free (names are not looked at here).
    pub fn with_rule_change(
        &self,
        version: u64,
        change: RuleChange<'_>,
        doc: Arc<Document>,
    ) -> Table {
        // Shares the arena (appended to in place), the pair map's pages (a change copies the one
        // page it writes) and the wildcard indexes (copied only when a wildcard rule changes).
        let mut rules = (*self.rules).clone();
        let core = &*self.core;
        let windowed =
            |c: CRule| (c.not_before != i64::MIN || c.not_after != i64::MAX).then_some(c);
        // The rule's window, if it has one, and its id.
        let (windowed, id) = match change {
            RuleChange::Append(r) => {
                let index = doc.rules.len().saturating_sub(1);
                let id = rules.next_id;
                rules.next_id += 1;
                if let Some(o) = &mut rules.order {
                    o.index_of = o.index_of.iter().copied().chain([index as u32]).collect();
                    o.id_at.push(id);
                }
                let c = compile_rule(id, r);
                let w = windowed(c);
                if let Some(k) = key_of(core, r) {
                    rules.edit_bucket(k, |v| v.push(c));
                }
                let h = content_hash(r);
                rules.hashes.push(h);
                rules.digest = rules.digest.wrapping_add(placed(index, h));
                (w, id)
            }
            RuleChange::Replace { index, old, new } => {
                let id = rules.id_at(index);
                if let Some(k) = key_of(core, old) {
                    rules.edit_bucket(k, |v| v.retain(|c| c.id != id));
                }
                let c = compile_rule(id, new);
                let w = windowed(c);
                if let Some(k) = key_of(core, new) {
                    rules.edit_bucket(k, |v| v.push(c));
                }
                let h = content_hash(new);
                let was = std::mem::replace(&mut rules.hashes[index], h);
                rules.digest = rules
                    .digest
                    .wrapping_sub(placed(index, was))
                    .wrapping_add(placed(index, h));
                (w, id)
            }
            RuleChange::Remove { index, old } => {
                // Every later rule's list index moves (their ids and compiled rules stay): the
                // order is rewritten and the later rules' part of the digest re-placed.
                let id = rules.remove_id(index);
                if let Some(k) = key_of(core, old) {
                    rules.edit_bucket(k, |v| v.retain(|c| c.id != id));
                }
                let was = rules.hashes.remove(index);
                let mut d = rules.digest.wrapping_sub(placed(index, was));
                for (k, &h) in rules.hashes.iter_from(index) {
                    d = d.wrapping_sub(placed(k + 1, h)).wrapping_add(placed(k, h));
                }
                rules.digest = d;
                (None, id) // its window's edges stay, as a replaced rule's do
            }
            RuleChange::Insert { index, new } => {
                let id = rules.insert_id(index);
                let h = content_hash(new);
                rules.hashes.insert(index, h);
                let mut d = rules.digest.wrapping_add(placed(index, h));
                for (k, &h) in rules.hashes.iter_from(index + 1) {
                    d = d.wrapping_sub(placed(k - 1, h)).wrapping_add(placed(k, h));
                }
                rules.digest = d;
                let c = compile_rule(id, new);
                if let Some(k) = key_of(core, new) {
                    rules.edit_bucket(k, |v| v.push(c));
                }
                (windowed(c), id)
            }
        };
        if let Some(names) = rules.names.get_mut() {
            // The names' index, if this table's was made, follows the change.
            let (gone, added) = match change {
                RuleChange::Append(r) | RuleChange::Insert { new: r, .. } => (None, Some(r)),
                RuleChange::Replace { old, new, .. } => (Some(old), Some(new)),
                RuleChange::Remove { old, .. } => (Some(old), None),
            };
            if let Some(n) = gone.and_then(|r| r.name.as_deref()) {
                names.remove(n, id);
            }
            if let Some(n) = added.and_then(|r| r.name.as_deref()) {
                names.add(n, id);
            }
        }
        if rules.garbage > rules.arena.len() / 2 + 64
            || rules.dead_ids() > rules.hashes.len() / 2 + 64
        {
            rules.compact();
        } else if let Some(w) = windowed {
            // The rule's window adds its edges; a replaced rule's stay (as its garbage does until
            // compaction): an edge too many only ends a cached decision early.
            let mut e = (*rules.edges).clone();
            e.extend(window_edges(&[w]).iter());
            e.sort_unstable();
            e.dedup();
            rules.edges = Arc::new(e);
        }
        Table {
            version,
            doc,
            core: self.core.clone(),
            eps: self.eps.clone(),
            rules: Arc::new(rules),
        }
    }
}

impl Table {
    /// This table with one endpoint added, removed or replaced, as `version`, for `doc` (this
    /// table's document with the change made): the endpoint maps are copied and changed in place
    /// (a new VTEP is appended); tenants, segments and rules are shared with this table.
    ///
    /// `None` when the change is not one this path makes, and the document must be compiled whole:
    /// the new endpoint would not pass validation (the full compile names the problem) — among
    /// others, it is behind a VTEP its tenant's `vteps` list does not hold — or it sits
    /// on a GBP segment while some tenant's id is wider than 16 bits (whether that tenant could
    /// reach it depends on every rule).
    pub fn with_endpoint_change(
        &self,
        version: u64,
        change: EndpointChange<'_>,
        doc: Arc<Document>,
    ) -> Option<Table> {
        let c = &*self.core;
        let key = |e: &Endpoint| -> Option<(TenantIdx, u32, IpAddr)> {
            let t = self.tenant_by_name(&e.tenant)?;
            Some((t, c.tenants[t as usize].space, e.ip))
        };
        let old = match change.old {
            Some(e) => Some(key(e)?),
            None => None,
        };
        let new = match change.new {
            Some(e) => {
                let (t, space, ip) = key(e)?;
                if !self.endpoint_fits(e, t) {
                    return None;
                }
                let taken = match ip {
                    IpAddr::V4(a) => {
                        let (k, h) = Table::ep4_hash(space, u32::from(a));
                        self.ep4(k, h)
                    }
                    IpAddr::V6(a) => self.ep6(space, u128::from(a)),
                }
                .is_some();
                if taken && old.map(|(_, s, i)| (s, i)) != Some((space, ip)) {
                    return None; // the address is another endpoint's
                }
                Some((e, t, space))
            }
            None => None,
        };
        let mut core = self.core.clone();
        let mut eps = (*self.eps).clone();
        // Which tenants are on GBP segments is made again, when needed, after a change there.
        let on_gbp = |e: Option<&Endpoint>| {
            e.is_some_and(|e| self.seg(e.vni).mode() == Some(IdentityMode::Gbp))
        };
        if on_gbp(change.old) || on_gbp(change.new) {
            eps.gbp_tenants = std::sync::OnceLock::new();
        }
        if let (Some((_, space, ip)), Some(e)) = (old, change.old) {
            match ip {
                IpAddr::V4(a) => {
                    eps.ep4.remove(Table::ep4_hash(space, u32::from(a)).0);
                }
                IpAddr::V6(a) => {
                    eps.ep6.remove(&(space, u128::from(a)));
                }
            }
            eps.digest = eps.digest.wrapping_sub(endpoint_hash(e));
        }
        if let Some((e, t, space)) = new {
            let v = match core.vtep_index_of(e.vtep) {
                Some(v) => v,
                // A new VTEP (rare: a new host) copies the rest of the hot table too.
                None => Arc::make_mut(&mut core).add_vtep(e.vtep)?,
            };
            let mode = self.seg(e.vni).mode().unwrap_or(IdentityMode::Vni);
            let entry = Ep::new(t, v, e.vni, mode, e.mac);
            match e.ip {
                IpAddr::V4(a) => eps
                    .ep4
                    .insert(Table::ep4_hash(space, u32::from(a)).0, entry),
                IpAddr::V6(a) => {
                    eps.ep6.insert((space, u128::from(a)), entry);
                }
            }
            eps.digest = eps.digest.wrapping_add(endpoint_hash(e));
        }
        Some(Table {
            version,
            doc,
            core,
            eps: Arc::new(eps),
            rules: self.rules.clone(),
        })
    }

    /// Whether endpoint `e` of live tenant `t` passes what `Document::validate` asks of an endpoint
    /// (but its address being free) — behind one of the tenant's VTEPs when it lists them
    /// ([`crate::document::endpoint_vtep_refused`], asked of the anti-spoofing map) — and is not on
    /// a GBP segment while a tenant id is wider than 16 bits.
    fn endpoint_fits(&self, e: &Endpoint, t: TenantIdx) -> bool {
        let c = &*self.core;
        let id = c.tenant_ids[t as usize];
        let seg = self.seg(e.vni);
        let segment_ok = match seg.mode() {
            None => false,
            Some(IdentityMode::Vni) => seg.ident().is_some() && seg.ident().tenant == t,
            Some(IdentityMode::Gbp) => id <= crate::document::GBP_MAX_ID && c.big_ids.is_empty(),
            Some(IdentityMode::Vlan) => (1..=4094).contains(&id),
        };
        let vtep_ok = match e.vtep {
            IpAddr::V6(_) if c.underlay_ip6.is_none() => false,
            ip => !(ip.is_unspecified() || ip.is_multicast()),
        };
        let listed = !crate::document::endpoint_vtep_refused(e, &|ip| self.vtep_allowed(t, ip));
        segment_ok && vtep_ok && listed && !e.mac.is_group()
    }
}

impl Table {
    /// This table with one tenant or segment appended, as `version`, for `doc` (this table's
    /// document with the addition made): the hot identity tables are copied and extended (the new
    /// tenant takes the next slot; its VTEPs are appended when new); endpoints and rules are shared
    /// with this table. Onboarding a tenant — `tenant.add`, then `segment.add` for its VNI segment —
    /// costs a copy of those tables, not a compile of every rule.
    ///
    /// `None` when the addition is not one this path makes, and the document must be compiled
    /// whole (which also names whatever makes it invalid): a name, id or VNI in use or unusable, a
    /// name a removed tenant's slot still holds, a duplicate VTEP, a `vni` segment naming no live
    /// tenant, or the policy's first tenant id wider than 16 bits (whether it could reach a GBP
    /// segment depends on every wildcard rule).
    pub fn with_addition(
        &self,
        version: u64,
        addition: Addition<'_>,
        doc: Arc<Document>,
    ) -> Option<Table> {
        self.with_core_edit(version, doc, |core, _| match addition {
            Addition::Tenant(t) => core.add_tenant(t),
            Addition::Segment(s) => core.add_segment(s),
        })
    }

    /// This table as `version` for `doc`, its identity tables (`Core`) copied and changed by
    /// `edit`; endpoints and rules shared. `None` when `edit` refuses.
    fn with_core_edit(
        &self,
        version: u64,
        doc: Arc<Document>,
        edit: impl FnOnce(&mut Core, &Document) -> Option<()>,
    ) -> Option<Table> {
        let mut core = (*self.core).clone();
        edit(&mut core, &doc)?;
        Some(Table {
            version,
            doc,
            core: Arc::new(core),
            eps: self.eps.clone(),
            rules: self.rules.clone(),
        })
    }

    /// This table with one tenant updated or removed, as `version`, for `doc` (this table's
    /// document with the edit made): the tenant keeps its slot; its identity (GBP/VLAN id), allowed
    /// VTEPs and the identity its `vni` segments carry are changed in the copied identity tables;
    /// endpoints and rules are shared with this table, which neither edit touches.
    ///
    /// `None` when the edit is not one this path makes, and the document must be compiled whole
    /// (which also names whatever makes it invalid): an update that renames the tenant, moves it to
    /// another address space, gives it an id in use, 0, wider than 16 bits, or above 4094 while an
    /// endpoint of it is on a VLAN segment, lists a VTEP twice, or lists VTEPs that leave out one of
    /// its endpoints' ([`crate::document::endpoint_vtep_refused`]); a removal of a tenant that an
    /// endpoint, a segment or a rule still names.
    pub fn with_tenant_edit(
        &self,
        version: u64,
        edit: TenantEdit<'_>,
        doc: Arc<Document>,
    ) -> Option<Table> {
        self.with_core_edit(version, doc, |core, doc| match edit {
            TenantEdit::Update { old, new } => core.update_tenant(old, new, doc),
            TenantEdit::Remove(t) => core.remove_tenant(t, doc),
        })
    }

    /// This table with one segment updated or removed, as `version`, for `doc` (this table's
    /// document with the edit made), when no endpoint is on its VNI (endpoint entries hold their
    /// segment's identity mode, and validation checks them against it): the VNI's entry in the
    /// copied segment pages is changed; tenants, endpoints and rules are shared with this table.
    ///
    /// `None` when the edit is not one this path makes, and the document must be compiled whole
    /// (which also names whatever makes it invalid): an endpoint on the VNI, another VNI, or a
    /// `vni` segment naming no live tenant.
    pub fn with_segment_edit(
        &self,
        version: u64,
        edit: SegmentEdit<'_>,
        doc: Arc<Document>,
    ) -> Option<Table> {
        let (old, new) = match edit {
            SegmentEdit::Update { old, new } => (old, Some(new)),
            SegmentEdit::Remove(s) => (s, None),
        };
        if new.is_some_and(|n| n.vni != old.vni) || doc.endpoints.iter().any(|e| e.vni == old.vni) {
            return None;
        }
        self.with_core_edit(version, doc, |core, _| {
            core.remove_segment(old)?;
            new.map_or(Some(()), |n| core.add_segment(n))
        })
    }
}

impl Core {
    /// Clears segment `s`'s VNI (`None` when the table does not hold it as `s` says).
    fn remove_segment(&mut self, s: &Segment) -> Option<()> {
        if s.vni > 0x00ff_ffff
            || segment_mode(&self.seg_dir, &self.seg_pages, s.vni) != Some(s.identity)
        {
            return None;
        }
        let p = self.seg_dir[((s.vni >> 12) & 0xfff) as usize];
        self.seg_pages[p as usize - 1][(s.vni & 0xfff) as usize] = Seg::default();
        self.digest = self.digest.wrapping_sub(segment_hash(s));
        Some(())
    }

    /// The live slot of `t`, if `t` is this table's tenant as it stands.
    fn live_slot(&self, t: &Tenant) -> Option<TenantIdx> {
        let i = self.names.get(&self.tenants, &t.name)?;
        let e = &self.tenants[i as usize];
        (e.live && e.id == t.id && e.any_vtep == t.vteps.is_none()).then_some(i)
    }

    /// Clears tenant `i`'s id mapping and its allowed VTEPs (`vteps`: its list as it was).
    fn unmap_tenant(&mut self, i: TenantIdx, id: u32, vteps: Option<&crate::VtepList>) {
        if id > 0xffff {
            Arc::make_mut(&mut self.big_ids).remove(&id);
        } else {
            self.ids.as_mut_slice()[id as usize] = Ident::NONE;
        }
        for ip in vteps.iter().flat_map(|v| v.iter()) {
            if let Some(v) = self.vtep_index_of(*ip) {
                self.tenant_vteps.remove(u64::from(i) << 32 | u64::from(v));
            }
        }
    }

    fn update_tenant(&mut self, old: &Tenant, new: &Tenant, doc: &Document) -> Option<()> {
        if old.name != new.name || old.space() != new.space() || new.id == 0 {
            return None;
        }
        let i = self.live_slot(old)?;
        if new.id != old.id {
            // A free id of 16 bits (wider ones bring the identity-width check to its rules); above
            // 4094 only while none of its endpoints is on a VLAN segment, whose tag must hold it.
            if new.id > 0xffff || self.ids[new.id as usize].is_some() {
                return None;
            }
            if new.id > 4094
                && doc.endpoints.iter().any(|e| {
                    *e.tenant == *new.name
                        && segment_mode(&self.seg_dir, &self.seg_pages, e.vni)
                            == Some(IdentityMode::Vlan)
                })
            {
                return None;
            }
        }
        if let Some(v) = &new.vteps {
            if (1..v.len()).any(|j| v[..j].contains(&v[j])) {
                return None;
            }
        }
        // A list that drops a VTEP (or a first list) must still hold each of its endpoints' VTEPs
        // (`endpoint_vtep_refused`; the whole compile names the endpoint left out).
        let narrowed = match (old.vteps.as_deref(), new.vteps.as_deref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(o), Some(n)) => o.iter().any(|ip| !n.contains(ip)),
        };
        if narrowed {
            let listed = new.vteps.as_deref();
            let may_send = |ip| crate::document::vtep_listed(listed, ip);
            if doc.endpoints.iter().any(|e| {
                *e.tenant == *new.name && crate::document::endpoint_vtep_refused(e, &may_send)
            }) {
                return None;
            }
        }
        let mut vteps = Vec::new();
        for ip in new.vteps.iter().flatten() {
            vteps.push(match self.vtep_index_of(*ip) {
                Some(v) => v,
                None => self.add_vtep(*ip)?,
            });
        }
        self.unmap_tenant(i, old.id, old.vteps.as_ref());
        let any_vtep = new.vteps.is_none();
        let space = self.tenants[i as usize].space;
        let ident = Ident::new(i, space, any_vtep);
        if new.id > 0xffff {
            Arc::make_mut(&mut self.big_ids).insert(new.id, i);
        } else {
            self.ids.as_mut_slice()[new.id as usize] = ident;
        }
        for v in vteps {
            self.tenant_vteps
                .insert(u64::from(i) << 32 | u64::from(v), 1);
        }
        let e = &mut self.tenants[i as usize];
        e.id = new.id;
        e.any_vtep = any_vtep;
        self.tenant_ids[i as usize] = new.id;
        if any_vtep != old.vteps.is_none() {
            // Its `vni` segments carry its identity, "any VTEP" flag included.
            for s in doc.segments.iter() {
                if s.identity == IdentityMode::Vni && s.tenant.as_deref() == Some(&*new.name) {
                    let p = self.seg_dir[((s.vni >> 12) & 0xfff) as usize];
                    if p == 0 {
                        return None;
                    }
                    self.seg_pages[p as usize - 1][(s.vni & 0xfff) as usize] =
                        Seg::new(IdentityMode::Vni, ident);
                }
            }
        }
        self.digest = self
            .digest
            .wrapping_sub(tenant_hash(old))
            .wrapping_add(tenant_hash(new));
        Some(())
    }

    fn remove_tenant(&mut self, t: &Tenant, doc: &Document) -> Option<()> {
        let i = self.live_slot(t)?;
        let named = |n: &str| n == &*t.name;
        if doc
            .segments
            .iter()
            .any(|s| s.tenant.as_deref().is_some_and(named))
            || doc.rules.iter().any(|r| named(&r.from) || named(&r.to))
            || doc.endpoints.iter().any(|e| named(&e.tenant))
        {
            return None; // still named: the whole compile says where
        }
        self.unmap_tenant(i, t.id, t.vteps.as_ref());
        // The slot stays, dead, holding its name (as a whole compile after this table leaves it).
        self.tenants[i as usize].live = false;
        self.digest = self.digest.wrapping_sub(tenant_hash(t));
        Some(())
    }

    fn add_tenant(&mut self, t: &Tenant) -> Option<()> {
        let unusable =
            t.name.is_empty() || t.name == ANY_TENANT || t.name.chars().any(char::is_control);
        if unusable || t.id == 0 || self.names.get(&self.tenants, &t.name).is_some() {
            return None;
        }
        let wide = t.id > 0xffff;
        // A first wide id brings the identity-width check to every wildcard rule: compile whole.
        // With wide ids already present, the rules passed that check for any of them.
        if wide && (self.big_ids.is_empty() || self.big_ids.contains_key(&t.id)) {
            return None;
        }
        if !wide && self.ids[t.id as usize].is_some() {
            return None;
        }
        if let Some(v) = &t.vteps {
            if (1..v.len()).any(|j| v[..j].contains(&v[j])) {
                return None;
            }
        }
        if self.tenants.len() >= MAX_SLOTS as usize {
            return None;
        }
        // Its address space: the one of that name, or a new one.
        let (space, new_space) = match self.spaces.get(t.space()) {
            Some(&s) => (s, false),
            None if self.next_space >= MAX_SLOTS => return None,
            None => (self.next_space, true),
        };
        let idx = self.tenants.len() as TenantIdx;
        let mut vteps = Vec::new();
        for ip in t.vteps.iter().flatten() {
            vteps.push(match self.vtep_index_of(*ip) {
                Some(v) => v,
                None => self.add_vtep(*ip)?,
            });
        }
        if new_space {
            Arc::make_mut(&mut self.spaces).insert(t.space().into(), space);
            self.next_space += 1;
        }
        self.tenants.push(TenantEntry {
            name: t.name.clone(),
            id: t.id,
            space,
            live: true,
            any_vtep: t.vteps.is_none(),
        });
        Arc::make_mut(&mut self.names).insert(&self.tenants, idx);
        if wide {
            Arc::make_mut(&mut self.big_ids).insert(t.id, idx);
        } else {
            self.ids.as_mut_slice()[t.id as usize] = Ident::new(idx, space, t.vteps.is_none());
        }
        self.tenant_ids.push(t.id);
        for v in vteps {
            self.tenant_vteps
                .insert(u64::from(idx) << 32 | u64::from(v), 1);
        }
        self.digest = self.digest.wrapping_add(tenant_hash(t));
        Some(())
    }

    fn add_segment(&mut self, s: &Segment) -> Option<()> {
        if s.vni > 0x00ff_ffff || segment_mode(&self.seg_dir, &self.seg_pages, s.vni).is_some() {
            return None;
        }
        let ident = match (s.identity, s.tenant.as_deref()) {
            (IdentityMode::Vni, Some(n)) => {
                let i = self.names.get(&self.tenants, n)?;
                let e = &self.tenants[i as usize];
                if !e.live {
                    return None;
                }
                Ident::new(i, e.space, e.any_vtep)
            }
            (IdentityMode::Gbp | IdentityMode::Vlan, None) => Ident::NONE,
            _ => return None,
        };
        let d = ((s.vni >> 12) & 0xfff) as usize;
        if self.seg_dir[d] == 0 {
            self.seg_pages.push(Box::new([Seg::default(); 4096]));
            self.seg_dir[d] = self.seg_pages.len() as u32;
        }
        self.seg_pages[self.seg_dir[d] as usize - 1][(s.vni & 0xfff) as usize] =
            Seg::new(s.identity, ident);
        self.digest = self.digest.wrapping_add(segment_hash(s));
        Some(())
    }

    fn vtep_index_of(&self, ip: IpAddr) -> Option<VtepIdx> {
        match ip {
            IpAddr::V4(a) => self.vtep4.get(u64::from(u32::from(a))),
            IpAddr::V6(a) => self.vtep6.get(&u128::from(a)).copied(),
        }
    }

    /// Appends VTEP `ip` with its egress record (`None` when the table holds as many as it can).
    fn add_vtep(&mut self, ip: IpAddr) -> Option<VtepIdx> {
        let v = self.vtep_ips.len() as VtepIdx;
        if self.vtep_ips.len() >= MAX_SLOTS as usize {
            return None;
        }
        match ip {
            IpAddr::V4(a) => self.vtep4.insert(u64::from(u32::from(a)), v),
            IpAddr::V6(a) => {
                self.vtep6.insert(u128::from(a), v);
            }
        }
        self.vtep_ips.push(ip);
        self.egress.push(egress_template(
            self.underlay_ip,
            self.underlay_ip6,
            self.udp_port,
            ip,
        ));
        Some(v)
    }
}

/// The outer header toward VTEP `ip` (`None`: no underlay source address of its family).
fn egress_template(
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
    udp_port: u16,
    ip: IpAddr,
) -> Option<vtep::OuterTemplate> {
    let src = match ip {
        IpAddr::V4(_) => Some(IpAddr::V4(v4)),
        IpAddr::V6(_) => v6.map(IpAddr::V6),
    }?;
    vtep::OuterTemplate::new(src, ip, udp_port, 64).ok()
}

fn build_core(doc: &Document, prev: Option<&Table>) -> Result<(Core, Eps), ConfigError> {
    // Built as the table keeps them (a copy would hold a million entries twice while compiling).
    let mut tenants: crate::section::Section<TenantEntry> = crate::section::Section::new();
    let mut names = NameIndex::with_capacity(doc.tenants.len());
    if let Some(p) = prev {
        for t in p.core.tenants.iter() {
            tenants.push(TenantEntry {
                live: false,
                ..t.clone()
            });
            names.insert(&tenants, tenants.len() as TenantIdx - 1);
        }
    }
    let mut spaces: HashMap<&str, u32> = HashMap::new();
    let mut ids = HugeBuf::filled(65536, Ident::NONE);
    let mut big_ids = HashMap::new();
    let mut tenant_vteps: Vec<(TenantIdx, IpAddr)> = Vec::new();
    for t in &doc.tenants {
        let n = spaces.len() as u32;
        let space = *spaces.entry(t.space()).or_insert(n);
        let entry = TenantEntry {
            name: t.name.clone(),
            id: t.id,
            space,
            live: true,
            any_vtep: t.vteps.is_none(),
        };
        let idx = match names.get(&tenants, &t.name) {
            Some(i) => {
                tenants[i as usize] = entry;
                i
            }
            None => {
                let i = tenants.len() as TenantIdx;
                tenants.push(entry);
                names.insert(&tenants, i);
                i
            }
        };
        match u16::try_from(t.id) {
            Ok(id) => {
                ids.as_mut_slice()[usize::from(id)] = Ident::new(idx, space, t.vteps.is_none())
            }
            Err(_) => {
                big_ids.insert(t.id, idx);
            }
        }
        for v in t.vteps.iter().flatten() {
            tenant_vteps.push((idx, *v));
        }
    }
    if tenants.len() > MAX_SLOTS as usize {
        return Err(too_many("tenant slots", tenants.len()));
    }
    if spaces.len() > MAX_SLOTS as usize {
        return Err(too_many("address spaces", spaces.len()));
    }
    let ident_of = |i: TenantIdx| {
        let e: &TenantEntry = &tenants[i as usize];
        Ident::new(i, e.space, e.any_vtep)
    };

    // Segments: a directory of 4096 pages of 4096 VNIs, pages made only where segments are.
    let mut seg_dir = vec![0u32; 4096];
    let mut seg_pages: Vec<Box<[Seg; 4096]>> = Vec::new();
    for s in &doc.segments {
        let d = ((s.vni >> 12) & 0xfff) as usize;
        if seg_dir[d] == 0 {
            seg_pages.push(Box::new([Seg::default(); 4096]));
            seg_dir[d] = seg_pages.len() as u32;
        }
        let ident = match (
            s.identity,
            s.tenant.as_deref().and_then(|n| names.get(&tenants, n)),
        ) {
            (IdentityMode::Vni, Some(i)) => ident_of(i),
            _ => Ident::NONE,
        };
        seg_pages[seg_dir[d] as usize - 1][(s.vni & 0xfff) as usize] = Seg::new(s.identity, ident);
    }

    // VTEPs: every address an endpoint or a `vteps` list names, by index.
    let mut vtep_ips: Vec<IpAddr> = Vec::new();
    let mut vtep4: FlatMap<u32> = FlatMap::with_capacity(64);
    let mut vtep6: HashMap<u128, VtepIdx> = HashMap::new();
    let mut vtep_idx = |ip: IpAddr, ips: &mut Vec<IpAddr>| -> VtepIdx {
        let n = ips.len() as VtepIdx;
        let i = match ip {
            IpAddr::V4(a) => {
                let k = u64::from(u32::from(a));
                match vtep4.get(k) {
                    Some(i) => i,
                    None => {
                        vtep4.insert(k, n);
                        n
                    }
                }
            }
            IpAddr::V6(a) => *vtep6.entry(u128::from(a)).or_insert(n),
        };
        if i == n {
            ips.push(ip);
        }
        i
    };
    let mut tv: FlatMap<u8> = FlatMap::with_capacity(tenant_vteps.len());
    for (t, ip) in tenant_vteps {
        let v = vtep_idx(ip, &mut vtep_ips);
        tv.insert(u64::from(t) << 32 | u64::from(v), 1);
    }

    let n4 = doc.endpoints.iter().filter(|e| e.ip.is_ipv4()).count();
    let mut ep4: PagedMap<Ep> = PagedMap::with_capacity(n4);
    let mut ep6: HashMap<(u32, u128), Ep> = HashMap::new();
    for e in &doc.endpoints {
        let Some(t) = names.get(&tenants, &e.tenant) else {
            continue; // validation refused it
        };
        let v = vtep_idx(e.vtep, &mut vtep_ips);
        let space = tenants[t as usize].space;
        let mode = segment_mode(&seg_dir, &seg_pages, e.vni).unwrap_or(IdentityMode::Vni);
        let entry = Ep::new(t, v, e.vni, mode, e.mac);
        match e.ip {
            IpAddr::V4(a) => ep4.insert(Table::ep4_hash(space, u32::from(a)).0, entry),
            IpAddr::V6(a) => {
                ep6.insert((space, u128::from(a)), entry);
            }
        }
    }
    if vtep_ips.len() > MAX_SLOTS as usize {
        return Err(too_many("VTEPs", vtep_ips.len()));
    }

    let g = &doc.gateway;
    let egress = vtep_ips
        .iter()
        .map(|ip| egress_template(g.underlay_ip, g.underlay_ip6, g.udp_port, *ip))
        .collect();
    let tenant_ids: Vec<u32> = tenants.iter().map(|t| t.id).collect();
    let core = Core {
        egress,
        tenant_ids,
        underlay_ip: g.underlay_ip,
        underlay_ip6: g.underlay_ip6,
        udp_port: g.udp_port,
        mtu: g.mtu,
        replies: g.replies,
        seg_dir,
        seg_pages,
        ids,
        big_ids: Arc::new(big_ids),
        vtep4,
        vtep6,
        vtep_ips,
        tenant_vteps: tv,
        next_space: tenants
            .iter()
            .map(|e| e.space + 1)
            .max()
            .unwrap_or(0)
            .max(spaces.len() as u32),
        spaces: Arc::new(spaces.into_iter().map(|(k, v)| (k.into(), v)).collect()),
        tenants,
        names: Arc::new(names),
        digest: core_digest(doc),
    };
    let eps = Eps {
        ep4,
        ep6,
        digest: endpoints_digest(doc),
        gbp_tenants: std::sync::OnceLock::new(),
    };
    Ok((core, eps))
}

fn segment_mode(dir: &[u32], pages: &[Box<[Seg; 4096]>], vni: u32) -> Option<IdentityMode> {
    let p = dir[((vni >> 12) & 0xfff) as usize];
    if p == 0 {
        return None;
    }
    pages[p as usize - 1][(vni & 0xfff) as usize].mode()
}
