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
