#!/usr/bin/env python3
"""Generate joypath's pcap fixtures: pcap-fixtures/*.pcap, *.pcapng, *.expect.tsv, fixtures.toml.

Pure Python 3.11 standard library, deterministic (fixed timestamps, no randomness): running it twice
writes byte-identical files.

    python3 scripts/mkfixtures.py [OUTDIR]      # default OUTDIR: <repo>/pcap-fixtures

Every frame's expected outcome is written by hand next to the frame (from the contract in
DESIGN.md and the fixture brief), never from running the gateway. As a guard against slips in those
hand annotations, the script also carries a small, separate reference model of the contract
(`Model` below) and refuses to write anything if the model and the hand annotation disagree.
"""

from __future__ import annotations

import calendar
import ipaddress
import struct
import sys
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The policy every fixture is replayed against
# --------------------------------------------------------------------------------------------

GATEWAY = {
    "underlay_ip": "198.18.0.254",
    "underlay_ip6": "2001:2::fe",
    "udp_port": 4789,
    "mtu": 1500,
}
# Idle timeouts of tracked flows (seconds), written to the policy so that expectations follow from the
# config, not from the gateway's defaults. Only these three are relied upon by the captures.
FLOW_TIMEOUTS = {"tcp": 3600, "tcp_opening": 30, "tcp_closing": 2, "udp": 5, "icmp": 5, "other": 5}
# Fragment verdicts are remembered "a few seconds" (contract). Tails are sent within 10 ms of their
# first fragment, or at least 60 s after it: never in between, where the contract does not say.
FRAG_FRESH_US, FRAG_STALE_US = 10_000, 60_000_000
GW_MAC = "02:00:00:00:00:fe"  # outer destination MAC of every frame arriving at the gateway

# (vni, identity, tenant-or-None)
SEGMENTS = [
    (100, "vni", "acme"),
    (200, "vni", "globex"),
    (300, "vni", "hooli"),
    (400, "vni", "shared"),
    (500, "vni", "umbrella"),
    (1, "gbp", None),
    (2, "vlan", None),
    (3, "vlan", None),
]

# name -> (id, vteps or None, address_space or None)
TENANTS = {
    "acme": (10, ["198.18.0.1"], None),
    "globex": (20, ["198.18.0.2", "2001:2::2"], None),
    "initech": (30, None, None),
    "shared": (40, ["198.18.0.4"], "default"),
    "umbrella": (50, ["198.18.0.5"], "umbrella"),
    "wayne": (60, None, "umbrella"),
    "hooli": (70, ["2001:2::1", "198.18.0.7"], None),
    "contractor": (80, None, None),
}

# (tenant, ip, mac, vtep, egress vni)
ENDPOINTS = [
    ("acme", "198.19.0.1", "02:00:00:00:0a:01", "198.18.0.1", 100),
    ("acme", "198.19.0.2", "02:00:00:00:0a:02", "198.18.0.1", 1),
    ("acme", "198.19.0.3", "02:00:00:00:0a:03", "198.18.0.1", 2),
    ("acme", "198.19.0.4", "02:00:00:00:0a:04", "198.18.0.1", 3),
    ("acme", "198.19.0.5", "02:00:00:00:0a:05", "198.18.0.1", 100),
    ("acme", "198.19.0.17", "02:00:00:00:0a:11", "198.18.0.1", 100),
    ("acme", "2001:2:0:2::1", "02:00:00:00:0a:21", "198.18.0.1", 100),
    ("globex", "198.19.1.1", "02:00:00:00:14:01", "198.18.0.2", 200),
    ("globex", "198.19.1.2", "02:00:00:00:14:02", "198.18.0.2", 1),
    ("globex", "198.19.1.3", "02:00:00:00:14:03", "198.18.0.2", 2),
    ("globex", "2001:2:0:4::1", "02:00:00:00:14:21", "2001:2::2", 1),
    ("globex", "2001:2:0:4::5", "02:00:00:00:14:25", "2001:2::2", 1),
    ("initech", "198.19.2.1", "02:00:00:00:1e:01", "198.18.0.9", 1),
    ("initech", "198.19.2.129", "02:00:00:00:1e:81", "198.18.0.9", 2),
    ("initech", "2001:2:0:3::1", "02:00:00:00:1e:21", "198.18.0.9", 1),
    ("initech", "198.19.2.200", "02:00:00:00:1e:c8", "198.18.0.200", 1),
    ("shared", "198.19.3.1", "02:00:00:00:28:01", "198.18.0.4", 400),
    ("umbrella", "198.19.0.1", "02:00:00:00:32:01", "198.18.0.5", 500),
    ("umbrella", "198.19.0.5", "02:00:00:00:32:05", "198.18.0.5", 500),
    ("umbrella", "198.19.5.1", "02:00:00:00:32:51", "198.18.0.5", 1),
    ("wayne", "198.19.0.3", "02:00:00:00:3c:03", "198.18.0.6", 2),
    ("hooli", "2001:2:0:1::1", "02:00:00:00:46:01", "2001:2::1", 300),
    ("hooli", "2001:2:0:1::2", "02:00:00:00:46:02", "198.18.0.7", 1),
    ("hooli", "198.19.7.1", "02:00:00:00:46:71", "2001:2::1", 2),
    ("hooli", "2001:2:0:1::5", "02:00:00:00:46:05", "2001:2::1", 300),
    ("hooli", "198.19.7.2", "02:00:00:00:46:72", "2001:2::1", 300),
    ("contractor", "198.19.8.1", "02:00:00:00:50:01", "198.18.0.8", 1),
]

# Each rule: dict with the TOML keys (only those present are written). "id" is a label for comments.
RULES = [
    dict(id="R1", frm="acme", to="globex", proto="tcp", ports="443", action="allow", priority=100),
    dict(id="R2", frm="acme", to="globex", proto="tcp", ports="8000-8080", action="allow", priority=10),
    dict(id="R3", frm="acme", to="globex", proto="tcp", ports="8050", action="deny", priority=10),
    dict(id="R4", frm="acme", to="globex", proto="udp", action="deny", priority=50),
    dict(id="R5", frm="acme", to="globex", proto="udp", ports="5000", action="allow", priority=60),
    dict(id="R6", frm="acme", to="globex", proto="udp", ports="6000", action="allow", priority=40),
    dict(id="R7", frm="*", to="shared", proto="udp", ports="53", action="allow", priority=0),
    dict(id="R8", frm="*", to="*", proto="tcp", ports="23", action="deny", priority=0),
    dict(id="R9", frm="initech", to="*", proto="icmp", action="allow", priority=0),
    # R10: proto omitted on purpose (= any); no priority key on purpose (= 0)
    dict(id="R10", frm="globex", to="initech", to_cidr="198.19.2.128/25", action="allow"),
    dict(id="R11", frm="acme", to="globex", proto="tcp", ports="22", from_cidr="198.19.0.16/28",
         action="allow", priority=0),
    dict(id="R12", frm="acme", to="hooli", proto="tcp", ports="443", to_cidr="2001:2:0:1::/64",
         action="allow", priority=0),
    dict(id="R13", frm="acme", to="globex", proto="tcp", ports="9000", action="allow", priority=0,
         not_before="2026-07-01T00:00:00Z"),
    dict(id="R14", frm="acme", to="globex", proto="tcp", ports="9001", action="allow", priority=0,
         not_after="2026-05-01T00:00:00Z"),
    dict(id="R15", frm="acme", to="globex", proto="tcp", ports="9002", action="allow", priority=0,
         not_before="2026-05-01T00:00:00Z", not_after="2026-07-01T00:00:00Z"),
    dict(id="R16", frm="acme", to="acme", proto="tcp", ports="25", action="deny", priority=0,
         not_after="2026-01-01T00:00:00Z"),
    dict(id="R17", frm="acme", to="acme", proto="tcp", ports="26", action="deny", priority=0,
         not_before="2026-07-01T00:00:00Z"),
    dict(id="R18", frm="acme", to="contractor", proto="tcp", ports="443", action="allow", priority=0,
         not_after="2026-03-01T00:00:00Z"),
    dict(id="R19", frm="globex", to="contractor", proto="tcp", ports="443", action="allow", priority=0,
         not_before="2026-09-01T00:00:00Z"),
    dict(id="R20", frm="umbrella", to="wayne", proto="tcp", ports="443", action="allow", priority=0),
    dict(id="R21", frm="umbrella", to="acme", proto="any", action="allow", priority=0),
    dict(id="R22", frm="acme", to="globex", proto="tcp", ports="9100", action="allow", priority=0,
         not_before="2026-06-01T11:00:00.250Z", not_after="2026-06-01T12:00:00Z"),
]

RULE_COMMENTS = {
    "R1": "allow with mirrored replies (globex -> acme, source port 443)",
    "R2": "port range",
    "R3": "same priority as R2: deny wins the tie on 8050",
    "R4": "all acme -> globex UDP denied at priority 50 ...",
    "R5": "... except 5000, whose higher priority wins",
    "R6": "... but not 6000, whose lower priority loses",
    "R7": "wildcard source: everyone may reach the shared DNS",
    "R8": "wildcard both sides: telnet denied everywhere, even inside a tenant",
    "R9": "wildcard destination: initech may ping anyone (ICMPv4 and ICMPv6)",
    "R10": "destination CIDR; proto omitted = any; priority omitted = 0",
    "R11": "source CIDR",
    "R12": "IPv6 destination CIDR",
    "R13": "not yet valid on 2026-06-01, valid from 2026-07-01",
    "R14": "expired on 2026-05-01",
    "R15": "valid 2026-05-01 .. 2026-07-01 only",
    "R16": "an expired deny: acme's own SMTP is allowed again",
    "R17": "a deny that starts on 2026-07-01",
    "R18": "expired allow (ARP to contractor denied too)",
    "R19": "allow starting 2026-09-01",
    "R20": "inside the umbrella address space",
    "R21": "cross-address-space rule: allowed, but umbrella can never resolve acme's addresses",
    "R22": "sub-second window: from 11:00:00.25 to 12:00:00 on 2026-06-01, both instants included",
}


def toml_config(replies: str) -> str:
    if replies == "tracked":
        head = ["# joypath policy of the captures in pcap-fixtures/ (generated by scripts/mkfixtures.py):",
                "# replies are tracked. stateless.toml is the same policy with stateless mirrored replies."]
    else:
        head = ["# The policy of fixtures.toml with replies = \"stateless\" (generated by scripts/mkfixtures.py):",
                "# what verdicts.pcap is replayed against, to pin the mirrored match and the hole it opens."]
    out = head + ["", "[gateway]"]
    out.append(f'underlay_ip = "{GATEWAY["underlay_ip"]}"')
    out.append(f'underlay_ip6 = "{GATEWAY["underlay_ip6"]}"')
    out.append(f'udp_port = {GATEWAY["udp_port"]}')
    out.append(f'mtu = {GATEWAY["mtu"]}')
    out.append(f'replies = "{replies}"')
    out += ["", "[gateway.flow_timeouts]"] + [f"{k} = {v}" for k, v in FLOW_TIMEOUTS.items()]
    for vni, ident, tenant in SEGMENTS:
        out += ["", "[[segment]]", f"vni = {vni}", f'identity = "{ident}"']
        if tenant:
            out.append(f'tenant = "{tenant}"')
    for name, (tid, vteps, space) in TENANTS.items():
        out += ["", "[[tenant]]", f'name = "{name}"', f"id = {tid}"]
        if vteps is not None:
            out.append("vteps = [" + ", ".join(f'"{v}"' for v in vteps) + "]")
        if space is not None:
            out.append(f'address_space = "{space}"')
    for tenant, ip, mac, vtep, vni in ENDPOINTS:
        out += ["", "[[endpoint]]", f'tenant = "{tenant}"', f'ip = "{ip}"', f'mac = "{mac}"',
                f'vtep = "{vtep}"', f"vni = {vni}"]
    for r in RULES:
        out += ["", f"[[rule]]          # {r['id']}: {RULE_COMMENTS[r['id']]}",
                f'from = "{r["frm"]}"', f'to = "{r["to"]}"']
        for k in ("proto", "ports", "from_cidr", "to_cidr", "action"):
            if k in r:
                out.append(f'{k} = "{r[k]}"')
        if "priority" in r:
            out.append(f"priority = {r['priority']}")
        for k in ("not_before", "not_after"):
            if k in r:
                out.append(f'{k} = "{r[k]}"')
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Packet building
# --------------------------------------------------------------------------------------------

def mac(s: str) -> bytes:
    return bytes(int(x, 16) for x in s.split(":"))


def ipb(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def is6(s: str) -> bool:
    return ipaddress.ip_address(s).version == 6


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def l4_csum(src: str, dst: str, proto: int, seg: bytes) -> int:
    if is6(src):
        pseudo = ipb(src) + ipb(dst) + struct.pack("!IxxxB", len(seg), proto)
    else:
        pseudo = ipb(src) + ipb(dst) + struct.pack("!xBH", proto, len(seg))
    c = csum(pseudo + seg)
    return c if c else 0xFFFF


def with_csum(seg: bytes, off: int, c: int) -> bytes:
    return seg[:off] + struct.pack("!H", c) + seg[off + 2:]


def ipv4(src, dst, proto, payload, *, ident=0, df=True, mf=False, frag=0, ttl=64, options=b"",
         version=4, ihl=None, total_length=None, bad_csum=False) -> bytes:
    hl = 20 + len(options)
    ihl = hl // 4 if ihl is None else ihl
    tl = hl + len(payload) if total_length is None else total_length
    ff = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tl, ident & 0xFFFF, ff, ttl, proto, 0,
                    ipb(src), ipb(dst)) + options
    c = csum(h)
    if bad_csum:
        c ^= 0x0101
    return with_csum(h, 10, c) + payload


def ipv6(src, dst, nh, payload, *, plen=None, hlim=64) -> bytes:
    pl = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", 0x60000000, pl, nh, hlim, ipb(src), ipb(dst)) + payload


def ip_packet(src, dst, proto, l4, **kw) -> bytes:
    return ipv6(src, dst, proto, l4) if is6(src) else ipv4(src, dst, proto, l4, **kw)


SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
SA, FA = SYN | ACK, FIN | ACK


def tcp_seg(src, dst, sport, dport, payload_len=0, flags=SYN) -> bytes:
    """A TCP segment (header + payload) with a valid checksum."""
    payload = bytes((i * 7 + 3) & 0xFF for i in range(payload_len))
    ack = 2000 if flags & ACK else 0
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, ack, 5 << 4, flags, 64240, 0, 0) + payload
    return with_csum(seg, 16, l4_csum(src, dst, 6, seg))


def tcp(src, dst, sport, dport, payload_len=0, flags=SYN) -> bytes:
    return ip_packet(src, dst, 6, tcp_seg(src, dst, sport, dport, payload_len, flags))


def frag4(src, dst, proto, l4, ident, cuts) -> list:
    """IPv4 fragments of one datagram carrying `l4` (a transport segment), cut at byte offsets `cuts`
    (multiples of 8): the first holds the transport header, the others follow it."""
    edges = [0] + list(cuts) + [len(l4)]
    out = []
    for k in range(len(edges) - 1):
        a, b = edges[k], edges[k + 1]
        assert a % 8 == 0
        out.append(ipv4(src, dst, proto, l4[a:b], ident=ident, df=False, mf=b < len(l4), frag=a // 8))
    return out


def frag6(src, dst, nh, l4, ident, cuts) -> list:
    """IPv6 fragments (fragment header 44) of one packet carrying `l4`, cut at offsets `cuts`."""
    edges = [0] + list(cuts) + [len(l4)]
    out = []
    for k in range(len(edges) - 1):
        a, b = edges[k], edges[k + 1]
        assert a % 8 == 0
        fh = struct.pack("!BBHI", nh, 0, a | (1 if b < len(l4) else 0), ident)
        out.append(ipv6(src, dst, 44, fh + l4[a:b]))
    return out


def tcp6_ext(src, dst, sport, dport, ext: list, flags=SYN) -> bytes:
    """An IPv6 TCP packet behind extension headers `ext` (a list of (type, builder) where builder
    takes the next header and returns the header bytes)."""
    seg = tcp_seg(src, dst, sport, dport, 0, flags)
    nxt, body = 6, seg
    for typ, build in reversed(ext):
        body = build(nxt) + body
        nxt = typ
    return ipv6(src, dst, nxt, body)


AH = (51, lambda nh: struct.pack("!BBHII", nh, 4, 0, 0x1000, 1) + bytes(range(12)))
DSTOPT = (60, lambda nh: struct.pack("!BB", nh, 0) + b"\x01\x04\0\0\0\0")  # PadN


def icmp_error(src, dst, quoted: bytes, *, v6=None, kind="frag") -> bytes:
    """An ICMP error from src to dst quoting `quoted` (the offending packet's IP header and first
    bytes): IPv4 type 3 code 4 (fragmentation needed, next-hop MTU 1400) or type 11 (time exceeded),
    ICMPv6 type 2 (packet too big, MTU 1280)."""
    if is6(src):
        msg = struct.pack("!BBHI", 2, 0, 0, 1280) + quoted
        return ip_packet(src, dst, 58, with_csum(msg, 2, l4_csum(src, dst, 58, msg)))
    t, code, rest = (3, 4, struct.pack("!HH", 0, 1400)) if kind == "frag" else (11, 0, b"\0\0\0\0")
    msg = struct.pack("!BBH", t, code, 0) + rest + quoted[:28]
    return ip_packet(src, dst, 1, with_csum(msg, 2, csum(msg)))


def udp_l4(src, dst, sport, dport, payload, *, checksum=True, length=None) -> bytes:
    ln = 8 + len(payload) if length is None else length
    seg = struct.pack("!HHHH", sport, dport, ln, 0) + payload
    if checksum:
        seg = with_csum(seg, 6, l4_csum(src, dst, 17, seg))
    return seg


def udp(src, dst, sport, dport, payload_len=8) -> bytes:
    payload = bytes((i * 5 + 1) & 0xFF for i in range(payload_len))
    return ip_packet(src, dst, 17, udp_l4(src, dst, sport, dport, payload))


def icmp(src, dst, *, reply=False, ident=1, seq=1, typ=None) -> bytes:
    data = b"joypath-fixture!"
    if is6(src):
        t = typ if typ is not None else 129 if reply else 128
        msg = struct.pack("!BBHHH", t, 0, 0, ident, seq) + data
        return ip_packet(src, dst, 58, with_csum(msg, 2, l4_csum(src, dst, 58, msg)))
    t = 0 if reply else 8
    msg = struct.pack("!BBHHH", t, 0, 0, ident, seq) + data
    return ip_packet(src, dst, 1, with_csum(msg, 2, csum(msg)))


def solicited_node(target) -> str:
    t = ipaddress.ip_address(target).packed
    return str(ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + t[-3:]))


def mcast_mac(ip6: str) -> str:
    t = ipaddress.ip_address(ip6).packed
    return "33:33:" + ":".join(f"{b:02x}" for b in t[-4:])


def neighbor_solicit(src, target, *, slla=None, dst=None) -> bytes:
    """A neighbour solicitation for `target` (to its solicited-node address unless `dst`), with a
    source link-layer address option when `slla` is given."""
    t = ipaddress.ip_address(target).packed
    dst = dst or solicited_node(target)
    msg = struct.pack("!BBHI", 135, 0, 0, 0) + t
    if slla:
        msg += b"\x01\x01" + mac(slla)
    return ipv6(src, dst, 58, with_csum(msg, 2, l4_csum(src, dst, 58, msg)), hlim=255)


def icmp6_msg(src, dst, typ, body=b"\0\0\0\0", hlim=255) -> bytes:
    msg = struct.pack("!BBH", typ, 0, 0) + body
    return ipv6(src, dst, 58, with_csum(msg, 2, l4_csum(src, dst, 58, msg)), hlim=hlim)


def eth(dst, src, etype, payload, *, vid=None, pcp=0, tpid=0x8100) -> bytes:
    h = mac(dst) + mac(src)
    if vid is not None:
        h += struct.pack("!HH", tpid, (pcp << 13) | vid)
    return h + struct.pack("!H", etype) + payload


def arp(op, sha, spa, tha, tpa, *, htype=1, ptype=0x0800, hlen=6, plen=4) -> bytes:
    return (struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + mac(sha) + ipb(spa) + mac(tha)
            + ipb(tpa))


def vxlan(vni, inner, *, flags=None, group=None, b1=0, b7=0) -> bytes:
    if flags is None:
        flags = 0x88 if group is not None else 0x08
    g = group or 0
    return struct.pack("!BBH", flags, b1, g) + struct.pack("!I", vni << 8 | b7) + inner


VTEP_MAC = {}


def vtep_mac(ip: str) -> str:
    if ip not in VTEP_MAC:
        n = len(VTEP_MAC) + 1
        VTEP_MAC[ip] = f"02:00:00:00:01:{n:02x}"
    return VTEP_MAC[ip]


def outer(src_vtep, vx: bytes, *, sport=49400, dport=4789, udp_length=None, ip_kw=None,
          nh=17, plen=None, etype=None, outer_src_mac=None) -> bytes:
    """Wrap a VXLAN header+inner frame (vx) into outer Eth / IPv4|IPv6 / UDP toward the gateway."""
    ip_kw = ip_kw or {}
    if is6(src_vtep):
        dst = GATEWAY["underlay_ip6"]
        seg = udp_l4(src_vtep, dst, sport, dport, vx, length=udp_length)
        pkt = ipv6(src_vtep, dst, nh, seg, plen=plen)
        et = 0x86DD
    else:
        dst = GATEWAY["underlay_ip"]
        seg = udp_l4(src_vtep, dst, sport, dport, vx, checksum=False, length=udp_length)
        pkt = ipv4(src_vtep, dst, ip_kw.pop("proto", 17), seg, **ip_kw)
        et = 0x0800
    return eth(GW_MAC, outer_src_mac or vtep_mac(src_vtep), et if etype is None else etype, pkt)


EP_MAC = {ip: m for _, ip, m, _, _ in ENDPOINTS}
UNKNOWN_MAC = "02:00:00:00:99:99"
BCAST = "ff:ff:ff:ff:ff:ff"


def src_mac_for(ip: str) -> str:
    return EP_MAC.get(ip, "02:00:00:00:77:" + f"{ipaddress.ip_address(ip).packed[-1]:02x}")


def inner_frame(pkt: bytes, *, dst_mac=None, src_mac=None, vid=None, pcp=0, tpid=0x8100) -> bytes:
    v = pkt[0] >> 4
    src = pkt[12:16] if v == 4 else pkt[8:24]
    dst = pkt[16:20] if v == 4 else pkt[24:40]
    src_s, dst_s = str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))
    dm = dst_mac or EP_MAC.get(dst_s, UNKNOWN_MAC)
    sm = src_mac or src_mac_for(src_s)
    return eth(dm, sm, 0x86DD if v == 6 else 0x0800, pkt, vid=vid, pcp=pcp, tpid=tpid)


# How a tenant's frames enter: (kind, value, default vtep). kind: vni segment / gbp group / vlan VID.
def via(tenant, mode="vni"):
    tid = TENANTS[tenant][0]
    vteps = TENANTS[tenant][1]
    default_vtep = {"initech": "198.18.0.9", "wayne": "198.18.0.6",
                    "contractor": "198.18.0.8"}.get(tenant) or vteps[0]
    if mode == "vni":
        vni = next(v for v, i, t in SEGMENTS if i == "vni" and t == tenant)
        return ("vni", vni, default_vtep)
    if mode == "gbp":
        return ("gbp", tid, default_vtep)
    if mode == "vlan":
        return ("vlan", tid, default_vtep)
    raise ValueError(mode)


def send(v, frame_or_pkt, *, vtep=None, vni=None, pcp=0, dst_mac=None, src_mac=None, is_frame=False,
         outer_src_mac=None, **vxkw) -> bytes:
    """Encapsulate an inner packet (or a ready inner frame when is_frame) as tenant ingress `v`."""
    kind, val, default_vtep = v
    vtep = vtep or default_vtep
    if is_frame:
        inner = frame_or_pkt
        if kind == "vlan":  # insert a tag after the MACs
            inner = inner[:12] + struct.pack("!HH", 0x8100, (pcp << 13) | val) + inner[12:]
    else:
        inner = inner_frame(frame_or_pkt, dst_mac=dst_mac, src_mac=src_mac,
                            vid=val if kind == "vlan" else None, pcp=pcp)
    if kind == "vni":
        vx = vxlan(vni or val, inner, **vxkw)
    elif kind == "gbp":
        vx = vxlan(vni or 1, inner, group=val, **vxkw)
    else:
        vx = vxlan(vni or 2, inner, **vxkw)
    return outer(vtep, vx, outer_src_mac=outer_src_mac)


def tcp_sized(src, dst, sport, dport, inner_len, tagged=False) -> bytes:
    """A TCP packet whose inner Ethernet frame (untagged, or tagged) is exactly inner_len bytes."""
    hdr = 14 + (4 if tagged else 0) + (40 if is6(src) else 20) + 20
    return tcp(src, dst, sport, dport, inner_len - hdr)


def arp_req(spa, tpa, *, sha=None, dst=BCAST, pad=True, op=1, **kw) -> bytes:
    sha = sha or src_mac_for(spa) if spa != "0.0.0.0" else (sha or "02:00:00:00:77:00")
    body = arp(op, sha, spa, "00:00:00:00:00:00" if op == 1 else EP_MAC.get(tpa, UNKNOWN_MAC), tpa, **kw)
    if pad:
        body += b"\0" * (46 - len(body))
    return eth(dst, sha, 0x0806, body)


# --------------------------------------------------------------------------------------------
# Captures
# --------------------------------------------------------------------------------------------

def ts_of(iso: str) -> int:
    """RFC 3339 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z' -> microseconds since the epoch."""
    y, mo, d = int(iso[0:4]), int(iso[5:7]), int(iso[8:10])
    h, mi, s = int(iso[11:13]), int(iso[14:16]), int(iso[17:19])
    frac = iso[19:-1].lstrip(".")
    assert iso.endswith("Z") and len(frac) <= 6
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000 + int((frac or "0").ljust(6, "0"))


BASE = ts_of("2026-06-01T00:00:00Z")


class Capture:
    def __init__(self, name: str, pcapng=False, policy="fixtures.toml"):
        self.name, self.pcapng, self.policy = name, pcapng, policy
        self.frames = []  # (ts_us, bytes, disposition, reason, tenant, comment)
        self.next_ts = BASE

    def at(self, iso: str):
        """The next frame is stamped at this instant (and those after it +1 ms each)."""
        self.next_ts = ts_of(iso)
        return self

    def wait(self, seconds: float):
        """The next frame comes `seconds` after the previous one (instead of 1 ms)."""
        self.next_ts = self.frames[-1][0] + round(seconds * 1_000_000)
        return self

    def add(self, frame: bytes, expect: str, tenant: str, comment: str):
        if expect in ("forward", "arp_reply", "nd_reply"):
            disp, reason = expect, "-"
        else:
            disp, reason = "drop", expect
        assert "\t" not in comment and "\n" not in comment
        ts = self.next_ts
        if self.frames:
            assert ts > self.frames[-1][0]
        self.frames.append((ts, frame, disp, reason, tenant, comment))
        self.next_ts = ts + 1000


def build_identity() -> Capture:
    c = Capture("identity")
    A, G = "198.19.0.1", "198.19.1.1"
    acme, globex, initech = via("acme"), via("globex"), via("initech", "gbp")
    c.add(send(acme, tcp(A, "198.19.0.2", 40000, 80)), "forward", "acme",
          "vni identity (segment 100 = acme); egress gbp segment 1")
    c.add(send(via("acme", "gbp"), tcp("198.19.0.2", A, 40001, 80)), "forward", "acme",
          "gbp identity (group 10 = acme); egress legacy vni 100")
    c.add(send(via("acme", "vlan"), tcp("198.19.0.3", A, 40002, 80)), "forward", "acme",
          "vlan identity (VID 10 = acme) on segment 2; tag popped for vni egress")
    c.add(send(globex, tcp(G, "198.19.1.2", 40003, 80)), "forward", "globex",
          "vni identity (segment 200 = globex); egress gbp")
    c.add(send(via("globex", "gbp"), tcp("198.19.1.2", G, 40004, 80)), "forward", "globex",
          "gbp identity (group 20 = globex); egress vni 200")
    c.add(send(via("globex", "vlan"), tcp("198.19.1.3", "198.19.1.3", 40005, 80)), "forward", "globex",
          "vlan identity (VID 20 = globex); vlan egress: tag rewritten in place")
    c.add(send(initech, tcp("198.19.2.129", "198.19.2.1", 40006, 80)), "forward", "initech",
          "gbp identity (group 30 = initech), tenant without vteps")
    c.add(send(initech, tcp("198.19.2.200", "198.19.2.1", 40007, 80), vtep="198.18.0.200"), "forward",
          "initech", "tenant without vteps list accepts any source VTEP (198.18.0.200, where initech's 198.19.2.200 is)")
    c.add(send(via("initech", "vlan"), tcp("198.19.2.1", "198.19.2.129", 40008, 80)), "forward", "initech",
          "vlan identity (VID 30 = initech); vlan egress")
    c.add(send(acme, tcp(A, "198.19.0.2", 40009, 80), group=20), "forward", "acme",
          "G bit + group 20 (globex) on a vni segment are ignored: identity is still acme")
    c.add(send(via("acme", "vlan"), tcp("198.19.0.3", A, 40010, 80), pcp=5), "forward", "acme",
          "vlan identity with PCP 5 in the tag: VID is the low 12 bits (10 = acme)")
    c.add(send(via("acme", "gbp"), tcp("198.19.0.2", A, 40011, 80), b1=0x48), "forward", "acme",
          "gbp ingress with D and A bits set in byte 1: not checked, identity acme")
    c.add(send(via("acme", "gbp"), tcp("198.19.0.2", "198.19.0.3", 40012, 80)), "forward", "acme",
          "gbp ingress to an endpoint on vlan segment 2: tag pushed")
    c.add(send(via("acme", "vlan"), tcp("198.19.0.4", "198.19.0.3", 40013, 80), vni=3), "forward", "acme",
          "vlan identity on a second vlan segment (3) toward vlan segment 2: tag rewritten")
    c.add(send(acme, tcp(A, "198.19.0.4", 40014, 80)), "forward", "acme",
          "vni ingress to an endpoint on vlan segment 3: tag pushed")
    # MTU arithmetic with tag push / pop (mtu 1500, IPv4 underlay: 20+8+8 = 36 bytes of overhead)
    c.add(send(via("acme", "gbp"), tcp_sized("198.19.0.2", "198.19.0.3", 40015, 80, 1460)), "forward",
          "acme", "push: 1460-byte untagged inner + 4-byte tag = 1464, outer IP 1500 = mtu")
    c.add(send(via("acme", "gbp"), tcp_sized("198.19.0.2", "198.19.0.3", 40016, 80, 1461)), "too_big",
          "acme", "push: 1461-byte untagged inner + 4-byte tag = 1465, outer IP 1501 > mtu")
    c.add(send(via("acme", "vlan"), tcp_sized("198.19.0.3", "198.19.0.2", 40017, 80, 1468, True)),
          "forward", "acme", "pop: 1468-byte tagged inner - 4 = 1464, outer IP 1500 = mtu")
    c.add(send(via("acme", "vlan"), tcp_sized("198.19.0.3", "198.19.0.2", 40018, 80, 1469, True)),
          "too_big", "acme", "pop: 1469-byte tagged inner - 4 = 1465, outer IP 1501 > mtu")
    c.add(send(via("acme", "vlan"), tcp_sized("198.19.0.2", "198.19.0.3", 40019, 80, 1464, True)),
          "forward", "acme", "vlan to vlan: 1464-byte tagged inner stays 1464, outer IP 1500 = mtu")
    c.add(send(via("acme", "vlan"), tcp_sized("198.19.0.2", "198.19.0.3", 40020, 80, 1465, True)),
          "too_big", "acme", "vlan to vlan: 1465-byte tagged inner stays 1465, outer IP 1501 > mtu")
    c.add(send(acme, tcp_sized("198.19.0.2", A, 40021, 80, 1464)), "forward", "acme",
          "vni to vni: 1464-byte inner, outer IP 1500 = mtu")
    c.add(send(acme, tcp_sized("198.19.0.2", A, 40022, 80, 1465)), "too_big", "acme",
          "vni to vni: 1465-byte inner, outer IP 1501 > mtu")
    # identity failures
    c.add(send(via("acme", "gbp"), tcp("198.19.0.2", A, 40023, 80), flags=0x08), "no_identity", "-",
          "gbp segment, G bit unset (group bytes still say 10)")
    c.add(send(("gbp", 999, "198.18.0.1"), tcp("198.19.0.2", A, 40024, 80)), "no_identity", "-",
          "gbp group 999 is no tenant id")
    c.add(send(("gbp", 0, "198.18.0.1"), tcp("198.19.0.2", A, 40025, 80)), "no_identity", "-",
          "gbp group 0 with G bit set is no tenant id")
    c.add(send(("vni", 2, "198.18.0.1"), tcp("198.19.0.3", A, 40026, 80)), "no_identity", "-",
          "vlan segment, inner frame untagged")
    c.add(send(("vlan", 999, "198.18.0.1"), tcp("198.19.0.3", A, 40027, 80)), "no_identity", "-",
          "vlan segment, VID 999 is no tenant id")
    c.add(send(("vlan", 0, "198.18.0.1"), tcp("198.19.0.3", A, 40028, 80), pcp=3), "no_identity", "-",
          "vlan segment, priority-tagged frame (VID 0)")
    fr = inner_frame(tcp("198.19.0.3", A, 40029, 80), vid=10, tpid=0x88A8)
    c.add(outer("198.18.0.1", vxlan(2, fr)), "no_identity", "-",
          "vlan segment, inner 802.1ad S-tag (0x88a8) VID 10 is not an 802.1Q tag")
    c.add(send(via("globex", "gbp"), tcp(G, "198.19.1.2", 40030, 80), vtep="198.18.0.1"),
          "spoofed_identity", "globex", "gbp group 20 (globex) sent from acme's VTEP 198.18.0.1")
    c.add(send(via("acme", "vlan"), tcp("198.19.0.3", A, 40031, 80), vtep="198.18.0.2"),
          "spoofed_identity", "acme", "vlan VID 10 (acme) sent from globex's VTEP 198.18.0.2")
    c.add(send(acme, tcp(A, "198.19.0.2", 40032, 80), vtep="198.18.0.9"), "spoofed_identity", "acme",
          "vni segment 100 (acme) sent from 198.18.0.9, not in acme's vteps")
    c.add(send(globex, tcp(G, "198.19.1.2", 40033, 80), vtep="198.18.0.1"), "spoofed_identity", "globex",
          "vni segment 200 (globex) sent from acme's VTEP")
    c.add(send(("vni", 7777, "198.18.0.1"), tcp(A, "198.19.0.2", 40034, 80)), "unknown_segment", "-",
          "VNI 7777 is not a configured segment")
    c.add(send(("vni", 0, "198.18.0.1"), tcp(A, "198.19.0.2", 40035, 80)), "unknown_segment", "-",
          "VNI 0 is not a configured segment")
    return c


def build_verdicts() -> Capture:
    c = Capture("verdicts", policy="stateless.toml")
    A, A17, G, I, I129, S = "198.19.0.1", "198.19.0.17", "198.19.1.1", "198.19.2.1", "198.19.2.129", "198.19.3.1"
    acme, globex, initech, shared = via("acme"), via("globex"), via("initech", "gbp"), via("shared")
    t = lambda *a: tcp(*a)  # noqa: E731
    c.add(send(acme, t(A, "198.19.0.2", 40000, 80)), "forward", "acme", "intra-tenant, no rule: default allow")
    c.add(send(acme, udp(A, "198.19.0.2", 40001, 9999)), "forward", "acme", "intra-tenant UDP: default allow")
    c.add(send(acme, t(A, I, 40002, 80)), "policy_denied", "acme", "cross-tenant acme -> initech tcp/80, no rule: default deny")
    c.add(send(acme, t(A, G, 40003, 443)), "forward", "acme", "R1 allow acme -> globex tcp/443")
    c.add(send(acme, t(A, G, 40004, 80)), "policy_denied", "acme", "acme -> globex tcp/80: port mismatch, default deny")
    c.add(send(acme, udp(A, G, 40005, 443)), "policy_denied", "acme", "acme -> globex udp/443: R1 is tcp only; R4 denies all udp")
    c.add(send(acme, icmp(A, G)), "policy_denied", "acme", "acme -> globex icmp: no rule matches the protocol, default deny")
    c.add(send(globex, t(G, A, 443, 40006)), "forward", "globex", "globex -> acme tcp from port 443: stateless reply admitted by mirrored R1")
    c.add(send(globex, t(G, A, 40007, 443)), "policy_denied", "globex", "globex -> acme tcp/443: new connection B -> A not admitted by R1")
    c.add(send(globex, udp(G, A, 443, 40008)), "policy_denied", "globex", "globex -> acme udp from port 443: mirror of R1 needs tcp")
    c.add(send(acme, t(A, G, 40009, 7999)), "policy_denied", "acme", "tcp/7999 just below R2 range 8000-8080")
    c.add(send(acme, t(A, G, 40010, 8000)), "forward", "acme", "tcp/8000 R2 range lower bound (inclusive)")
    c.add(send(acme, t(A, G, 40011, 8080)), "forward", "acme", "tcp/8080 R2 range upper bound (inclusive)")
    c.add(send(acme, t(A, G, 40012, 8081)), "policy_denied", "acme", "tcp/8081 just above R2 range")
    c.add(send(acme, t(A, G, 40013, 8050)), "policy_denied", "acme", "tcp/8050: R2 allow and R3 deny both priority 10, deny wins the tie")
    c.add(send(acme, t(A, G, 40014, 8049)), "forward", "acme", "tcp/8049: only R2 matches")
    c.add(send(globex, t(G, A, 8050, 40015)), "forward", "globex", "reply from port 8050: mirrored R2 admits it, deny R3 is never mirrored")
    c.add(send(globex, t(G, A, 8080, 40016)), "forward", "globex", "reply from port 8080: mirrored R2 range")
    c.add(send(acme, udp(A, G, 40017, 5000)), "forward", "acme", "udp/5000: R5 allow prio 60 beats R4 deny prio 50 (passes only by priority)")
    c.add(send(acme, udp(A, G, 40018, 6000)), "policy_denied", "acme", "udp/6000: R4 deny prio 50 beats R6 allow prio 40")
    c.add(send(acme, udp(A, G, 40019, 7000)), "policy_denied", "acme", "udp/7000: only R4 deny")
    c.add(send(globex, udp(G, A, 5000, 40020)), "forward", "globex", "udp reply from 5000: mirrored R5")
    c.add(send(globex, udp(G, A, 6000, 40021)), "forward", "globex", "udp reply from 6000: mirrored R6; R4 (deny, acme -> globex) is not a candidate for globex -> acme")
    c.add(send(acme, udp(A, S, 40022, 53)), "forward", "acme", "R7 * -> shared udp/53 (wildcard source)")
    c.add(send(globex, udp(G, S, 40023, 53)), "forward", "globex", "R7 * -> shared udp/53 for another tenant")
    c.add(send(acme, t(A, S, 40024, 53)), "policy_denied", "acme", "acme -> shared tcp/53: R7 is udp only")
    c.add(send(shared, udp(S, A, 53, 40025)), "forward", "shared", "shared -> acme udp from port 53: mirrored R7 (from * matches acme)")
    c.add(send(shared, udp(S, A, 40026, 53)), "policy_denied", "shared", "shared -> acme udp/53 (new, not a reply): default deny")
    c.add(send(acme, t(A, "198.19.0.2", 40027, 23)), "policy_denied", "acme", "acme -> acme tcp/23: R8 * -> * deny overrides the intra-tenant default")
    c.add(send(globex, t(G, "198.19.1.2", 40028, 23)), "policy_denied", "globex", "globex -> globex tcp/23: R8")
    c.add(send(initech, icmp(I, G)), "forward", "initech", "initech -> globex icmp: R9 initech -> * (wildcard destination)")
    c.add(send(globex, icmp(G, I, reply=True)), "forward", "globex", "globex -> initech icmp: mirrored R9 (no ports)")
    c.add(send(acme, icmp(A, I)), "forward", "acme", "acme -> initech icmp: also admitted by mirrored R9 (stateless: even an echo request)")
    c.add(send(initech, t(I, G, 40029, 80)), "policy_denied", "initech", "initech -> globex tcp: R9 is icmp; mirrored R10 needs inner src in 198.19.2.128/25")
    c.add(send(initech, t(I129, G, 40030, 80)), "forward", "initech", "initech 198.19.2.129 -> globex tcp: mirrored R10 (proto any, to_cidr holds the src)")
    c.add(send(globex, t(G, I129, 40031, 80)), "forward", "globex", "globex -> initech 198.19.2.129 tcp: R10 to_cidr match")
    c.add(send(globex, udp(G, I129, 40032, 123)), "forward", "globex", "globex -> initech 198.19.2.129 udp: R10 proto omitted = any")
    c.add(send(globex, t(G, I, 40033, 80)), "policy_denied", "globex", "globex -> initech 198.19.2.1 tcp: R10 to_cidr mismatch")
    c.add(send(acme, t(A17, G, 40034, 22)), "forward", "acme", "acme 198.19.0.17 -> globex tcp/22: R11 from_cidr match")
    c.add(send(acme, t(A, G, 40035, 22)), "policy_denied", "acme", "acme 198.19.0.1 -> globex tcp/22: R11 from_cidr mismatch")
    c.add(send(globex, t(G, A17, 22, 40036)), "forward", "globex", "reply from 22 to 198.19.0.17: mirrored R11 (from_cidr holds inner dst)")
    c.add(send(globex, t(G, A, 22, 40037)), "policy_denied", "globex", "reply from 22 to 198.19.0.1: mirrored R11 from_cidr mismatch")
    c.add(send(acme, t(A, G, 40038, 9000)), "policy_denied", "acme", "tcp/9000 on 2026-06-01: R13 not yet valid")
    c.add(send(acme, t(A, G, 40039, 9001)), "policy_denied", "acme", "tcp/9001: R14 expired 2026-05-01")
    c.add(send(acme, t(A, G, 40040, 9002)), "forward", "acme", "tcp/9002: R15 window 2026-05-01..2026-07-01 holds")
    c.add(send(acme, t(A, "198.19.0.2", 40041, 25)), "forward", "acme", "acme -> acme tcp/25: deny R16 expired, intra default allow")
    c.add(send(acme, t(A, "198.19.0.2", 40042, 26)), "forward", "acme", "acme -> acme tcp/26: deny R17 not yet valid")
    c.add(send(globex, t(G, A, 9000, 40043)), "policy_denied", "globex", "reply from 9000: mirrored R13 not yet valid either")
    c.add(send(acme, t(A, "198.19.8.1", 40044, 443)), "policy_denied", "acme", "acme -> contractor tcp/443: R18 expired")
    c.add(send(globex, t(G, "198.19.8.1", 40045, 443)), "policy_denied", "globex", "globex -> contractor tcp/443: R19 not yet valid")
    c.at("2026-08-01T00:00:00Z")
    c.add(send(acme, t(A, G, 40046, 9000)), "forward", "acme", "stamped 2026-08-01: R13 now valid")
    c.add(send(acme, t(A, G, 40047, 9002)), "policy_denied", "acme", "stamped 2026-08-01: R15 window over")
    c.add(send(acme, t(A, "198.19.0.2", 40048, 26)), "policy_denied", "acme", "stamped 2026-08-01: deny R17 now valid inside acme")
    c.add(send(globex, t(G, A, 9000, 40049)), "forward", "globex", "stamped 2026-08-01: reply from 9000 admitted by mirrored R13")
    c.at("2026-10-01T00:00:00Z")
    c.add(send(globex, t(G, "198.19.8.1", 40050, 443)), "forward", "globex", "stamped 2026-10-01: R19 valid")
    c.add(send(acme, t(A, "198.19.8.1", 40051, 443)), "policy_denied", "acme", "stamped 2026-10-01: R18 still expired")
    return c


def build_drops() -> Capture:
    c = Capture("drops")
    A = "198.19.0.1"
    acme = via("acme")
    ok_vx = lambda n: vxlan(100, inner_frame(tcp(A, "198.19.0.2", 41000 + n, 80)))  # noqa: E731
    V = "198.18.0.1"
    c.add(bytes.fromhex("020000000000fe0200000001"[:20]), "malformed", "-", "10-byte frame, shorter than Ethernet")
    c.add(eth(BCAST, vtep_mac(V), 0x0806, arp(1, vtep_mac(V), V, "00:00:00:00:00:00", "198.18.0.254")),
          "not_overlay", "-", "outer ARP request for the gateway")
    f = outer(V, ok_vx(2))
    c.add(f[:12] + struct.pack("!HH", 0x8100, 5) + f[12:], "not_overlay", "-",
          "outer 802.1Q-tagged VXLAN (outer ethertype 0x8100)")
    c.add(eth(GW_MAC, vtep_mac(V), 0x88B5, b"\0" * 46), "not_overlay", "-", "outer ethertype 0x88b5")
    f = outer(V, ok_vx(4))
    c.add(f[:14 + 12], "malformed", "-", "outer IPv4 truncated to 12 bytes")
    c.add(outer(V, ok_vx(5), ip_kw=dict(version=6)), "malformed", "-", "outer ethertype IPv4 but version 6")
    c.add(outer(V, ok_vx(6), ip_kw=dict(ihl=4)), "malformed", "-", "outer IPv4 IHL 4")
    n = len(ok_vx(7)) + 8 + 20
    c.add(outer(V, ok_vx(7), ip_kw=dict(total_length=n + 10)), "malformed", "-",
          "outer IPv4 total_length 10 bytes more than captured")
    c.add(outer(V, ok_vx(8), ip_kw=dict(total_length=16)), "malformed", "-",
          "outer IPv4 total_length 16 < header length 20")
    c.add(outer(V, ok_vx(9), ip_kw=dict(bad_csum=True)), "malformed", "-", "outer IPv4 bad header checksum")
    c.add(outer(V, ok_vx(10), ip_kw=dict(options=b"\x01\x01\x01\x01")), "forward", "acme",
          "control: outer IPv4 with 4 bytes of options (IHL 6) parses fine")
    c.add(outer(V, ok_vx(11), ip_kw=dict(mf=True, df=False)), "not_overlay", "-", "outer IPv4 first fragment (MF set)")
    c.add(outer(V, ok_vx(12), ip_kw=dict(frag=185, df=False)), "not_overlay", "-", "outer IPv4 later fragment (offset 185)")
    c.add(outer(V, ok_vx(13), ip_kw=dict(proto=6)), "not_overlay", "-", "outer IPv4 protocol 6 (TCP)")
    c.add(eth(GW_MAC, vtep_mac(V), 0x0800, icmp(V, "198.18.0.254")), "not_overlay", "-",
          "outer ICMP echo to the gateway")
    c.add(eth(GW_MAC, vtep_mac(V), 0x0800, ipv4(V, "198.18.0.254", 17, b"\x12\xb5\x12\xb5\0\x10")),
          "malformed", "-", "outer UDP header truncated to 6 bytes")
    c.add(outer(V, ok_vx(16), dport=53), "not_overlay", "-", "outer UDP to port 53")
    c.add(outer(V, ok_vx(17), dport=4790), "not_overlay", "-", "outer UDP to port 4790 (VXLAN-GPE)")
    c.add(outer(V, ok_vx(18), sport=4789, dport=12345), "not_overlay", "-", "outer UDP from port 4789 to 12345")
    c.add(outer(V, ok_vx(19), dport=53, udp_length=9), "not_overlay", "-",
          "outer UDP to port 53 with bogus length 9: port is checked before length")
    c.add(outer(V, ok_vx(20)[:8], udp_length=12), "malformed", "-", "UDP length 12 < 16")
    c.add(outer(V, ok_vx(21), udp_length=8 + len(ok_vx(21)) + 20), "malformed", "-",
          "UDP length 20 more than the IP payload")
    c.add(outer(V, b""), "malformed", "-", "UDP to 4789 with no VXLAN header (length 8)")
    c.add(outer(V, vxlan(100, inner_frame(tcp(A, "198.19.0.2", 41023, 80)), flags=0x00)), "not_overlay", "-",
          "VXLAN flags 0x00: I flag unset")
    c.add(outer(V, vxlan(1, inner_frame(tcp(A, "198.19.0.2", 41024, 80)), flags=0x80, group=10)),
          "not_overlay", "-", "VXLAN flags 0x80 (G without I) on the gbp segment: I flag unset")
    c.add(outer(V, vxlan(100, inner_frame(tcp(A, "198.19.0.2", 41025, 80)), flags=0x0C)), "malformed", "-",
          "VXLAN flags 0x0c: I set plus reserved bit 0x04")
    c.add(outer(V, vxlan(100, inner_frame(tcp(A, "198.19.0.2", 41026, 80)), flags=0x04)), "not_overlay", "-",
          "VXLAN flags 0x04: reserved bit but I unset, I flag is checked first")
    c.add(outer(V, vxlan(100, inner_frame(tcp(A, "198.19.0.2", 41027, 80)), b7=1)), "malformed", "-",
          "VXLAN reserved byte 7 = 1")
    c.add(outer(V, vxlan(1, inner_frame(tcp(A, "198.19.0.2", 41028, 80)), flags=0x89, group=10)),
          "malformed", "-", "VXLAN flags 0x89: I, G plus reserved bit 0x01")
    c.add(send(("vni", 4242, V), tcp(A, "198.19.0.2", 41029, 80)), "unknown_segment", "-", "VNI 4242 unknown")
    c.add(outer(V, vxlan(4242, b"")), "unknown_segment", "-", "VNI 4242 with an empty inner frame: VNI checked first")
    c.add(outer(V, vxlan(100, mac("02:00:00:00:0a:02") + b"\x02\0\0\0")), "malformed", "-",
          "vni segment 100, 10-byte inner frame (checked before identity, so no tenant)")
    c.add(outer(V, vxlan(100, b"")), "malformed", "-", "vni segment 100, empty inner frame")
    c.add(send(via("acme", "gbp"), tcp(A, "198.19.0.2", 41033, 80), flags=0x08), "no_identity", "-",
          "gbp segment, G bit unset")
    c.add(send(("vni", 2, V), tcp(A, "198.19.0.3", 41034, 80)), "no_identity", "-", "vlan segment, untagged inner")
    c.add(send(acme, tcp(A, "198.19.0.2", 41035, 80), vtep="198.18.0.4"), "spoofed_identity", "acme",
          "acme's segment from shared's VTEP 198.18.0.4")
    c.add(send(acme, udp(A, "198.19.0.255", 68, 67), dst_mac=BCAST, vtep="198.18.0.4"), "spoofed_identity",
          "acme", "spoofed VTEP and a broadcast inner frame: anti-spoofing comes first")
    c.add(send(acme, udp("0.0.0.0", "255.255.255.255", 68, 67), dst_mac=BCAST), "unsupported", "acme",
          "inner broadcast IPv4 (DHCP discover)")
    c.add(send(acme, udp(A, "224.0.0.251", 5353, 5353), dst_mac="01:00:5e:00:00:fb"), "unsupported", "acme",
          "inner multicast IPv4 (mDNS)")
    c.add(send(acme, eth("02:00:00:00:0a:02", "02:00:00:00:0a:01", 0x88B5, b"\0" * 46), is_frame=True),
          "unsupported", "acme", "inner unicast ethertype 0x88b5 (neither IPv4 nor IPv6)")
    c.add(send(via("acme", "vlan"), inner_frame(tcp(A, "198.19.0.3", 41040, 80), vid=10), is_frame=True),
          "unsupported", "acme", "vlan segment, double-tagged inner: ethertype after one tag is 0x8100")
    p = tcp(A, "198.19.0.2", 41041, 80)
    c.add(send(acme, eth("02:00:00:00:0a:02", "02:00:00:00:0a:01", 0x0800, p[:12]), is_frame=True),
          "malformed", "acme", "inner IPv4 truncated to 12 bytes")
    p = tcp(A, "198.19.0.2", 41042, 80)
    p = with_csum(p[:2] + struct.pack("!H", len(p) + 20) + p[4:10] + b"\0\0" + p[12:], 10, 0)
    p = with_csum(p, 10, csum(p[:20]))
    c.add(send(acme, p), "malformed", "acme", "inner IPv4 total_length 20 bytes more than the frame")
    p = tcp(A, "198.19.0.2", 41043, 80)
    p = bytes([0x43]) + p[1:10] + b"\0\0" + p[12:]
    p = with_csum(p, 10, csum(p[:20]))
    c.add(send(acme, p), "malformed", "acme", "inner IPv4 IHL 3")
    p = tcp(A, "198.19.0.2", 41044, 80)
    c.add(send(acme, eth("02:00:00:00:0a:02", "02:00:00:00:0a:01", 0x0800, bytes([0x65]) + p[1:]),
               is_frame=True), "malformed", "acme", "inner ethertype IPv4 but version nibble 6")
    p = tcp(A, "198.19.0.255", 41045, 80)
    c.add(send(acme, eth(BCAST, "02:00:00:00:0a:01", 0x0800, p[:12]), is_frame=True), "unsupported", "acme",
          "inner broadcast with a truncated IPv4 header: broadcast check comes first")
    c.add(send(acme, tcp(A, "198.19.99.99", 41046, 80)), "no_endpoint", "acme", "inner destination 198.19.99.99 unknown")
    c.add(send(acme, tcp(A, "198.19.2.1", 41047, 80)), "policy_denied", "acme", "acme -> initech tcp/80, default cross-tenant deny")
    c.add(send(acme, tcp_sized("198.19.0.2", A, 41048, 80, 1465)), "too_big", "acme",
          "1465-byte inner frame: outer IPv4 20+8+8+1465 = 1501 > mtu 1500")
    c.add(send(acme, tcp_sized("198.19.0.2", A, 41049, 80, 1464)), "forward", "acme",
          "1464-byte inner frame: outer IPv4 1500 = mtu")
    c.add(send(acme, tcp_sized(A, "198.19.2.1", 41050, 80, 1500)), "policy_denied", "acme",
          "big cross-tenant frame: policy verdict comes before the size check")
    c.add(send(acme, tcp_sized(A, "198.19.99.99", 41051, 80, 1500)), "no_endpoint", "acme",
          "big frame to an unknown destination: endpoint lookup comes before the size check")
    c.add(send(acme, arp_req(A, "198.19.0.2", op=2), is_frame=True), "unsupported", "acme", "inner ARP reply (op 2)")
    c.add(send(acme, arp_req(A, "198.19.0.2", htype=6), is_frame=True), "malformed", "acme", "inner ARP with htype 6")
    c.add(send(acme, tcp(A, "198.19.0.2", 41052, 80), src_mac="03:00:00:00:0a:01"), "malformed", "acme",
          "inner source MAC 03:00:00:00:0a:01 is a group address")
    c.add(send(acme, tcp(A, "198.19.0.2", 41053, 80), src_mac="00:00:00:00:00:00"), "malformed", "acme",
          "inner source MAC all zeros")
    return c


def build_arp() -> Capture:
    c = Capture("arp")
    acme, globex, initech = via("acme"), via("globex"), via("initech", "gbp")
    A, G = "198.19.0.1", "198.19.1.1"
    c.add(send(acme, arp_req(A, "198.19.0.2"), is_frame=True), "arp_reply", "acme", "acme asks for its own 198.19.0.2")
    c.add(send(acme, arp_req(A, G), is_frame=True), "arp_reply", "acme", "acme asks for globex 198.19.1.1: R1 allows acme -> globex")
    c.add(send(globex, arp_req(G, A), is_frame=True), "policy_denied", "globex",
          "globex asks for acme 198.19.0.1: no allow globex|* -> acme|* (mirrored replies do not count)")
    c.add(send(acme, arp_req(A, "198.19.3.1"), is_frame=True), "arp_reply", "acme", "acme asks for shared 198.19.3.1: R7 * -> shared")
    c.add(send(initech, arp_req("198.19.2.1", G), is_frame=True), "arp_reply", "initech",
          "initech asks for globex: R9 initech -> *")
    c.add(send(acme, arp_req(A, "198.19.2.1"), is_frame=True), "policy_denied", "acme",
          "acme asks for initech: no allow acme|* -> initech|*")
    c.add(send(globex, arp_req(G, "198.19.2.1"), is_frame=True), "arp_reply", "globex",
          "globex asks for initech 198.19.2.1: R10 exists (its to_cidr is not considered for ARP)")
    c.add(send(acme, arp_req(A, "198.19.7.1"), is_frame=True), "arp_reply", "acme",
          "acme asks for hooli 198.19.7.1: R12 exists (proto, ports, IPv6 to_cidr not considered for ARP)")
    c.add(send(acme, arp_req(A, "198.19.8.1"), is_frame=True), "policy_denied", "acme",
          "acme asks for contractor: its only allow R18 expired")
    c.add(send(globex, arp_req(G, "198.19.8.1"), is_frame=True), "policy_denied", "globex",
          "globex asks for contractor on 2026-06-01: R19 not yet valid")
    c.add(send(acme, arp_req(A, "198.19.99.1"), is_frame=True), "no_endpoint", "acme", "acme asks for unknown 198.19.99.1")
    c.add(send(acme, arp_req(A, "198.19.5.1"), is_frame=True), "no_endpoint", "acme",
          "acme asks for 198.19.5.1, which exists only in the umbrella address space")
    c.add(send(via("acme", "gbp"), arp_req("198.19.0.2", A), is_frame=True), "arp_reply", "acme", "ARP on the gbp segment")
    c.add(send(via("acme", "vlan"), arp_req("198.19.0.3", A), is_frame=True), "arp_reply", "acme",
          "ARP on the vlan segment (802.1Q-tagged ARP)")
    c.add(send(acme, arp_req(A, "198.19.0.2", dst="02:00:00:00:0a:02"), is_frame=True), "arp_reply", "acme",
          "unicast ARP request (cache refresh)")
    c.add(send(acme, arp_req(A, "198.19.0.2", pad=False), is_frame=True), "arp_reply", "acme",
          "unpadded 42-byte ARP request")
    c.add(send(acme, arp_req("0.0.0.0", "198.19.0.2"), is_frame=True), "spoofed_source", "acme",
          "ARP probe (sender IP 0.0.0.0): the sender address is no endpoint of acme at 198.18.0.1")
    c.add(send(acme, arp_req(A, A), is_frame=True), "unsupported", "acme", "gratuitous ARP request (sender IP = target IP)")
    c.add(send(acme, arp_req(A, "198.19.0.2", op=2), is_frame=True), "unsupported", "acme", "ARP reply (op 2)")
    c.add(send(acme, arp_req("198.19.99.2", "198.19.99.2", op=2), is_frame=True), "unsupported", "acme",
          "gratuitous ARP reply for an unknown address: op is checked before the target")
    c.add(send(acme, eth(BCAST, "02:00:00:00:0a:01", 0x8035, arp(3, "02:00:00:00:0a:01", "0.0.0.0",
                                                               "02:00:00:00:0a:01", "0.0.0.0")), is_frame=True),
          "unsupported", "acme", "RARP (ethertype 0x8035) broadcast")
    c.add(send(acme, arp_req(A, "198.19.0.2", htype=6), is_frame=True), "malformed", "acme", "ARP htype 6")
    c.add(send(acme, arp_req(A, "198.19.0.2", ptype=0x86DD), is_frame=True), "malformed", "acme", "ARP ptype 0x86dd")
    c.add(send(acme, arp_req(A, "198.19.0.2", hlen=8), is_frame=True), "malformed", "acme", "ARP hlen 8")
    c.add(send(acme, arp_req(A, "198.19.0.2", pad=False)[:14 + 20], is_frame=True), "malformed", "acme",
          "ARP truncated to 20 bytes")
    body = arp(1, "01:00:5e:00:00:01", A, "00:00:00:00:00:00", "198.19.0.2") + b"\0" * 18
    c.add(send(acme, eth(BCAST, "02:00:00:00:0a:01", 0x0806, body), is_frame=True), "malformed", "acme",
          "ARP request whose sender hardware address 01:00:5e:00:00:01 is a group (the answer's destination)")
    c.add(send(acme, arp_req(A, "198.19.0.2"), is_frame=True, vtep="198.18.0.2"), "spoofed_identity", "acme",
          "ARP on acme's segment from globex's VTEP")
    c.add(send(via("acme", "gbp"), arp_req(A, "198.19.0.2"), is_frame=True, flags=0x08), "no_identity", "-",
          "ARP on the gbp segment without the G bit")
    c.add(send(("vni", 4242, "198.18.0.1"), arp_req(A, "198.19.0.2"), is_frame=True), "unknown_segment", "-",
          "ARP on unknown VNI 4242")
    c.add(send(acme, udp(A, "198.19.0.255", 137, 137), dst_mac=BCAST), "unsupported", "acme",
          "non-ARP broadcast (NetBIOS to 198.19.0.255)")
    c.add(send(via("umbrella"), arp_req("198.19.0.5", A), is_frame=True), "arp_reply", "umbrella",
          "umbrella asks for 198.19.0.1: its own endpoint in the umbrella space")
    c.at("2026-10-01T00:00:00Z")
    c.add(send(globex, arp_req(G, "198.19.8.1"), is_frame=True), "arp_reply", "globex",
          "stamped 2026-10-01: globex asks for contractor, R19 now valid")
    c.add(send(acme, arp_req(A, "198.19.8.1"), is_frame=True), "policy_denied", "acme",
          "stamped 2026-10-01: acme asks for contractor, R18 still expired")
    return c


def build_overlap() -> Capture:
    c = Capture("overlap")
    acme, globex, umb, wayne = via("acme"), via("globex"), via("umbrella"), via("wayne", "gbp")
    U = "198.19.0.5"
    c.add(send(acme, tcp(U, "198.19.0.1", 42000, 80)), "forward", "acme",
          "acme 198.19.0.5 -> 198.19.0.1: acme's endpoint (default space, VTEP 198.18.0.1)")
    c.add(send(umb, tcp(U, "198.19.0.1", 42000, 80)), "forward", "umbrella",
          "same inner addresses from umbrella: umbrella's endpoint (umbrella space, VTEP 198.18.0.5)")
    c.add(send(via("umbrella", "gbp"), tcp(U, "198.19.0.1", 42001, 80)), "forward", "umbrella",
          "umbrella via gbp group 50")
    c.add(send(via("umbrella", "vlan"), tcp(U, "198.19.0.1", 42002, 80)), "forward", "umbrella",
          "umbrella via vlan VID 50")
    c.add(send(umb, tcp(U, "198.19.0.3", 42003, 443)), "forward", "umbrella",
          "umbrella -> 198.19.0.3 is wayne in the umbrella space: R20 tcp/443")
    c.add(send(umb, tcp(U, "198.19.0.3", 42004, 80)), "policy_denied", "umbrella",
          "umbrella -> 198.19.0.3 tcp/80 is wayne: denied (in the default space it would be acme, allowed by R21)")
    c.add(send(acme, tcp(U, "198.19.0.3", 42005, 80)), "forward", "acme", "acme -> 198.19.0.3 is acme's own endpoint")
    c.add(send(globex, tcp("198.19.1.1", "198.19.0.3", 42006, 80)), "policy_denied", "globex",
          "globex -> 198.19.0.3 is acme (default space): default deny")
    c.add(send(umb, tcp(U, "198.19.0.2", 42007, 80)), "no_endpoint", "umbrella",
          "umbrella -> 198.19.0.2 (acme's, default space): not in umbrella's space even though R21 allows umbrella -> acme")
    c.add(send(umb, tcp(U, "198.19.1.1", 42008, 80)), "no_endpoint", "umbrella", "umbrella -> globex's 198.19.1.1: other space")
    c.add(send(acme, tcp("198.19.0.1", "198.19.5.1", 42009, 80)), "no_endpoint", "acme",
          "acme -> 198.19.5.1 (umbrella space only)")
    c.add(send(wayne, tcp("198.19.0.3", U, 443, 42003, flags=SA)), "forward", "wayne",
          "wayne -> umbrella from port 443: the tracked reply of #4's R20 flow, in the umbrella space")
    c.add(send(wayne, tcp("198.19.0.3", "198.19.0.1", 42011, 80)), "policy_denied", "wayne",
          "wayne -> umbrella tcp/80: default deny")
    c.add(send(umb, arp_req(U, "198.19.0.1"), is_frame=True), "arp_reply", "umbrella", "umbrella asks for 198.19.0.1 (its own)")
    c.add(send(acme, arp_req(U, "198.19.0.3"), is_frame=True), "arp_reply", "acme", "acme asks for 198.19.0.3 (its own)")
    c.add(send(umb, arp_req(U, "198.19.0.3"), is_frame=True), "arp_reply", "umbrella", "umbrella asks for 198.19.0.3 (wayne, R20)")
    c.add(send(wayne, arp_req("198.19.0.3", "198.19.0.1"), is_frame=True), "policy_denied", "wayne",
          "wayne asks for 198.19.0.1 (umbrella): no allow wayne|* -> umbrella|*")
    c.add(send(umb, arp_req(U, "198.19.0.2"), is_frame=True), "no_endpoint", "umbrella",
          "umbrella asks for 198.19.0.2 (acme's address, default space)")
    c.add(send(umb, tcp(U, "198.19.0.1", 42012, 80), vtep="198.18.0.1"), "spoofed_identity", "umbrella",
          "umbrella's segment from acme's VTEP")
    c.add(send(acme, tcp(U, "198.19.0.1", 42013, 80), vtep="198.18.0.5"), "spoofed_identity", "acme",
          "acme's segment from umbrella's VTEP")
    return c


def build_ipv6() -> Capture:
    c = Capture("ipv6", pcapng=True)
    H1, H2, H4, HA = "2001:2:0:1::1", "2001:2:0:1::2", "198.19.7.1", "2001:2:0:1::5"
    A6, I6, G6 = "2001:2:0:2::1", "2001:2:0:3::1", "2001:2:0:4::1"
    hooli = via("hooli")  # vni 300 from 2001:2::1
    hooli4 = ("gbp", 70, "198.18.0.7")
    acme, initech = via("acme"), via("initech", "gbp")
    c.add(send(hooli, tcp(HA, H1, 43000, 80)), "forward", "hooli", "IPv6 inner, IPv6 underlay in and out (v6 -> v6)")
    c.add(send(hooli, tcp(HA, H2, 43001, 80)), "forward", "hooli", "IPv6 underlay in, endpoint VTEP 198.18.0.7: IPv4 underlay out (v6 -> v4)")
    c.add(send(hooli4, tcp(H2, H1, 43002, 80)), "forward", "hooli", "IPv4 underlay in (gbp group 70), endpoint VTEP 2001:2::1: IPv6 out (v4 -> v6)")
    c.add(send(hooli, tcp("198.19.7.2", H4, 43003, 80)), "forward", "hooli",
          "IPv4 inner over IPv6 underlay in and out, tag pushed for vlan egress")
    c.add(send(via("hooli", "vlan"), tcp(HA, H1, 43004, 80), vtep="2001:2::1"), "forward", "hooli",
          "vlan identity over IPv6 underlay")
    c.add(send(("gbp", 20, "2001:2::2"), tcp("2001:2:0:4::5", G6, 43005, 80)), "forward", "globex",
          "gbp identity over IPv6 underlay; globex's IPv6 VTEP is in its vteps")
    c.add(send(acme, tcp(A6, H1, 43006, 443)), "forward", "acme", "acme IPv6 -> hooli tcp/443: R12 IPv6 to_cidr match")
    c.add(send(acme, tcp(A6, H1, 43007, 80)), "policy_denied", "acme", "acme IPv6 -> hooli tcp/80: default deny")
    c.add(send(acme, tcp("198.19.0.1", H4, 43008, 443)), "policy_denied", "acme",
          "acme IPv4 -> hooli 198.19.7.1 tcp/443: R12's IPv6 to_cidr never holds an IPv4 address")
    c.add(send(hooli, tcp(H1, A6, 443, 43006, flags=SA)), "forward", "hooli",
          "hooli -> acme from port 443: the tracked reply of #6's R12 flow, v6 underlay in, v4 out")
    c.add(send(hooli, tcp(H1, A6, 43010, 443)), "policy_denied", "hooli", "hooli -> acme tcp/443: new connection, denied")
    c.add(send(initech, icmp(I6, H1)), "forward", "initech", "initech ICMPv6 echo -> hooli: R9 icmp covers ICMPv6")
    c.add(send(hooli, icmp(H1, I6, reply=True)), "forward", "hooli", "hooli ICMPv6 echo reply -> initech: tracked reply of the echo before")
    c.add(send(acme, icmp(A6, H1)), "policy_denied", "acme", "acme ICMPv6 -> hooli: no rule")
    c.add(send(hooli, udp(HA, "2001:2:0:1::99", 43011, 53)), "no_endpoint", "hooli", "unknown IPv6 destination")
    c.add(send(hooli, neighbor_solicit(HA, H1), dst_mac="33:33:ff:00:00:01"), "nd_reply", "hooli",
          "IPv6 neighbour solicitation to the solicited-node multicast for hooli's own H1: answered")
    c.add(send(hooli, tcp(HA, H1, 43012, 80), vtep="2001:2::99"), "spoofed_identity", "hooli",
          "hooli's segment from 2001:2::99, not in its vteps")
    c.add(send(("vni", 300, "198.18.0.1"), tcp(HA, H1, 43013, 80)), "spoofed_identity", "hooli",
          "hooli's segment from 198.18.0.1 (IPv4), not in its vteps")
    # MTU with IPv6 egress: 40+8+8 = 56 bytes of overhead
    c.add(send(hooli, tcp_sized(HA, H1, 43014, 80, 1444)), "forward", "hooli", "1444-byte inner, IPv6 egress: 40+8+8+1444 = 1500")
    c.add(send(hooli, tcp_sized(HA, H1, 43015, 80, 1445)), "too_big", "hooli", "1445-byte inner, IPv6 egress: 1501 > mtu")
    c.add(send(hooli, tcp_sized(HA, H2, 43016, 80, 1445)), "forward", "hooli",
          "same 1445-byte inner toward an IPv4-underlay endpoint: 20+8+8+1445 = 1481")
    c.add(send(hooli, tcp_sized("198.19.7.2", H4, 43017, 80, 1440)), "forward", "hooli",
          "1440-byte inner + pushed tag = 1444, IPv6 egress: 1500")
    c.add(send(hooli, tcp_sized("198.19.7.2", H4, 43018, 80, 1441)), "too_big", "hooli",
          "1441-byte inner + pushed tag = 1445, IPv6 egress: 1501 > mtu")
    p = tcp(HA, H1, 43019, 80)
    c.add(send(hooli, eth("02:00:00:00:46:01", "02:00:00:00:46:05", 0x86DD, p[:30]), is_frame=True),
          "malformed", "hooli", "inner IPv6 header truncated to 30 bytes")
    c.add(send(hooli, eth("02:00:00:00:46:01", "02:00:00:00:46:05", 0x86DD,
                          p[:4] + struct.pack("!H", len(p) - 40 + 8) + p[6:]), is_frame=True),
          "malformed", "hooli", "inner IPv6 payload_length 8 more than the frame")
    # outer IPv6 parsing
    vx = vxlan(300, inner_frame(tcp(HA, H1, 43021, 80)))
    f = outer("2001:2::1", vx)
    c.add(f[:14 + 30], "malformed", "-", "outer IPv6 header truncated to 30 bytes")
    c.add(outer("2001:2::1", vx, plen=0), "malformed", "-", "outer IPv6 payload_length 0")
    c.add(outer("2001:2::1", vx, plen=len(vx) + 8 + 16), "malformed", "-",
          "outer IPv6 payload_length 16 more than captured")
    c.add(outer("2001:2::1", vx, nh=6), "not_overlay", "-", "outer IPv6 next header 6 (TCP)")
    c.add(outer("2001:2::1", vx, nh=0), "not_overlay", "-",
          "outer IPv6 next header 0 (hop-by-hop): extension headers are not walked")
    c.add(outer("2001:2::1", vx, dport=4790), "not_overlay", "-", "outer IPv6 UDP to port 4790")
    c.add(outer("2001:2::1", vxlan(300, inner_frame(tcp(HA, H1, 43022, 80)), flags=0)), "not_overlay", "-",
          "outer IPv6, VXLAN I flag unset")
    c.add(outer("2001:2::1", vxlan(3000, inner_frame(tcp(HA, H1, 43023, 80)))), "unknown_segment", "-",
          "outer IPv6, unknown VNI 3000")
    c.add(outer("2001:2::1", vx, udp_length=12), "malformed", "-", "outer IPv6, UDP length 12 < 16")
    return c


def build_tracked() -> Capture:
    """Tracked replies (fixtures.toml: replies = "tracked", flow timeouts tcp_closing 2 s, udp 5 s)."""
    c = Capture("tracked")
    A, A2, G, G2, I = "198.19.0.1", "198.19.0.2", "198.19.1.1", "198.19.1.2", "198.19.2.1"
    A6, H1 = "2001:2:0:2::1", "2001:2:0:1::1"
    acme, globex, initech, hooli = via("acme"), via("globex"), via("initech", "gbp"), via("hooli")
    c.add(send(acme, tcp(A, G, 50000, 443)), "forward", "acme", "acme SYN -> globex tcp/443 (R1): starts a tracked flow")
    c.add(send(globex, tcp(G, A, 443, 50000, flags=SA)), "forward", "globex", "globex SYN-ACK back: reply of the tracked flow")
    c.add(send(acme, tcp(A, G, 50000, 443, flags=ACK)), "forward", "acme", "acme ACK: the flow's request direction (R1)")
    c.add(send(globex, tcp(G, A, 443, 50000, 64, flags=ACK)), "forward", "globex", "globex data back: reply of the tracked flow")
    c.add(send(globex, tcp(G, A, 443, 50001, flags=ACK)), "policy_denied", "globex",
          "globex from port 443 to acme port 50001: no flow acme started (stateless would admit it)")
    c.add(send(globex, tcp(G, A, 443, 50000)), "policy_denied", "globex",
          "pure SYN from globex:443 to acme:50000, the live flow's mirrored ports: never a new connection from the responder")
    c.add(send(globex, tcp(G, A, 443, 50002)), "policy_denied", "globex",
          "SYN from globex's 'reply' port 443 to a fresh acme port: denied")
    c.add(send(globex, udp(G, A, 443, 50000)), "policy_denied", "globex", "UDP with the flow's mirrored ports: another protocol, no flow")
    c.add(send(globex, tcp(G2, A, 443, 50000, flags=ACK)), "policy_denied", "globex",
          "globex's other endpoint 198.19.1.2 with the flow's ports: not the same 5-tuple")
    c.add(send(globex, arp_req(G, A), is_frame=True), "arp_reply", "globex",
          "globex asks for acme 198.19.0.1: no rule lets globex reach acme, but 198.19.0.1 has a tracked flow toward 198.19.1.1")
    c.add(send(globex, arp_req(G, A2), is_frame=True), "policy_denied", "globex",
          "globex asks for acme 198.19.0.2: no rule, no flow from 198.19.0.2 toward the asker")
    c.add(send(globex, arp_req(G2, A), is_frame=True), "policy_denied", "globex",
          "globex 198.19.1.2 asks for acme 198.19.0.1: its flow is toward 198.19.1.1, not this asker")
    # ICMP echo: only the answer, never a request from the other side
    c.add(send(initech, icmp(I, G, ident=7)), "forward", "initech", "initech echo request id 7 -> globex (R9): tracked")
    c.add(send(globex, icmp(G, I, reply=True, ident=7)), "forward", "globex", "globex echo reply id 7 -> initech: tracked reply")
    c.add(send(globex, icmp(G, I, ident=7)), "policy_denied", "globex",
          "globex echo *request* id 7 -> initech: an echo from the other side is never a reply")
    c.add(send(globex, icmp(G, I, reply=True, ident=8)), "policy_denied", "globex", "globex echo reply id 8: no such flow")
    c.add(send(acme, icmp(A, I, ident=7)), "policy_denied", "acme",
          "acme echo request -> initech: R9 (initech -> *) admits nothing from acme (stateless mirrored it)")
    # ICMP errors quoting a tracked flow go back to its initiator
    c.add(send(acme, tcp(A, G, 50050, 443)), "forward", "acme", "acme SYN -> globex tcp/443, port 50050 (R1)")
    c.add(send(globex, icmp_error(G, A, tcp(A, G, 50050, 443))), "forward", "globex",
          "ICMP fragmentation needed (3/4, MTU 1400) quoting acme:50050 -> globex:443: to the flow's initiator")
    c.add(send(globex, icmp_error(G, A, tcp(A, G, 50050, 443), kind="ttl")), "forward", "globex",
          "ICMP time exceeded (11/0) quoting the same tracked flow")
    c.add(send(globex, icmp_error(G, A, tcp(A, G, 50051, 443))), "policy_denied", "globex",
          "ICMP fragmentation needed quoting acme:50051 -> globex:443, which acme never sent")
    c.add(send(globex, icmp_error(G, A, tcp(G, A, 443, 50050, flags=SA))), "policy_denied", "globex",
          "ICMP error quoting globex's own packet to acme: the quote is not the initiator's request")
    c.add(send(acme, tcp(A6, H1, 50060, 443)), "forward", "acme", "acme IPv6 SYN -> hooli tcp/443 (R12)")
    c.add(send(hooli, icmp_error(H1, A6, tcp(A6, H1, 50060, 443))), "forward", "hooli",
          "ICMPv6 packet too big (MTU 1280) quoting the IPv6 flow: to its initiator")
    c.add(send(hooli, icmp_error(H1, A6, tcp(A6, H1, 50061, 443))), "policy_denied", "hooli",
          "ICMPv6 packet too big quoting a flow that was never seen")
    # Flows end: FIN from both sides, then tcp_closing (2 s)
    c.add(send(acme, tcp(A, G, 50020, 443)), "forward", "acme", "acme SYN, port 50020 (R1)")
    c.add(send(globex, tcp(G, A, 443, 50020, flags=SA)), "forward", "globex", "SYN-ACK: tracked reply")
    c.add(send(acme, tcp(A, G, 50020, 443, flags=FA)), "forward", "acme", "acme FIN")
    c.add(send(globex, tcp(G, A, 443, 50020, flags=FA)), "forward", "globex", "globex FIN: still a reply of the closing flow")
    c.add(send(acme, tcp(A, G, 50030, 443)), "forward", "acme", "acme SYN, port 50030 (R1)")
    c.add(send(globex, tcp(G, A, 443, 50030, flags=SA)), "forward", "globex", "SYN-ACK: tracked reply")
    c.add(send(acme, tcp(A, G, 50030, 443, flags=RST)), "forward", "acme", "acme RST: the flow ends")
    c.add(send(acme, udp(A, G, 50010, 5000)), "forward", "acme", "acme udp/5000 -> globex (R5): a tracked UDP flow")
    c.wait(1)
    c.add(send(globex, udp(G, A, 5000, 50010)), "forward", "globex", "1 s later: the UDP reply is admitted (and refreshes the flow)")
    c.wait(3)
    c.add(send(globex, tcp(G, A, 443, 50020, flags=ACK)), "policy_denied", "globex",
          "3 s after both FINs (tcp_closing 2 s): the flow is over, its reply denied")
    c.add(send(globex, tcp(G, A, 443, 50030, flags=ACK)), "policy_denied", "globex",
          "3 s after the RST (tcp_closing 2 s): the flow is over, its reply denied")
    c.add(send(globex, tcp(G, A, 443, 50000, flags=ACK)), "forward", "globex",
          "the established flow of #0 is still live (tcp 3600 s): its reply admitted")
    c.wait(3)
    c.add(send(globex, udp(G, A, 5000, 50010)), "policy_denied", "globex",
          "6 s after the last UDP frame (udp 5 s): the flow went idle, its reply denied")
    c.add(send(globex, icmp(G, I, reply=True, ident=7)), "policy_denied", "globex",
          "echo reply id 7 again, 6 s after the last (icmp 5 s): expired")
    return c


ATTACKER_MAC = "02:00:00:00:66:66"


def build_source() -> Capture:
    """Inner source validation: spoofed_source for IP, ARP and ND; nothing learnt from dropped frames."""
    c = Capture("source")
    A, A17, G, G2 = "198.19.0.1", "198.19.0.17", "198.19.1.1", "198.19.1.2"
    acme, globex, hooli = via("acme"), via("globex"), via("hooli")
    c.add(send(globex, tcp(G, G2, 44000, 80)), "forward", "globex",
          "control: globex 198.19.1.1 from its VTEP 198.18.0.2 (teaches 198.18.0.2's next hop)")
    c.add(send(globex, tcp(A, G2, 44001, 80)), "spoofed_source", "globex",
          "globex's VTEP sends with acme's inner address 198.19.0.1")
    c.add(send(acme, tcp("198.19.0.18", G, 44002, 22)), "spoofed_source", "acme",
          "acme sends from 198.19.0.18: inside R11's from_cidr 198.19.0.16/28 but no endpoint")
    c.add(send(acme, tcp(A17, G, 44003, 22)), "forward", "acme", "control: acme's real 198.19.0.17 meets R11")
    c.add(send(("gbp", 20, "198.18.0.2"), tcp("2001:2:0:4::1", "2001:2:0:4::5", 44004, 80)), "spoofed_source",
          "globex", "globex's 2001:2:0:4::1 is registered at VTEP 2001:2::2, sent from 198.18.0.2")
    c.add(send(via("initech", "gbp"), tcp("198.19.2.200", "198.19.2.1", 44005, 80)), "spoofed_source",
          "initech", "initech's 198.19.2.200 is at VTEP 198.18.0.200, sent from 198.18.0.9 (no vteps list)")
    c.add(send(via("initech", "gbp"), tcp("198.19.2.200", "198.19.2.1", 44006, 80), vtep="198.18.0.200"),
          "forward", "initech", "control: the same frame from 198.18.0.200")
    c.add(send(acme, tcp("198.19.5.1", A, 44007, 80)), "spoofed_source", "acme",
          "acme sends from 198.19.5.1, an endpoint only in the umbrella address space")
    c.add(send(via("umbrella"), tcp("198.19.0.3", "198.19.0.1", 44008, 80)), "spoofed_source", "umbrella",
          "umbrella sends from wayne's 198.19.0.3 (same address space, another tenant)")
    c.add(send(via("wayne", "gbp"), tcp("198.19.0.1", "198.19.0.3", 44009, 80)), "spoofed_source", "wayne",
          "wayne (no vteps list) sends from umbrella's 198.19.0.1")
    c.add(send(acme, tcp(A, "198.19.99.99", 44010, 80)), "no_endpoint", "acme",
          "control: a valid source to an unknown destination")
    c.add(send(acme, tcp("198.19.0.99", "198.19.99.99", 44011, 80)), "spoofed_source", "acme",
          "an unknown source to an unknown destination: the source is checked first")
    c.add(send(acme, arp_req(G, "198.19.0.2"), is_frame=True), "spoofed_source", "acme",
          "ARP from acme's VTEP with globex's 198.19.1.1 as sender")
    c.add(send(acme, arp_req("198.19.0.99", "198.19.0.2"), is_frame=True), "spoofed_source", "acme",
          "ARP with an unknown sender address")
    c.add(send(acme, arp_req(G, G), is_frame=True), "unsupported", "acme",
          "gratuitous ARP with globex's address: gratuitous ARP is unsupported before the sender is checked")
    c.add(send(hooli, neighbor_solicit("2001:2:0:2::1", "2001:2:0:1::1"), dst_mac=mcast_mac(solicited_node("2001:2:0:1::1"))),
          "spoofed_source", "hooli", "neighbour solicitation from hooli's VTEP with acme's 2001:2:0:2::1 as source")
    c.add(send(hooli, neighbor_solicit("2001:2:0:1::2", "2001:2:0:1::1"), dst_mac=mcast_mac(solicited_node("2001:2:0:1::1"))),
          "spoofed_source", "hooli", "solicitation from 2001:2::1 with hooli's 2001:2:0:1::2, registered at 198.18.0.7")
    # Nothing is learnt from a dropped frame: the attacker's outer MAC never becomes a next hop.
    c.add(send(globex, tcp(A, G2, 44012, 80), outer_src_mac=ATTACKER_MAC), "spoofed_source", "globex",
          "spoofed source from 198.18.0.2 via outer MAC 02:00:00:00:66:66")
    c.add(send(globex, eth(EP_MAC[G2], EP_MAC[G], 0x0800, tcp(G, G2, 44013, 80)[:12]), is_frame=True,
               outer_src_mac=ATTACKER_MAC), "malformed", "globex",
          "malformed inner IPv4 from 198.18.0.2 via outer MAC 02:00:00:00:66:66")
    c.add(send(globex, tcp(G, A, 44014, 80), outer_src_mac=ATTACKER_MAC), "policy_denied", "globex",
          "denied frame from 198.18.0.2 via outer MAC 02:00:00:00:66:66")
    c.add(send(acme, tcp(A, G, 44015, 443)), "forward", "acme",
          "acme -> globex (R1) toward 198.18.0.2: still to the next hop learnt from #0, never the attacker's MAC")
    return c


def build_fragments() -> Capture:
    """Fragments get their first fragment's verdict (IPv4 and IPv6)."""
    c = Capture("fragments")
    A, A2, G = "198.19.0.1", "198.19.0.2", "198.19.1.1"
    A6, H1, HA = "2001:2:0:2::1", "2001:2:0:1::1", "2001:2:0:1::5"
    acme, globex, hooli = via("acme"), via("globex"), via("hooli")
    f = frag4(A, G, 6, tcp_seg(A, G, 45000, 443, 100), 0x1001, [48])
    c.add(send(acme, f[0]), "forward", "acme", "IPv4 first fragment acme -> globex tcp/443 (R1), id 0x1001")
    c.add(send(acme, f[1]), "forward", "acme", "its tail (offset 48, no ports): forwarded like its first fragment")
    f = frag4(A, G, 17, udp_l4(A, G, 45001, 5000, bytes(120)), 0x1002, [40, 80])
    c.add(send(acme, f[0]), "forward", "acme", "IPv4 first fragment acme -> globex udp/5000 (R5), id 0x1002")
    c.add(send(acme, f[1]), "forward", "acme", "middle fragment (offset 40, MF)")
    c.add(send(acme, f[2]), "forward", "acme", "last fragment (offset 80)")
    f = frag4(A, A2, 6, tcp_seg(A, A2, 45002, 23, 100), 0x1003, [48])
    c.add(send(acme, f[0]), "policy_denied", "acme", "IPv4 first fragment of intra-acme telnet: R8 denies")
    c.add(send(acme, f[1]), "policy_denied", "acme", "its tail: denied like its first fragment (intra-tenant default does not apply)")
    f = frag4(A, G, 6, tcp_seg(A, G, 45003, 80, 100), 0x1004, [48])
    c.add(send(acme, f[0]), "policy_denied", "acme", "IPv4 first fragment acme -> globex tcp/80: default deny")
    c.add(send(acme, f[1]), "policy_denied", "acme", "its tail: denied")
    f = frag4(A, G, 6, tcp_seg(A, G, 45004, 443, 100), 0x1005, [48])
    c.add(send(acme, f[1]), "orphan_fragment", "acme", "IPv4 tail (id 0x1005) whose first fragment was never seen")
    f = frag4(G, A, 6, tcp_seg(G, A, 443, 45000, 100, flags=ACK), 0x2001, [48])
    c.add(send(globex, f[1]), "orphan_fragment", "globex",
          "globex tail to acme (port 0 in stateless terms): no first fragment, never rides a rule")
    f = frag4(G, A2, 6, tcp_seg(G, A2, 45005, 443, 100), 0x1001, [48])
    c.add(send(globex, f[1]), "orphan_fragment", "globex",
          "tail with id 0x1001 (as #0's) but another source and destination: not #0's datagram")
    c.add(send(acme, tcp(A, G, 45006, 443)), "forward", "acme", "acme SYN -> globex tcp/443 (R1)")
    f = frag4(G, A, 6, tcp_seg(G, A, 443, 45006, 100, flags=SA), 0x2002, [48])
    c.add(send(globex, f[0]), "forward", "globex", "first fragment of globex's reply: tracked reply")
    c.add(send(globex, f[1]), "forward", "globex", "its tail: forwarded like its first fragment")
    # IPv6
    f = frag6(A6, H1, 6, tcp_seg(A6, H1, 45100, 443, 100), 0x3001, [48])
    c.add(send(acme, f[0]), "forward", "acme", "IPv6 first fragment acme -> hooli tcp/443 (R12), id 0x3001")
    c.add(send(acme, f[1]), "forward", "acme", "its tail: forwarded")
    f = frag6(HA, H1, 6, tcp_seg(HA, H1, 45101, 23, 100), 0x3002, [48])
    c.add(send(hooli, f[0]), "policy_denied", "hooli", "IPv6 first fragment of intra-hooli telnet: R8 denies")
    c.add(send(hooli, f[1]), "policy_denied", "hooli", "its tail: denied")
    f = frag6(A6, H1, 6, tcp_seg(A6, H1, 45102, 80, 100), 0x3003, [48])
    c.add(send(acme, f[0]), "policy_denied", "acme", "IPv6 first fragment acme -> hooli tcp/80: default deny")
    c.add(send(acme, f[1]), "policy_denied", "acme", "its tail: denied")
    f = frag6(HA, H1, 6, tcp_seg(HA, H1, 45103, 80, 100), 0x3004, [48])
    c.add(send(hooli, f[1]), "orphan_fragment", "hooli", "IPv6 tail (id 0x3004) whose first fragment was never seen")
    f = frag4(A, G, 6, tcp_seg(A, G, 45000, 443, 100), 0x1001, [48])
    c.wait(60)
    c.add(send(acme, f[1]), "orphan_fragment", "acme", "#1's tail again, 60 s later: its first fragment is long forgotten")
    return c


def build_nd() -> Capture:
    """IPv6 neighbour discovery answered by the gateway; other multicast dropped; AH walked."""
    c = Capture("nd")
    A6, H1, H2, HA, G6 = "2001:2:0:2::1", "2001:2:0:1::1", "2001:2:0:1::2", "2001:2:0:1::5", "2001:2:0:4::1"
    acme, hooli = via("acme"), via("hooli")
    ns = lambda v, src, tgt, **kw: send(v, neighbor_solicit(src, tgt, slla=EP_MAC.get(src)),  # noqa: E731
                                        dst_mac=mcast_mac(solicited_node(tgt)), **kw)
    c.add(ns(hooli, HA, H1), "nd_reply", "hooli", "hooli asks for its own 2001:2:0:1::1 (solicited-node multicast)")
    c.add(ns(hooli, HA, H2), "nd_reply", "hooli", "hooli asks for its own 2001:2:0:1::2 (behind an IPv4 VTEP)")
    c.add(ns(acme, A6, H1), "nd_reply", "acme", "acme asks for hooli's 2001:2:0:1::1: R12 lets acme reach hooli")
    c.add(ns(via("acme", "gbp"), A6, H1), "nd_reply", "acme", "the same on the gbp segment (answered with group 10)")
    c.add(ns(hooli, HA, A6), "policy_denied", "hooli", "hooli asks for acme's 2001:2:0:2::1: no rule, no flow")
    c.add(ns(hooli, HA, G6), "policy_denied", "hooli", "hooli asks for globex's 2001:2:0:4::1: no rule")
    c.add(ns(hooli, HA, "2001:2:0:1::99"), "no_endpoint", "hooli", "hooli asks for an unknown 2001:2:0:1::99")
    c.add(send(acme, tcp(A6, H1, 46000, 443)), "forward", "acme", "acme SYN -> hooli tcp/443 (R12): a tracked flow")
    c.add(ns(hooli, H1, A6), "nd_reply", "hooli",
          "hooli's 2001:2:0:1::1 asks for acme's 2001:2:0:2::1, which has a tracked flow toward it")
    c.add(ns(hooli, HA, A6), "policy_denied", "hooli", "hooli's 2001:2:0:1::5 asks for the same: the flow is not toward it")
    c.add(send(hooli, neighbor_solicit(HA, H1, slla=EP_MAC[HA], dst=H1)), "nd_reply", "hooli",
          "unicast solicitation (reachability check) for 2001:2:0:1::1")
    c.add(send(hooli, neighbor_solicit("::", "2001:2:0:1::6"), dst_mac=mcast_mac(solicited_node("2001:2:0:1::6"))),
          "unsupported", "hooli", "duplicate address detection (source ::) for a new address")
    c.add(send(hooli, neighbor_solicit("::", H1), dst_mac=mcast_mac(solicited_node(H1))),
          "unsupported", "hooli", "duplicate address detection (source ::) for an endpoint's address")
    c.add(send(hooli, icmp(HA, "ff02::1"), dst_mac="33:33:00:00:00:01"), "unsupported", "hooli",
          "ICMPv6 echo to all-nodes ff02::1")
    c.add(send(hooli, icmp6_msg(HA, "ff02::2", 133), dst_mac="33:33:00:00:00:02"), "unsupported", "hooli",
          "router solicitation to ff02::2")
    c.add(send(hooli, icmp6_msg(HA, "ff02::1", 136, struct.pack("!I", 0x20000000) + ipb(HA)),
               dst_mac="33:33:00:00:00:01"), "unsupported", "hooli", "unsolicited neighbour advertisement to ff02::1")
    c.add(send(hooli, udp(HA, "ff02::fb", 5353, 5353), dst_mac="33:33:00:00:00:fb"), "unsupported", "hooli",
          "mDNS to ff02::fb")
    # IPv6 AH before TCP: the port rules see the ports
    c.add(send(acme, tcp6_ext(A6, H1, 46001, 443, [AH])), "forward", "acme", "acme -> hooli AH + tcp/443: R12 matches through AH")
    c.add(send(acme, tcp6_ext(A6, H1, 46002, 80, [AH])), "policy_denied", "acme", "acme -> hooli AH + tcp/80: no rule")
    c.add(send(hooli, tcp6_ext(HA, H1, 46003, 23, [AH])), "policy_denied", "hooli",
          "intra-hooli AH + tcp/23: R8 denies (ports read behind AH)")
    c.add(send(hooli, tcp6_ext(HA, H1, 46004, 23, [DSTOPT, AH])), "policy_denied", "hooli",
          "intra-hooli destination options + AH + tcp/23: R8 denies")
    c.add(send(hooli, tcp6_ext(HA, H1, 46005, 80, [AH])), "forward", "hooli", "control: intra-hooli AH + tcp/80")
    c.add(send(hooli, neighbor_solicit(HA, H1, slla="33:33:00:00:00:01"), dst_mac=mcast_mac(solicited_node(H1))),
          "malformed", "hooli", "solicitation whose source link-layer address 33:33:00:00:00:01 is a group")
    c.add(send(hooli, neighbor_solicit(HA, H1), dst_mac=mcast_mac(solicited_node(H1)), src_mac="ff:34:00:00:46:05"),
          "malformed", "hooli", "solicitation without the option, from group source MAC ff:34:00:00:46:05")
    return c


def build_windows() -> Capture:
    """Validity windows judged at the frame's time, with sub-second precision (R22)."""
    c = Capture("windows")
    A, G = "198.19.0.1", "198.19.1.1"
    acme, globex = via("acme"), via("globex")
    c.at("2026-06-01T10:59:59Z")
    c.add(send(acme, tcp(A, G, 47000, 9100)), "policy_denied", "acme", "10:59:59: R22 not yet valid")
    c.at("2026-06-01T11:00:00.249999Z")
    c.add(send(acme, tcp(A, G, 47001, 9100)), "policy_denied", "acme", "11:00:00.249999: 1 us before R22's not_before")
    c.at("2026-06-01T11:00:00.250000Z")
    c.add(send(acme, tcp(A, G, 47002, 9100)), "forward", "acme", "11:00:00.250000: R22's not_before exactly (inclusive)")
    c.at("2026-06-01T11:59:59.500000Z")
    c.add(send(acme, tcp(A, G, 47003, 9100)), "forward", "acme", "11:59:59.5: inside R22; starts a tracked flow")
    c.add(send(globex, tcp(G, A, 9100, 47003, flags=SA)), "forward", "globex", "its reply, inside the window")
    c.at("2026-06-01T12:00:00Z")
    c.add(send(acme, tcp(A, G, 47004, 9100)), "forward", "acme", "12:00:00.000000: R22's not_after exactly (inclusive)")
    c.at("2026-06-01T12:00:00.000001Z")
    c.add(send(acme, tcp(A, G, 47005, 9100)), "policy_denied", "acme", "12:00:00.000001: 1 us after not_after")
    c.at("2026-06-01T12:00:00.900000Z")
    c.add(send(acme, tcp(A, G, 47006, 9100)), "policy_denied", "acme", "12:00:00.9: not_after + 0.9 s")
    c.add(send(acme, tcp(A, G, 47003, 9100, flags=ACK)), "policy_denied", "acme",
          "12:00:00.901: the flow's own request, R22 no longer in force")
    c.add(send(globex, tcp(G, A, 9100, 47003, flags=ACK)), "policy_denied", "globex",
          "12:00:00.902: reply of a flow whose rule went out of force: replies stop with their requests")
    c.at("2026-06-01T12:00:01Z")
    c.add(send(acme, tcp(A, G, 47007, 9100)), "policy_denied", "acme", "12:00:01: after the window")
    return c


# --------------------------------------------------------------------------------------------
# Reference model of the contract (a cross-check of the hand annotations)
# --------------------------------------------------------------------------------------------

class Model:
    """The contract, as plainly as it can be written, for one capture replayed from its start
    (flows and fragment verdicts are remembered across the capture's frames)."""

    def __init__(self, replies="tracked"):
        self.replies = replies
        self.segments = {v: (i, t) for v, i, t in SEGMENTS}
        self.by_id = {tid: n for n, (tid, _, _) in TENANTS.items()}
        self.space = {n: (s or "default") for n, (_, _, s) in TENANTS.items()}
        self.vteps = {n: (None if v is None else {ipaddress.ip_address(x) for x in v})
                      for n, (_, v, _) in TENANTS.items()}
        self.eps = {(self.space[t], ipaddress.ip_address(ip)): (t, ipaddress.ip_address(vt), vni)
                    for t, ip, _, vt, vni in ENDPOINTS}
        self.rules = []
        for r in RULES:
            pr = r.get("ports")
            ports = None if pr is None else tuple(int(x) for x in (pr.split("-") * 2)[:2]) if "-" in pr \
                else (int(pr), int(pr))
            self.rules.append(dict(
                frm=r["frm"], to=r["to"], proto=r.get("proto", "any"), ports=ports,
                fc=ipaddress.ip_network(r["from_cidr"]) if "from_cidr" in r else None,
                tc=ipaddress.ip_network(r["to_cidr"]) if "to_cidr" in r else None,
                allow=r["action"] == "allow", prio=r.get("priority", 0),
                nb=ts_of(r["not_before"]) if "not_before" in r else None,
                na=ts_of(r["not_after"]) if "not_after" in r else None))
        # Tracked flows, by the initiator's view (space, src, dst, proto, sport, dport):
        # {"last": us, "replied": bool, "fin_i", "fin_r", "rst": bool, "src_t", "dst_t": tenants}
        self.flows = {}
        # First fragments' verdicts: (tenant, src, dst, proto, id) -> (ts, allowed)
        self.frags = {}

    @staticmethod
    def valid(r, now):
        return (r["nb"] is None or now >= r["nb"]) and (r["na"] is None or now <= r["na"])

    @staticmethod
    def proto_ok(r, proto):
        return {"any": True, "tcp": proto == 6, "udp": proto == 17, "icmp": proto in (1, 58)}[r["proto"]]

    def verdict(self, S, D, proto, sport, dport, src, dst, now, mirrors):
        cands = []
        for r in self.rules:
            if not self.valid(r, now) or not self.proto_ok(r, proto):
                continue
            if (r["frm"] in ("*", S) and r["to"] in ("*", D)
                    and (r["ports"] is None or (dport is not None and r["ports"][0] <= dport <= r["ports"][1]))
                    and (r["fc"] is None or src in r["fc"]) and (r["tc"] is None or dst in r["tc"])):
                cands.append((r["prio"], r["allow"]))
            if (mirrors and r["allow"] and r["frm"] in ("*", D) and r["to"] in ("*", S)
                    and (r["ports"] is None or (sport is not None and r["ports"][0] <= sport <= r["ports"][1]))
                    and (r["fc"] is None or dst in r["fc"]) and (r["tc"] is None or src in r["tc"])):
                cands.append((r["prio"], True))
        if not cands:
            return S == D
        top = max(p for p, _ in cands)
        return all(a for p, a in cands if p == top)

    def allow_rule(self, S, D, now):
        return any(r["allow"] and self.valid(r, now) and r["frm"] in ("*", S) and r["to"] in ("*", D)
                   for r in self.rules)

    # --- tracked flows ---
    @staticmethod
    def timeout_us(key, f):
        proto = key[3]
        if proto == 6:
            if f["rst"] or (f["fin_i"] and f["fin_r"]):
                t = FLOW_TIMEOUTS["tcp_closing"]
            elif not f["replied"]:
                t = FLOW_TIMEOUTS["tcp_opening"]
            else:
                t = FLOW_TIMEOUTS["tcp"]
        else:
            t = {17: FLOW_TIMEOUTS["udp"], 1: FLOW_TIMEOUTS["icmp"], 58: FLOW_TIMEOUTS["icmp"]}.get(
                proto, FLOW_TIMEOUTS["other"])
        return t * 1_000_000

    def live(self, key, now, strict=False):
        f = self.flows.get(key)
        if f is None:
            return None
        age = now - f["last"]
        # Never judge a reply within a second of its flow's timeout: no precision is promised there.
        assert not strict or abs(age - self.timeout_us(key, f)) > 1_000_000, ("near a timeout", key)
        return f if age <= self.timeout_us(key, f) else None

    @staticmethod
    def mirror(key):
        sp, s, d, p, a, b = key
        return (sp, d, s, p, b, a)

    def touch(self, f, now, flags, reply):
        f["last"] = now
        if reply:
            f["replied"] = True
        if flags & FIN:
            f["fin_r" if reply else "fin_i"] = True
        if flags & RST:
            f["rst"] = True

    def track(self, key, S, D, now, flags):
        f = self.live(key, now)
        if f:
            self.touch(f, now, flags, False)
            return
        f = self.live(self.mirror(key), now)
        if f:
            self.touch(f, now, flags, True)
            return
        self.flows[key] = dict(last=now, replied=False, fin_i=bool(flags & FIN), fin_r=False,
                               rst=bool(flags & RST), src_t=S, dst_t=D)

    def request_still_allowed(self, key, f, now):
        """Replies stop with their requests: the flow's request judged by the policy in force now."""
        sp, s, d, p, a, b = key
        return self.verdict(f["src_t"], f["dst_t"], p, a, b, ipaddress.ip_address(s),
                            ipaddress.ip_address(d), now, False)

    def reply(self, key, S, D, now, flags, icmp):
        """Is this frame (key: its own 5-tuple), which the rules do not admit, a tracked reply?"""
        if key[3] == 6 and flags & (SYN | ACK) == SYN:
            return False
        if icmp is not None:
            kind, quote = icmp
            if kind == "error":
                if quote is None or quote[0] != key[2]:
                    return False
                init = (key[0],) + quote
                f = self.live(init, now, True)
                return bool(f) and f["src_t"] == D and self.request_still_allowed(init, f, now)
            if kind != "echo_reply":
                return False
        init = self.mirror(key)
        f = self.live(init, now, True)
        if not f or f["src_t"] != D or not self.request_still_allowed(init, f, now):
            return False
        self.touch(f, now, flags, True)
        return True

    def may_learn(self, T, E, space, target, asker, now):
        if E == T or self.allow_rule(T, E, now):
            return True
        if self.replies == "stateless":
            return self.allow_rule(E, T, now)
        return any(k[0] == space and k[1] == target and k[2] == asker and self.live(k, now)
                   for k in list(self.flows))

    def src_ok(self, T, space, addr, osrc):
        ep = self.eps.get((space, ipaddress.ip_address(addr)))
        return ep is not None and ep[0] == T and ep[1] == osrc

    # --- inner packets ---
    @staticmethod
    def parse_ip(iet, body):
        """(src, dst, proto, l4 bytes or None for a later fragment, frag) or a drop reason."""
        if iet == 0x0800:
            if len(body) < 20 or body[0] >> 4 != 4 or body[0] & 15 < 5:
                return "malformed"
            hl = (body[0] & 15) * 4
            tl = struct.unpack_from("!H", body, 2)[0]
            if len(body) < hl or tl < hl or tl > len(body):
                return "malformed"
            fo = struct.unpack_from("!H", body, 6)[0]
            ident = struct.unpack_from("!H", body, 4)[0]
            off, mf = fo & 0x1FFF, bool(fo & 0x2000)
            frag = None if (off, mf) == (0, False) else ("first" if off == 0 else "later", ident)
            l4 = None if frag and frag[0] == "later" else body[hl:tl]
            return body[12:16], body[16:20], body[9], l4, frag, body[8]
        if len(body) < 40 or body[0] >> 4 != 6:
            return "malformed"
        pl = struct.unpack_from("!H", body, 4)[0]
        if pl == 0 or pl > len(body) - 40:
            return "malformed"
        end, nh, off, frag = 40 + pl, body[6], 40, None
        while nh in (0, 43, 60, 51, 44):
            if end - off < 8:
                return "malformed"
            if nh == 44:
                fo = struct.unpack_from("!H", body, off + 2)[0]
                ident = struct.unpack_from("!I", body, off + 4)[0]
                if fo & 0xFFF8:
                    frag = ("later", ident)
                elif fo & 1:
                    frag = ("first", ident)
                nh, off = body[off], off + 8
            else:
                ln = (body[off + 1] + 2) * 4 if nh == 51 else (body[off + 1] + 1) * 8
                if end - off < ln:
                    return "malformed"
                nh, off = body[off], off + ln
        l4 = None if frag and frag[0] == "later" else body[off:end]
        return body[8:24], body[24:40], nh, l4, frag, body[7]

    @staticmethod
    def quote(v6, q):
        """The flow an ICMP error quotes: (src, dst, proto, sport, dport) as packed addresses."""
        if not v6:
            if len(q) < 28:
                return None
            hl = (q[0] & 15) * 4
            s, d, p, l4 = q[12:16], q[16:20], q[9], q[hl:]
        else:
            if len(q) < 48:
                return None
            s, d, p, l4 = q[8:24], q[24:40], q[6], q[40:]
        if p in (6, 17):
            return (ipaddress.ip_address(s), ipaddress.ip_address(d), p) + struct.unpack_from("!HH", l4, 0)
        if p in (1, 58) and l4[0] in (8, 0, 128, 129):
            i = struct.unpack_from("!H", l4, 4)[0]
            return (ipaddress.ip_address(s), ipaddress.ip_address(d), p, i, i)
        return None

    def run(self, f: bytes, now: int):
        D = lambda reason, t="-": ("drop", reason, t)  # noqa: E731
        if len(f) < 14:
            return D("malformed")
        et = struct.unpack_from("!H", f, 12)[0]
        p = f[14:]
        if et == 0x0800:
            if len(p) < 20:
                return D("malformed")
            v, ihl = p[0] >> 4, p[0] & 15
            if v != 4 or ihl < 5 or len(p) < ihl * 4:
                return D("malformed")
            tl = struct.unpack_from("!H", p, 2)[0]
            if tl < ihl * 4 or tl > len(p) or csum(p[:ihl * 4]) != 0:
                return D("malformed")
            fo = struct.unpack_from("!H", p, 6)[0]
            if fo & 0x3FFF:
                return D("not_overlay")
            if p[9] != 17:
                return D("not_overlay")
            osrc = ipaddress.ip_address(p[12:16])
            l4 = p[ihl * 4:tl]
        elif et == 0x86DD:
            if len(p) < 40:
                return D("malformed")
            pl = struct.unpack_from("!H", p, 4)[0]
            if pl == 0 or pl > len(p) - 40:
                return D("malformed")
            if p[6] != 17:
                return D("not_overlay")
            osrc = ipaddress.ip_address(p[8:24])
            l4 = p[40:40 + pl]
        else:
            return D("not_overlay")
        if len(l4) < 8:
            return D("malformed")
        _, dp, ul = struct.unpack_from("!HHH", l4, 0)
        if dp != GATEWAY["udp_port"]:
            return D("not_overlay")
        if ul < 16 or ul > len(l4):
            return D("malformed")
        vx, inner = l4[8:16], l4[16:ul]
        if not vx[0] & 0x08:
            return D("not_overlay")
        if vx[0] & ~0x88 & 0xFF or vx[7]:
            return D("malformed")
        vni = int.from_bytes(vx[4:7], "big")
        if vni not in self.segments:
            return D("unknown_segment")
        if len(inner) < 14:
            return D("malformed")
        mode, seg_tenant = self.segments[vni]
        off = 14
        tagged = False
        if mode == "vni":
            T = seg_tenant
        elif mode == "gbp":
            gid = struct.unpack_from("!H", vx, 2)[0]
            if not vx[0] & 0x80 or gid not in self.by_id:
                return D("no_identity")
            T = self.by_id[gid]
        else:
            if struct.unpack_from("!H", inner, 12)[0] != 0x8100 or len(inner) < 18:
                return D("no_identity")
            vid = struct.unpack_from("!H", inner, 14)[0] & 0xFFF
            if vid not in self.by_id or not 1 <= vid <= 4094:
                return D("no_identity")
            T = self.by_id[vid]
            off, tagged = 18, True
        if self.vteps[T] is not None and osrc not in self.vteps[T]:
            return D("spoofed_identity", T)
        if inner[6] & 1 or inner[6:12] == bytes(6):
            return D("malformed", T)  # a source MAC is one station's: no group, not zero
        iet = struct.unpack_from("!H", inner, off - 2)[0]
        body = inner[off:]
        space = self.space[T]
        if iet == 0x0806:
            if len(body) < 28:
                return D("malformed", T)
            ht, pt, hl, pln, op = struct.unpack_from("!HHBBH", body, 0)
            if (ht, pt, hl, pln) != (1, 0x0800, 6, 4):
                return D("malformed", T)
            spa, tpa = body[14:18], body[24:28]
            if op != 1 or spa == tpa:
                return D("unsupported", T)
            if body[8] & 1 or body[8:14] == bytes(6):
                return D("malformed", T)  # the answer would go to a group
            if not self.src_ok(T, space, spa, osrc):
                return D("spoofed_source", T)
            ep = self.eps.get((space, ipaddress.ip_address(tpa)))
            if ep is None:
                return D("no_endpoint", T)
            if self.may_learn(T, ep[0], space, ipaddress.ip_address(tpa), ipaddress.ip_address(spa), now):
                return ("arp_reply", "-", T)
            return D("policy_denied", T)
        if iet not in (0x0800, 0x86DD):
            return D("unsupported", T)
        if inner[0] & 1 and iet == 0x0800:
            return D("unsupported", T)
        ip = self.parse_ip(iet, body)
        if isinstance(ip, str):
            return D("unsupported", T) if inner[0] & 1 else D(ip, T)
        src, dst, proto, l4b, frag, hlim = ip
        src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        if proto == 58 and l4b and l4b[0] == 135:
            # Neighbour solicitation (RFC 4861: hop limit 255, unfragmented).
            assert hlim == 255 and frag is None and len(l4b) >= 24
            if any(l4b[o] == 1 and l4b[o + 1] == 1 and (l4b[o + 2] & 1 or l4b[o + 2:o + 8] == bytes(6))
                   for o in range(24, len(l4b) - 7, 8)):
                return D("malformed", T)  # a source link-layer address that is a group or zero
            if src.is_unspecified:
                return D("unsupported", T)  # duplicate address detection
            if not self.src_ok(T, space, src, osrc):
                return D("spoofed_source", T)
            target = ipaddress.ip_address(l4b[8:24])
            ep = self.eps.get((space, target))
            if ep is None:
                return D("no_endpoint", T)
            if self.may_learn(T, ep[0], space, target, src, now):
                return ("nd_reply", "-", T)
            return D("policy_denied", T)
        if inner[0] & 1:
            return D("unsupported", T)
        if not self.src_ok(T, space, src, osrc):
            return D("spoofed_source", T)
        ep = self.eps.get((space, dst))
        if ep is None:
            return D("no_endpoint", T)
        sport = dport = None
        flags, icmp = 0, None
        if l4b is not None and proto in (6, 17):
            sport, dport = struct.unpack_from("!HH", l4b, 0)
            if proto == 6:
                flags = l4b[13]
        if l4b is not None and proto in (1, 58) and len(l4b) >= 8:
            t = l4b[0]
            if t in (8, 128, 0, 129):
                sport = dport = struct.unpack_from("!H", l4b, 4)[0]
                icmp = ("echo_reply" if t in (0, 129) else "echo", None)
            elif (proto == 1 and t in (3, 11, 12)) or (proto == 58 and 1 <= t <= 4):
                icmp = ("error", self.quote(proto == 58, l4b[8:]))
            else:
                icmp = ("other", None)
        fkey = (T, src, dst, proto, frag[1] if frag else None)
        if frag and frag[0] == "later":
            got = self.frags.get(fkey)
            if got is None:
                return D("orphan_fragment", T)
            age = now - got[0]
            assert age <= FRAG_FRESH_US or age >= FRAG_STALE_US, "fragment tail in the contract's grey zone"
            if age >= FRAG_STALE_US:
                return D("orphan_fragment", T)
            ok = got[1]
        else:
            ok = self.verdict(T, ep[0], proto, sport, dport, src, dst, now, self.replies == "stateless")
            key = (space, src, dst, proto, sport or 0, dport or 0)
            if self.replies == "tracked":
                if ok:
                    self.track(key, T, ep[0], now, flags)
                else:
                    ok = self.reply(key, T, ep[0], now, flags, icmp)
            if frag:
                self.frags[fkey] = (now, ok)
        if not ok:
            return D("policy_denied", T)
        egress_tagged = self.segments[ep[2]][0] == "vlan"
        n = len(inner) - (4 if tagged else 0) + (4 if egress_tagged else 0)
        if (40 if ep[1].version == 6 else 20) + 16 + n > GATEWAY["mtu"]:
            return D("too_big", T)
        return ("forward", "-", T)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

def pcap_bytes(frames) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, data, *_ in frames:
        out.append(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(data), len(data)) + data)
    return b"".join(out)


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + pad4(value)


def block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def pcapng_bytes(frames) -> bytes:
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                + opt(4, b"joypath scripts/mkfixtures.py") + opt(0, b""))
    idb = block(0x00000001, struct.pack("<HHI", 1, 0, 65535)
                + opt(2, b"fixture0") + opt(9, b"\x06") + opt(0, b""))
    out = [shb, idb]
    for i, (ts, data, disp, reason, tenant, comment) in enumerate(frames):
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + pad4(data)
        body += opt(1, f"#{i} {disp} {reason} {tenant}: {comment}".encode()) + opt(0, b"")
        out.append(block(0x00000006, body))
    return b"".join(out)


def tsv(frames) -> str:
    return "".join(f"{i}\t{d}\t{r}\t{t}\t{c}\n" for i, (_, _, d, r, t, c) in enumerate(frames))


def main(argv):
    root = Path(__file__).resolve().parent.parent
    out = Path(argv[1]) if len(argv) > 1 else root / "pcap-fixtures"
    out.mkdir(parents=True, exist_ok=True)
    caps = [build_identity(), build_verdicts(), build_drops(), build_arp(), build_overlap(), build_ipv6(),
            build_tracked(), build_source(), build_fragments(), build_nd(), build_windows()]
    bad = 0
    seen_reasons, seen_disp = set(), set()
    for cap in caps:
        model = Model("stateless" if cap.policy == "stateless.toml" else "tracked")
        for i, (ts, data, disp, reason, tenant, comment) in enumerate(cap.frames):
            got = model.run(data, ts)
            if got != (disp, reason, tenant):
                bad += 1
                print(f"{cap.name}[{i}]: hand says {(disp, reason, tenant)}, model says {got}: {comment}",
                      file=sys.stderr)
            seen_reasons.add(reason)
            seen_disp.add(disp)
    all_reasons = {"malformed", "not_overlay", "unknown_segment", "no_identity", "spoofed_identity",
                   "no_endpoint", "policy_denied", "too_big", "unsupported", "spoofed_source",
                   "orphan_fragment"}
    if not all_reasons <= seen_reasons or not {"forward", "arp_reply", "nd_reply", "drop"} <= seen_disp:
        print("missing coverage:", all_reasons - seen_reasons, file=sys.stderr)
        bad += 1
    if bad:
        print(f"{bad} disagreement(s); nothing written", file=sys.stderr)
        return 1
    (out / "fixtures.toml").write_text(toml_config("tracked"))
    (out / "stateless.toml").write_text(toml_config("stateless"))
    for cap in caps:
        ext = "pcapng" if cap.pcapng else "pcap"
        data = pcapng_bytes(cap.frames) if cap.pcapng else pcap_bytes(cap.frames)
        (out / f"{cap.name}.{ext}").write_bytes(data)
        (out / f"{cap.name}.expect.tsv").write_text(tsv(cap.frames))
        print(f"{cap.name}.{ext}: {len(cap.frames)} frames ({cap.policy})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
