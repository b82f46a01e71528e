//! The compiled, immutable lookup table the hot path consults: identity, anti-spoofing, endpoints and
//! verdicts, each answered by a hash lookup or a short priority-sorted scan, with no allocation.

use crate::document::{Action, Cidr, Document, IdentityMode, Proto, Rule, ANY_TENANT};
use crate::error::ConfigError;
use hashbrown::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use vtep::{Flow, Mac};

/// A tenant's slot in a table. Slots stay the same across versions compiled from one another, so
/// per-tenant counters indexed by slot survive policy changes.
pub type TenantIdx = u32;

/// A tenant as the hot path sees it.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    pub name: Box<str>,
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

/// Where an endpoint lives and how to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointEntry {
    pub tenant: TenantIdx,
    pub vtep: IpAddr,
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

#[derive(Debug, Clone)]
struct CompiledRule {
    index: u32,
    allow: bool,
    priority: i32,
    proto: Proto,
    ports: (u16, u16),
    from_cidr: Option<Cidr>,
    to_cidr: Option<Cidr>,
    not_before: i64,
    not_after: i64,
}

impl CompiledRule {
    /// Does a frame match this rule (forward), or its mirror (a reply to traffic the rule allows)?
    #[inline]
    fn matches(&self, f: &Flow, now: i64, mirrored: bool) -> bool {
        let (port, src, dst) = if mirrored {
            (f.src_port, &f.dst, &f.src)
        } else {
            (f.dst_port, &f.src, &f.dst)
        };
        self.proto.matches(f.proto)
            && (self.ports.0..=self.ports.1).contains(&port)
            && self.from_cidr.is_none_or(|c| c.contains(src))
            && self.to_cidr.is_none_or(|c| c.contains(dst))
            && self.active(now)
    }
    #[inline]
    fn active(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// The rules, bucketed by (from, to); each bucket sorted by priority, deny first on ties. Buckets are
/// shared between versions, so a one-rule change rebuilds one bucket, not the whole set.
#[derive(Debug, Clone, Default)]
struct Rules {
    /// Each container is shared too: a change copies only the container it touches.
    /// Indexed by the from-tenant's slot, then keyed by the to-tenant.
    pair: Arc<Vec<Option<PairMap>>>,
    /// Indexed by tenant slot: rules from the tenant to `*`, and from `*` to the tenant.
    from_any: Arc<Vec<Option<Arc<[CompiledRule]>>>>,
    to_any: Arc<Vec<Option<Arc<[CompiledRule]>>>>,
    any_any: Arc<[CompiledRule]>,
    /// Σ of the rules' hashes (with their index): the rules' part of the digest.
    digest: u64,
}

type PairMap = Arc<HashMap<TenantIdx, Arc<[CompiledRule]>>>;

#[derive(PartialEq, Eq, Hash, Clone, Copy, PartialOrd, Ord)]
enum Key {
    Pair(TenantIdx, TenantIdx),
    FromAny(TenantIdx),
    ToAny(TenantIdx),
    AnyAny,
}

impl Rules {
    fn empty() -> Arc<[CompiledRule]> {
        Arc::from(Vec::new())
    }
    fn bucket_mut(&mut self, k: Key) -> &mut Arc<[CompiledRule]> {
        match k {
            Key::Pair(a, b) => {
                let inner =
                    Arc::make_mut(&mut self.pair)[a as usize].get_or_insert_with(Default::default);
                Arc::make_mut(inner).entry(b).or_insert_with(Self::empty)
            }
            Key::FromAny(a) => {
                Arc::make_mut(&mut self.from_any)[a as usize].get_or_insert_with(Self::empty)
            }
            Key::ToAny(b) => {
                Arc::make_mut(&mut self.to_any)[b as usize].get_or_insert_with(Self::empty)
            }
            Key::AnyAny => &mut self.any_any,
        }
    }
    /// Replaces bucket `k` by `f` applied to its rules, kept sorted; empty buckets disappear.
    fn edit_bucket(&mut self, k: Key, f: impl FnOnce(&mut Vec<CompiledRule>)) {
        let slot = self.bucket_mut(k);
        let mut v = slot.to_vec();
        f(&mut v);
        sort_bucket(&mut v);
        *slot = Arc::from(v);
        if slot.is_empty() {
            match k {
                Key::Pair(a, b) => {
                    let outer = Arc::make_mut(&mut self.pair);
                    if let Some(inner) = &mut outer[a as usize] {
                        Arc::make_mut(inner).remove(&b);
                        if inner.is_empty() {
                            outer[a as usize] = None;
                        }
                    }
                }
                Key::FromAny(a) => Arc::make_mut(&mut self.from_any)[a as usize] = None,
                Key::ToAny(b) => Arc::make_mut(&mut self.to_any)[b as usize] = None,
                Key::AnyAny => {}
            }
        }
    }
}

fn sort_bucket(v: &mut [CompiledRule]) {
    v.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.allow.cmp(&b.allow))
            .then(a.index.cmp(&b.index))
    });
}

/// The non-rule part of a table: identity, anti-spoofing and endpoints, shared between versions that
/// change only rules.
#[derive(Debug)]
struct Core {
    underlay_ip: IpAddr,
    underlay_ip6: Option<IpAddr>,
    udp_port: u16,
    mtu: u16,
    segments: HashMap<u32, SegmentEntry>,
    ids: HashMap<u32, TenantIdx>,
    names: HashMap<Box<str>, TenantIdx>,
    tenants: Vec<TenantEntry>,
    vteps: HashSet<(TenantIdx, IpAddr)>,
    endpoints: HashMap<(u32, IpAddr), EndpointEntry>,
    /// Digest of the gateway, segments, tenants and endpoints.
    digest: u64,
}

/// An immutable, compiled policy version.
#[derive(Debug)]
pub struct Table {
    version: u64,
    doc: std::sync::OnceLock<Arc<Document>>,
    core: Arc<Core>,
    rules: Arc<Rules>,
}

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
}

/// FNV-1a, 64 bits: a stable digest of a document's canonical JSON.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hash_of<T: serde::Serialize>(salt: u64, v: &T) -> u64 {
    let mut h = fnv1a(&serde_json::to_vec(v).expect("documents always serialize"))
        ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 31;
    h.wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

fn rule_hash(index: usize, r: &Rule) -> u64 {
    hash_of(index as u64 + 1, r)
}

fn core_digest(doc: &Document) -> u64 {
    let mut d = hash_of(1, &doc.gateway);
    for s in &doc.segments {
        d = d.wrapping_add(hash_of(2, s));
    }
    for t in &doc.tenants {
        d = d.wrapping_add(hash_of(3, t));
    }
    for e in &doc.endpoints {
        d = d.wrapping_add(hash_of(4, e));
    }
    d
}

fn combine(core: u64, rules: u64) -> u64 {
    core ^ rules.rotate_left(29).wrapping_mul(0x94d0_49bb_1331_11eb)
}

/// The digest the store and workers compare (`audit.verify`): a sum of per-entry hashes, so that a
/// one-entry change updates it without rehashing the document. Independent of the order of
/// segments, tenants and endpoints; rules count with their index (their order matters).
pub fn digest(doc: &Document) -> u64 {
    let rules = doc
        .rules
        .iter()
        .enumerate()
        .fold(0u64, |a, (i, r)| a.wrapping_add(rule_hash(i, r)));
    combine(core_digest(doc), rules)
}

fn compile_rule(i: usize, r: &Rule) -> CompiledRule {
    let time = |t: &Option<String>, dflt| {
        t.as_deref()
            .map(|s| crate::time::parse_rfc3339(s).expect("validated"))
            .unwrap_or(dflt)
    };
    CompiledRule {
        index: i as u32,
        allow: r.action == Action::Allow,
        priority: r.priority,
        proto: r.proto.unwrap_or(Proto::Any),
        ports: r
            .ports
            .as_deref()
            .map(|p| crate::document::parse_ports(p).expect("validated"))
            .unwrap_or((0, u16::MAX)),
        from_cidr: r
            .from_cidr
            .as_deref()
            .map(|c| Cidr::parse(c).expect("validated")),
        to_cidr: r
            .to_cidr
            .as_deref()
            .map(|c| Cidr::parse(c).expect("validated")),
        not_before: time(&r.not_before, i64::MIN),
        not_after: time(&r.not_after, i64::MAX),
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
        let keep = Arc::clone(&doc);
        let mut tenants: Vec<TenantEntry> = Vec::new();
        let mut names: HashMap<Box<str>, TenantIdx> = HashMap::new();
        if let Some(p) = prev {
            for t in &p.core.tenants {
                names.insert(t.name.clone(), tenants.len() as TenantIdx);
                tenants.push(TenantEntry {
                    live: false,
                    ..t.clone()
                });
            }
        }
        let mut spaces: HashMap<&str, u32> = HashMap::new();
        let mut ids = HashMap::with_capacity(doc.tenants.len());
        let mut vteps = HashSet::new();
        for t in &doc.tenants {
            let n = spaces.len() as u32;
            let space = *spaces.entry(t.space()).or_insert(n);
            let entry = TenantEntry {
                name: t.name.as_str().into(),
                id: t.id,
                space,
                live: true,
                any_vtep: t.vteps.is_none(),
            };
            let idx = match names.get(t.name.as_str()) {
                Some(&i) => {
                    tenants[i as usize] = entry;
                    i
                }
                None => {
                    let i = tenants.len() as TenantIdx;
                    names.insert(t.name.as_str().into(), i);
                    tenants.push(entry);
                    i
                }
            };
            ids.insert(t.id, idx);
            for v in t.vteps.iter().flatten() {
                vteps.insert((idx, *v));
            }
        }
        let idx_of = |name: &str| names.get(name).copied();

        let mut segments = HashMap::with_capacity(doc.segments.len());
        for s in &doc.segments {
            segments.insert(
                s.vni,
                SegmentEntry {
                    mode: s.identity,
                    tenant: s.tenant.as_deref().and_then(idx_of),
                },
            );
        }

        let mut endpoints = HashMap::with_capacity(doc.endpoints.len());
        for e in &doc.endpoints {
            let t = idx_of(&e.tenant).expect("validated");
            endpoints.insert(
                (tenants[t as usize].space, e.ip),
                EndpointEntry {
                    tenant: t,
                    vtep: e.vtep,
                    mac: e.mac,
                    vni: e.vni,
                    egress: segments[&e.vni].mode,
                },
            );
        }

        let g = &doc.gateway;
        let core = Core {
            underlay_ip: IpAddr::V4(g.underlay_ip),
            underlay_ip6: g.underlay_ip6.map(IpAddr::V6),
            udp_port: g.udp_port,
            mtu: g.mtu,
            segments,
            ids,
            names,
            tenants,
            vteps,
            endpoints,
            digest: core_digest(&doc),
        };
        let rules = build_rules(&core, &doc.rules);
        let doc_cell = std::sync::OnceLock::new();
        let _ = doc_cell.set(keep);
        Ok(Table {
            version,
            doc: doc_cell,
            core: Arc::new(core),
            rules: Arc::new(rules),
        })
    }

    /// The problems a rule at `index` would have in this table's policy (tenants must exist).
    pub fn check_rule(&self, index: usize, r: &Rule) -> Vec<crate::Issue> {
        crate::document::validate_rule(index, r, &|t| {
            self.core.names.contains_key(t) && self.tenant_by_name(t).is_some()
        })
    }

    /// This table with one rule changed, as `version`: identity, endpoints and every other rule bucket
    /// are shared with `self`; only the changed rule's bucket is rebuilt. The rule must have passed
    /// [`Table::check_rule`]. The new table's document is set later with [`Table::set_document`].
    pub fn with_rule_change(
        &self,
        version: u64,
        change: RuleChange<'_>,
        rule_count: usize,
    ) -> Table {
        let mut rules = (*self.rules).clone();
        let key = |r: &Rule| key_of(&self.core, r);
        match change {
            RuleChange::Append(r) => {
                let c = compile_rule(rule_count, r);
                rules.edit_bucket(key(r), |v| v.push(c));
                rules.digest = rules.digest.wrapping_add(rule_hash(rule_count, r));
            }
            RuleChange::Replace { index, old, new } => {
                rules.edit_bucket(key(old), |v| v.retain(|c| c.index as usize != index));
                let c = compile_rule(index, new);
                rules.edit_bucket(key(new), |v| v.push(c));
                rules.digest = rules
                    .digest
                    .wrapping_sub(rule_hash(index, old))
                    .wrapping_add(rule_hash(index, new));
            }
        }
        Table {
            version,
            doc: std::sync::OnceLock::new(),
            core: self.core.clone(),
            rules: Arc::new(rules),
        }
    }

    /// Sets the document of a table made by [`Table::with_rule_change`] (once).
    pub fn set_document(&self, doc: Arc<Document>) {
        let _ = self.doc.set(doc);
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    /// Digest of the document this table was compiled from.
    pub fn digest(&self) -> u64 {
        combine(self.core.digest, self.rules.digest)
    }
    /// The document this table was compiled from.
    ///
    /// # Panics
    /// For a table made by [`Table::with_rule_change`] before [`Table::set_document`].
    pub fn document(&self) -> &Arc<Document> {
        self.doc.get().expect("the table's document is set")
    }
    pub fn udp_port(&self) -> u16 {
        self.core.udp_port
    }
    pub fn mtu(&self) -> u16 {
        self.core.mtu
    }
    /// The gateway's underlay source address toward a VTEP of `dst`'s family.
    #[inline]
    pub fn underlay_src(&self, dst: &IpAddr) -> Option<IpAddr> {
        if dst.is_ipv4() {
            Some(self.core.underlay_ip)
        } else {
            self.core.underlay_ip6
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
            .get(name)
            .copied()
            .filter(|&i| self.core.tenants[i as usize].live)
    }

    /// The segment of an ingress VNI.
    #[inline]
    pub fn segment(&self, vni: u32) -> Option<&SegmentEntry> {
        self.core.segments.get(&vni)
    }
    /// The tenant with a GBP group id / VLAN id.
    #[inline]
    pub fn tenant_by_id(&self, id: u32) -> Option<TenantIdx> {
        self.core.ids.get(&id).copied()
    }
    /// Anti-spoofing: may `vtep` send on behalf of tenant `t`?
    #[inline]
    pub fn vtep_allowed(&self, t: TenantIdx, vtep: IpAddr) -> bool {
        self.core.tenants[t as usize].any_vtep || self.core.vteps.contains(&(t, vtep))
    }
    /// The endpoint with inner address `ip` in the address space of tenant `t`.
    #[inline]
    pub fn endpoint(&self, t: TenantIdx, ip: IpAddr) -> Option<&EndpointEntry> {
        self.core
            .endpoints
            .get(&(self.core.tenants[t as usize].space, ip))
    }

    /// The four buckets whose rules can apply from `s` to `d`. Empty maps cost no lookup.
    #[inline]
    fn buckets(&self, s: TenantIdx, d: TenantIdx) -> [&[CompiledRule]; 4] {
        #[inline]
        fn slot(v: &[Option<Arc<[CompiledRule]>>], t: TenantIdx) -> &[CompiledRule] {
            v.get(t as usize).and_then(|b| b.as_deref()).unwrap_or(&[])
        }
        let r = &*self.rules;
        let pair = match r.pair.get(s as usize) {
            Some(Some(m)) => m.get(&d).map(|a| &**a).unwrap_or(&[]),
            _ => &[],
        };
        [pair, slot(&r.from_any, s), slot(&r.to_any, d), &r.any_any]
    }

    /// The verdict for a frame of `flow` from tenant `s` to tenant `d` at Unix time `now`: forward rules
    /// from s to d and mirrored allow rules from d to s (replies) compete; the highest priority wins,
    /// deny wins ties; with no matching rule, intra-tenant traffic is allowed and cross-tenant denied.
    #[inline]
    pub fn verdict(&self, s: TenantIdx, d: TenantIdx, flow: &Flow, now: i64) -> Decision {
        // best = (priority, is_deny, rule index)
        let mut best: Option<(i32, bool, u32)> = None;
        for mirrored in [false, true] {
            let buckets = if mirrored {
                self.buckets(d, s)
            } else {
                self.buckets(s, d)
            };
            for bucket in buckets {
                for r in bucket {
                    if let Some((p, deny, _)) = best {
                        // Buckets are sorted: nothing further can beat the current best.
                        if r.priority < p || (r.priority == p && (deny || r.allow)) {
                            break;
                        }
                    }
                    if mirrored && !r.allow {
                        continue;
                    }
                    if r.matches(flow, now, mirrored) {
                        best = Some((r.priority, !r.allow, r.index));
                        break;
                    }
                }
            }
        }
        match best {
            Some((_, deny, i)) => Decision {
                allow: !deny,
                rule: Some(i),
            },
            None => Decision {
                allow: s == d,
                rule: None,
            },
        }
    }

    /// May tenant `s` learn about (ARP for) endpoints of tenant `d`: its own tenant always, another
    /// when some allow rule from s (or `*`) to d (or `*`) is in force at `now`.
    pub fn may_reach(&self, s: TenantIdx, d: TenantIdx, now: i64) -> bool {
        s == d
            || self
                .buckets(s, d)
                .into_iter()
                .any(|b| b.iter().any(|r| r.allow && r.active(now)))
    }

    /// The rules that can apply from `s` to `d` (forward direction), for the audit: (document index,
    /// allow, priority, proto, ports, has CIDRs, not_before, not_after).
    pub(crate) fn forward_rules(
        &self,
        s: TenantIdx,
        d: TenantIdx,
    ) -> impl Iterator<Item = (u32, bool, i32, Proto, (u16, u16), bool, i64, i64)> + '_ {
        self.buckets(s, d).into_iter().flat_map(move |b| {
            b.iter().map(|r| {
                (
                    r.index,
                    r.allow,
                    r.priority,
                    r.proto,
                    r.ports,
                    r.from_cidr.is_some() || r.to_cidr.is_some(),
                    r.not_before,
                    r.not_after,
                )
            })
        })
    }

    /// Pairs of tenants that have a rule naming both (for the audit).
    pub(crate) fn rule_pairs(&self) -> impl Iterator<Item = (TenantIdx, TenantIdx)> + '_ {
        self.rules.pair.iter().enumerate().flat_map(|(a, m)| {
            m.iter()
                .flat_map(|m| m.keys())
                .map(move |&b| (a as TenantIdx, b))
        })
    }
    /// Whether any wildcard rule exists (then every pair must be audited).
    pub(crate) fn has_wildcards(&self) -> bool {
        !self.rules.any_any.is_empty()
            || self.rules.from_any.iter().any(Option::is_some)
            || self.rules.to_any.iter().any(Option::is_some)
    }
}

fn key_of(core: &Core, r: &Rule) -> Key {
    let idx = |n: &str| (n != ANY_TENANT).then(|| *core.names.get(n).expect("validated"));
    match (idx(&r.from), idx(&r.to)) {
        (Some(a), Some(b)) => Key::Pair(a, b),
        (Some(a), None) => Key::FromAny(a),
        (None, Some(b)) => Key::ToAny(b),
        (None, None) => Key::AnyAny,
    }
}

fn build_rules(core: &Core, doc_rules: &[Rule]) -> Rules {
    let mut buckets: HashMap<Key, Vec<CompiledRule>> = HashMap::new();
    let mut digest = 0u64;
    for (i, r) in doc_rules.iter().enumerate() {
        buckets
            .entry(key_of(core, r))
            .or_default()
            .push(compile_rule(i, r));
        digest = digest.wrapping_add(rule_hash(i, r));
    }
    let slots = core.tenants.len();
    let mut rules = Rules {
        digest,
        pair: Arc::new(vec![None; slots]),
        from_any: Arc::new(vec![None; slots]),
        to_any: Arc::new(vec![None; slots]),
        ..Rules::default()
    };
    for (k, mut v) in buckets {
        sort_bucket(&mut v);
        *rules.bucket_mut(k) = Arc::from(v);
    }
    rules
}
