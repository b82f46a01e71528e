//! Deterministic synthetic workloads for benchmarks: a policy [`Document`] and VXLAN frames arriving at
//! the gateway, both generated from a seed, so that a bench, `joypath synth` and a profile all measure
//! the same thing.
//!
//! Shape of a workload (every address in 198.18.0.0/15, the benchmarking range):
//! - tenant `t` (0-based) is named `t{t}`, has id `t + 1`; tenants with an id ≤ 65535 are identified
//!   by their GBP group id on the one shared segment (VNI 1), except every `vni_every`-th, which has
//!   its own legacy `vni` segment (VNI `0x10000 + t`); with more than 65535 tenants, every tenant has
//!   its own `vni` segment (ids that do not fit 16 bits must not reach GBP endpoints);
//! - tenants live in `spaces` address spaces (`s{t % spaces}`), so inner addresses repeat across
//!   spaces; inner addresses are 198.19.x.y, underlay VTEPs 198.18.x.y, the gateway 198.18.0.254;
//! - endpoint `e` belongs to tenant `e % tenants` and sits behind one of `vteps` VTEPs;
//! - every `pinned_every`-th tenant lists the VTEPs of its endpoints (anti-spoofing);
//! - rules: a few wildcard rules (a `* → *` telnet block, `* → service` DNS allows, one tenant's
//!   `t → *` SSH deny) and pair rules between tenants of one address space (allow on a port or range,
//!   some with a higher-priority deny on 8000–8080, some with CIDRs, some with validity windows, some
//!   already expired);
//! - flows are intra-tenant, cross-tenant allowed (a pair rule's port, or a reply to it) or
//!   cross-tenant denied (a pair without rules, a port of the pair's deny rule, or telnet), and every
//!   flow's destination is a configured endpoint, so allowed frames run the full path.

use driver::capture::{write_pcap, Captured};
use policy::{Action, Document, Endpoint, Gateway, IdentityMode, Proto, Rule, Segment, Tenant};
use serde::Serialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use vtep::{encapsulate, Ipv4Packet, Mac, UdpPacket, Underlay, OUTER_LEN_V4};

/// The shared GBP segment.
pub const GBP_VNI: u32 = 1;
/// A VLAN segment added (with no endpoint) only when tenant ids exceed 16 bits; see [`generate`].
pub const VLAN_VNI: u32 = 2;
/// First VNI of per-tenant `vni` segments: tenant `t`'s is `VNI_BASE + t`.
pub const VNI_BASE: u32 = 0x1_0000;
/// The gateway's underlay address.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The gateway's underlay MAC (what the VTEPs send to).
pub const GATEWAY_MAC: Mac = Mac([0x02, 0x18, 0x00, 0x00, 0x00, 0xfe]);
/// 2026-01-01T00:00:00Z: the first frame's timestamp.
pub const START_NS: u64 = 1_767_225_600_000_000_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Params {
    pub tenants: u32,
    pub endpoints: u32,
    pub rules: u32,
    pub flows: u32,
    pub frames: u32,
    /// Inner Ethernet frame length (without FCS); raised to the headers' minimum (54 for TCP).
    pub inner_size: usize,
    pub seed: u64,
    /// Underlay VTEPs (at most 4096, what a worker learns next hops for).
    pub vteps: u32,
    /// Address spaces; 0 = as few as keep each under 50 000 endpoints.
    pub spaces: u32,
    /// Every n-th tenant with a 16-bit id gets its own `vni` segment instead of the GBP one (0: none).
    pub vni_every: u32,
    /// Every n-th tenant lists its VTEPs (anti-spoofing); 0: none.
    pub pinned_every: u32,
    /// Fraction of frames that are cross-tenant and allowed.
    pub allowed: f64,
    /// Fraction of frames that are cross-tenant and denied. The rest is intra-tenant.
    pub denied: f64,
    /// Timestamp of the first frame; frames follow 1 µs apart.
    pub start_ns: u64,
    /// How the gateway admits replies (tracked: every reply's request comes first).
    pub replies: policy::Replies,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tenants: 10,
            endpoints: 100,
            rules: 10,
            flows: 100,
            frames: 1000,
            inner_size: 64,
            seed: 1,
            vteps: 64,
            spaces: 0,
            vni_every: 10,
            pinned_every: 4,
            allowed: 0.5,
            denied: 0.1,
            start_ns: START_NS,
            replies: policy::Replies::Tracked,
        }
    }
}

impl Params {
    /// The bench scales: tenants, endpoints and rules scaled together, with 131 072 flows (one
    /// frame each), so that at a million tenants what a frame touches is not already cached.
    pub fn scale(tenants: u32, endpoints: u32, rules: u32) -> Params {
        Params {
            tenants,
            endpoints,
            rules,
            flows: 131_072,
            frames: 131_072,
            ..Params::default()
        }
    }
}

/// What a flow (and so each of its frames) is expected to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Intra,
    Allowed,
    Denied,
}

/// One generated flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowSpec {
    pub src_ep: u32,
    pub dst_ep: u32,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub kind: Kind,
    /// For a reply: the flow whose request it answers (emitted first, so that tracked replies
    /// are admitted).
    pub request: Option<u32>,
}

/// Frame counts by kind: a replay should forward `intra + allowed` and deny `denied`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub intra: u64,
    pub allowed: u64,
    pub denied: u64,
}

/// A generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub doc: Document,
    pub flows: Vec<FlowSpec>,
    pub frames: Vec<Captured>,
    pub expect: Expect,
    /// Address spaces used.
    pub spaces: u32,
}

/// SplitMix64: tiny, deterministic, good enough for workloads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

fn mix(x: u64) -> u64 {
    Rng::new(x).next_u64()
}

fn tenant_name(t: u32) -> String {
    format!("t{t}")
}

/// The identity mode of tenant `t`'s own segment.
fn tenant_mode(p: &Params, t: u32) -> IdentityMode {
    // Past 65535 tenants every tenant has a segment of its own: a tenant whose id does not fit a
    // GBP group id may not send to endpoints on a GBP segment (its identity would be truncated).
    if p.tenants > 0xffff || (p.vni_every > 0 && t % p.vni_every == p.vni_every - 1) {
        IdentityMode::Vni
    } else {
        IdentityMode::Gbp
    }
}

fn tenant_vni(p: &Params, t: u32) -> u32 {
    match tenant_mode(p, t) {
        IdentityMode::Vni => VNI_BASE + t,
        _ => GBP_VNI,
    }
}

fn vtep_ip(i: u32) -> Ipv4Addr {
    // 198.18.1.1 onward, skipping .0 and .255 in the last octet.
    Ipv4Addr::new(198, 18, 1 + (i / 254) as u8, 1 + (i % 254) as u8)
}

fn vtep_mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([0x02, 0x18, 0x00, b[1], b[2], b[3]])
}

fn ep_mac(e: u32) -> Mac {
    let b = e.to_be_bytes();
    Mac([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// Precomputed per-endpoint facts.
struct Layout {
    t: u32,
    e: u32,
    k: u32,
    /// Inner IPv4 address of each endpoint.
    ip: Vec<u32>,
    /// VTEP index of each endpoint.
    vtep: Vec<u32>,
}

impl Layout {
    fn tenant_of(&self, e: u32) -> u32 {
        e % self.t
    }
    /// Number of endpoints of tenant `t`.
    fn eps_of(&self, t: u32) -> u32 {
        self.e / self.t + u32::from(t < self.e % self.t)
    }
    /// The `j`-th endpoint of tenant `t`.
    fn ep(&self, t: u32, j: u32) -> u32 {
        t + j * self.t
    }
    /// Tenants with at least one endpoint are `0..usable`.
    fn usable(&self) -> u32 {
        self.t.min(self.e)
    }
    /// A random usable tenant of the same address space as `a`, other than `a`.
    fn partner(&self, rng: &mut Rng, a: u32) -> Option<u32> {
        let s = a % self.k;
        let u = self.usable();
        let cnt = (u - s).div_ceil(self.k);
        if cnt < 2 {
            return None;
        }
        for _ in 0..8 {
            let b = s + self.k * rng.below(cnt);
            if b != a {
                return Some(b);
            }
        }
        None
    }
}

/// Why a workload cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("synth: {0}")]
pub struct SynthError(pub String);

/// Generates a workload. The document depends only on tenants, endpoints, rules, vteps, spaces,
/// vni_every, pinned_every and the seed (not on flows or frames), so two runs that differ only in
/// frame count share one config.
///
/// When tenant ids exceed 16 bits, an extra `vlan` segment (VNI 2, no endpoints) is added: the
/// document validator rejects ids above 65535 whenever a `gbp` segment exists and no `vlan` one does,
/// even for tenants that are only ever identified by their own `vni` segment.
pub fn generate(p: &Params) -> Result<Workload, SynthError> {
    let err = |m: String| Err(SynthError(m));
    if p.tenants == 0 || p.endpoints == 0 {
        return err("tenants and endpoints must be at least 1".into());
    }
    if p.tenants > 0xff_ffff - VNI_BASE {
        return err(format!("at most {} tenants", 0xff_ffff - VNI_BASE));
    }
    if p.vteps == 0 || p.vteps > 4096 {
        return err("vteps must be 1–4096".into());
    }
    if !(0.0..=1.0).contains(&p.allowed)
        || !(0.0..=1.0).contains(&p.denied)
        || p.allowed + p.denied > 1.0
    {
        return err("allowed and denied are fractions summing to at most 1".into());
    }
    let t_n = p.tenants;
    let e_n = p.endpoints;
    let k = if p.spaces == 0 {
        e_n.div_ceil(50_000).clamp(1, t_n)
    } else {
        p.spaces.min(t_n)
    };

    // Endpoints: addresses counted per space, VTEPs hashed.
    let mut next_in_space = vec![0u32; k as usize];
    let mut ip = Vec::with_capacity(e_n as usize);
    let mut vtep = Vec::with_capacity(e_n as usize);
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
    for e in 0..e_n {
        let s = ((e % t_n) % k) as usize;
        let c = next_in_space[s];
        if c >= 65_534 {
            return err(format!(
                "address space s{s} is full (65534 addresses in 198.19.0.0/16): use more spaces"
            ));
        }
        next_in_space[s] += 1;
        ip.push(base + 1 + c);
        vtep.push((mix(p.seed ^ (u64::from(e) << 20)) % u64::from(p.vteps)) as u32);
    }
    let lay = Layout {
        t: t_n,
        e: e_n,
        k,
        ip,
        vtep,
    };

    let doc = document(p, &lay);
    let flows = flows(p, &lay, &doc);

    // Frames: kinds in the asked proportions (Bresenham), a random flow of that kind each.
    let mut by_kind: [Vec<u32>; 3] = Default::default();
    for (i, f) in flows.iter().enumerate() {
        by_kind[f.kind as usize].push(i as u32);
    }
    let templates: Vec<Vec<u8>> = flows.iter().map(|f| frame(p, &lay, f)).collect();
    let mut rng = Rng::new(p.seed ^ 0x00f4_a3e5);
    let mut out = Vec::with_capacity(p.frames as usize);
    let mut expect = Expect::default();
    let mut sent = vec![false; flows.len()];
    let (mut acc_a, mut acc_d) = (0.0f64, 0.0f64);
    for i in 0..p.frames {
        acc_a += p.allowed;
        acc_d += p.denied;
        let want = if acc_a >= 1.0 {
            acc_a -= 1.0;
            Kind::Allowed
        } else if acc_d >= 1.0 {
            acc_d -= 1.0;
            Kind::Denied
        } else {
            Kind::Intra
        };
        let pool = [want, Kind::Intra, Kind::Allowed, Kind::Denied]
            .into_iter()
            .map(|k| &by_kind[k as usize])
            .find(|v| !v.is_empty())
            .expect("at least one flow");
        let mut fi = pool[rng.below(pool.len() as u32) as usize] as usize;
        if let Some(r) = flows[fi].request {
            // A reply before its request has been seen: send the request first.
            if !sent[r as usize] {
                fi = r as usize;
            }
        }
        sent[fi] = true;
        match flows[fi].kind {
            Kind::Intra => expect.intra += 1,
            Kind::Allowed => expect.allowed += 1,
            Kind::Denied => expect.denied += 1,
        }
        out.push(Captured {
            ts_ns: p.start_ns + u64::from(i) * 1000,
            data: templates[fi].clone(),
        });
    }
    Ok(Workload {
        doc,
        flows,
        frames: out,
        expect,
        spaces: k,
    })
}

/// Ports of pair allow rules (none in 8000–8080, none 22 or 23, none ≥ 32768 = ephemeral).
const ALLOW_PORTS: [(u16, u16); 7] = [
    (443, 443),
    (80, 80),
    (5432, 5432),
    (6379, 6379),
    (9092, 9092),
    (1000, 1999),
    (30000, 32767),
];

fn ports_str((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn rule(from: u32, to: u32, proto: Proto, ports: (u16, u16), action: Action, prio: i32) -> Rule {
    let name = |t: u32| {
        if t == u32::MAX {
            policy::document::ANY_TENANT.to_string()
        } else {
            tenant_name(t)
        }
    };
    Rule {
        name: None,
        from: name(from).into(),
        to: name(to).into(),
        proto: Some(proto),
        ports: Some(ports_str(ports)),
        from_cidr: None,
        to_cidr: None,
        action,
        priority: prio,
        not_before: None,
        not_after: None,
        owner: None,
    }
}

const ANY: u32 = u32::MAX;

fn document(p: &Params, lay: &Layout) -> Document {
    let t_n = p.tenants;
    let mut segments = vec![Segment {
        vni: GBP_VNI,
        identity: IdentityMode::Gbp,
        tenant: None,
    }];
    if t_n > 0xffff {
        segments.push(Segment {
            vni: VLAN_VNI,
            identity: IdentityMode::Vlan,
            tenant: None,
        });
    }
    let mut tenants = Vec::with_capacity(t_n as usize);
    let spaces: Vec<policy::TenantName> = (0..lay.k).map(|s| format!("s{s}").into()).collect();
    for t in 0..t_n {
        if tenant_mode(p, t) == IdentityMode::Vni {
            segments.push(Segment {
                vni: tenant_vni(p, t),
                identity: IdentityMode::Vni,
                tenant: Some(tenant_name(t)),
            });
        }
        let vteps =
            (p.pinned_every > 0 && t % p.pinned_every == 0 && lay.eps_of(t) > 0).then(|| {
                let mut v: Vec<u32> = (0..lay.eps_of(t))
                    .map(|j| lay.vtep[lay.ep(t, j) as usize])
                    .collect();
                v.sort_unstable();
                v.dedup();
                v.into_iter().map(|i| IpAddr::V4(vtep_ip(i))).collect()
            });
        tenants.push(Tenant {
            name: tenant_name(t).into(),
            id: t + 1,
            vteps,
            address_space: (lay.k > 1).then(|| spaces[(t % lay.k) as usize].clone()),
        });
    }
    let endpoints = (0..p.endpoints)
        .map(|e| {
            let t = lay.tenant_of(e);
            Endpoint {
                tenant: tenant_name(t).into(),
                ip: IpAddr::V4(Ipv4Addr::from(lay.ip[e as usize])),
                mac: ep_mac(e),
                vtep: IpAddr::V4(vtep_ip(lay.vtep[e as usize])),
                vni: tenant_vni(p, t),
            }
        })
        .collect();
    let mut doc = Document {
        gateway: Gateway {
            underlay_ip: GATEWAY_IP,
            underlay_ip6: None,
            udp_port: vtep::VXLAN_PORT,
            mtu: 1500,
            replies: p.replies,
            max_flows: None,
            decision_cache: None,
            flow_timeouts: None,
        },
        segments: segments.into(),
        tenants: tenants.into(),
        endpoints,
        rules: rules(p, lay).into(),
    };
    // Named as loading the written config would name them, so the document round-trips.
    policy::names::name_rules(&mut doc);
    doc
}

/// The tenant whose `t → *` SSH deny is generated.
fn ssh_denied_tenant(lay: &Layout) -> u32 {
    lay.usable() / 2
}

/// Pair rule `k` (0-based) between `a` and `b`: its allow (proto, ports), and whether a deny on
/// 8000–8080 at a higher priority comes with it.
fn pair_shape(k: u32) -> (Proto, (u16, u16), bool) {
    let proto = if k % 4 == 3 { Proto::Udp } else { Proto::Tcp };
    let ports = ALLOW_PORTS[(k as usize) % ALLOW_PORTS.len()];
    (proto, ports, proto == Proto::Tcp && k.is_multiple_of(5))
}

/// The pairs of pair rules, in order, as generated from the seed (shared by `rules` and `flows`).
fn pairs(p: &Params, lay: &Layout) -> Vec<(u32, u32)> {
    let wild = wildcards(p, lay).len() as u32;
    let mut budget = p.rules.saturating_sub(wild);
    let mut rng = Rng::new(p.seed ^ 0x0009_a1e5);
    let mut seen = hashbrown::HashSet::new();
    let mut out = Vec::new();
    let mut misses = 0;
    while budget > 0 && misses < 1000 {
        let a = rng.below(lay.usable());
        let Some(b) = lay.partner(&mut rng, a) else {
            misses += 1;
            continue;
        };
        if !seen.insert((a, b)) {
            misses += 1;
            continue;
        }
        let k = out.len() as u32;
        let (_, _, deny) = pair_shape(k);
        let n = 1 + u32::from(deny) + u32::from(k % 11 == 10);
        budget = budget.saturating_sub(n);
        out.push((a, b));
    }
    out
}

fn wildcards(p: &Params, lay: &Layout) -> Vec<Rule> {
    let mut v = Vec::new();
    if p.rules >= 1 {
        // A compliance block: no telnet anywhere, above every allow.
        v.push(rule(ANY, ANY, Proto::Tcp, (23, 23), Action::Deny, 1000));
    }
    if p.rules >= 5 {
        // DNS to a service tenant in each of the first two spaces.
        for s in 0..lay.k.min(lay.usable()).min(2) {
            v.push(rule(ANY, s, Proto::Udp, (53, 53), Action::Allow, 50));
        }
        // One tenant may not start SSH anywhere.
        v.push(rule(
            ssh_denied_tenant(lay),
            ANY,
            Proto::Tcp,
            (22, 22),
            Action::Deny,
            300,
        ));
    }
    v
}

fn rules(p: &Params, lay: &Layout) -> Vec<Rule> {
    let mut out = wildcards(p, lay);
    for (k, (a, b)) in pairs(p, lay).into_iter().enumerate() {
        let k = k as u32;
        let (proto, ports, deny) = pair_shape(k);
        let mut r = rule(a, b, proto, ports, Action::Allow, 100);
        if k % 7 == 6 {
            r.from_cidr = Some("198.19.0.0/16".into());
            r.to_cidr = Some("198.19.0.0/16".into());
        }
        if k % 10 == 9 {
            r.not_before = Some("2025-01-01T00:00:00Z".into());
            r.not_after = Some("2030-01-01T00:00:00Z".into());
        }
        out.push(r);
        if deny {
            out.push(rule(a, b, Proto::Tcp, (8000, 8080), Action::Deny, 200));
        }
        if k % 11 == 10 {
            // Expired: it matches nothing, but the scan still meets it.
            let mut r = rule(a, b, Proto::Tcp, (7000, 7000), Action::Allow, 150);
            r.not_after = Some("2025-06-01T00:00:00Z".into());
            out.push(r);
        }
    }
    out.truncate(p.rules as usize);
    out
}

fn ephemeral(rng: &mut Rng) -> u16 {
    32768 + rng.below(28000) as u16
}

fn flows(p: &Params, lay: &Layout, doc: &Document) -> Vec<FlowSpec> {
    let pairs = pairs(p, lay);
    // Pair rules actually present (the rule budget may have cut the last pairs' extra rules).
    let n_wild = wildcards(p, lay).len();
    let pair_rules = doc.rules.iter().skip(n_wild);
    let mut by_pair: hashbrown::HashMap<(&str, &str), Vec<&Rule>> = hashbrown::HashMap::new();
    for r in pair_rules {
        by_pair
            .entry((r.from.as_str(), r.to.as_str()))
            .or_default()
            .push(r);
    }
    let present = |a: u32, b: u32, proto: Proto, port: u16, action: Action| {
        let (a, b) = (tenant_name(a), tenant_name(b));
        by_pair
            .get(&(a.as_str(), b.as_str()))
            .into_iter()
            .flatten()
            .any(|r| {
                r.action == action
                    && r.proto == Some(proto)
                    && r.not_after.as_deref() != Some("2025-06-01T00:00:00Z")
                    && r.ports
                        .as_deref()
                        .and_then(|s| policy::document::parse_ports(s).ok())
                        .is_some_and(|(lo, hi)| (lo..=hi).contains(&port))
            })
    };
    let mut with_rules = hashbrown::HashSet::new();
    for &(a, b) in &pairs {
        with_rules.insert((a, b));
        with_rules.insert((b, a));
    }
    let ssh = ssh_denied_tenant(lay);
    let mut rng = Rng::new(p.seed ^ 0xf10e);
    let n_allowed = (f64::from(p.flows) * p.allowed).round() as u32;
    let n_denied = (f64::from(p.flows) * p.denied).round() as u32;
    let mut out = Vec::with_capacity(p.flows as usize);
    let pick_ep = |rng: &mut Rng, t: u32| lay.ep(t, rng.below(lay.eps_of(t)));
    for i in 0..p.flows {
        let want = if i < n_allowed {
            Kind::Allowed
        } else if i < n_allowed + n_denied {
            Kind::Denied
        } else {
            Kind::Intra
        };
        let mut made = None;
        if want == Kind::Allowed && !pairs.is_empty() {
            let k = rng.below(pairs.len() as u32);
            let (a, b) = pairs[k as usize];
            let (proto, (lo, hi), _) = pair_shape(k);
            let port = lo + rng.below(u32::from(hi - lo) + 1) as u16;
            let ipproto = if proto == Proto::Tcp { 6 } else { 17 };
            if present(a, b, proto, port, Action::Allow) {
                let (sa, sb) = (pick_ep(&mut rng, a), pick_ep(&mut rng, b));
                let eph = ephemeral(&mut rng);
                let request = FlowSpec {
                    src_ep: sa,
                    dst_ep: sb,
                    proto: ipproto,
                    src_port: eph,
                    dst_port: port,
                    kind: Kind::Allowed,
                    request: None,
                };
                made = Some(if i % 4 == 3 {
                    // A reply: admitted as the reply of its tracked request (or, stateless, by
                    // the mirrored match on the source port). Its request is a flow too.
                    out.push(request);
                    FlowSpec {
                        src_ep: sb,
                        dst_ep: sa,
                        proto: ipproto,
                        src_port: port,
                        dst_port: eph,
                        kind: Kind::Allowed,
                        request: Some(out.len() as u32 - 1),
                    }
                } else {
                    request
                });
            }
        }
        if want == Kind::Denied {
            let a = rng.below(lay.usable());
            if let Some(b) = lay.partner(&mut rng, a) {
                let (sa, sb) = (pick_ep(&mut rng, a), pick_ep(&mut rng, b));
                let eph = ephemeral(&mut rng);
                // Default deny when the pair has no rules; else the pair's 8000–8080 deny if it has
                // one; else telnet (the `* → *` block) when it exists.
                let port = if !with_rules.contains(&(a, b)) && (a != ssh) {
                    Some(5432 + (i % 3) as u16)
                } else if present(a, b, Proto::Tcp, 8080, Action::Deny) {
                    Some(8000 + (i % 81) as u16)
                } else if p.rules >= 1 {
                    Some(23)
                } else {
                    None
                };
                if let Some(port) = port {
                    made = Some(FlowSpec {
                        src_ep: sa,
                        dst_ep: sb,
                        proto: 6,
                        src_port: eph,
                        dst_port: port,
                        kind: Kind::Denied,
                        request: None,
                    });
                }
            }
        }
        let f = match made {
            Some(f) => f,
            None => {
                let t = rng.below(lay.usable());
                let n = lay.eps_of(t);
                let j1 = rng.below(n);
                let j2 = if n > 1 {
                    (j1 + 1 + rng.below(n - 1)) % n
                } else {
                    j1
                };
                let udp = rng.below(4) == 0;
                let dst_port = if udp {
                    [53, 123, 514][rng.below(3) as usize]
                } else {
                    [80, 443, 8080, 3306][rng.below(4) as usize]
                };
                FlowSpec {
                    src_ep: lay.ep(t, j1),
                    dst_ep: lay.ep(t, j2),
                    proto: if udp { 17 } else { 6 },
                    src_port: ephemeral(&mut rng),
                    dst_port,
                    kind: Kind::Intra,
                    request: None,
                }
            }
        };
        out.push(f);
    }
    out
}

/// The frame of one flow as a VTEP sends it to the gateway.
fn frame(p: &Params, lay: &Layout, f: &FlowSpec) -> Vec<u8> {
    let tcp = f.proto == 6;
    let min = 14 + 20 + if tcp { 20 } else { 8 };
    let inner_len = p.inner_size.max(min);
    let mut buf = vec![0u8; OUTER_LEN_V4 + inner_len];
    let src = Ipv4Addr::from(lay.ip[f.src_ep as usize]);
    let dst = Ipv4Addr::from(lay.ip[f.dst_ep as usize]);
    {
        let inner = &mut buf[OUTER_LEN_V4..];
        inner[0..6].copy_from_slice(&ep_mac(f.dst_ep).0);
        inner[6..12].copy_from_slice(&ep_mac(f.src_ep).0);
        inner[12..14].copy_from_slice(&vtep::ethertype::IPV4.to_be_bytes());
        Ipv4Packet::emit(
            &mut inner[14..34],
            src.octets(),
            dst.octets(),
            f.proto,
            64,
            (inner_len - 14) as u16,
        );
        let l4 = &mut inner[34..];
        let l4_len = l4.len();
        if tcp {
            l4[0..2].copy_from_slice(&f.src_port.to_be_bytes());
            l4[2..4].copy_from_slice(&f.dst_port.to_be_bytes());
            l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
            l4[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
            l4[12] = 5 << 4; // data offset
            l4[13] = 0x18; // PSH|ACK
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            let mut acc = vtep::checksum::sum(0, &src.octets());
            acc = vtep::checksum::sum(acc, &dst.octets());
            acc = acc.wrapping_add(l4_len as u32 + 6);
            acc = vtep::checksum::sum(acc, l4);
            let c = vtep::checksum::finish(acc);
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        } else {
            UdpPacket::emit(&mut l4[0..8], f.src_port, f.dst_port, l4_len as u16);
            let c = vtep::checksum::udp_ipv4(&src.octets(), &dst.octets(), l4);
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
    }
    let t = lay.tenant_of(f.src_ep);
    let v = lay.vtep[f.src_ep as usize];
    let flow = vtep::Flow {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        proto: f.proto,
        src_port: f.src_port,
        dst_port: f.dst_port,
    };
    let u = Underlay {
        src_mac: vtep_mac(v),
        dst_mac: GATEWAY_MAC,
        src_ip: IpAddr::V4(vtep_ip(v)),
        dst_ip: IpAddr::V4(GATEWAY_IP),
        src_port: flow.entropy_port(),
        dst_port: vtep::VXLAN_PORT,
        vni: tenant_vni(p, t),
        group: (tenant_mode(p, t) == IdentityMode::Gbp).then_some((t + 1) as u16),
        ttl: 64,
    };
    let start = encapsulate(&mut buf, OUTER_LEN_V4, inner_len, &u).expect("room for outer headers");
    debug_assert_eq!(start, 0);
    // A sending VTEP does not set GBP's "policy applied" bit; the gateway does.
    buf[14 + 20 + 8 + 1] = 0;
    buf
}

/// The document as TOML, in the config file's shape (`[gateway]`, then `[[segment]]`, `[[tenant]]`,
/// `[[endpoint]]`, `[[rule]]`). Each table goes through its serde form, so fields added to the model
/// come out too; nested objects become inline tables.
pub fn to_toml(doc: &Document) -> String {
    let mut out = String::with_capacity(
        256 + 64 * (doc.tenants.len() + doc.segments.len())
            + 128 * (doc.endpoints.len() + doc.rules.len()),
    );
    emit_table(&mut out, "[gateway]", &doc.gateway);
    fn section<T: Serialize>(out: &mut String, name: &str, items: &policy::section::Section<T>) {
        let header = format!("[[{name}]]");
        for it in items {
            out.push('\n');
            emit_table(out, &header, it);
        }
    }
    section(&mut out, "segment", &doc.segments);
    section(&mut out, "tenant", &doc.tenants);
    section(&mut out, "endpoint", &doc.endpoints);
    section(&mut out, "rule", &doc.rules);
    out
}

fn emit_table<T: Serialize>(out: &mut String, header: &str, v: &T) {
    let v = serde_json::to_value(v).expect("policy types serialize");
    out.push_str(header);
    out.push('\n');
    let serde_json::Value::Object(m) = v else {
        panic!("{header} is not a table")
    };
    for (k, v) in &m {
        if v.is_null() {
            continue;
        }
        emit_key(out, k);
        out.push_str(" = ");
        emit_value(out, v);
        out.push('\n');
    }
}

fn emit_key(out: &mut String, k: &str) {
    if !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        out.push_str(k);
    } else {
        emit_str(out, k);
    }
}

fn emit_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn emit_value(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("\"\""),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => emit_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit_value(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("{ ");
            let mut first = true;
            for (k, x) in m {
                if x.is_null() {
                    continue;
                }
                if !first {
                    out.push_str(", ");
                }
                first = false;
                emit_key(out, k);
                out.push_str(" = ");
                emit_value(out, x);
            }
            out.push_str(" }");
        }
    }
}

/// Writes `DIR/synth.toml` and `DIR/synth.pcap` (creating DIR) and returns their paths.
pub fn write(dir: &Path, w: &Workload) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("synth.toml");
    let pcap = dir.join("synth.pcap");
    let header = format!(
        "# joypath synth: {} tenants, {} endpoints, {} rules, {} flows, {} frames ({} address spaces)\n\
         # expected: {} intra + {} cross-tenant allowed forwarded, {} policy_denied\n\n",
        w.doc.tenants.len(),
        w.doc.endpoints.len(),
        w.doc.rules.len(),
        w.flows.len(),
        w.frames.len(),
        w.spaces,
        w.expect.intra,
        w.expect.allowed,
        w.expect.denied
    );
    std::fs::write(&config, header + &to_toml(&w.doc))?;
    write_pcap(&pcap, w.frames.iter().map(|f| (f.ts_ns, f.data.as_slice())))?;
    Ok((config, pcap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::counters::DropReason;
    use std::sync::Arc;

    fn run(p: &Params) -> (Workload, driver::replay::ReplayOutput) {
        let w = generate(p).unwrap();
        let table = policy::Table::compile(Arc::new(w.doc.clone()), 1, None).unwrap();
        let out = driver::replay::replay(&table, &w.frames);
        (w, out)
    }

    #[test]
    fn replay_meets_expectations() {
        for p in [
            Params::default(),
            Params {
                tenants: 300,
                endpoints: 3000,
                rules: 400,
                flows: 500,
                frames: 5000,
                spaces: 3,
                ..Params::default()
            },
            Params {
                tenants: 1,
                endpoints: 1,
                rules: 0,
                flows: 3,
                frames: 10,
                ..Params::default()
            },
            Params {
                tenants: 70_000,
                endpoints: 70_000,
                rules: 1000,
                flows: 300,
                frames: 2000,
                inner_size: 128,
                ..Params::default()
            },
        ] {
            let (w, out) = run(&p);
            let c = &out.worker.counters;
            assert_eq!(c.frames, u64::from(p.frames));
            assert_eq!(
                c.forwarded,
                w.expect.intra + w.expect.allowed,
                "{p:?} {c:?}"
            );
            assert_eq!(
                c.dropped[DropReason::PolicyDenied as usize],
                w.expect.denied
            );
            assert_eq!(c.total_dropped(), w.expect.denied, "{c:?}");
            if p.tenants > 1 {
                assert!(
                    w.expect.allowed > 0 && w.expect.denied > 0,
                    "{:?}",
                    w.expect
                );
            }
        }
    }

    #[test]
    fn counts_and_mix() {
        let p = Params {
            tenants: 1000,
            endpoints: 10_000,
            rules: 1000,
            flows: 1000,
            frames: 10_000,
            ..Params::default()
        };
        let w = generate(&p).unwrap();
        assert_eq!(w.doc.tenants.len(), 1000);
        assert_eq!(w.doc.endpoints.len(), 10_000);
        assert_eq!(w.doc.rules.len(), 1000);
        assert_eq!(w.frames.len(), 10_000);
        assert_eq!(w.expect.allowed, 5000);
        assert!(w.expect.denied.abs_diff(1000) <= 1, "{:?}", w.expect);
        assert!(w.frames.iter().all(|f| f.data.len() == 50 + 64));
        let vni = w
            .doc
            .segments
            .iter()
            .filter(|s| s.identity == IdentityMode::Vni)
            .count();
        assert_eq!(vni, 100);
        // Deterministic, and the document does not depend on the frame count.
        let again = generate(&Params {
            frames: 1,
            ..p.clone()
        })
        .unwrap();
        assert_eq!(again.doc, w.doc);
        assert_eq!(again.frames[0], w.frames[0]);
    }

    #[test]
    fn toml_round_trips() {
        let w = generate(&Params {
            tenants: 50,
            endpoints: 200,
            rules: 60,
            spaces: 2,
            ..Params::default()
        })
        .unwrap();
        let text = to_toml(&w.doc);
        let back = Document::from_toml(&text, "synth.toml").unwrap();
        assert_eq!(back, w.doc);
        // Every top-level key of the document's serde form is a section `to_toml` writes.
        let v = serde_json::to_value(&w.doc).unwrap();
        for k in v.as_object().unwrap().keys() {
            assert!(
                ["gateway", "segment", "tenant", "endpoint", "rule"].contains(&k.as_str()),
                "to_toml does not write {k:?}"
            );
        }
        let mut s = String::new();
        emit_str(&mut s, "a\"b\\c\u{1}\u{7f}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\u0001\\u007Fé\"");
    }

    #[test]
    fn addresses_stay_in_the_benchmark_range() {
        let w = generate(&Params::default()).unwrap();
        let bench = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18,
            _ => false,
        };
        for e in &w.doc.endpoints {
            assert!(bench(&e.ip) && bench(&e.vtep));
            assert_eq!(e.ip.to_string().split('.').nth(1), Some("19"));
        }
        for f in &w.frames {
            let ov = vtep::parse_overlay(&f.data, 4789).unwrap();
            assert!(bench(&ov.src_ip) && bench(&ov.dst_ip));
        }
    }
}
