//! Wire formats of the gateway: zero-copy, typed views of Ethernet/802.1Q, IPv4, IPv6, UDP, VXLAN(-GBP)
//! and ARP headers, the overlay/inner frame parsers, and in-place re-encapsulation with checksums.
//!
//! Every view is built with a checked constructor (`new_checked`) that validates lengths once; its
//! accessors are then infallible. Nothing here allocates or copies a frame.

pub mod checksum;
pub mod encap;
pub mod inner;
pub mod parse;
pub mod wire;

pub use encap::{
    encapsulate, set_inner_vlan, vxlan_header, EncapError, OuterTemplate, Underlay, OUTER_LEN_V4,
    OUTER_LEN_V6,
};
pub use inner::{Frag, IcmpKind, IpInfo};
pub use parse::{
    parse_inner, parse_overlay, ArpRequest, Flow, Inner, InnerKind, Overlay, OverlayError,
};
pub use wire::{
    ArpPacket, EthernetFrame, Ipv4Packet, Ipv6Packet, Mac, UdpPacket, VxlanHeader, WireError,
};

/// Ethertypes the gateway understands.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers: those the policy can name, and the IPv6 extension headers parsers walk.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    /// IPv6 extension headers.
    pub const HOPOPT: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const DSTOPTS: u8 = 60;
}

/// The IANA VXLAN port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
