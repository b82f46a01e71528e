//! What the driver needs to know about the host's network: interfaces (index, MAC, addresses, RX
//! queues), the kernel's neighbour table and its routes toward the VTEPs. Read off the hot path, by the
//! control thread, from /sys, /proc and `ip -j` (iproute2).

use super::AfxdpError;
use hashbrown::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
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
            addrs: addresses(name),
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

fn ip_json(args: &[&str]) -> Vec<serde_json::Value> {
    Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).ok())
        .unwrap_or_default()
}

/// The interface's addresses (global and link scope) from `ip -j addr show dev NAME`.
fn addresses(name: &str) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for link in ip_json(&["addr", "show", "dev", name]) {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip = a["local"].as_str().and_then(|s| s.parse().ok());
            let len = a["prefixlen"].as_u64();
            if let (Some(ip), Some(len)) = (ip, len) {
                out.push((ip, len as u8));
            }
        }
    }
    out
}

/// The kernel's route toward `dst`: (output interface name, next hop).
pub fn route_get(dst: IpAddr) -> Option<(String, IpAddr)> {
    let r = ip_json(&["route", "get", &dst.to_string()]);
    let r = r.first()?;
    let dev = r["dev"].as_str()?.to_string();
    let via = r["gateway"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(dst);
    Some((dev, via))
}

/// The kernel's resolved neighbours (IPv4 from /proc/net/arp; IPv6 from `ip -6 neigh` when asked).
pub fn kernel_neighbors(v6: bool) -> HashMap<IpAddr, Mac> {
    let mut out = HashMap::new();
    if let Ok(s) = std::fs::read_to_string("/proc/net/arp") {
        for line in s.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // IP address, HW type, Flags, HW address, Mask, Device; flags 0x2 = complete
            if f.len() >= 4 && f[2] != "0x0" {
                if let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) {
                    if mac.0 != [0; 6] {
                        out.insert(IpAddr::V4(ip), mac);
                    }
                }
            }
        }
    }
    if v6 {
        for n in ip_json(&["-6", "neigh", "show"]) {
            let ip = n["dst"].as_str().and_then(|s| s.parse::<IpAddr>().ok());
            let mac = n["lladdr"].as_str().and_then(parse_mac);
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.insert(ip, mac);
            }
        }
    }
    out
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
    fn macs() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:01"),
            Some(Mac([2, 0, 0, 0, 0x0a, 1]))
        );
        assert_eq!(parse_mac("02:00:00:00:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:01:02"), None);
    }
}
