//! The hot path's view of an inner IP packet: addresses as 128-bit numbers, protocol, ports (or the
//! ICMP echo identifier), TCP flags, fragment and ICMP details — IPv4 at fixed offsets when it has
//! no options, IPv6 through its whole extension chain (AH included) — and IPv6 neighbour discovery.

use crate::checksum;
use crate::ipproto;
use crate::wire::{Mac, WireError};

/// TCP flag bits (the 13th byte of the TCP header).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Where a packet stands among the fragments of its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// Not fragmented.
    #[default]
    Whole,
    /// The first fragment (offset 0, more to come): it holds the transport header.
    First(u32),
    /// A later fragment: no transport header; judged by its first fragment.
    Later(u32),
}

/// What ICMP (v4 or v6) says, when the packet is ICMP and holds its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest,
    EchoReply,
    /// Destination unreachable, packet too big, time exceeded, parameter problem: quotes a packet.
    Error,
    /// IPv6 neighbour solicitation / advertisement.
    NeighborSolicit,
    NeighborAdvert,
    Other,
}

/// An inner IP packet as the pipeline judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpInfo {
    pub v6: bool,
    /// IPv4 addresses in the low 32 bits.
    pub src: u128,
    pub dst: u128,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TCP/UDP ports; for ICMP echo both are the identifier; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub frag: Frag,
    pub icmp: Option<IcmpKind>,
    /// Offset of the transport header from the start of the IP header.
    pub l4_off: u16,
    /// Bytes of the IP packet (header and payload, without link padding).
    pub ip_len: u16,
    pub hop_limit: u8,
}

impl IpInfo {
    /// An ICMP packet that can only be an answer (echo reply or error), never a request.
    pub fn is_icmp_answer(&self) -> bool {
        matches!(self.icmp, Some(IcmpKind::EchoReply | IcmpKind::Error))
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn icmp_kind(v6: bool, t: u8) -> IcmpKind {
    match (v6, t) {
        (false, 8) | (true, 128) => IcmpKind::EchoRequest,
        (false, 0) | (true, 129) => IcmpKind::EchoReply,
        (false, 3 | 11 | 12) | (true, 1..=4) => IcmpKind::Error,
        (true, 135) => IcmpKind::NeighborSolicit,
        (true, 136) => IcmpKind::NeighborAdvert,
        _ => IcmpKind::Other,
    }
}

/// Fills ports, TCP flags and ICMP details from the transport header at `l4` (when the packet holds
/// one). TCP/UDP without their 4 port bytes are malformed; shorter TCP/ICMP headers leave flags
/// and kinds unknown.
#[inline(always)]
fn transport(info: &mut IpInfo, l4: &[u8]) -> Result<(), WireError> {
    match info.proto {
        ipproto::TCP | ipproto::UDP => {
            if l4.len() < 4 {
                return Err(WireError::Truncated("transport"));
            }
            info.src_port = be16(l4, 0);
            info.dst_port = be16(l4, 2);
            if info.proto == ipproto::TCP && l4.len() >= 14 {
                info.tcp_flags = l4[13];
            }
        }
        ipproto::ICMP | ipproto::ICMPV6
            if (info.proto == ipproto::ICMPV6) == info.v6 && l4.len() >= 4 =>
        {
            let k = icmp_kind(info.v6, l4[0]);
            info.icmp = Some(k);
            if matches!(k, IcmpKind::EchoRequest | IcmpKind::EchoReply) && l4.len() >= 8 {
                let id = be16(l4, 4);
                info.src_port = id;
                info.dst_port = id;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Walks an IPv6 extension-header chain — hop-by-hop, routing, fragment, destination options,
/// authentication — starting with header `next` at the start of `payload`, and returns the
/// upper-layer protocol with its offset in `payload`. `on_fragment` sees each fragment header's
/// offset field (flags in its low bits) and identification. Each header takes at least 8 bytes, so
/// the payload's length bounds the walk.
#[inline(always)]
pub(crate) fn ipv6_upper(
    mut next: u8,
    payload: &[u8],
    mut on_fragment: impl FnMut(u16, u32),
) -> Result<(u8, usize), WireError> {
    let mut off = 0usize;
    loop {
        let rest = &payload[off..];
        match next {
            ipproto::HOPOPT | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::AH => {
                if rest.len() < 8 {
                    return Err(WireError::Truncated("ipv6 extension"));
                }
                let len = if next == ipproto::AH {
                    (usize::from(rest[1]) + 2) * 4
                } else {
                    (usize::from(rest[1]) + 1) * 8
                };
                if rest.len() < len {
                    return Err(WireError::Truncated("ipv6 extension"));
                }
                next = rest[0];
                off += len;
            }
            ipproto::FRAGMENT => {
                if rest.len() < 8 {
                    return Err(WireError::Truncated("ipv6 fragment"));
                }
                on_fragment(
                    be16(rest, 2),
                    u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
                );
                next = rest[0];
                off += 8;
            }
            _ => return Ok((next, off)),
        }
    }
}

/// RFC 1858's tiny-fragment and overlapping-fragment attacks on TCP, refused as Linux's and the BSDs'
/// packet filters refuse them: a TCP first fragment (`offset` 0 in 8-byte units, `more` fragments to
/// come) whose `l4_len` bytes of transport header and payload fall short of a minimal TCP header (20
/// bytes: its flags would arrive in a later fragment, unseen by "a SYN is never a reply"), and a TCP
/// fragment at offset 8 bytes (which could overwrite the first fragment's flags on reassembly, §4).
#[inline(always)]
pub(crate) fn tiny_tcp_fragment(
    proto: u8,
    offset: u16,
    more: bool,
    l4_len: usize,
) -> Result<(), WireError> {
    if proto != ipproto::TCP {
        return Ok(());
    }
    if offset == 0 && more && l4_len < 20 {
        return Err(WireError::Inconsistent(
            "tcp",
            "first fragment shorter than a TCP header (RFC 1858)",
        ));
    }
    if offset == 1 {
        return Err(WireError::Inconsistent(
            "tcp",
            "fragment at offset 8 overlaps the TCP header (RFC 1858)",
        ));
    }
    Ok(())
}

/// Parses an IPv4 packet (`l3` from its first byte; trailing link padding allowed).
#[inline]
pub fn parse_ipv4(l3: &[u8]) -> Result<IpInfo, WireError> {
    if l3.len() < 20 {
        return Err(WireError::Truncated("ipv4"));
    }
    let vihl = l3[0];
    if vihl >> 4 != 4 {
        return Err(WireError::Inconsistent("ipv4", "version is not 4"));
    }
    let hl = usize::from(vihl & 0x0f) * 4;
    if hl < 20 {
        return Err(WireError::Inconsistent("ipv4", "IHL below 5"));
    }
    let tl = usize::from(be16(l3, 2));
    if tl < hl {
        return Err(WireError::Inconsistent(
            "ipv4",
            "total length below header length",
        ));
    }
    if tl > l3.len() {
        return Err(WireError::Truncated("ipv4"));
    }
    let fo = be16(l3, 6);
    let id = u32::from(be16(l3, 4));
    let (offset, more) = (fo & 0x1fff, fo & 0x2000 != 0);
    let frag = match (offset, more) {
        (0, false) => Frag::Whole,
        (0, true) => Frag::First(id),
        _ => Frag::Later(id),
    };
    tiny_tcp_fragment(l3[9], offset, more, tl - hl)?;
    let mut info = IpInfo {
        v6: false,
        src: u128::from(u32::from_be_bytes([l3[12], l3[13], l3[14], l3[15]])),
        dst: u128::from(u32::from_be_bytes([l3[16], l3[17], l3[18], l3[19]])),
        proto: l3[9],
        frag,
        l4_off: hl as u16,
        ip_len: tl as u16,
        hop_limit: l3[8],
        ..IpInfo::default()
    };
    if !matches!(frag, Frag::Later(_)) {
        transport(&mut info, &l3[hl..tl])?;
    }
    Ok(info)
}

/// Parses an IPv6 packet, walking hop-by-hop, routing, destination options, AH and fragment headers.
pub fn parse_ipv6(l3: &[u8]) -> Result<IpInfo, WireError> {
    if l3.len() < 40 {
        return Err(WireError::Truncated("ipv6"));
    }
    if l3[0] >> 4 != 6 {
        return Err(WireError::Inconsistent("ipv6", "version is not 6"));
    }
    let pl = usize::from(be16(l3, 4));
    if pl == 0 {
        return Err(WireError::Inconsistent(
            "ipv6",
            "zero payload length (jumbogram)",
        ));
    }
    if 40 + pl > l3.len() {
        return Err(WireError::Truncated("ipv6"));
    }
    let end = 40 + pl;
    let mut frag = Frag::Whole;
    // The fragment offset (8-byte units) and M flag of the fragment header `frag` comes from.
    let (mut offset, mut more) = (0, false);
    let (next, upper) = ipv6_upper(l3[6], &l3[40..end], |fo, id| {
        frag = match (fo & 0xfff8, fo & 1 != 0) {
            (0, false) => return, // an atomic fragment: whole
            (0, true) => Frag::First(id),
            _ => Frag::Later(id),
        };
        (offset, more) = (fo >> 3, fo & 1 != 0);
    })?;
    let off = 40 + upper;
    tiny_tcp_fragment(next, offset, more, end - off)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&l3[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&l3[24..40]);
    let mut info = IpInfo {
        v6: true,
        src: u128::from_be_bytes(src),
        dst: u128::from_be_bytes(dst),
        proto: next,
        frag,
        l4_off: off as u16,
        ip_len: end as u16,
        hop_limit: l3[7],
        ..IpInfo::default()
    };
    if !matches!(frag, Frag::Later(_)) {
        transport(&mut info, &l3[off..end])?;
    }
    Ok(info)
}

/// The packet an ICMP error quotes (its IP header and first transport bytes), as the flow it
/// belongs to: (src, dst, proto, src port, dst port), ports being the echo id for quoted echoes.
pub fn parse_quote(v6: bool, quote: &[u8]) -> Option<(u128, u128, u8, u16, u16)> {
    let (src, dst, proto, l4) = if !v6 {
        if quote.len() < 20 || quote[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(quote[0] & 0x0f) * 4;
        if hl < 20 || quote.len() < hl || be16(quote, 6) & 0x1fff != 0 {
            return None;
        }
        (
            u128::from(u32::from_be_bytes([
                quote[12], quote[13], quote[14], quote[15],
            ])),
            u128::from(u32::from_be_bytes([
                quote[16], quote[17], quote[18], quote[19],
            ])),
            quote[9],
            &quote[hl..],
        )
    } else {
        if quote.len() < 40 || quote[0] >> 4 != 6 {
            return None;
        }
        let mut s = [0u8; 16];
        s.copy_from_slice(&quote[8..24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&quote[24..40]);
        let mut later = false;
        let (next, upper) =
            ipv6_upper(quote[6], &quote[40..], |fo, _| later |= fo & 0xfff8 != 0).ok()?;
        if later {
            return None;
        }
        let off = 40 + upper;
        (
            u128::from_be_bytes(s),
            u128::from_be_bytes(d),
            next,
            quote.get(off..)?,
        )
    };
    let (sp, dp) = match proto {
        ipproto::TCP | ipproto::UDP if l4.len() >= 4 => (be16(l4, 0), be16(l4, 2)),
        ipproto::ICMP | ipproto::ICMPV6 if l4.len() >= 8 => {
            match icmp_kind(proto == ipproto::ICMPV6, l4[0]) {
                IcmpKind::EchoRequest | IcmpKind::EchoReply => (be16(l4, 4), be16(l4, 4)),
                _ => (0, 0),
            }
        }
        ipproto::TCP | ipproto::UDP => return None,
        _ => (0, 0),
    };
    Some((src, dst, proto, sp, dp))
}

/// A neighbour solicitation's target and the asker's link-layer address option, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicit {
    pub target: u128,
    pub source_lla: Option<Mac>,
}

/// Reads a neighbour solicitation from an ICMPv6 message `icmp` (RFC 4861 §7.1.1 checks: code 0,
/// at least 24 bytes, target not multicast, well-formed options; a source link-layer address is one
/// station's, never a group or zero address).
pub fn parse_solicit(icmp: &[u8]) -> Option<Solicit> {
    if icmp.len() < 24 || icmp[0] != 135 || icmp[1] != 0 {
        return None;
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    if t[0] == 0xff {
        return None;
    }
    let mut opts = &icmp[24..];
    let mut source_lla = None;
    while !opts.is_empty() {
        if opts.len() < 8 {
            return None;
        }
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == 1 && len == 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[2..8]);
            let m = Mac(m);
            if !m.is_station() {
                return None;
            }
            source_lla = Some(m);
        }
        opts = &opts[len..];
    }
    Some(Solicit {
        target: u128::from_be_bytes(t),
        source_lla,
    })
}

/// Length of the IPv6 packet [`emit_advert`] writes: header 40, advertisement 24, option 8.
pub const ADVERT_LEN: usize = 72;

/// Writes a solicited neighbour advertisement (flags S and O, target link-layer address option, hop
/// limit 255, checksum) from `target` (whose MAC is `mac`) to `to`, over the first [`ADVERT_LEN`]
/// bytes of `l3`.
pub fn emit_advert(l3: &mut [u8], target: u128, to: u128, mac: Mac) {
    let b = &mut l3[..ADVERT_LEN];
    b[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
    b[4..6].copy_from_slice(&32u16.to_be_bytes());
    b[6] = ipproto::ICMPV6;
    b[7] = 255;
    b[8..24].copy_from_slice(&target.to_be_bytes());
    b[24..40].copy_from_slice(&to.to_be_bytes());
    let m = &mut b[40..72];
    m[0] = 136;
    m[1] = 0;
    m[2..4].copy_from_slice(&[0, 0]);
    m[4..8].copy_from_slice(&0x6000_0000u32.to_be_bytes()); // S | O
    m[8..24].copy_from_slice(&target.to_be_bytes());
    m[24] = 2;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac.0);
    let c = checksum::icmpv6(&target.to_be_bytes(), &to.to_be_bytes(), &b[40..72]);
    b[42..44].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[0] = 0x45;
        let tl = (20 + l4.len()) as u16;
        b[2..4].copy_from_slice(&tl.to_be_bytes());
        b[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        b[6..8].copy_from_slice(&frag.to_be_bytes());
        b[8] = 64;
        b[9] = proto;
        b[12..16].copy_from_slice(&[198, 19, 0, 1]);
        b[16..20].copy_from_slice(&[198, 19, 0, 2]);
        b.extend_from_slice(l4);
        b
    }

    #[test]
    fn ipv4_tcp_ports_flags_and_fragments() {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&1000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[13] = tcp::SYN;
        let i = parse_ipv4(&v4(6, 0x4000, &tcp)).unwrap();
        assert_eq!((i.src_port, i.dst_port, i.tcp_flags), (1000, 443, tcp::SYN));
        assert_eq!(i.frag, Frag::Whole);
        assert_eq!(i.src, 0xc613_0001);
        let i = parse_ipv4(&v4(6, 0x2000, &tcp)).unwrap();
        assert_eq!(i.frag, Frag::First(0x1234));
        assert_eq!(i.dst_port, 443);
        let i = parse_ipv4(&v4(6, 0x0003, &tcp)).unwrap();
        assert_eq!(i.frag, Frag::Later(0x1234));
        assert_eq!((i.src_port, i.dst_port), (0, 0));
        assert!(parse_ipv4(&v4(6, 0, &tcp[..3])).is_err());
    }

    /// A TCP header from `sport` to `dport` with `flags`.
    fn tcp_header(sport: u16, dport: u16, flags: u8) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    fn rfc1858(r: Result<IpInfo, WireError>) -> bool {
        matches!(r, Err(WireError::Inconsistent("tcp", _)))
    }

    #[test]
    fn ipv4_tiny_and_overlapping_tcp_fragments_are_malformed() {
        let syn = tcp_header(443, 50000, tcp::SYN);
        // A first fragment that stops before the flags (8 bytes: RFC 1858's tiny fragment), or
        // anywhere short of a minimal TCP header, with or without DF.
        for n in [4, 8, 13, 14, 19] {
            for fo in [0x2000, 0x6000] {
                assert!(
                    rfc1858(parse_ipv4(&v4(6, fo, &syn[..n]))),
                    "{n} bytes, {fo:#x}"
                );
            }
        }
        let i = parse_ipv4(&v4(6, 0x2000, &syn)).unwrap();
        assert_eq!((i.frag, i.tcp_flags), (Frag::First(0x1234), tcp::SYN));
        // A fragment at offset 8 bytes would overwrite the flags on reassembly: last or not.
        for fo in [0x0001, 0x2001] {
            assert!(rfc1858(parse_ipv4(&v4(6, fo, &syn[8..]))), "{fo:#x}");
        }
        // Later fragments from offset 16 on are judged by their first fragment, as before.
        assert_eq!(
            parse_ipv4(&v4(6, 0x2002, &syn[..4])).unwrap().frag,
            Frag::Later(0x1234)
        );
        // A whole packet is no fragment (its flags, if short, stay unknown as before); other
        // protocols' short first fragments and offset-8 fragments are not TCP's concern.
        assert_eq!(parse_ipv4(&v4(6, 0, &syn[..8])).unwrap().tcp_flags, 0);
        assert_eq!(
            parse_ipv4(&v4(6, 0x4000, &syn[..8])).unwrap().frag,
            Frag::Whole
        );
        assert_eq!(
            parse_ipv4(&v4(17, 0x2000, &syn[..8])).unwrap().dst_port,
            50000
        );
        assert_eq!(
            parse_ipv4(&v4(17, 0x0001, &syn[8..])).unwrap().frag,
            Frag::Later(0x1234)
        );
    }

    #[test]
    fn icmp_echo_uses_the_identifier() {
        let echo = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let i = parse_ipv4(&v4(1, 0, &echo)).unwrap();
        assert_eq!(i.icmp, Some(IcmpKind::EchoRequest));
        assert_eq!((i.src_port, i.dst_port), (0x1234, 0x1234));
        let err = [3u8, 4, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_ipv4(&v4(1, 0, &err)).unwrap().icmp,
            Some(IcmpKind::Error)
        );
    }

    fn v6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        b[6] = next;
        b[7] = 64;
        b[8] = 0x20;
        b[9] = 0x01;
        b[11] = 2;
        b[23] = 1;
        b[24] = 0x20;
        b[25] = 0x01;
        b[27] = 2;
        b[39] = 2;
        b.extend_from_slice(ext);
        b.extend_from_slice(l4);
        b
    }

    #[test]
    fn ipv6_walks_ah_and_fragments() {
        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&53u16.to_be_bytes());
        udp[2..4].copy_from_slice(&5353u16.to_be_bytes());
        // AH: next 17, payload len 4 → (4+2)*4 = 24 bytes.
        let mut ah = [0u8; 24];
        ah[0] = 17;
        ah[1] = 4;
        let i = parse_ipv6(&v6(51, &ah, &udp)).unwrap();
        assert_eq!((i.proto, i.src_port, i.dst_port), (17, 53, 5353));
        assert_eq!(i.l4_off, 64);
        // Fragment header, first fragment.
        let fragh = [17u8, 0, 0, 1, 0, 0, 0, 9];
        let i = parse_ipv6(&v6(44, &fragh, &udp)).unwrap();
        assert_eq!(i.frag, Frag::First(9));
        assert_eq!(i.dst_port, 5353);
        let later = [17u8, 0, 0, 0x10, 0, 0, 0, 9];
        let i = parse_ipv6(&v6(44, &later, &udp)).unwrap();
        assert_eq!(i.frag, Frag::Later(9));
        assert_eq!(i.dst_port, 0);
        // An AH header that claims more than there is.
        ah[1] = 40;
        assert!(parse_ipv6(&v6(51, &ah, &udp)).is_err());
    }

    #[test]
    fn ipv6_tiny_and_overlapping_tcp_fragments_are_malformed() {
        let syn = tcp_header(443, 50000, tcp::SYN);
        // A fragment header (next header `next`, offset `off` in 8-byte units, M flag `m`).
        let fragh = |next: u8, off: u16, m: bool| {
            let w = (off << 3 | u16::from(m)).to_be_bytes();
            [next, 0, w[0], w[1], 0, 0, 0, 9]
        };
        for n in [4, 8, 13, 14, 19] {
            let p = parse_ipv6(&v6(44, &fragh(6, 0, true), &syn[..n]));
            assert!(rfc1858(p), "{n} bytes");
        }
        // Behind a destination-options header after the fragment header, too.
        let mut ext = fragh(60, 0, true).to_vec();
        ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        assert!(rfc1858(parse_ipv6(&v6(44, &ext, &syn[..8]))));
        let mut l4 = [0u8; 28];
        l4[..8].copy_from_slice(&ext[8..]);
        l4[8..].copy_from_slice(&syn);
        let i = parse_ipv6(&v6(44, &ext[..8], &l4)).unwrap();
        assert_eq!(
            (i.frag, i.tcp_flags, i.l4_off),
            (Frag::First(9), tcp::SYN, 56)
        );
        let i = parse_ipv6(&v6(44, &fragh(6, 0, true), &syn)).unwrap();
        assert_eq!((i.frag, i.tcp_flags), (Frag::First(9), tcp::SYN));
        // Offset 8 bytes, last or not.
        for m in [true, false] {
            assert!(rfc1858(parse_ipv6(&v6(44, &fragh(6, 1, m), &syn[8..]))));
        }
        assert_eq!(
            parse_ipv6(&v6(44, &fragh(6, 2, true), &syn[..4]))
                .unwrap()
                .frag,
            Frag::Later(9)
        );
        // An atomic fragment is whole; UDP is not TCP.
        let i = parse_ipv6(&v6(44, &fragh(6, 0, false), &syn[..8])).unwrap();
        assert_eq!((i.frag, i.tcp_flags), (Frag::Whole, 0));
        assert_eq!(
            parse_ipv6(&v6(44, &fragh(17, 0, true), &syn[..8]))
                .unwrap()
                .dst_port,
            50000
        );
        assert!(parse_ipv6(&v6(44, &fragh(17, 1, true), &syn[8..])).is_ok());
    }

    #[test]
    fn quotes_of_icmp_errors() {
        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        let q = v4(17, 0, &udp);
        assert_eq!(
            parse_quote(false, &q),
            Some((0xc613_0001, 0xc613_0002, 17, 4000, 53))
        );
        assert_eq!(parse_quote(false, &q[..10]), None);
        assert_eq!(parse_quote(false, &q[..22]), None);
    }

    #[test]
    fn neighbour_advert_is_valid() {
        let target: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0001;
        let to: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0002;
        let mut b = [0u8; ADVERT_LEN];
        emit_advert(&mut b, target, to, Mac([2, 0, 0, 0, 0, 1]));
        let i = parse_ipv6(&b).unwrap();
        assert_eq!(i.icmp, Some(IcmpKind::NeighborAdvert));
        assert_eq!(i.hop_limit, 255);
        // The checksum over the pseudo-header verifies to zero.
        let mut acc = checksum::sum(checksum::sum(0, &b[8..24]), &b[24..40]);
        acc = acc.wrapping_add(32 + 58);
        assert_eq!(checksum::finish(checksum::sum(acc, &b[40..72])), 0);
        assert_eq!(b[44] & 0x60, 0x60);
        assert_eq!(&b[66..72], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn solicitations() {
        let mut ns = [0u8; 32];
        ns[0] = 135;
        ns[8] = 0x20;
        ns[24] = 1;
        ns[25] = 1;
        ns[26..32].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        let s = parse_solicit(&ns).unwrap();
        assert_eq!(s.target >> 120, 0x20);
        assert_eq!(s.source_lla, Some(Mac([2, 0, 0, 0, 0, 9])));
        assert_eq!(parse_solicit(&ns[..24]).unwrap().source_lla, None);
        // A source link-layer address is one station's: a group or zero address makes it malformed.
        ns[26] = 0x33;
        assert!(parse_solicit(&ns).is_none());
        ns[26..32].fill(0);
        assert!(parse_solicit(&ns).is_none());
        ns[26..32].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        ns[25] = 0;
        assert!(parse_solicit(&ns).is_none());
        ns[25] = 1;
        ns[1] = 1;
        assert!(parse_solicit(&ns).is_none());
    }
}
