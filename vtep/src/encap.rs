//! In-place re-encapsulation: the inner frame stays where it is in the buffer and new outer headers
//! (Ethernet, IPv4 or IPv6, UDP, VXLAN/VXLAN-GBP) are written right before it, using the headroom.

use crate::checksum;
use crate::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, Mac, UdpPacket, VxlanHeader};
use crate::{ethertype, ipproto};
use std::net::IpAddr;

/// Outer headers over an IPv4 underlay: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OUTER_LEN_V4: usize = 50;
/// Outer headers over an IPv6 underlay: Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8.
pub const OUTER_LEN_V6: usize = 70;

/// Why a frame could not be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    #[error("not enough headroom in the frame buffer")]
    NoHeadroom,
    #[error("underlay source and destination are of different IP families")]
    FamilyMismatch,
    #[error("frame too long for the underlay")]
    TooLong,
}

/// Everything the outer headers of a re-encapsulated frame say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
    /// `Some(group)`: write a VXLAN-GBP header with G and A ("policy applied") set.
    pub group: Option<u16>,
    pub ttl: u8,
}

impl Underlay {
    /// The outer header length for this underlay's family.
    pub fn outer_len(&self) -> usize {
        if self.dst_ip.is_ipv4() {
            OUTER_LEN_V4
        } else {
            OUTER_LEN_V6
        }
    }
    /// The outer IP packet length for an inner frame of `inner_len` bytes (compare with the MTU).
    pub fn ip_len(&self, inner_len: usize) -> usize {
        self.outer_len() - EthernetFrame::<&[u8]>::HEADER_LEN + inner_len
    }
}

/// Writes outer headers so that they end exactly at `inner_start`, where an inner frame of
/// `inner_len` bytes lies, and returns the offset where the re-encapsulated frame now starts.
/// Over IPv4 the UDP checksum is 0 (RFC 7348); over IPv6 it is always computed (RFC 8200).
pub fn encapsulate(
    buf: &mut [u8],
    inner_start: usize,
    inner_len: usize,
    u: &Underlay,
) -> Result<usize, EncapError> {
    let outer = u.outer_len();
    if inner_start < outer {
        return Err(EncapError::NoHeadroom);
    }
    if inner_start + inner_len > buf.len() {
        return Err(EncapError::TooLong);
    }
    let start = inner_start - outer;
    let udp_len = 16 + inner_len;
    let f = &mut buf[start..inner_start + inner_len];
    f[0..6].copy_from_slice(&u.dst_mac.0);
    f[6..12].copy_from_slice(&u.src_mac.0);
    let l4 = match (u.src_ip, u.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + udp_len).map_err(|_| EncapError::TooLong)?;
            f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
            Ipv4Packet::emit(
                &mut f[14..34],
                s.octets(),
                d.octets(),
                ipproto::UDP,
                u.ttl,
                total,
            );
            34
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pl = u16::try_from(udp_len).map_err(|_| EncapError::TooLong)?;
            f[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
            Ipv6Packet::emit(
                &mut f[14..54],
                s.octets(),
                d.octets(),
                ipproto::UDP,
                u.ttl,
                pl,
                0,
            );
            54
        }
        _ => return Err(EncapError::FamilyMismatch),
    };
    UdpPacket::emit(&mut f[l4..l4 + 8], u.src_port, u.dst_port, udp_len as u16);
    VxlanHeader::emit(&mut f[l4 + 8..l4 + 16], u.vni, u.group);
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (u.src_ip, u.dst_ip) {
        let c = checksum::udp_ipv6(&s.octets(), &d.octets(), &f[l4..]);
        f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(start)
}

/// Gives the inner frame at `buf[start..start + len]` the 802.1Q tag `vid` (pushing a tag if it has
/// none, rewriting the VID and keeping PCP/DEI if it has one), or removes its tag when `vid` is `None`.
/// Only the 12 MAC bytes move. Returns the inner frame's new `(start, len)`.
pub fn set_inner_vlan(
    buf: &mut [u8],
    start: usize,
    len: usize,
    vid: Option<u16>,
) -> Result<(usize, usize), EncapError> {
    if len < 14 || start + len > buf.len() {
        return Err(EncapError::TooLong);
    }
    let tagged = buf[start + 12..start + 14] == ethertype::VLAN.to_be_bytes();
    match (vid, tagged) {
        (Some(v), true) => {
            if len < 18 {
                return Err(EncapError::TooLong);
            }
            let old = u16::from_be_bytes([buf[start + 14], buf[start + 15]]);
            let tci = (old & 0xf000) | (v & 0x0fff);
            buf[start + 14..start + 16].copy_from_slice(&tci.to_be_bytes());
            Ok((start, len))
        }
        (Some(v), false) => {
            if start < 4 {
                return Err(EncapError::NoHeadroom);
            }
            let s = start - 4;
            buf.copy_within(start..start + 12, s);
            buf[s + 12..s + 14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            buf[s + 14..s + 16].copy_from_slice(&(v & 0x0fff).to_be_bytes());
            Ok((s, len + 4))
        }
        (None, true) => {
            if len < 18 {
                return Err(EncapError::TooLong);
            }
            buf.copy_within(start..start + 12, start + 4);
            Ok((start + 4, len - 4))
        }
        (None, false) => Ok((start, len)),
    }
}

/// The outer IP, UDP and VXLAN headers toward one VTEP, built once per policy version: a frame's
/// rewrite copies them and fills in lengths, the entropy port, VNI and group, and the IPv4 checksum
/// from a precomputed partial sum (RFC 1624 style), so nothing is rebuilt from scratch per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterTemplate {
    v6: bool,
    /// IP + UDP + VXLAN with per-frame fields zero (36 bytes over IPv4, 56 over IPv6).
    hdr: [u8; 56],
    /// IPv4: the one's-complement sum of the header's constant words. IPv6: of the pseudo-header's
    /// addresses and next header.
    partial: u32,
}

impl OuterTemplate {
    /// Headers from `src` to `dst` (same family) on `dst_port`, TTL/hop limit `ttl`.
    pub fn new(src: IpAddr, dst: IpAddr, dst_port: u16, ttl: u8) -> Result<Self, EncapError> {
        let mut hdr = [0u8; 56];
        let (v6, l4, partial) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                Ipv4Packet::emit(&mut hdr[..20], s.octets(), d.octets(), ipproto::UDP, ttl, 0);
                hdr[10] = 0;
                hdr[11] = 0;
                (false, 20, checksum::sum(0, &hdr[..20]))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Ipv6Packet::emit(
                    &mut hdr[..40],
                    s.octets(),
                    d.octets(),
                    ipproto::UDP,
                    ttl,
                    0,
                    0,
                );
                let p = checksum::sum(checksum::sum(0, &s.octets()), &d.octets())
                    .wrapping_add(u32::from(ipproto::UDP));
                (true, 40, p)
            }
            _ => return Err(EncapError::FamilyMismatch),
        };
        hdr[l4 + 2..l4 + 4].copy_from_slice(&dst_port.to_be_bytes());
        Ok(OuterTemplate { v6, hdr, partial })
    }

    /// Outer headers' length, Ethernet included.
    #[inline(always)]
    pub fn outer_len(&self) -> usize {
        if self.v6 {
            OUTER_LEN_V6
        } else {
            OUTER_LEN_V4
        }
    }

    /// The outer IP packet's length for an inner frame of `inner_len` bytes (compare with the MTU).
    #[inline(always)]
    pub fn ip_len(&self, inner_len: usize) -> usize {
        self.outer_len() - EthernetFrame::<&[u8]>::HEADER_LEN + inner_len
    }

    /// Writes the outer headers so that they end at `inner_start`, where an inner frame of
    /// `inner_len` bytes lies; returns where the frame now starts. Byte for byte what
    /// [`encapsulate`] writes for the same fields.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn write(
        &self,
        buf: &mut [u8],
        inner_start: usize,
        inner_len: usize,
        dst_mac: Mac,
        src_mac: Mac,
        src_port: u16,
        vni: u32,
        group: Option<u16>,
    ) -> Result<usize, EncapError> {
        let outer = self.outer_len();
        if inner_start < outer {
            return Err(EncapError::NoHeadroom);
        }
        if inner_start + inner_len > buf.len() {
            return Err(EncapError::TooLong);
        }
        let start = inner_start - outer;
        let udp_len = 16 + inner_len;
        let vx = vxlan_header(vni, group);
        if !self.v6 {
            // Fixed-size views: one bounds check for the whole header.
            let f: &mut [u8; OUTER_LEN_V4] = (&mut buf[start..inner_start])
                .try_into()
                .map_err(|_| EncapError::NoHeadroom)?;
            f[0..6].copy_from_slice(&dst_mac.0);
            f[6..12].copy_from_slice(&src_mac.0);
            f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
            self.rewrite4(f, inner_len, src_port, vx)
                .ok_or(EncapError::TooLong)?;
        } else {
            let pl = u16::try_from(udp_len).map_err(|_| EncapError::TooLong)?;
            let f = &mut buf[start..inner_start + inner_len];
            f[0..6].copy_from_slice(&dst_mac.0);
            f[6..12].copy_from_slice(&src_mac.0);
            f[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
            let h = &mut f[14..70];
            h.copy_from_slice(&self.hdr);
            h[4..6].copy_from_slice(&pl.to_be_bytes());
            h[40..42].copy_from_slice(&src_port.to_be_bytes());
            h[44..46].copy_from_slice(&pl.to_be_bytes());
            h[48..56].copy_from_slice(&vx);
            let acc = checksum::sum(self.partial.wrapping_add(u32::from(pl)), &f[54..]);
            let c = match checksum::finish(acc) {
                0 => 0xffff,
                c => c,
            };
            f[60..62].copy_from_slice(&c.to_be_bytes());
        }
        Ok(start)
    }

    /// Rewrites, in place, an IPv4 frame's outer IP, UDP and VXLAN headers (`f[14..50]`) toward this
    /// template's VTEP for an inner frame of `inner_len` bytes, from UDP source port `src_port`
    /// with VXLAN header `vx` (see [`vxlan_header`]); the Ethernet header is the caller's.
    /// [`OuterTemplate::write`] writes its IPv4 headers with it. `None` (nothing written) when the
    /// template is IPv6 or the packet would be longer than 65 535 bytes.
    #[inline(always)]
    pub fn rewrite4(
        &self,
        f: &mut [u8; OUTER_LEN_V4],
        inner_len: usize,
        src_port: u16,
        vx: [u8; 8],
    ) -> Option<()> {
        if self.v6 || inner_len > usize::from(u16::MAX) - 36 {
            return None;
        }
        let total = 36 + inner_len as u16;
        let h: &mut [u8; 36] = (&mut f[14..50]).try_into().expect("36 bytes");
        *h = self.hdr[..36].try_into().expect("36 bytes");
        h[2..4].copy_from_slice(&total.to_be_bytes());
        // A sum of eleven 16-bit words (< 2^20): two folds end it.
        let mut acc = self.partial + u32::from(total);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        let c = !(acc as u16);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h[20..22].copy_from_slice(&src_port.to_be_bytes());
        h[24..26].copy_from_slice(&(total - 20).to_be_bytes());
        h[28..36].copy_from_slice(&vx);
        Some(())
    }
}

/// The VXLAN header for `vni` (its low 24 bits), with a VXLAN-GBP group when `group` is set
/// (flags G and I, policy applied A).
#[inline(always)]
pub fn vxlan_header(vni: u32, group: Option<u16>) -> [u8; 8] {
    let v = (vni & 0x00ff_ffff).to_be_bytes();
    let (f0, f1, g) = match group {
        Some(g) => (
            VxlanHeader::<&[u8]>::FLAG_G | VxlanHeader::<&[u8]>::FLAG_I,
            VxlanHeader::<&[u8]>::FLAG_A,
            g.to_be_bytes(),
        ),
        None => (VxlanHeader::<&[u8]>::FLAG_I, 0, [0, 0]),
    };
    [f0, f1, g[0], g[1], v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn template_writes_what_encapsulate_writes() {
        for (src, dst) in [
            ("198.18.0.254", "198.18.1.7"),
            ("2001:2::fe", "2001:2::1:7"),
        ] {
            let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let t = OuterTemplate::new(src, dst, 4789, 64).unwrap();
            for (inner_len, group, port, vni) in [
                (60usize, None, 49152u16, 100u32),
                (1400, Some(0xbeef), 65535, 0xff_ffff),
                (61, Some(0), 50000, 0),
            ] {
                let mut a = vec![0u8; 80 + inner_len];
                for (i, b) in a.iter_mut().enumerate() {
                    *b = (i * 7) as u8;
                }
                let mut b = a.clone();
                let u = Underlay {
                    src_mac: Mac([2, 0, 0, 0, 0, 1]),
                    dst_mac: Mac([2, 0, 0, 0, 0, 2]),
                    src_ip: src,
                    dst_ip: dst,
                    src_port: port,
                    dst_port: 4789,
                    vni,
                    group,
                    ttl: 64,
                };
                let sa = encapsulate(&mut a, 80, inner_len, &u).unwrap();
                let sb = t
                    .write(
                        &mut b, 80, inner_len, u.dst_mac, u.src_mac, port, vni, group,
                    )
                    .unwrap();
                assert_eq!(sa, sb);
                assert_eq!(a, b);
                assert_eq!(t.ip_len(inner_len), u.ip_len(inner_len));
                // The in-place rewrite writes the same IP, UDP and VXLAN bytes over whatever
                // the frame carried there before.
                let mut c = vec![0xa5u8; OUTER_LEN_V4];
                c[..14].copy_from_slice(&b[sb..sb + 14]);
                let f: &mut [u8; OUTER_LEN_V4] = (&mut c[..]).try_into().unwrap();
                let done = t.rewrite4(f, inner_len, port, vxlan_header(vni, group));
                assert_eq!(done.is_some(), src.is_ipv4());
                if src.is_ipv4() {
                    assert_eq!(c, b[sb..sb + OUTER_LEN_V4]);
                }
            }
        }
    }
}
