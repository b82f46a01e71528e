//! Internet checksum (RFC 1071) over header and pseudo-header bytes.

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum (not folded).
#[inline]
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a running sum to 16 bits and complements it.
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of an IPv4 header whose checksum field is zero (or the verification value: 0 when valid).
#[inline]
pub fn ipv4_header(header: &[u8]) -> u16 {
    finish(sum(0, header))
}

/// The UDP checksum of `udp` (header with checksum field zero, plus payload) under the pseudo-header
/// of `src` and `dst` (4 or 16 bytes each). A computed 0 is sent as 0xffff.
fn udp(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let mut acc = sum(sum(0, src), dst);
    acc = acc.wrapping_add(udp.len() as u32);
    acc = acc.wrapping_add(u32::from(crate::ipproto::UDP));
    match finish(sum(acc, udp)) {
        0 => 0xffff,
        c => c,
    }
}

/// The ICMPv6 checksum of `msg` (checksum field zero) under the IPv6 pseudo-header (RFC 4443 §2.3).
pub fn icmpv6(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut acc = sum(sum(0, src), dst);
    acc = acc.wrapping_add(msg.len() as u32);
    acc = acc.wrapping_add(u32::from(crate::ipproto::ICMPV6));
    finish(sum(acc, msg))
}

/// The UDP checksum over IPv6 (RFC 8200 §8.1), always sent.
pub fn udp_ipv6(src: &[u8; 16], dst: &[u8; 16], data: &[u8]) -> u16 {
    udp(src, dst, data)
}

/// The UDP checksum over IPv4 (optional there: joypath sends 0).
pub fn udp_ipv4(src: &[u8; 4], dst: &[u8; 4], data: &[u8]) -> u16 {
    udp(src, dst, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to ddf2 before complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(0, &data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(0, &[0x12]), 0x1200);
        assert_eq!(sum(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header() {
        // Wikipedia's IPv4 header checksum example: checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(ipv4_header(&h), 0);
    }
}
