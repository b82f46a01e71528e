//! The pipeline: parse, identify, anti-spoof, answer ARP, look up the endpoint, decide, rewrite —
//! a function over a batch of frame buffers, a policy table and a worker's state. No I/O, no locks.

use crate::counters::{Counters, DropReason, TenantCounters};
use hashbrown::HashMap;
use policy::{IdentityMode, Table, TenantIdx};
use std::net::IpAddr;
use vtep::{
    encapsulate, parse_inner, parse_overlay, set_inner_vlan, ArpPacket, EncapError, EthernetFrame,
    InnerKind, Mac, OverlayError, Underlay,
};

/// Bytes a driver must leave free before each frame: an IPv4→IPv6 underlay change grows the outer
/// headers by 20 bytes and a pushed inner 802.1Q tag by 4 more.
pub const HEADROOM: usize = 64;

/// One frame buffer: the frame is `buf[start..start + len]`; the bytes before `start` are headroom.
/// The pipeline rewrites the frame in place and moves `start`/`len` accordingly.
#[derive(Debug)]
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
}

impl<'a> Frame<'a> {
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        debug_assert!(start + len <= buf.len());
        Frame { buf, start, len }
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
    Drop(DropReason),
    #[default]
    Pending,
}

impl Disposition {
    pub fn transmits(self) -> bool {
        matches!(self, Disposition::Forward | Disposition::ArpReply)
    }
}

/// The outcome of one frame: disposition, source tenant (once identified) and the deciding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub disposition: Disposition,
    pub tenant: Option<TenantIdx>,
    /// Index in the policy document of the rule that decided; `None` for defaults or non-verdicts.
    pub rule: Option<u32>,
}

/// Underlay next hops learnt from received frames: VTEP address → the MAC its frames came from.
/// Sized up front; new entries past capacity are not learnt (no allocation on the hot path).
#[derive(Debug)]
pub struct Neighbors {
    map: HashMap<IpAddr, Mac>,
    cap: usize,
}

impl Neighbors {
    pub fn with_capacity(cap: usize) -> Self {
        Neighbors {
            map: HashMap::with_capacity(cap),
            cap,
        }
    }
    #[inline]
    pub fn learn(&mut self, ip: IpAddr, mac: Mac) {
        let full = self.map.len() >= self.cap;
        match self.map.get_mut(&ip) {
            Some(m) => *m = mac,
            None if !full => {
                self.map.insert(ip, mac);
            }
            None => {}
        }
    }
    /// Sets a next hop by hand (static neighbour, or one read from the kernel's table).
    pub fn insert(&mut self, ip: IpAddr, mac: Mac) {
        self.map.insert(ip, mac);
    }
    #[inline]
    pub fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.map.get(ip).copied()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A worker's own state: counters, learnt next hops, the policy version it runs.
#[derive(Debug)]
pub struct Worker {
    pub counters: Counters,
    pub neighbors: Neighbors,
    /// Version of the table of the last batch (0 before the first).
    pub active_version: u64,
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

type Verdict = Result<Disposition, DropReason>;

impl Worker {
    pub fn new() -> Self {
        Worker {
            counters: Counters::default(),
            neighbors: Neighbors::with_capacity(4096),
            active_version: 0,
        }
    }

    /// Runs the pipeline over a batch. `outcomes[i]` receives frame `i`'s outcome; `now` is the Unix
    /// time (seconds) rules' validity windows are judged at for the whole batch.
    pub fn process(
        &mut self,
        table: &Table,
        frames: &mut [Frame<'_>],
        outcomes: &mut [Outcome],
        now: i64,
    ) {
        // Per batch: the version we run, and counter slots for tenants new in this version.
        self.active_version = table.version();
        if self.counters.tenants.len() < table.tenant_slots() {
            self.counters
                .tenants
                .resize(table.tenant_slots(), TenantCounters::default());
        }
        for (f, o) in frames.iter_mut().zip(outcomes.iter_mut()) {
            *o = Outcome::default();
            let len = f.len as u64;
            let r = self.frame(table, f, o, now);
            let c = &mut self.counters;
            c.frames += 1;
            c.bytes += len;
            o.disposition = match r {
                Ok(d) => d,
                Err(reason) => Disposition::Drop(reason),
            };
            match o.disposition {
                Disposition::Forward => {
                    c.forwarded += 1;
                    if let Some(t) = o.tenant {
                        let tc = &mut c.tenants[t as usize];
                        tc.frames_out += 1;
                        tc.bytes_out += f.len as u64;
                    }
                }
                Disposition::ArpReply => {
                    c.arp_replied += 1;
                    if let Some(t) = o.tenant {
                        c.tenants[t as usize].arp_replied += 1;
                    }
                }
                Disposition::Drop(reason) => {
                    c.dropped[reason as usize] += 1;
                    if let Some(t) = o.tenant {
                        c.tenants[t as usize].dropped[reason as usize] += 1;
                    }
                }
                Disposition::Pending => unreachable!("every frame is decided"),
            }
        }
    }

    #[inline]
    fn frame(&mut self, table: &Table, f: &mut Frame<'_>, o: &mut Outcome, now: i64) -> Verdict {
        let data = &f.buf[f.start..f.start + f.len];
        let ov = parse_overlay(data, table.udp_port()).map_err(|e| match e {
            OverlayError::Malformed(_) => DropReason::Malformed,
            OverlayError::NotOverlay(_) => DropReason::NotOverlay,
        })?;
        let seg = *table.segment(ov.vni).ok_or(DropReason::UnknownSegment)?;
        let inner = &data[ov.inner_off..ov.inner_off + ov.inner_len];
        let eth = EthernetFrame::new_checked(inner).map_err(|_| DropReason::Malformed)?;

        // Identity: who is this frame's tenant, by the segment's rule?
        let tenant = match seg.mode {
            IdentityMode::Vni => seg.tenant,
            IdentityMode::Gbp => ov.group.and_then(|g| table.tenant_by_id(u32::from(g))),
            IdentityMode::Vlan => eth.vid().and_then(|v| table.tenant_by_id(u32::from(v))),
        }
        .ok_or(DropReason::NoIdentity)?;
        o.tenant = Some(tenant);
        let tc = &mut self.counters.tenants[tenant as usize];
        tc.frames_in += 1;
        tc.bytes_in += ov.inner_len as u64;

        if !table.vtep_allowed(tenant, ov.src_ip) {
            return Err(DropReason::SpoofedIdentity);
        }
        self.neighbors.learn(ov.src_ip, ov.src_mac);

        let parsed = parse_inner(inner).map_err(|_| DropReason::Malformed)?;
        let inner_start = f.start + ov.inner_off;
        let flow = match parsed.kind {
            InnerKind::Ip(flow) => flow,
            InnerKind::Group | InnerKind::NonIp => return Err(DropReason::Unsupported),
            InnerKind::Arp(a) => {
                if a.op != ArpPacket::<&[u8]>::OP_REQUEST || a.sender_ip == a.target_ip {
                    return Err(DropReason::Unsupported);
                }
                let ep = *table
                    .endpoint(tenant, IpAddr::V4(a.target_ip))
                    .ok_or(DropReason::NoEndpoint)?;
                if !table.may_reach(tenant, ep.tenant, now) {
                    return Err(DropReason::PolicyDenied);
                }
                // Answer in place: the request becomes "target is-at ep.mac", back to the asker's VTEP
                // on the segment it came from, carrying the same identity. Sized first, so a dropped
                // request is left as it came.
                let flow_hash = u32::from(a.sender_ip) ^ u32::from(a.target_ip).rotate_left(16);
                let u = Underlay {
                    src_mac: ov.dst_mac,
                    dst_mac: ov.src_mac,
                    src_ip: table.underlay_src(&ov.src_ip).unwrap_or(ov.dst_ip),
                    dst_ip: ov.src_ip,
                    src_port: vtep::parse::entropy_port(flow_hash),
                    dst_port: table.udp_port(),
                    vni: ov.vni,
                    group: ov.group,
                    ttl: 64,
                };
                if u.ip_len(ov.inner_len) > usize::from(table.mtu()) || inner_start < u.outer_len()
                {
                    return Err(DropReason::TooBig);
                }
                let buf = &mut f.buf[inner_start..inner_start + ov.inner_len];
                let mut e =
                    EthernetFrame::new_checked(&mut *buf).map_err(|_| DropReason::Malformed)?;
                e.set_dst(a.sender_mac);
                e.set_src(ep.mac);
                let hl = e.header_len();
                ArpPacket::new_checked(&mut buf[hl..])
                    .map_err(|_| DropReason::Malformed)?
                    .make_reply(ep.mac);
                self.rewrite(table, f, inner_start, ov.inner_len, &u)?;
                return Ok(Disposition::ArpReply);
            }
        };

        let ep = *table
            .endpoint(tenant, flow.dst)
            .ok_or(DropReason::NoEndpoint)?;
        let d = table.verdict(tenant, ep.tenant, &flow, now);
        o.rule = d.rule;
        if !d.allow {
            return Err(DropReason::PolicyDenied);
        }

        // Rewrite: inner destination MAC, inner tag as the egress segment wants it, new outer headers.
        let (egress_vid, group) = match ep.egress {
            IdentityMode::Vlan => (Some(table.tenant(ep.tenant).id as u16), None),
            IdentityMode::Gbp => (None, Some(table.tenant(tenant).id as u16)),
            IdentityMode::Vni => (None, None),
        };
        let tag_delta: isize = match (parsed.tci.is_some(), egress_vid.is_some()) {
            (false, true) => 4,
            (true, false) => -4,
            _ => 0,
        };
        let u = Underlay {
            src_mac: ov.dst_mac,
            dst_mac: self.neighbors.get(&ep.vtep).unwrap_or(ov.src_mac),
            src_ip: table.underlay_src(&ep.vtep).ok_or(DropReason::NoEndpoint)?,
            dst_ip: ep.vtep,
            src_port: flow.entropy_port(),
            dst_port: table.udp_port(),
            vni: ep.vni,
            group,
            ttl: 64,
        };
        let new_inner_len = (ov.inner_len as isize + tag_delta) as usize;
        if u.ip_len(new_inner_len) > usize::from(table.mtu()) {
            return Err(DropReason::TooBig);
        }
        f.buf[inner_start..inner_start + 6].copy_from_slice(&ep.mac.0);
        let (s, l) = set_inner_vlan(f.buf, inner_start, ov.inner_len, egress_vid)
            .map_err(|_| DropReason::TooBig)?;
        self.rewrite(table, f, s, l, &u)?;
        Ok(Disposition::Forward)
    }

    #[inline]
    fn rewrite(
        &self,
        table: &Table,
        f: &mut Frame<'_>,
        inner_start: usize,
        inner_len: usize,
        u: &Underlay,
    ) -> Result<(), DropReason> {
        if u.ip_len(inner_len) > usize::from(table.mtu()) {
            return Err(DropReason::TooBig);
        }
        let start = encapsulate(f.buf, inner_start, inner_len, u).map_err(|e| match e {
            EncapError::NoHeadroom | EncapError::TooLong => DropReason::TooBig,
            EncapError::FamilyMismatch => DropReason::NoEndpoint,
        })?;
        f.start = start;
        f.len = inner_start + inner_len - start;
        Ok(())
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
            tenant: None,
            rule: None,
        };
    }
}
