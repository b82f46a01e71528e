//! The policy document as users write it — the TOML config of DESIGN.md, or the same keys in JSON —
//! and its validation, which names every problem with its path and, for files, its line.

use crate::error::{ConfigError, Issue};
pub use crate::section::Section;
use crate::section::{TenantName, VtepList};
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use vtep::Mac;

/// A whole policy: the gateway's own settings, segments, tenants, endpoints and rules. Its lists are
/// [`Section`]s: a cloned document shares them until it changes one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub gateway: Gateway,
    #[serde(default, rename = "segment", skip_serializing_if = "Section::is_empty")]
    pub segments: Section<Segment>,
    #[serde(default, rename = "tenant", skip_serializing_if = "Section::is_empty")]
    pub tenants: Section<Tenant>,
    #[serde(
        default,
        rename = "endpoint",
        skip_serializing_if = "Section::is_empty"
    )]
    pub endpoints: Section<Endpoint>,
    #[serde(default, rename = "rule", skip_serializing_if = "Section::is_empty")]
    pub rules: Section<Rule>,
}

fn default_udp_port() -> u16 {
    vtep::VXLAN_PORT
}
/// The largest `[gateway] decision_cache`: 4 194 304 entries (about 400 MB a worker).
pub const MAX_DECISION_CACHE: u32 = 1 << 22;

fn default_mtu() -> u16 {
    1500
}

/// `[gateway]`: the gateway's underlay identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Source of re-encapsulated frames over the IPv4 underlay.
    pub underlay_ip: Ipv4Addr,
    /// Source of re-encapsulated frames over the IPv6 underlay (needed for IPv6 VTEPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip6: Option<Ipv6Addr>,
    #[serde(default = "default_udp_port")]
    pub udp_port: u16,
    /// Underlay MTU: the largest outer IP packet the gateway sends.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// How replies of allowed flows are admitted: `tracked` (default) or `stateless`.
    #[serde(default, skip_serializing_if = "Replies::is_default")]
    pub replies: Replies,
    /// Most flows tracked at once (default 262144); more are refused and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// Entries of each worker's decision cache (default 131072, about 96 bytes each; 0: none, every
    /// frame takes the full path and counts as a miss). Rounded up to a power of two; read when the
    /// gateway starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_cache: Option<u32>,
    /// Idle timeouts of tracked flows, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_timeouts: Option<FlowTimeouts>,
}

/// `[gateway.flow_timeouts]`: idle timeouts of tracked flows in seconds; absent keys keep defaults
/// (tcp 3600, tcp_opening 30, tcp_closing 10, udp 120, icmp 30, other 120).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_opening: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_closing: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<u32>,
}

/// `[gateway] replies`: how an allow from A to B admits B's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replies {
    /// Only replies of flows A started and this gateway saw (the flow table).
    #[default]
    Tracked,
    /// The mirrored match of each allow rule (from B to A, source port in the rule's ports), for
    /// deployments whose two directions do not cross the same gateway. Admits far more than replies.
    Stateless,
}

impl Replies {
    pub fn is_default(&self) -> bool {
        *self == Replies::Tracked
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Replies::Tracked => "tracked",
            Replies::Stateless => "stateless",
        }
    }
}

/// How a segment says which tenant a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// The whole VNI is one tenant (the legacy per-tenant model).
    Vni,
    /// The VXLAN-GBP group policy id is the tenant id.
    Gbp,
    /// The inner 802.1Q VLAN id is the tenant id.
    Vlan,
}

impl IdentityMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentityMode::Vni => "vni",
            IdentityMode::Gbp => "gbp",
            IdentityMode::Vlan => "vlan",
        }
    }
}

/// `[[segment]]`: an ingress VNI and how identity is read on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub vni: u32,
    pub identity: IdentityMode,
    /// The tenant of a `vni` segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `[[tenant]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Shared with the table's tenant entry and with copies of the list (no string is copied).
    pub name: TenantName,
    /// GBP group id (≤ 65535) / VLAN id (1–4094) on shared segments; unique.
    pub id: u32,
    /// VTEPs allowed to send on the tenant's behalf; omitted = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vteps: Option<VtepList>,
    /// Tenants with overlapping inner addresses use different spaces. Default "default".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space: Option<TenantName>,
}

impl Tenant {
    pub fn space(&self) -> &str {
        self.address_space.as_deref().unwrap_or("default")
    }
}

/// `[[endpoint]]`: (tenant, inner IP) → VTEP, inner MAC, egress VNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub tenant: TenantName,
    pub ip: IpAddr,
    #[serde(with = "mac_str")]
    pub mac: Mac,
    pub vtep: IpAddr,
    pub vni: u32,
}

/// Inner protocols a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
    Any,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Any => "any",
        }
    }
    /// Whether an IP protocol number is this protocol.
    #[inline]
    pub fn matches(&self, ipproto: u8) -> bool {
        match self {
            Proto::Tcp => ipproto == vtep::ipproto::TCP,
            Proto::Udp => ipproto == vtep::ipproto::UDP,
            Proto::Icmp => ipproto == vtep::ipproto::ICMP || ipproto == vtep::ipproto::ICMPV6,
            Proto::Any => true,
        }
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// `[[rule]]`: from tenant (or `*`) to tenant (or `*`), optional match fields, action, priority, window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique among the rules; generated from what the rule matches when absent
    /// ([`crate::names::name_rules`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub from: TenantName,
    pub to: TenantName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Destination ports: "443" or "8000-8080" (tcp and udp only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// Inner source address must be in this CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<String>,
    /// Inner destination address must be in this CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<String>,
    pub action: Action,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The tenant whose administrator wrote the rule over the management socket (always its
    /// `from`; the gateway sets it on such edits). Absent: the operator's rule. A tenant
    /// administrator may lift (remove or replace) a deny it owns whatever its `to`; the operator's
    /// denies into other tenants are not its to lift. Like `name`, it does not change what the rule
    /// does, nor the policy's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<TenantName>,
}

/// The wildcard tenant of rules.
pub const ANY_TENANT: &str = "*";

// What a document's items take in place, budgeted: at a million each, every 8 bytes more is 8 MB
// more for `joypath replay` to hold (README, "peak memory, replaying 1M tenants": ≤ 1 GiB). Tenant
// names are shared strings (`TenantName`), one per tenant however often named.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<Segment>() <= 32);
    assert!(std::mem::size_of::<Tenant>() <= 56);
    assert!(std::mem::size_of::<Endpoint>() <= 64);
    assert!(std::mem::size_of::<Rule>() <= 200);
};

mod mac_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use vtep::Mac;
    pub fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: &str| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// A CIDR prefix, e.g. `198.19.0.0/24` or `2001:2:0:1::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0–{max}"))?,
            None => max,
        };
        let c = Cidr { addr, len };
        if c.network() != addr {
            return Err(format!(
                "{s:?}: host bits set (did you mean {}/{len}?)",
                c.network()
            ));
        }
        Ok(c)
    }
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
            }
        }
    }
    #[inline]
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(*a) & m == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(*a) & m == u128::from(n)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a port range: "443" or "8000-8080".
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let p = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: ports are \"443\" or \"8000-8080\" with numbers 0–65535"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (p(a)?, p(b)?),
        None => {
            let v = p(s)?;
            (v, v)
        }
    };
    if lo > hi {
        return Err(format!("{s:?}: range start above its end"));
    }
    Ok((lo, hi))
}

impl Document {
    /// Reads and validates a TOML config file.
    ///
    /// The file is first read line by line by the fast path ([`crate::fastload`]), which never holds
    /// the whole text; when that path declines (syntax it does not handle, any error) or the document
    /// is invalid, the text is read whole and goes through [`Document::from_toml`], whose errors name
    /// lines and columns.
    pub fn load(path: &Path) -> Result<Document, ConfigError> {
        let file = path.display().to_string();
        if let Ok(f) = std::fs::File::open(path) {
            let r = std::io::BufReader::with_capacity(1 << 20, f);
            if let Some(mut doc) = crate::fastload::parse_reader(r) {
                crate::names::name_rules(&mut doc);
                if doc.validate().is_empty() {
                    return Ok(doc);
                }
            }
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Document, ConfigError> {
        let mut doc = match crate::fastload::parse(text) {
            Some(doc) => doc,
            None => Self::parse_toml(text, file)?,
        };
        crate::names::name_rules(&mut doc);
        let mut issues = doc.validate();
        if issues.is_empty() {
            return Ok(doc);
        }
        for i in &mut issues {
            i.line = locate(text, &i.path);
        }
        Err(ConfigError::Invalid {
            file: file.to_string(),
            issues,
        })
    }

    /// The full TOML parse (the `toml` crate and serde): all of TOML, errors with line and column.
    fn parse_toml(text: &str, file: &str) -> Result<Document, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                file: file.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Parses and validates a JSON document (the management socket's form).
    pub fn from_json(text: &str) -> Result<Document, ConfigError> {
        let mut doc: Document = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            file: "<json>".into(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        crate::names::name_rules(&mut doc);
        doc.check()?;
        Ok(doc)
    }

    /// Validates, as an error naming every problem.
    pub fn check(&self) -> Result<(), ConfigError> {
        let issues = self.validate();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: "<document>".into(),
                issues,
            })
        }
    }

    /// Every problem in the document, in document order. Empty means valid.
    pub fn validate(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        let mut err = |path: String, message: String| {
            out.push(Issue {
                path,
                line: None,
                message,
            })
        };
        let g = &self.gateway;
        if g.udp_port == 0 {
            err("gateway.udp_port".into(), "must not be 0".into());
        }
        if let Some(n) = g.decision_cache.filter(|&n| n > MAX_DECISION_CACHE) {
            err(
                "gateway.decision_cache".into(),
                format!("{n} is over {MAX_DECISION_CACHE} entries"),
            );
        }
        if !(576..=9216).contains(&g.mtu) {
            err(
                "gateway.mtu".into(),
                format!("{} is outside 576–9216", g.mtu),
            );
        }

        // Lookups by tenant name key short names inline (no pointer to follow when comparing) and
        // map to the tenant's index; what the checks need of a tenant (address space, id) sits in a
        // dense side table. At a million entries, every pointer followed is a cache miss.
        let mut tenants: HashMap<NameKey, u32> = HashMap::with_capacity(self.tenants.len());
        let mut tinfo: Vec<(u32, u32)> = Vec::with_capacity(self.tenants.len());
        // Each tenant's `vteps` list (by index), which its endpoints must sit behind.
        let mut tvteps: Vec<Option<&[IpAddr]>> = Vec::with_capacity(self.tenants.len());
        let mut spaces: HashMap<&str, u32> = HashMap::new();
        let mut ids: HashMap<u32, u32> = HashMap::with_capacity(self.tenants.len());
        for (i, t) in self.tenants.iter().enumerate() {
            let p = |f: &str| format!("tenant[{i}].{f}");
            if t.name.is_empty() || t.name == ANY_TENANT || t.name.chars().any(|c| c.is_control()) {
                err(
                    p("name"),
                    format!("{:?} is not a usable tenant name", t.name),
                );
            }
            let n = spaces.len() as u32;
            let space = *spaces.entry(t.space()).or_insert(n);
            tinfo.push((space, t.id));
            tvteps.push(t.vteps.as_deref());
            if tenants.insert(NameKey::of(&t.name), i as u32).is_some() {
                err(p("name"), format!("tenant {:?} is defined twice", t.name));
            }
            if t.id == 0 {
                err(p("id"), "0 is reserved (GBP's unknown group)".into());
            } else if let Some(other) = ids.insert(t.id, i as u32) {
                err(
                    p("id"),
                    format!(
                        "id {} is already tenant {:?}'s",
                        t.id, self.tenants[other as usize].name
                    ),
                );
            }
            if let Some(v) = &t.vteps {
                // Lists are short: a pairwise look below a handful, a set above.
                let mut seen = HashSet::new();
                for (j, ip) in v.iter().enumerate() {
                    let twice = if v.len() <= 16 {
                        v[..j].contains(ip)
                    } else {
                        !seen.insert(ip)
                    };
                    if twice {
                        err(
                            format!("tenant[{i}].vteps[{j}]"),
                            format!("{ip} is listed twice"),
                        );
                    }
                }
            }
        }
        let tenant_idx = |n: &str| tenants.get(&NameKey::of(n)).map(|&i| i as usize);

        // VNI → (segment index, identity, index of its tenant if that names a tenant).
        let mut segs: HashMap<u32, (u32, IdentityMode, u32)> =
            HashMap::with_capacity(self.segments.len());
        for (i, s) in self.segments.iter().enumerate() {
            let p = |f: &str| format!("segment[{i}].{f}");
            if s.vni > 0x00ff_ffff {
                err(p("vni"), format!("{} does not fit in 24 bits", s.vni));
            }
            let st = s.tenant.as_deref().and_then(tenant_idx);
            let entry = (i as u32, s.identity, st.map_or(u32::MAX, |t| t as u32));
            if segs.insert(s.vni, entry).is_some() {
                err(p("vni"), format!("VNI {} is on two segments", s.vni));
            }
            match (s.identity, &s.tenant) {
                (IdentityMode::Vni, None) => {
                    err(p("tenant"), "a segment with identity \"vni\" needs a tenant".into())
                }
                (IdentityMode::Vni, Some(t)) if st.is_none() => {
                    err(p("tenant"), format!("unknown tenant {t:?}"))
                }
                (IdentityMode::Gbp | IdentityMode::Vlan, Some(_)) => err(
                    p("tenant"),
                    format!(
                        "a segment with identity {:?} reads the tenant from each frame; remove tenant",
                        s.identity.as_str()
                    ),
                ),
                _ => {}
            }
        }
        let mut eps: HashSet<(u32, IpAddr)> = HashSet::with_capacity(self.endpoints.len());
        for (i, e) in self.endpoints.iter().enumerate() {
            let p = |f: &str| format!("endpoint[{i}].{f}");
            let tenant = tenant_idx(&e.tenant);
            match tenant {
                None => err(p("tenant"), format!("unknown tenant {:?}", e.tenant)),
                Some(t) => {
                    if !eps.insert((tinfo[t].0, e.ip)) {
                        err(
                            p("ip"),
                            format!(
                                "{} is already an endpoint in address space {:?}",
                                e.ip,
                                self.tenants[t].space()
                            ),
                        );
                    }
                }
            }
            if e.mac.is_group() {
                err(
                    p("mac"),
                    format!("{} is a group (multicast) address", e.mac),
                );
            }
            let id = |t: usize| tinfo[t].1;
            match segs.get(&e.vni) {
                None => err(
                    p("vni"),
                    format!("VNI {} is not a configured segment", e.vni),
                ),
                Some(&(si, mode, st)) => match mode {
                    IdentityMode::Vni => {
                        // Same tenant: by index when both name tenants, else by name.
                        let s = &self.segments[si as usize];
                        let same = match tenant {
                            Some(t) if st != u32::MAX => st as usize == t,
                            _ => s.tenant.as_deref() == Some(e.tenant.as_str()),
                        };
                        if !same {
                            err(
                                p("vni"),
                                format!(
                                    "VNI {} is tenant {:?}'s segment, not {:?}'s",
                                    e.vni,
                                    s.tenant.as_deref().unwrap_or(""),
                                    e.tenant
                                ),
                            )
                        }
                    }
                    IdentityMode::Gbp => {
                        if let Some(t) = tenant.filter(|&t| id(t) > GBP_MAX_ID) {
                            err(
                                p("vni"),
                                format!(
                                    "tenant {:?} (id {}) does not fit the 16-bit group id of GBP segment {}",
                                    e.tenant,
                                    id(t),
                                    e.vni
                                ),
                            );
                        }
                    }
                    IdentityMode::Vlan => {
                        if let Some(t) = tenant.filter(|&t| !(1..=4094).contains(&id(t))) {
                            err(
                                p("vni"),
                                format!(
                                    "tenant {:?} (id {}) is not a VLAN id (1–4094) for VLAN segment {}",
                                    e.tenant,
                                    id(t),
                                    e.vni
                                ),
                            );
                        }
                    }
                },
            }
            match e.vtep {
                IpAddr::V6(_) if g.underlay_ip6.is_none() => {
                    err(p("vtep"), "an IPv6 VTEP needs gateway.underlay_ip6".into())
                }
                ip if ip.is_unspecified() || ip.is_multicast() => {
                    err(p("vtep"), format!("{ip} is not a unicast VTEP address"))
                }
                _ => {}
            }
            // Behind one of its tenant's VTEPs, when the tenant lists them.
            if let Some(t) = tenant {
                let listed = tvteps[t];
                if endpoint_vtep_refused(e, &|ip| vtep_listed(listed, ip)) {
                    let issue = endpoint_vtep_issue(i, e, listed.unwrap_or_default());
                    err(issue.path, issue.message);
                }
            }
        }

        let mut names: HashSet<&str> = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            for issue in validate_rule(i, r, &|t| tenant_idx(t).is_some()) {
                err(issue.path, issue.message);
            }
            if let Some(n) = &r.name {
                if !names.insert(n.as_str()) {
                    err(
                        format!("rule[{i}].name"),
                        format!("rule name {n:?} is used twice"),
                    );
                }
            }
        }

        // Identity on the way out is never truncated (`identity_width_conflict`, which the in-place
        // rule check of a table shares).
        if self.tenants.iter().any(|t| t.id > GBP_MAX_ID) {
            // Each tenant's first endpoint on a GBP segment, and the first one of any tenant, in
            // document order (as `identity_width_parties` finds them).
            let mut gbp_seg: HashMap<&str, u32> = HashMap::new();
            let mut first_gbp = None;
            for e in &self.endpoints {
                if let Some((_, IdentityMode::Gbp, _)) = segs.get(&e.vni) {
                    gbp_seg.entry(e.tenant.as_str()).or_insert(e.vni);
                    first_gbp.get_or_insert((e.tenant.as_str(), e.vni));
                }
            }
            let wide = |n: &str| {
                tenant_idx(n)
                    .filter(|&t| tinfo[t].1 > GBP_MAX_ID)
                    .map(|t| (self.tenants[t].name.as_str(), tinfo[t].1))
            };
            let first_wide = self
                .tenants
                .iter()
                .find(|t| t.id > GBP_MAX_ID)
                .map(|t| (t.name.as_str(), t.id));
            let on_gbp = |n: &str| gbp_seg.get_key_value(n).map(|(&t, &v)| (t, v));
            for (i, r) in self.rules.iter().enumerate() {
                let conflict = identity_width_conflict(
                    r,
                    &|t| t.map_or(first_wide.is_some(), |n| wide(n).is_some()),
                    &|t| t.map_or(first_gbp.is_some(), |n| on_gbp(n).is_some()),
                );
                if let Some((a, b)) = conflict {
                    let sender = a.map_or(first_wide, wide);
                    let target = b.map_or(first_gbp, on_gbp);
                    if let (Some(s), Some(t)) = (sender, target) {
                        let issue = identity_width_issue(i, s, t);
                        err(issue.path, issue.message);
                    }
                }
            }
        }
        out
    }
}

/// Whether `vtep` is in a tenant's `vteps` list, or the tenant has none (any VTEP may send for it).
pub fn vtep_listed(vteps: Option<&[IpAddr]>, vtep: IpAddr) -> bool {
    vteps.is_none_or(|v| v.contains(&vtep))
}

/// The VTEP rule, for one endpoint: a tenant's `vteps` list names the only VTEPs allowed to send for
/// it (anti-spoofing), so each of its endpoints must sit behind one of them. An endpoint behind
/// another VTEP could never send (its frames are dropped as `spoofed_identity`), and frames to it
/// would go to an underlay host the tenant was never given.
///
/// `may_send(vtep)`: whether `vtep` may send for the endpoint's tenant (it is in the tenant's list,
/// or the tenant has none). [`Document::validate`] answers from the tenant's list
/// ([`vtep_listed`]); an endpoint added or changed in place ([`crate::Table::with_endpoint_change`])
/// from the table's anti-spoofing map, as the datapath asks it; a tenant whose list changes in place
/// (`Table::with_tenant_edit`) from its new list, for each of its endpoints. The in-place paths
/// decline what this refuses, and the whole compile then names it with [`endpoint_vtep_issue`]:
/// every path refuses the same endpoints, with the same words.
pub fn endpoint_vtep_refused(e: &Endpoint, may_send: &dyn Fn(IpAddr) -> bool) -> bool {
    !may_send(e.vtep)
}

/// The issue of endpoint `i`, refused by [`endpoint_vtep_refused`]: its VTEP is not in `vteps`, its
/// tenant's list.
pub fn endpoint_vtep_issue(i: usize, e: &Endpoint, vteps: &[IpAddr]) -> Issue {
    const SHOWN: usize = 8;
    let mut list = (vteps.iter().take(SHOWN))
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if vteps.len() > SHOWN {
        list.push_str(&format!(", … ({} in all)", vteps.len()));
    }
    Issue {
        path: format!("endpoint[{i}].vtep"),
        line: None,
        message: format!(
            "endpoint {} of tenant {:?} is behind VTEP {}, which is not in the tenant's vteps [{list}]: \
             it could never send, and frames to it would go to a VTEP the tenant was not given",
            e.ip, e.tenant, e.vtep
        ),
    }
}

/// A tenant name as a hash key: names of up to 22 bytes inline (comparing them follows no pointer).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum NameKey<'a> {
    Short(u8, [u8; 22]),
    Long(&'a str),
}

impl<'a> NameKey<'a> {
    #[inline]
    fn of(s: &'a str) -> NameKey<'a> {
        let b = s.as_bytes();
        if b.len() <= 22 {
            let mut a = [0u8; 22];
            a[..b.len()].copy_from_slice(b);
            NameKey::Short(b.len() as u8, a)
        } else {
            NameKey::Long(s)
        }
    }
}

/// The widest tenant id a GBP segment's group id holds.
pub const GBP_MAX_ID: u32 = 0xffff;

/// The identity-width rule, for one rule: identity on the way out is never truncated. On a GBP
/// segment the source tenant's id is written in 16 bits, so an `allow` rule must not let a tenant
/// whose id is wider send to a tenant with an endpoint on a GBP segment — in either direction, as
/// replies flow back (a wide tenant's own endpoint on one is refused with the endpoint). `*` stands
/// for every tenant.
///
/// `wide(Some(t))`: whether tenant `t`'s id is wider than 16 bits; `wide(None)`: whether any
/// tenant's is. `on_gbp(Some(t))`: whether tenant `t` has an endpoint on a GBP segment;
/// `on_gbp(None)`: whether any tenant has. `on_gbp` is asked only once a wide sender is found.
///
/// [`Document::validate`] and [`crate::Table::check_rule`] (a rule changed in place) both decide
/// with this, over the document or over the table: the two cannot disagree. Returns the (sender,
/// target) pair refused, each a tenant name or `None` for `*`.
pub fn identity_width_conflict<'r>(
    r: &'r Rule,
    wide: &dyn Fn(Option<&str>) -> bool,
    on_gbp: &dyn Fn(Option<&str>) -> bool,
) -> Option<(Option<&'r str>, Option<&'r str>)> {
    if r.action != Action::Allow {
        return None;
    }
    let tenant = |t: &'r TenantName| (*t != ANY_TENANT).then_some(t.as_str());
    [(&r.from, &r.to), (&r.to, &r.from)]
        .into_iter()
        .map(|(a, b)| (tenant(a), tenant(b)))
        .find(|&(a, b)| wide(a) && on_gbp(b))
}

/// A party [`identity_width_conflict`] refused, as an issue names it: a tenant's name, with its id
/// (the sender) or the VNI of the GBP segment its endpoints are on (the target).
pub type WidthParty<'a> = (&'a str, u32);

/// The issue of rule `i` refused by [`identity_width_conflict`]: `sender` could send to `target`'s
/// endpoints.
pub fn identity_width_issue(i: usize, sender: WidthParty<'_>, target: WidthParty<'_>) -> Issue {
    Issue {
        path: format!("rule[{i}]"),
        line: None,
        message: format!(
            "tenant {:?} (id {}) could send to tenant {:?}'s endpoints on GBP segment {}, whose group id holds 16 bits",
            sender.0, sender.1, target.0, target.1
        ),
    }
}

impl Document {
    /// The parties [`identity_width_conflict`] refused, named as [`Document::validate`] names them:
    /// the tenant `sender` (for `None`, the first tenant wider than 16 bits) with its id, and the
    /// first endpoint of `target` (for `None`, of any tenant) on a segment `is_gbp` says is GBP,
    /// with its VNI, in document order. One pass over the tenants and the endpoints: for the error
    /// path of a rule checked in place.
    pub fn identity_width_parties(
        &self,
        sender: Option<&str>,
        target: Option<&str>,
        is_gbp: &dyn Fn(u32) -> bool,
    ) -> Option<(WidthParty<'_>, WidthParty<'_>)> {
        let s = self
            .tenants
            .iter()
            .find(|t| t.id > GBP_MAX_ID && sender.is_none_or(|n| t.name.as_str() == n))?;
        let e = self
            .endpoints
            .iter()
            .find(|e| target.is_none_or(|n| e.tenant.as_str() == n) && is_gbp(e.vni))?;
        Some(((s.name.as_str(), s.id), (e.tenant.as_str(), e.vni)))
    }
}

/// The problems of rule `i` on its own, given which tenant names exist.
pub fn validate_rule(i: usize, r: &Rule, tenant_exists: &dyn Fn(&str) -> bool) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut err = |path: String, message: String| {
        out.push(Issue {
            path,
            line: None,
            message,
        })
    };
    let p = |f: &str| format!("rule[{i}].{f}");
    if let Some(problem) = r.name.as_deref().and_then(crate::names::name_problem) {
        err(p("name"), problem);
    }
    for (f, t) in [("from", &r.from), ("to", &r.to)] {
        if t != ANY_TENANT && !tenant_exists(t.as_str()) {
            err(p(f), format!("unknown tenant {t:?}"));
        }
    }
    if let Some(o) = r.owner.as_deref().filter(|&o| *o != *r.from) {
        err(
            p("owner"),
            format!(
                "owner {o:?} is not the rule's from tenant {:?} (a tenant administrator owns only \
                 rules from its tenant)",
                r.from
            ),
        );
    }
    if let Some(ports) = &r.ports {
        if let Err(e) = parse_ports(ports) {
            err(p("ports"), e);
        }
        if !matches!(r.proto, Some(Proto::Tcp | Proto::Udp)) {
            err(p("ports"), "ports need proto \"tcp\" or \"udp\"".into());
        }
    }
    let mut fam = None;
    for (f, c) in [("from_cidr", &r.from_cidr), ("to_cidr", &r.to_cidr)] {
        if let Some(c) = c {
            match Cidr::parse(c) {
                Err(e) => err(p(f), e),
                Ok(c) => {
                    if fam.is_some_and(|v4| v4 != c.addr.is_ipv4()) {
                        err(
                            p(f),
                            "from_cidr and to_cidr are of different IP families".into(),
                        );
                    }
                    fam = Some(c.addr.is_ipv4());
                }
            }
        }
    }
    let mut window = [None, None];
    for (k, (f, t)) in [("not_before", &r.not_before), ("not_after", &r.not_after)]
        .into_iter()
        .enumerate()
    {
        if let Some(t) = t {
            match crate::time::parse_rfc3339(t) {
                Ok(v) => window[k] = Some(v),
                Err(e) => err(p(f), e),
            }
        }
    }
    if let [Some(a), Some(b)] = window {
        if a > b {
            err(p("not_after"), "not_after is before not_before".into());
        }
    }
    out
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Finds the line of `section[idx].field` (or `section.field`) in TOML text: the `field =` line inside
/// the idx-th `[[section]]` table, or the table's header line.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let (head, field) = path.split_once('.').unwrap_or((path, ""));
    let field = field.split('[').next().unwrap_or("");
    let (section, idx) = match head.split_once('[') {
        Some((s, rest)) => (s, rest.trim_end_matches(']').parse::<usize>().ok()?),
        None => (head, 0),
    };
    let header_aot = format!("[[{section}]]");
    let header_tbl = format!("[{section}]");
    let mut seen = 0usize;
    let mut in_table = false;
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            if in_table {
                break;
            }
            let hit =
                l.starts_with(&header_aot) || (l.starts_with(&header_tbl) && !l.starts_with("[["));
            if hit {
                if seen == idx {
                    in_table = true;
                    header_line = Some(n + 1);
                }
                seen += 1;
            }
            continue;
        }
        if in_table && !field.is_empty() {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim() == field {
                    return Some(n + 1);
                }
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 100
identity = "vni"
tenant = "acme"

[[tenant]]
name = "acme"
id = 10

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100
"#;

    #[test]
    fn defaults() {
        let d = Document::from_toml(GOOD, "t.toml").unwrap();
        assert_eq!(d.gateway.udp_port, 4789);
        assert_eq!(d.gateway.mtu, 1500);
        assert_eq!(d.tenants[0].space(), "default");
    }

    #[test]
    fn syntax_error_names_file_line_and_field() {
        let bad = GOOD.replace("vni = 100\nidentity", "vni = \"x\"\nidentity");
        let e = Document::from_toml(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:6:"), "{e}");
        let bad = GOOD.replace("id = 10", "id = 10\ncolour = \"red\"");
        let e = Document::from_toml(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:13:") && e.contains("colour"), "{e}");
    }

    #[test]
    fn validation_names_path_and_line() {
        let bad = GOOD.replace("tenant = \"acme\"\nip", "tenant = \"nobody\"\nip");
        let e = Document::from_toml(&bad, "t.toml").unwrap_err();
        let ConfigError::Invalid { issues, .. } = e else {
            panic!("{e}")
        };
        assert!(issues.iter().any(|i| i.path == "endpoint[0].tenant"
            && i.line == Some(15)
            && i.message.contains("nobody")));
    }

    #[test]
    fn parse_helpers() {
        assert_eq!(parse_ports("443").unwrap(), (443, 443));
        assert_eq!(parse_ports("8000-8080").unwrap(), (8000, 8080));
        assert!(parse_ports("8080-8000").is_err());
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("").is_err());
        let c = Cidr::parse("198.19.0.0/24").unwrap();
        assert!(c.contains(&"198.19.0.9".parse().unwrap()));
        assert!(!c.contains(&"198.19.1.9".parse().unwrap()));
        assert!(!c.contains(&"2001:2::1".parse().unwrap()));
        assert!(Cidr::parse("198.19.0.1/24").is_err());
        assert!(Cidr::parse("198.19.0.0/33").is_err());
        assert!(Cidr::parse("2001:2::/48")
            .unwrap()
            .contains(&"2001:2:0:1::5".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(&"198.18.0.1".parse().unwrap()));
    }
}
