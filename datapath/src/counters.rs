//! Drop reasons (one list generates the enum, its names and its counters, like VPP's
//! `vxlan_error.def`) and per-worker counters: global, per tenant slot (hot: traffic; cold and sparse:
//! drops and answers), summed across workers for reports.

use serde::Serialize;
use std::collections::BTreeMap;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Why a frame was dropped. The names are the counter names of the config, JSON and metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
            /// What the reason means (the doc line of its entry).
            pub fn help(self) -> &'static str {
                match self {
                    $(DropReason::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Truncated or inconsistent headers, or a group or zero MAC where one station's belongs (an
    /// inner source, an ARP sender, a solicitation's source link-layer address).
    Malformed = "malformed",
    /// Not VXLAN to our UDP port, or the VXLAN I flag unset.
    NotOverlay = "not_overlay",
    /// VNI not configured.
    UnknownSegment = "unknown_segment",
    /// GBP flag/id or VLAN tag missing or unknown.
    NoIdentity = "no_identity",
    /// Source VTEP not allowed for that tenant.
    SpoofedIdentity = "spoofed_identity",
    /// Destination not in the tenant's address space.
    NoEndpoint = "no_endpoint",
    /// Denied by the policy (a deny rule, the cross-tenant default, or no tracked flow to reply to).
    PolicyDenied = "policy_denied",
    /// Over the underlay MTU after re-encapsulation.
    TooBig = "too_big",
    /// An inner frame the gateway does not carry: non-IP, broadcast, multicast.
    Unsupported = "unsupported",
    /// Inner source not an endpoint of the sending tenant at the sending VTEP.
    SpoofedSource = "spoofed_source",
    /// A non-first fragment whose first fragment was not seen.
    OrphanFragment = "orphan_fragment",
}

impl DropReason {
    pub fn from_name(s: &str) -> Option<DropReason> {
        Self::ALL.iter().copied().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tenant's traffic counters (frames after its identity was established): the hot half, 32 bytes,
/// aligned to 32 so that a tenant's counters sit in one cache line (one prefetch brings them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct TenantCounters {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
}

const _: () = assert!(std::mem::size_of::<TenantCounters>() == 32);

impl TenantCounters {
    #[inline]
    pub fn add(&mut self, o: &TenantCounters) {
        self.frames_in += o.frames_in;
        self.bytes_in += o.bytes_in;
        self.frames_out += o.frames_out;
        self.bytes_out += o.bytes_out;
    }
}

/// Per-tenant events other than traffic, kept sparse (most tenants drop nothing): a drop reason, or
/// an answer the gateway gave in the tenant's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    Drop(DropReason),
    ArpReplied,
    NdReplied,
}

impl Event {
    fn code(self) -> u64 {
        match self {
            Event::Drop(r) => r as u64,
            Event::ArpReplied => 0xfe,
            Event::NdReplied => 0xfd,
        }
    }
    fn from_code(c: u64) -> Event {
        match c {
            0xfe => Event::ArpReplied,
            0xfd => Event::NdReplied,
            r => Event::Drop(DropReason::ALL[r as usize]),
        }
    }
}

/// (tenant, event) → count: an open-addressing table that only grows between batches, so counting
/// never allocates on the frame path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantEvents {
    /// (tenant << 8 | event code) + 1, 0 = empty; count.
    slots: Vec<(u64, u64)>,
    len: usize,
}

impl TenantEvents {
    /// Room for at least `n` more keys without growing (called once per batch with the batch size).
    pub fn reserve(&mut self, n: usize) {
        if (self.len + n) * 2 <= self.slots.len() {
            return;
        }
        let cap = ((self.len + n) * 2).next_power_of_two().max(64);
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); cap]);
        self.len = 0;
        for (k, c) in old {
            if k != 0 {
                self.add_key(k, c);
            }
        }
    }
    #[inline]
    fn add_key(&mut self, k: u64, c: u64) {
        let mask = self.slots.len() - 1;
        let mut i = (crate::hash64(k) >> 20) as usize & mask;
        loop {
            let s = &mut self.slots[i];
            if s.0 == k {
                s.1 += c;
                return;
            }
            if s.0 == 0 {
                *s = (k, c);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }
    /// Counts one event (room was reserved for the batch).
    #[inline]
    pub fn count(&mut self, tenant: u32, e: Event) {
        if self.len * 2 >= self.slots.len() {
            self.reserve(1);
        }
        self.add_key(Self::key(tenant, e), 1);
    }
    /// Brings the slot where `count(tenant, e)` starts looking toward the cache.
    #[inline(always)]
    pub fn prefetch(&self, tenant: u32, e: Event) {
        let mask = self.slots.len().wrapping_sub(1);
        let i = (crate::hash64(Self::key(tenant, e)) >> 20) as usize & mask;
        policy::flat::prefetch(self.slots.as_ptr().wrapping_add(i));
    }
    #[inline(always)]
    fn key(tenant: u32, e: Event) -> u64 {
        (u64::from(tenant) << 8 | e.code()) + 1
    }
    pub fn get(&self, tenant: u32, e: Event) -> u64 {
        self.iter()
            .find(|&(t, x, _)| t == tenant && x == e)
            .map(|x| x.2)
            .unwrap_or(0)
    }
    /// Every (tenant, event, count).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Event, u64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.0 != 0)
            .map(|&(k, c)| (((k - 1) >> 8) as u32, Event::from_code((k - 1) & 0xff), c))
    }
    pub fn add(&mut self, o: &TenantEvents) {
        self.reserve(o.len);
        for (t, e, c) in o.iter() {
            self.add_key((u64::from(t) << 8 | e.code()) + 1, c);
        }
    }
}

/// A worker's counters. Tenants are indexed by their slot in the policy table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub arp_replied: u64,
    pub nd_replied: u64,
    pub dropped: [u64; DropReason::COUNT],
    pub tenants: Vec<TenantCounters>,
    pub events: TenantEvents,
    /// Flows this worker started tracking, and could not for lack of room.
    pub flows_created: u64,
    pub flows_refused: u64,
    /// Frames admitted as replies of tracked flows (and ICMP errors quoting one).
    pub replies_tracked: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.forwarded += o.forwarded;
        self.arp_replied += o.arp_replied;
        self.nd_replied += o.nd_replied;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
        if self.tenants.len() < o.tenants.len() {
            self.tenants
                .resize(o.tenants.len(), TenantCounters::default());
        }
        for (a, b) in self.tenants.iter_mut().zip(&o.tenants) {
            a.add(b);
        }
        self.events.add(&o.events);
        self.flows_created += o.flows_created;
        self.flows_refused += o.flows_refused;
        self.replies_tracked += o.replies_tracked;
    }
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// The report of DESIGN.md: `frames`, `forwarded`, `arp_replied`, `nd_replied`, `dropped` by
    /// reason (every reason, zeros included) and `tenants` by name, using `table` for the names of
    /// tenant slots.
    pub fn summary(&self, table: &policy::Table) -> Summary {
        let mut s = self.totals();
        s.tenants = self
            .tenant_lines(table)
            .map(|(name, t)| (name.to_string(), t))
            .collect();
        s
    }

    /// [`Counters::summary`] without its `tenants` (see [`Counters::tenant_lines`]).
    pub fn totals(&self) -> Summary {
        Summary {
            frames: self.frames,
            forwarded: self.forwarded,
            arp_replied: self.arp_replied,
            nd_replied: self.nd_replied,
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), self.dropped[*r as usize]))
                .collect(),
            tenants: BTreeMap::new(),
        }
    }

    /// The summary's tenants in name order, made one at a time: every live tenant, and a removed
    /// one whose slot still counts something (where two slots share a name, the later one). At a
    /// million tenants a map of them all would cost more memory than the compiled policy.
    pub fn tenant_lines<'a>(
        &'a self,
        table: &'a policy::Table,
    ) -> impl Iterator<Item = (&'a str, TenantSummary)> + 'a {
        let mut per: BTreeMap<u32, TenantSummary> = BTreeMap::new();
        for (t, e, n) in self.events.iter() {
            let s = per.entry(t).or_default();
            match e {
                Event::ArpReplied => s.arp_replied += n,
                Event::NdReplied => s.nd_replied += n,
                Event::Drop(r) => {
                    *s.dropped.entry(r.name().to_string()).or_default() += n;
                    if r == DropReason::PolicyDenied {
                        s.denied += n;
                    }
                }
            }
        }
        let traffic = |slot: u32| self.tenants.get(slot as usize).copied().unwrap_or_default();
        let mut slots: Vec<u32> = table
            .tenants()
            .filter(|&(slot, t)| {
                t.live || per.contains_key(&slot) || traffic(slot) != TenantCounters::default()
            })
            .map(|(slot, _)| slot)
            .collect();
        let name = |slot: u32| -> &'a str { &table.tenant(slot).name };
        slots.sort_unstable_by(|&a, &b| name(a).cmp(name(b)).then(a.cmp(&b)));
        // Of slots sharing a name, the last (sorted by slot within a name) stands.
        slots.reverse();
        slots.dedup_by_key(|&mut slot| name(slot));
        slots.reverse();
        slots.into_iter().map(move |slot| {
            let mut s = per.remove(&slot).unwrap_or_default();
            let c = traffic(slot);
            s.frames_in = c.frames_in;
            s.bytes_in = c.bytes_in;
            s.forwarded = c.frames_out;
            s.bytes_out = c.bytes_out;
            (name(slot), s)
        })
    }
}

/// The per-run report (JSON keys are the contract of DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub frames: u64,
    pub forwarded: u64,
    pub arp_replied: u64,
    #[serde(default)]
    pub nd_replied: u64,
    pub dropped: BTreeMap<String, u64>,
    pub tenants: BTreeMap<String, TenantSummary>,
}

/// One tenant's line of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantSummary {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub forwarded: u64,
    pub bytes_out: u64,
    pub arp_replied: u64,
    #[serde(default)]
    pub nd_replied: u64,
    pub denied: u64,
    pub dropped: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_makes_names_and_counts() {
        assert_eq!(DropReason::COUNT, 11);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
            assert!(!r.help().is_empty());
        }
        assert_eq!(DropReason::SpoofedSource.name(), "spoofed_source");
        assert_eq!(DropReason::OrphanFragment.name(), "orphan_fragment");
    }

    fn table(tenants: &[&str], prev: Option<&policy::Table>) -> policy::Table {
        let mut text = String::from(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[segment]]\nvni = 1\nidentity = \"gbp\"\n",
        );
        for (i, t) in tenants.iter().enumerate() {
            text += &format!("[[tenant]]\nname = \"{t}\"\nid = {}\n", i + 1);
        }
        let doc = policy::Document::from_toml(&text, "t.toml").unwrap();
        policy::Table::compile(std::sync::Arc::new(doc), 1, prev).unwrap()
    }

    #[test]
    fn tenant_lines_are_live_tenants_and_removed_ones_that_count() {
        let v1 = table(&["zeta", "alpha", "mid", "gone-quiet"], None);
        let v2 = table(&["beta", "zeta", "alpha"], Some(&v1));
        // Slots keep their tenants across versions: zeta 0, alpha 1, mid 2, gone-quiet 3, beta 4.
        assert_eq!(v2.tenant_by_name("zeta"), Some(0));
        assert_eq!(v2.tenant_by_name("beta"), Some(4));
        assert_eq!(
            v2.tenant_by_name("mid"),
            None,
            "removed tenants are not found by name"
        );
        let mut c = Counters {
            tenants: vec![TenantCounters::default(); 5],
            ..Counters::default()
        };
        c.tenants[0].frames_in = 7;
        c.tenants[2].frames_in = 3; // mid: removed in v2, still counted
        c.events.reserve(5);
        c.events.count(1, Event::Drop(DropReason::PolicyDenied));
        let lines: Vec<(&str, TenantSummary)> = c.tenant_lines(&v2).collect();
        let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["alpha", "beta", "mid", "zeta"]);
        assert_eq!(lines[0].1.denied, 1);
        assert_eq!(lines[0].1.dropped.get("policy_denied"), Some(&1));
        assert_eq!(lines[2].1.frames_in, 3);
        assert_eq!(lines[3].1.frames_in, 7);
        assert_eq!(lines[1].1, TenantSummary::default());
        let s = c.summary(&v2);
        assert_eq!(
            s.tenants.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            names
        );
        assert_eq!(s.tenants["zeta"].frames_in, 7);
    }

    #[test]
    fn sparse_events_count_and_merge() {
        let mut a = TenantEvents::default();
        a.reserve(4);
        for i in 0..1000u32 {
            a.count(i % 37, Event::Drop(DropReason::PolicyDenied));
            a.count(5, Event::ArpReplied);
        }
        assert_eq!(a.get(5, Event::ArpReplied), 1000);
        assert_eq!(a.get(3, Event::Drop(DropReason::PolicyDenied)), 27);
        let mut b = TenantEvents::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.get(5, Event::ArpReplied), 2000);
        assert_eq!(b.get(36, Event::Drop(DropReason::PolicyDenied)), 54);
        assert_eq!(b.get(36, Event::NdReplied), 0);
    }
}
