//! The two parsers of the hot path: the outer overlay headers (Ethernet/IPv4|IPv6/UDP/VXLAN) and the
//! inner tenant frame (Ethernet/802.1Q, then IPv4/IPv6 with ports, or ARP). Offsets, never copies.

use crate::wire::{
    ArpPacket, EthernetFrame, Ipv4Packet, Ipv6Packet, Mac, UdpPacket, VxlanHeader, WireError,
};
use crate::{ethertype, ipproto};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an outer frame is not something the gateway carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// Truncated or inconsistent headers.
    #[error("malformed: {0}")]
    Malformed(WireError),
    /// Well-formed, but not VXLAN to our port (or the VXLAN I flag is unset).
    #[error("not overlay traffic: {0}")]
    NotOverlay(&'static str),
}

impl From<WireError> for OverlayError {
    fn from(e: WireError) -> Self {
        OverlayError::Malformed(e)
    }
}

/// What the outer headers of a VXLAN frame say, with the offset of the inner frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub vni: u32,
    /// The VXLAN-GBP group policy id when the G flag is set.
    pub group: Option<u16>,
    /// Offset of the inner Ethernet frame in the buffer parsed.
    pub inner_off: usize,
    /// Length of the inner Ethernet frame (from the UDP length).
    pub inner_len: usize,
}

/// Parses the outer headers of `frame` and checks that it is VXLAN to `udp_port`.
pub fn parse_overlay(frame: &[u8], udp_port: u16) -> Result<Overlay, OverlayError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let l3 = 14;
    let (src_ip, dst_ip, l4_off, l4_len) = match eth.outer_ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(&frame[l3..])?;
            if !ip.verify_checksum() {
                return Err(OverlayError::Malformed(WireError::Inconsistent(
                    "ipv4",
                    "bad header checksum",
                )));
            }
            if ip.is_fragment() {
                return Err(OverlayError::NotOverlay("IPv4 fragment"));
            }
            if ip.protocol() != ipproto::UDP {
                return Err(OverlayError::NotOverlay("not UDP"));
            }
            let hl = ip.header_len();
            (
                IpAddr::V4(Ipv4Addr::from(ip.src())),
                IpAddr::V4(Ipv4Addr::from(ip.dst())),
                l3 + hl,
                ip.total_len() - hl,
            )
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(&frame[l3..])?;
            if ip.next_header() != ipproto::UDP {
                return Err(OverlayError::NotOverlay("not UDP"));
            }
            (
                IpAddr::V6(Ipv6Addr::from(ip.src())),
                IpAddr::V6(Ipv6Addr::from(ip.dst())),
                l3 + 40,
                ip.payload_len(),
            )
        }
        _ => return Err(OverlayError::NotOverlay("not IP")),
    };
    let udp = UdpPacket::new_checked(&frame[l4_off..l4_off + l4_len])?;
    if udp.dst_port() != udp_port {
        return Err(OverlayError::NotOverlay("not to the VXLAN port"));
    }
    let ulen = udp.len();
    if ulen < UdpPacket::<&[u8]>::HEADER_LEN + VxlanHeader::<&[u8]>::LEN || ulen > l4_len {
        return Err(OverlayError::Malformed(WireError::Inconsistent(
            "udp",
            "length does not match the IP payload",
        )));
    }
    let vx_off = l4_off + 8;
    let vx = VxlanHeader::new_checked(&frame[vx_off..vx_off + 8])?;
    if !vx.vni_valid() {
        return Err(OverlayError::NotOverlay("VXLAN I flag unset"));
    }
    if vx.reserved_bits_set() {
        return Err(OverlayError::Malformed(WireError::Inconsistent(
            "vxlan",
            "reserved bits set",
        )));
    }
    Ok(Overlay {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        src_ip,
        dst_ip,
        src_port: udp.src_port(),
        vni: vx.vni(),
        group: vx.gbp().then(|| vx.group_id()),
        inner_off: vx_off + 8,
        inner_len: ulen - 16,
    })
}

/// The 5-tuple of an inner IP packet (ports are 0 when the protocol has none or in later fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Flow {
    /// A hash of the flow, symmetric in nothing, stable across runs and machines; used for the outer
    /// UDP source port so that underlay ECMP/RSS spreads flows but keeps each in order.
    #[inline]
    pub fn hash(&self) -> u32 {
        #[inline]
        fn ip_word(ip: &IpAddr) -> u64 {
            match ip {
                IpAddr::V4(a) => u64::from(u32::from(*a)),
                IpAddr::V6(a) => {
                    let v = u128::from(*a);
                    (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
                }
            }
        }
        let mut h = ip_word(&self.src).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= ip_word(&self.dst).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        h ^= (u64::from(self.src_port) << 24)
            | (u64::from(self.dst_port) << 8)
            | u64::from(self.proto);
        h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 32;
        h as u32
    }

    /// The outer UDP source port for this flow, in the dynamic range 49152–65535 (RFC 7348 §5).
    #[inline]
    pub fn entropy_port(&self) -> u16 {
        entropy_port(self.hash())
    }
}

/// Maps a flow hash into 49152–65535.
#[inline]
pub fn entropy_port(hash: u32) -> u16 {
    49152 | ((hash ^ (hash >> 16)) as u16 & 0x3fff)
}

/// An inner ARP packet's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// What an inner frame carries, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerKind {
    /// Unicast IPv4 or IPv6.
    Ip(Flow),
    /// ARP (any destination MAC).
    Arp(ArpRequest),
    /// A broadcast or multicast frame that is not ARP.
    Group,
    /// A unicast frame that is neither IP nor ARP.
    NonIp,
}

/// The parsed inner frame. Offsets are relative to the inner frame's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// The 802.1Q tag control information, if the frame is tagged.
    pub tci: Option<u16>,
    pub l3_off: usize,
    pub kind: InnerKind,
}

impl Inner {
    pub fn vid(&self) -> Option<u16> {
        self.tci.map(|t| t & 0x0fff)
    }
}

/// Parses an inner Ethernet frame. Errors only for truncated or inconsistent headers.
pub fn parse_inner(frame: &[u8]) -> Result<Inner, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let l3_off = eth.header_len();
    let l3 = &frame[l3_off..];
    let et = eth.ethertype();
    let kind = if et == ethertype::ARP {
        let a = ArpPacket::new_checked(l3)?;
        InnerKind::Arp(ArpRequest {
            op: a.op(),
            sender_mac: a.sender_mac(),
            sender_ip: Ipv4Addr::from(a.sender_ip()),
            target_ip: Ipv4Addr::from(a.target_ip()),
        })
    } else if eth.dst().is_group() {
        InnerKind::Group
    } else if et == ethertype::IPV4 {
        InnerKind::Ip(parse_ipv4_flow(l3)?)
    } else if et == ethertype::IPV6 {
        InnerKind::Ip(parse_ipv6_flow(l3)?)
    } else {
        InnerKind::NonIp
    };
    Ok(Inner {
        dst_mac: eth.dst(),
        src_mac: eth.src(),
        tci: eth.tci(),
        l3_off,
        kind,
    })
}

fn ports(proto: u8, l4: &[u8], has_l4: bool) -> Result<(u16, u16), WireError> {
    if !has_l4 || !(proto == ipproto::TCP || proto == ipproto::UDP) {
        return Ok((0, 0));
    }
    if l4.len() < 4 {
        return Err(WireError::Truncated("transport"));
    }
    Ok((
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

fn parse_ipv4_flow(l3: &[u8]) -> Result<Flow, WireError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    let proto = ip.protocol();
    // A TCP header split over tiny fragments is malformed here as on the policy path.
    crate::inner::tiny_tcp_fragment(
        proto,
        ip.frag_offset(),
        ip.more_fragments(),
        ip.payload().len(),
    )?;
    let (src_port, dst_port) = ports(proto, ip.payload(), !ip.is_later_fragment())?;
    Ok(Flow {
        src: IpAddr::V4(Ipv4Addr::from(ip.src())),
        dst: IpAddr::V4(Ipv4Addr::from(ip.dst())),
        proto,
        src_port,
        dst_port,
    })
}

fn parse_ipv6_flow(l3: &[u8]) -> Result<Flow, WireError> {
    let ip = Ipv6Packet::new_checked(l3)?;
    let mut has_l4 = true;
    let (mut offset, mut more) = (0, false);
    let payload = ip.payload();
    let (next, off) = crate::inner::ipv6_upper(ip.next_header(), payload, |fo, _| {
        has_l4 &= fo & 0xfff8 == 0;
        (offset, more) = (fo >> 3, fo & 1 != 0);
    })?;
    let rest = &payload[off..];
    crate::inner::tiny_tcp_fragment(next, offset, more, rest.len())?;
    let (src_port, dst_port) = ports(next, rest, has_l4)?;
    Ok(Flow {
        src: IpAddr::V6(Ipv6Addr::from(ip.src())),
        dst: IpAddr::V6(Ipv6Addr::from(ip.dst())),
        proto: next,
        src_port,
        dst_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_port_range() {
        for h in [0u32, 1, 0xffff, 0xffff_ffff, 0x1234_5678] {
            assert!(entropy_port(h) >= 49152);
        }
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let f = Flow {
            src: "198.19.0.1".parse().unwrap(),
            dst: "198.19.0.2".parse().unwrap(),
            proto: 6,
            src_port: 1000,
            dst_port: 443,
        };
        let h = f.hash();
        assert_ne!(
            h,
            Flow {
                src_port: 1001,
                ..f
            }
            .hash()
        );
        assert_ne!(h, Flow { dst_port: 444, ..f }.hash());
        assert_ne!(h, Flow { proto: 17, ..f }.hash());
        assert_ne!(
            h,
            Flow {
                src: "198.19.0.3".parse().unwrap(),
                ..f
            }
            .hash()
        );
        assert_ne!(
            h,
            Flow {
                dst: "198.19.0.3".parse().unwrap(),
                ..f
            }
            .hash()
        );
    }
}
