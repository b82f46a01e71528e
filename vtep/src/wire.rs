//! Typed zero-copy views over header bytes, in the way of smoltcp's `Packet<T: AsRef<[u8]>>`.
//! `new_checked` validates once; accessors are then infallible; setters need `AsMut<[u8]>`.

use crate::ethertype;
use std::fmt;

/// Why a view could not be built over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("inconsistent {0} header: {1}")]
    Inconsistent(&'static str, &'static str),
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// Broadcast or multicast (the I/G bit).
    #[inline]
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }
    /// One station's address: neither a group address nor all zeros. Only such an address may be
    /// a frame's source or a neighbour's link-layer address (Linux's `is_valid_ether_addr`).
    #[inline]
    pub fn is_station(&self) -> bool {
        !self.is_group() && self.0 != [0; 6]
    }
    /// The address as the low 48 bits of a word, first byte lowest (as a little-endian load of
    /// its six bytes reads it).
    #[inline]
    pub fn word(&self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
    }
    /// The address whose [`Mac::word`] is the low 48 bits of `w`.
    #[inline]
    pub fn from_word(w: u64) -> Mac {
        let [a, b, c, d, e, f, _, _] = w.to_le_bytes();
        Mac([a, b, c, d, e, f])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Mac {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().ok_or("a MAC address has six octets")?;
            if p.len() != 2 {
                return Err("each MAC octet is two hex digits");
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| "MAC octets are hex digits")?;
        }
        if parts.next().is_some() {
            return Err("a MAC address has six octets");
        }
        Ok(Mac(out))
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// An Ethernet II frame, optionally with one 802.1Q tag.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    /// Checks the untagged header (14 bytes) and, when the frame is 802.1Q tagged, the tag (18 bytes).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 14 {
            return Err(WireError::Truncated("ethernet"));
        }
        if be16(b, 12) == ethertype::VLAN && b.len() < 18 {
            return Err(WireError::Truncated("802.1Q"));
        }
        Ok(Self { buf })
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn dst(&self) -> Mac {
        Mac(arr(self.buf.as_ref(), 0))
    }
    pub fn src(&self) -> Mac {
        Mac(arr(self.buf.as_ref(), 6))
    }
    /// The ethertype right after the MAC addresses (0x8100 for a tagged frame).
    pub fn outer_ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    pub fn is_tagged(&self) -> bool {
        self.outer_ethertype() == ethertype::VLAN
    }
    /// The 802.1Q tag control information (PCP, DEI, VID), if tagged.
    pub fn tci(&self) -> Option<u16> {
        self.is_tagged().then(|| be16(self.buf.as_ref(), 14))
    }
    /// The VLAN id, if tagged.
    pub fn vid(&self) -> Option<u16> {
        self.tci().map(|t| t & 0x0fff)
    }
    /// The ethertype of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        if self.is_tagged() {
            be16(self.buf.as_ref(), 16)
        } else {
            self.outer_ethertype()
        }
    }
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            18
        } else {
            14
        }
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, m: Mac) {
        self.buf.as_mut()[0..6].copy_from_slice(&m.0);
    }
    pub fn set_src(&mut self, m: Mac) {
        self.buf.as_mut()[6..12].copy_from_slice(&m.0);
    }
    pub fn set_outer_ethertype(&mut self, t: u16) {
        set_be16(self.buf.as_mut(), 12, t);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
}

/// An IPv4 packet: header (options allowed) and payload up to `total_length`.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    /// Checks version, IHL and that `total_length` covers the header and fits the buffer.
    /// Trailing bytes beyond `total_length` (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 20 {
            return Err(WireError::Truncated("ipv4"));
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Inconsistent("ipv4", "version is not 4"));
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < 20 {
            return Err(WireError::Inconsistent("ipv4", "IHL below 5"));
        }
        let tl = usize::from(be16(b, 2));
        if tl < hl {
            return Err(WireError::Inconsistent(
                "ipv4",
                "total length below header length",
            ));
        }
        if tl > b.len() {
            return Err(WireError::Truncated("ipv4"));
        }
        Ok(Self { buf })
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), 2))
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn dont_frag(&self) -> bool {
        self.buf.as_ref()[6] & 0x40 != 0
    }
    /// More-fragments set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        be16(self.buf.as_ref(), 6) & 0x3fff != 0
    }
    /// A fragment other than the first one (no transport header inside).
    pub fn is_later_fragment(&self) -> bool {
        be16(self.buf.as_ref(), 6) & 0x1fff != 0
    }
    /// More fragments follow.
    pub fn more_fragments(&self) -> bool {
        self.buf.as_ref()[6] & 0x20 != 0
    }
    /// The fragment offset, in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), 6) & 0x1fff
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    pub fn src(&self) -> [u8; 4] {
        arr(self.buf.as_ref(), 12)
    }
    pub fn dst(&self) -> [u8; 4] {
        arr(self.buf.as_ref(), 16)
    }
    pub fn verify_checksum(&self) -> bool {
        crate::checksum::ipv4_header(&self.buf.as_ref()[..self.header_len()]) == 0
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes a 20-byte header without options (DF set, id 0 as RFC 6864 allows for atomic datagrams)
    /// into the first 20 bytes of `buf` and returns the view. `buf` must hold `total_len` bytes.
    pub fn emit(
        mut buf: T,
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        ttl: u8,
        total_len: u16,
    ) -> Self {
        let b = buf.as_mut();
        b[0] = 0x45;
        b[1] = 0;
        set_be16(b, 2, total_len);
        set_be16(b, 4, 0);
        set_be16(b, 6, 0x4000);
        b[8] = ttl;
        b[9] = protocol;
        set_be16(b, 10, 0);
        b[12..16].copy_from_slice(&src);
        b[16..20].copy_from_slice(&dst);
        let c = crate::checksum::ipv4_header(&b[..20]);
        set_be16(b, 10, c);
        Self { buf }
    }
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        set_be16(b, 10, 0);
        let c = crate::checksum::ipv4_header(&b[..hl]);
        set_be16(b, 10, c);
    }
}

/// An IPv6 packet: fixed header and payload up to `payload_length` (no jumbograms).
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = 40;

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 40 {
            return Err(WireError::Truncated("ipv6"));
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Inconsistent("ipv6", "version is not 6"));
        }
        let pl = usize::from(be16(b, 4));
        if pl == 0 {
            return Err(WireError::Inconsistent(
                "ipv6",
                "zero payload length (jumbogram)",
            ));
        }
        if 40 + pl > b.len() {
            return Err(WireError::Truncated("ipv6"));
        }
        Ok(Self { buf })
    }
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), 4))
    }
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    pub fn src(&self) -> [u8; 16] {
        arr(self.buf.as_ref(), 8)
    }
    pub fn dst(&self) -> [u8; 16] {
        arr(self.buf.as_ref(), 24)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[40..40 + self.payload_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes a 40-byte header (traffic class 0, flow label `flow`) into the first 40 bytes of `buf`.
    pub fn emit(
        mut buf: T,
        src: [u8; 16],
        dst: [u8; 16],
        next_header: u8,
        hop_limit: u8,
        payload_len: u16,
        flow: u32,
    ) -> Self {
        let b = buf.as_mut();
        let word = (6u32 << 28) | (flow & 0x000f_ffff);
        b[0..4].copy_from_slice(&word.to_be_bytes());
        set_be16(b, 4, payload_len);
        b[6] = next_header;
        b[7] = hop_limit;
        b[8..24].copy_from_slice(&src);
        b[24..40].copy_from_slice(&dst);
        Self { buf }
    }
}

/// A UDP datagram header (8 bytes) and whatever follows.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = 8;

    /// Checks only that the 8-byte header is present; `len()` is checked by the caller against its IP
    /// payload (it is 0 in GSO/BIG TCP super-frames).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < 8 {
            return Err(WireError::Truncated("udp"));
        }
        Ok(Self { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), 4))
    }
    pub fn is_empty(&self) -> bool {
        self.len() <= 8
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn emit(mut buf: T, src_port: u16, dst_port: u16, len: u16) -> Self {
        let b = buf.as_mut();
        set_be16(b, 0, src_port);
        set_be16(b, 2, dst_port);
        set_be16(b, 4, len);
        set_be16(b, 6, 0);
        Self { buf }
    }
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), 6, c);
    }
}

/// The 8-byte VXLAN header (RFC 7348) with the VXLAN-GBP extension (draft-smith-vxlan-group-policy):
/// `G R R R I R R R | R D R R A R R R | group policy id | VNI (24) | reserved`.
#[derive(Debug, Clone, Copy)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    pub const LEN: usize = 8;
    pub const FLAG_I: u8 = 0x08;
    pub const FLAG_G: u8 = 0x80;
    pub const FLAG_D: u8 = 0x40;
    pub const FLAG_A: u8 = 0x08;

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < 8 {
            return Err(WireError::Truncated("vxlan"));
        }
        Ok(Self { buf })
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// The I flag: the VNI is valid.
    pub fn vni_valid(&self) -> bool {
        self.flags() & Self::FLAG_I != 0
    }
    /// The G flag: a group policy id is present.
    pub fn gbp(&self) -> bool {
        self.flags() & Self::FLAG_G != 0
    }
    /// The D flag (don't learn).
    pub fn dont_learn(&self) -> bool {
        self.buf.as_ref()[1] & Self::FLAG_D != 0
    }
    /// The A flag (policy applied).
    pub fn policy_applied(&self) -> bool {
        self.buf.as_ref()[1] & Self::FLAG_A != 0
    }
    pub fn group_id(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn vni(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }
    /// Flag bits outside I and G are set, or the last reserved byte is non-zero.
    pub fn reserved_bits_set(&self) -> bool {
        let b = self.buf.as_ref();
        b[0] & !(Self::FLAG_I | Self::FLAG_G) != 0 || b[7] != 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Writes a VXLAN header; with `group = Some(id)` a VXLAN-GBP header with G and A set.
    pub fn emit(mut buf: T, vni: u32, group: Option<u16>) -> Self {
        let b = buf.as_mut();
        match group {
            Some(g) => {
                b[0] = Self::FLAG_G | Self::FLAG_I;
                b[1] = Self::FLAG_A;
                set_be16(b, 2, g);
            }
            None => {
                b[0] = Self::FLAG_I;
                b[1] = 0;
                set_be16(b, 2, 0);
            }
        }
        let v = (vni & 0x00ff_ffff).to_be_bytes();
        b[4..7].copy_from_slice(&v[1..4]);
        b[7] = 0;
        Self { buf }
    }
}

/// An Ethernet/IPv4 ARP packet (RFC 826), 28 bytes.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const LEN: usize = 28;
    pub const OP_REQUEST: u16 = 1;
    pub const OP_REPLY: u16 = 2;

    /// Checks length and that hardware/protocol types are Ethernet/IPv4 with 6/4-byte addresses.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 28 {
            return Err(WireError::Truncated("arp"));
        }
        if be16(b, 0) != 1 || be16(b, 2) != ethertype::IPV4 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Inconsistent("arp", "not Ethernet/IPv4 ARP"));
        }
        Ok(Self { buf })
    }
    pub fn op(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn sender_mac(&self) -> Mac {
        Mac(arr(self.buf.as_ref(), 8))
    }
    pub fn sender_ip(&self) -> [u8; 4] {
        arr(self.buf.as_ref(), 14)
    }
    pub fn target_mac(&self) -> Mac {
        Mac(arr(self.buf.as_ref(), 18))
    }
    pub fn target_ip(&self) -> [u8; 4] {
        arr(self.buf.as_ref(), 24)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turns this request into the reply `target_ip is-at mac`, addressed back to the asker.
    pub fn make_reply(&mut self, mac: Mac) {
        let asker_mac = self.sender_mac();
        let asker_ip = self.sender_ip();
        let target_ip = self.target_ip();
        let b = self.buf.as_mut();
        set_be16(b, 6, Self::OP_REPLY);
        b[8..14].copy_from_slice(&mac.0);
        b[14..18].copy_from_slice(&target_ip);
        b[18..24].copy_from_slice(&asker_mac.0);
        b[24..28].copy_from_slice(&asker_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "02:00:00:00:0a:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0, 0, 0x0a, 1]);
        assert_eq!(m.to_string(), "02:00:00:00:0a:01");
        assert!("02:00:00:00:0a".parse::<Mac>().is_err());
        assert!("02:00:00:00:0a:01:02".parse::<Mac>().is_err());
        assert!("zz:00:00:00:0a:01".parse::<Mac>().is_err());
        assert!(Mac::BROADCAST.is_group());
        assert!(!m.is_group());
    }

    #[test]
    fn ethernet_tagged_and_untagged() {
        let mut f = [0u8; 18];
        f[12] = 0x81;
        f[13] = 0x00;
        f[14] = 0xa0; // PCP 5
        f[15] = 0x0a; // VID 10
        f[16] = 0x08;
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.vid(), Some(10));
        assert_eq!(e.tci(), Some(0xa00a));
        assert_eq!(e.ethertype(), 0x0800);
        assert_eq!(e.header_len(), 18);
        assert_eq!(
            EthernetFrame::new_checked(&f[..16]).unwrap_err(),
            WireError::Truncated("802.1Q")
        );
        assert!(EthernetFrame::new_checked(&f[..13]).is_err());
    }

    #[test]
    fn ipv4_checks() {
        let mut b = [0u8; 28];
        Ipv4Packet::emit(&mut b[..], [198, 18, 0, 1], [198, 18, 0, 2], 17, 64, 28);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
        assert!(p.dont_frag() && !p.is_fragment());
        b[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&b[..]).is_err());
        b[0] = 0x45;
        b[3] = 29;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated("ipv4")
        );
        b[3] = 19;
        assert!(Ipv4Packet::new_checked(&b[..]).is_err());
    }

    #[test]
    fn vxlan_gbp_fields() {
        // PcapPlusPlus Vxlan1: 88 48 00 64, VNI 3000001.
        let h = [0x88, 0x48, 0x00, 0x64, 0x2d, 0xc6, 0xc1, 0x00];
        let v = VxlanHeader::new_checked(&h[..]).unwrap();
        assert!(v.vni_valid() && v.gbp() && v.dont_learn() && v.policy_applied());
        assert_eq!(v.group_id(), 100);
        assert_eq!(v.vni(), 3_000_001);
        assert!(!v.reserved_bits_set());
        let mut out = [0u8; 8];
        VxlanHeader::emit(&mut out[..], 3_000_001, Some(100));
        assert_eq!(out, [0x88, 0x08, 0x00, 0x64, 0x2d, 0xc6, 0xc1, 0x00]);
        VxlanHeader::emit(&mut out[..], 100, None);
        assert_eq!(out, [0x08, 0, 0, 0, 0, 0, 100, 0]);
    }

    #[test]
    fn arp_reply_in_place() {
        let mut a = [0u8; 28];
        a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        a[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        a[14..18].copy_from_slice(&[198, 19, 0, 1]);
        a[24..28].copy_from_slice(&[198, 19, 0, 2]);
        let mut p = ArpPacket::new_checked(&mut a[..]).unwrap();
        p.make_reply(Mac([2, 0, 0, 0, 0, 2]));
        assert_eq!(
            a,
            [
                0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 2, 198, 19, 0, 2, 2, 0, 0, 0, 0, 1, 198, 19,
                0, 1
            ]
        );
    }
}

#[cfg(test)]
mod mac_word_tests {
    use super::Mac;

    #[test]
    fn mac_word_is_its_bytes_little_endian() {
        let m = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(m.word(), 0x5544_3322_1102);
        assert_eq!(m.word().to_le_bytes()[..6], m.0);
        assert_eq!(Mac::BROADCAST.word(), 0xffff_ffff_ffff);
        assert_eq!(Mac::from_word(m.word()), m);
        assert_eq!(
            Mac::from_word(0xdead_0000_0000_0001),
            Mac([1, 0, 0, 0, 0, 0])
        );
    }
}
