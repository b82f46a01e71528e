//! What the driver needs to know about the host's network: interfaces (index, MAC, addresses, RX
//! queues), the kernel's neighbour table and its routes toward the VTEPs — over rtnetlink
//! (netlink-packet-route), and [`Watch`], which follows the kernel's route, address, link and
//! neighbour changes as events. Read off the hot path, by the control thread.

use super::AfxdpError;
use hashbrown::HashMap;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use vtep::Mac;

/// One interface the gateway runs on.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// Configured addresses with their prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    /// Number of RX queues the kernel shows for it.
    pub rx_queues: u32,
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, AfxdpError> {
        let sys = Path::new("/sys/class/net").join(name);
        if name.is_empty() || name.contains('/') || !sys.exists() {
            return Err(AfxdpError::NoInterface(name.to_string()));
        }
        let read = |f: &str| std::fs::read_to_string(sys.join(f)).unwrap_or_default();
        let index = read("ifindex")
            .trim()
            .parse()
            .map_err(|_| AfxdpError::NoInterface(name.to_string()))?;
        let mac = parse_mac(read("address").trim()).unwrap_or(Mac([0; 6]));
        let rx_queues = std::fs::read_dir(sys.join("queues"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        Ok(Interface {
            name: name.to_string(),
            index,
            mac,
            addrs: addresses(index).unwrap_or_else(|e| {
                tracing::warn!(interface = name, error = %e, "reading addresses over netlink");
                Vec::new()
            }),
            rx_queues,
        })
    }

    /// Whether `ip` is inside one of this interface's connected prefixes.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(a, len)| same_prefix(*a, ip, *len))
    }
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(m))
}

fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

fn io_other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Sends one rtnetlink request and collects the messages of its answer (all parts of a dump, or the
/// one reply of a plain request).
fn request(msg: RouteNetlinkMessage, dump: bool) -> std::io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    header.sequence_number = 1;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut off = 0;
        while off < data.len() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                .map_err(io_other)?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::Error(_) => return Ok(out),
                NetlinkPayload::InnerMessage(i) => {
                    out.push(i);
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// The interface's addresses (every scope) with their prefix lengths.
fn addresses(index: u32) -> std::io::Result<Vec<(IpAddr, u8)>> {
    let mut out = Vec::new();
    for m in request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        true,
    )? {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if a.header.index != index {
            continue;
        }
        // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's on point-to-point);
        // IPv6 has only IFA_ADDRESS.
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(addr) {
            out.push((ip, a.header.prefix_len));
        }
    }
    Ok(out)
}

/// The kernel's route toward `dst`: (output interface index, next hop).
pub fn route_get(dst: IpAddr) -> Option<(u32, IpAddr)> {
    let mut m = RouteMessage::default();
    let (family, len, addr) = match dst {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = len;
    m.attributes.push(RouteAttribute::Destination(addr));
    let reply = match request(RouteNetlinkMessage::GetRoute(m), false) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%dst, error = %e, "no route");
            return None;
        }
    };
    let RouteNetlinkMessage::NewRoute(r) = reply.into_iter().next()? else {
        return None;
    };
    let oif = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    let via = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
            _ => None,
        })
        .unwrap_or(dst);
    Some((oif, via))
}

/// The kernel's resolved neighbours (IPv4 and, when asked, IPv6): entries reachable, stale, being
/// re-checked, permanent or static — not incomplete or failed ones.
pub fn kernel_neighbors(v6: bool) -> HashMap<IpAddr, Mac> {
    let mut out = HashMap::new();
    let all = match request(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        true,
    ) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "reading the neighbour table over netlink");
            return out;
        }
    };
    for m in all {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if !matches!(
            n.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        ) {
            continue;
        }
        let ip = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) if v6 => {
                Some(IpAddr::V6(*ip))
            }
            _ => None,
        });
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLocalAddress(b) if b.len() == 6 => {
                Some(Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
            }
            _ => None,
        });
        if let (Some(ip), Some(mac)) = (ip, mac) {
            if mac.0 != [0; 6] {
                out.insert(ip, mac);
            }
        }
    }
    out
}

/// What changed in the kernel since the last look.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Routes, addresses or links: routes toward the VTEPs must be looked up again.
    pub routes: bool,
    /// Neighbour entries: next hops' MACs may have been resolved or changed.
    pub neighbours: bool,
}

/// Follows the kernel's changes: a netlink socket subscribed to route, address, link and neighbour
/// events, read without blocking by the control thread.
pub struct Watch {
    socket: Socket,
    buf: Vec<u8>,
}

impl Watch {
    pub fn new() -> std::io::Result<Watch> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        for g in [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_NEIGH,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_IFADDR,
            libc::RTNLGRP_IPV6_ROUTE,
        ] {
            socket.add_membership(g)?;
        }
        socket.set_non_blocking(true)?;
        Ok(Watch {
            socket,
            buf: vec![0; 1 << 16],
        })
    }

    /// Drains the events received so far. An overrun (events lost) counts as every kind of change.
    pub fn changes(&mut self) -> Changes {
        let mut c = Changes::default();
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return c,
                Err(e) => {
                    // ENOBUFS: the kernel dropped events; look at everything again.
                    tracing::debug!(error = %e, "netlink events lost");
                    return Changes {
                        routes: true,
                        neighbours: true,
                    };
                }
            };
            let mut off = 0;
            while off < n {
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                else {
                    c.routes = true;
                    c.neighbours = true;
                    break;
                };
                match m.payload {
                    NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::NewNeighbour(_) | RouteNetlinkMessage::DelNeighbour(_),
                    ) => c.neighbours = true,
                    NetlinkPayload::InnerMessage(_) => c.routes = true,
                    _ => {}
                }
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

/// Asks the kernel to resolve `next_hop` by sending it one empty UDP datagram to the discard port
/// (the neighbour lookup that precedes it is the point; the datagram itself is ignored or refused).
pub fn probe(next_hop: IpAddr) {
    let bind: (IpAddr, u16) = match next_hop {
        IpAddr::V4(_) => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
    };
    if let Ok(s) = std::net::UdpSocket::bind(bind) {
        let _ = s.send_to(&[], (next_hop, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let a: IpAddr = "198.18.0.254".parse().unwrap();
        assert!(same_prefix(a, "198.18.0.1".parse().unwrap(), 24));
        assert!(!same_prefix(a, "198.18.1.1".parse().unwrap(), 24));
        let b: IpAddr = "2001:2::fe".parse().unwrap();
        assert!(same_prefix(b, "2001:2::1".parse().unwrap(), 64));
        assert!(!same_prefix(a, b, 0));
    }

    #[test]
    fn netlink_reads_the_loopback() {
        // Every Linux host has lo (index 1) with 127.0.0.1/8, and a local route toward 127.0.0.1.
        let lo = Interface::lookup("lo").unwrap();
        assert!(
            lo.addrs.contains(&("127.0.0.1".parse().unwrap(), 8)),
            "{lo:?}"
        );
        assert_eq!(
            route_get("127.0.0.1".parse().unwrap()),
            Some((lo.index, "127.0.0.1".parse().unwrap()))
        );
        let mut w = Watch::new().unwrap();
        // Nothing blocks; whatever happened meanwhile, the answer is a value.
        let _ = w.changes();
        let _ = kernel_neighbors(true);
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:01"),
            Some(Mac([2, 0, 0, 0, 0x0a, 1]))
        );
        assert_eq!(parse_mac("02:00:00:00:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:01:02"), None);
    }
}
