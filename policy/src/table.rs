//! The compiled, immutable lookup table the hot path consults: identity, anti-spoofing, endpoints and
//! verdicts, each answered by a hash lookup or a short priority-sorted scan, with no allocation.

use crate::document::{Action, Cidr, Document, IdentityMode, Proto, ANY_TENANT};
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
    from_any: Span,
    to_any: Span,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
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

/// An immutable, compiled policy version.
#[derive(Debug)]
pub struct Table {
    version: u64,
    digest: u64,
    doc: Arc<Document>,
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
    pair_rules: HashMap<(TenantIdx, TenantIdx), Span>,
    any_any: Span,
    rules: Vec<CompiledRule>,
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

/// The digest the store and workers compare (`audit.verify`).
pub fn digest(doc: &Document) -> u64 {
    fnv1a(&serde_json::to_vec(doc).expect("a document always serializes"))
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
            for t in &p.tenants {
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
                from_any: Span::default(),
                to_any: Span::default(),
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

        // Rules, grouped by (from, to) bucket; each bucket sorted by priority, deny first on ties.
        #[derive(PartialEq, Eq, Hash, Clone, Copy)]
        enum Key {
            Pair(TenantIdx, TenantIdx),
            FromAny(TenantIdx),
            ToAny(TenantIdx),
            AnyAny,
        }
        let mut buckets: HashMap<Key, Vec<CompiledRule>> = HashMap::new();
        for (i, r) in doc.rules.iter().enumerate() {
            let from = (r.from != ANY_TENANT).then(|| idx_of(&r.from).expect("validated"));
            let to = (r.to != ANY_TENANT).then(|| idx_of(&r.to).expect("validated"));
            let key = match (from, to) {
                (Some(a), Some(b)) => Key::Pair(a, b),
                (Some(a), None) => Key::FromAny(a),
                (None, Some(b)) => Key::ToAny(b),
                (None, None) => Key::AnyAny,
            };
            let time = |t: &Option<String>, dflt| {
                t.as_deref()
                    .map(|s| crate::time::parse_rfc3339(s).expect("validated"))
                    .unwrap_or(dflt)
            };
            buckets.entry(key).or_default().push(CompiledRule {
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
            });
        }
        let mut rules = Vec::with_capacity(doc.rules.len());
        let mut pair_rules = HashMap::new();
        let mut any_any = Span::default();
        let mut keys: Vec<Key> = buckets.keys().copied().collect();
        // Deterministic storage order (not needed for correctness, nice for debugging).
        keys.sort_by_key(|k| match *k {
            Key::Pair(a, b) => (0, a, b),
            Key::FromAny(a) => (1, a, 0),
            Key::ToAny(b) => (2, b, 0),
            Key::AnyAny => (3, 0, 0),
        });
        for k in keys {
            let mut v = buckets.remove(&k).expect("key from map");
            v.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(a.allow.cmp(&b.allow))
                    .then(a.index.cmp(&b.index))
            });
            let span = Span {
                start: rules.len() as u32,
                len: v.len() as u32,
            };
            rules.extend(v);
            match k {
                Key::Pair(a, b) => {
                    pair_rules.insert((a, b), span);
                }
                Key::FromAny(a) => tenants[a as usize].from_any = span,
                Key::ToAny(b) => tenants[b as usize].to_any = span,
                Key::AnyAny => any_any = span,
            }
        }

        let g = &doc.gateway;
        Ok(Table {
            version,
            digest: digest(&doc),
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
            pair_rules,
            any_any,
            rules,
            doc: keep,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    /// Digest of the document this table was compiled from.
    pub fn digest(&self) -> u64 {
        self.digest
    }
    pub fn document(&self) -> &Arc<Document> {
        &self.doc
    }
    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }
    pub fn mtu(&self) -> u16 {
        self.mtu
    }
    /// The gateway's underlay source address toward a VTEP of `dst`'s family.
    #[inline]
    pub fn underlay_src(&self, dst: &IpAddr) -> Option<IpAddr> {
        if dst.is_ipv4() {
            Some(self.underlay_ip)
        } else {
            self.underlay_ip6
        }
    }
    /// Number of tenant slots (live or not): the size of per-tenant counter arrays.
    pub fn tenant_slots(&self) -> usize {
        self.tenants.len()
    }
    pub fn tenant(&self, t: TenantIdx) -> &TenantEntry {
        &self.tenants[t as usize]
    }
    pub fn tenants(&self) -> impl Iterator<Item = (TenantIdx, &TenantEntry)> {
        self.tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (i as TenantIdx, t))
    }
    pub fn tenant_by_name(&self, name: &str) -> Option<TenantIdx> {
        self.names
            .get(name)
            .copied()
            .filter(|&i| self.tenants[i as usize].live)
    }

    /// The segment of an ingress VNI.
    #[inline]
    pub fn segment(&self, vni: u32) -> Option<&SegmentEntry> {
        self.segments.get(&vni)
    }
    /// The tenant with a GBP group id / VLAN id.
    #[inline]
    pub fn tenant_by_id(&self, id: u32) -> Option<TenantIdx> {
        self.ids.get(&id).copied()
    }
    /// Anti-spoofing: may `vtep` send on behalf of tenant `t`?
    #[inline]
    pub fn vtep_allowed(&self, t: TenantIdx, vtep: IpAddr) -> bool {
        self.tenants[t as usize].any_vtep || self.vteps.contains(&(t, vtep))
    }
    /// The endpoint with inner address `ip` in the address space of tenant `t`.
    #[inline]
    pub fn endpoint(&self, t: TenantIdx, ip: IpAddr) -> Option<&EndpointEntry> {
        self.endpoints.get(&(self.tenants[t as usize].space, ip))
    }

    #[inline]
    fn bucket(&self, s: Span) -> &[CompiledRule] {
        &self.rules[s.start as usize..(s.start + s.len) as usize]
    }

    /// The four buckets whose rules can apply from `s` to `d`.
    #[inline]
    fn spans(&self, s: TenantIdx, d: TenantIdx) -> [Span; 4] {
        let pair = if self.pair_rules.is_empty() {
            Span::default()
        } else {
            self.pair_rules.get(&(s, d)).copied().unwrap_or_default()
        };
        [
            pair,
            self.tenants[s as usize].from_any,
            self.tenants[d as usize].to_any,
            self.any_any,
        ]
    }

    /// The verdict for a frame of `flow` from tenant `s` to tenant `d` at Unix time `now`: forward rules
    /// from s to d and mirrored allow rules from d to s (replies) compete; the highest priority wins,
    /// deny wins ties; with no matching rule, intra-tenant traffic is allowed and cross-tenant denied.
    #[inline]
    pub fn verdict(&self, s: TenantIdx, d: TenantIdx, flow: &Flow, now: i64) -> Decision {
        // best = (priority, is_deny, rule index)
        let mut best: Option<(i32, bool, u32)> = None;
        for mirrored in [false, true] {
            let spans = if mirrored {
                self.spans(d, s)
            } else {
                self.spans(s, d)
            };
            for span in spans {
                for r in self.bucket(span) {
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
                .spans(s, d)
                .into_iter()
                .any(|span| self.bucket(span).iter().any(|r| r.allow && r.active(now)))
    }

    /// The rules that can apply from `s` to `d` (forward direction), for the audit: (document index,
    /// allow, priority, proto, ports, active at `now`).
    pub(crate) fn forward_rules(
        &self,
        s: TenantIdx,
        d: TenantIdx,
    ) -> impl Iterator<Item = (u32, bool, i32, Proto, (u16, u16), bool, i64, i64)> + '_ {
        self.spans(s, d).into_iter().flat_map(move |span| {
            self.bucket(span).iter().map(|r| {
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
        self.pair_rules.keys().copied()
    }
    /// Whether any wildcard rule exists (then every pair must be audited).
    pub(crate) fn has_wildcards(&self) -> bool {
        self.any_any.len > 0
            || self
                .tenants
                .iter()
                .any(|t| t.from_any.len > 0 || t.to_any.len > 0)
    }
}
