//! Drop reasons and per-worker counters: global and per tenant slot, summed across workers for reports.

use serde::Serialize;
use std::collections::BTreeMap;

/// Why a frame was dropped. The names are the counter names of the config, JSON and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// Not VXLAN to our UDP port, or the VXLAN I flag unset.
    NotOverlay,
    /// VNI not configured.
    UnknownSegment,
    /// GBP flag/id or VLAN tag missing or unknown.
    NoIdentity,
    /// Source VTEP not allowed for that tenant.
    SpoofedIdentity,
    /// Destination not in the tenant's address space.
    NoEndpoint,
    PolicyDenied,
    /// Over the underlay MTU after re-encapsulation.
    TooBig,
    /// An inner frame the gateway does not carry: non-IP, broadcast, multicast.
    Unsupported,
}

impl DropReason {
    pub const COUNT: usize = 9;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::NotOverlay,
        DropReason::UnknownSegment,
        DropReason::NoIdentity,
        DropReason::SpoofedIdentity,
        DropReason::NoEndpoint,
        DropReason::PolicyDenied,
        DropReason::TooBig,
        DropReason::Unsupported,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotOverlay => "not_overlay",
            DropReason::UnknownSegment => "unknown_segment",
            DropReason::NoIdentity => "no_identity",
            DropReason::SpoofedIdentity => "spoofed_identity",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::TooBig => "too_big",
            DropReason::Unsupported => "unsupported",
        }
    }
    pub fn from_name(s: &str) -> Option<DropReason> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tenant's counters (frames after its identity was established).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounters {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub arp_replied: u64,
    pub dropped: [u64; DropReason::COUNT],
}

impl TenantCounters {
    pub fn add(&mut self, o: &TenantCounters) {
        self.frames_in += o.frames_in;
        self.bytes_in += o.bytes_in;
        self.frames_out += o.frames_out;
        self.bytes_out += o.bytes_out;
        self.arp_replied += o.arp_replied;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }
    /// Frames denied by policy (`policy_denied`).
    pub fn denied(&self) -> u64 {
        self.dropped[DropReason::PolicyDenied as usize]
    }
}

/// A worker's counters. Tenants are indexed by their slot in the policy table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub arp_replied: u64,
    pub dropped: [u64; DropReason::COUNT],
    pub tenants: Vec<TenantCounters>,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.forwarded += o.forwarded;
        self.arp_replied += o.arp_replied;
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
    }
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// The report of DESIGN.md: `frames`, `forwarded`, `arp_replied`, `dropped` by reason (every
    /// reason, zeros included) and `tenants` by name, using `table` for the names of tenant slots.
    pub fn summary(&self, table: &policy::Table) -> Summary {
        let dropped = DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.dropped[*r as usize]))
            .collect();
        let mut tenants = BTreeMap::new();
        for (slot, t) in table.tenants() {
            let c = self.tenants.get(slot as usize).copied().unwrap_or_default();
            if !t.live && c == TenantCounters::default() {
                continue;
            }
            tenants.insert(t.name.to_string(), TenantSummary::from(&c));
        }
        Summary {
            frames: self.frames,
            forwarded: self.forwarded,
            arp_replied: self.arp_replied,
            dropped,
            tenants,
        }
    }
}

/// The per-run report (JSON keys are the contract of DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub frames: u64,
    pub forwarded: u64,
    pub arp_replied: u64,
    pub dropped: BTreeMap<String, u64>,
    pub tenants: BTreeMap<String, TenantSummary>,
}

/// One tenant's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantSummary {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub forwarded: u64,
    pub bytes_out: u64,
    pub arp_replied: u64,
    pub denied: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl From<&TenantCounters> for TenantSummary {
    fn from(c: &TenantCounters) -> Self {
        TenantSummary {
            frames_in: c.frames_in,
            bytes_in: c.bytes_in,
            forwarded: c.frames_out,
            bytes_out: c.bytes_out,
            arp_replied: c.arp_replied,
            denied: c.denied(),
            dropped: DropReason::ALL
                .iter()
                .filter(|r| c.dropped[**r as usize] > 0)
                .map(|r| (r.name().to_string(), c.dropped[*r as usize]))
                .collect(),
        }
    }
}
