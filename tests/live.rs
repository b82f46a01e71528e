//! Live interop test of `joypath run` (AF_XDP) against Linux's own VXLAN devices, in three network
//! namespaces built here and removed on drop (also on panic):
//!
//! ```text
//!   A [a0 198.18.0.1] ── [ga 198.18.0.254] G (joypath run -i ga,gb -q 2) [gb 198.18.1.254] ── [b0 198.18.1.1] B
//!   A: vx0 VNI 100 (legacy: the VNI is tenant red), inner 198.19.0.1 + 2001:2:0:19::1 (allowed to
//!      blue) and 198.19.0.11 (red too, but no rule to blue until the SIGHUP reload)
//!   B: vx0 VNI 1 gbp (shared: tenant = group id, set by nftables `meta mark set 200` = blue),
//!      inner 198.19.0.2 + 2001:2:0:19::2
//! ```
//!
//! The policy has one-directional rules only (red → blue) and `replies = "tracked"`: red pings and
//! streams TCP to blue over inner IPv4 and IPv6, with no static neighbours anywhere (the gateway
//! answers ARP and neighbour solicitations, blue's toward red only for red's tracked flows); blue can
//! start nothing toward red (TCP, also from red's server port, or ICMP echo); a rule removed through
//! the management socket stops an established stream. The gateway runs two workers on two RX queues,
//! and a trace shows a flow's request and its reply handled by different workers.
//!
//! The underlay is routed through G (A and B reach each other's /24 via G), since joypath sends every
//! re-encapsulated frame from its one `underlay_ip`.
//!
//! Needs root (it fails, never skips, without it), iproute2, nftables, ethtool, ping, python3, socat
//! and netcat-openbsd (`scripts/install-deps.sh`).
//! Only 198.18.0.0/15 and 2001:2::/48 addresses are used. No timing assertions: every wait is bounded,
//! generous and retried.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const RED4: &str = "198.19.0.1";
const RED4_DENIED: &str = "198.19.0.11";
const BLUE4: &str = "198.19.0.2";
const RED6: &str = "2001:2:0:19::1";
const BLUE6: &str = "2001:2:0:19::2";
const RED_MAC: &str = "02:00:00:00:0a:01";
const BLUE_MAC: &str = "02:00:00:00:0b:01";
/// Blue's TCP sinks listen here (iperf3's port): the port a stateless mirror would open back to red.
const BLUE_PORT: u16 = 5201;

struct Topo {
    a: String,
    g: String,
    b: String,
    dir: PathBuf,
    gw: Option<Child>,
    /// Helpers running in the namespaces until the end (reaped on drop).
    bg: Vec<Child>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        if let Some(mut c) = self.gw.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.g, &self.b] {
            // End what still runs in the namespace (by pid), then delete it (its veths and vxlan
            // devices go with it).
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for mut c in self.bg.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a setup command, retrying a few times (a loaded machine can be slow to settle).
fn must(args: &[&str]) {
    let mut last = None;
    for _ in 0..3 {
        let o = run(args);
        if o.status.success() {
            return;
        }
        last = Some(o);
        sleep(Duration::from_millis(300));
    }
    let o = last.unwrap();
    panic!(
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Waits for a child with a deadline; kills it (and fails) when it overstays.
fn wait_child(c: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{what} still running after {limit:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// A CPU mask (sysfs `xps_cpus` format: 32-bit hex groups, comma separated) with every CPU set.
fn all_cpus_mask() -> String {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(
            String::from_utf8_lossy(&run(&["nproc", "--all"]).stdout)
                .trim()
                .parse()
                .unwrap_or(1),
        );
    let mut groups = Vec::new();
    let mut left = n;
    while left > 0 {
        let bits = left.min(32);
        let g: u64 = (1u64 << bits) - 1;
        groups.push(format!("{g:x}"));
        left -= bits;
    }
    groups.reverse();
    groups.join(",")
}

impl Topo {
    fn ns<'a>(&'a self, ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        v
    }
    fn in_ns(&self, ns: &str, args: &[&str]) -> Output {
        run(&self.ns(ns, args))
    }
    fn must_ns(&self, ns: &str, args: &[&str]) {
        must(&self.ns(ns, args))
    }
    fn sh(&self, ns: &str, script: &str) {
        must(&["ip", "netns", "exec", ns, "sh", "-c", script]);
    }

    /// Pings `dst` from `src` in `ns`; true when at least one reply came back (first frames may be
    /// dropped while next hops are resolved, so several attempts are made).
    fn ping(&self, ns: &str, src: &str, dst: &str, extra: &[&str]) -> bool {
        for _ in 0..3 {
            let mut a = vec!["ping", "-c", "4", "-i", "0.3", "-W", "2", "-I", src];
            a.extend_from_slice(extra);
            a.push(dst);
            if self.in_ns(ns, &a).status.success() {
                return true;
            }
        }
        false
    }
    fn ping_fails(&self, ns: &str, src: &str, dst: &str, extra: &[&str]) -> bool {
        let mut a = vec!["ping", "-c", "4", "-i", "0.3", "-W", "2", "-I", src];
        a.extend_from_slice(extra);
        a.push(dst);
        !self.in_ns(ns, &a).status.success()
    }

    /// The MAC `ns` resolved for `ip` on vx0, and whether the entry is static (PERMANENT).
    fn neighbour(&self, ns: &str, ip: &str) -> (Option<String>, bool) {
        let o = self.in_ns(ns, &["ip", "neigh", "show", "to", ip, "dev", "vx0"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut w = s.split_whitespace();
        let mut mac = None;
        while let Some(x) = w.next() {
            if x == "lladdr" {
                mac = w.next().map(str::to_string);
            }
        }
        (mac, s.contains("PERMANENT"))
    }

    fn build() -> Topo {
        let id = std::process::id();
        let t = Topo {
            a: format!("jpA{id}"),
            g: format!("jpG{id}"),
            b: format!("jpB{id}"),
            dir: std::env::temp_dir().join(format!("joypath-live-{id}")),
            gw: None,
            bg: Vec::new(),
        };
        std::fs::create_dir_all(&t.dir).unwrap();
        for n in [&t.a, &t.g, &t.b] {
            must(&["ip", "netns", "add", n]);
            t.must_ns(n, &["ip", "link", "set", "lo", "up"]);
        }
        // The gateway's own kernel stack speaks IPv4 only; the edge hosts carry inner IPv6 too.
        t.must_ns(&t.g, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        // Two queues each way on both ends of both underlay veths: the gateway serves RX queues 0
        // and 1 of ga and gb with one worker each.
        must(&[
            "ip",
            "link",
            "add",
            "a0",
            "netns",
            &t.a,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "ga",
            "netns",
            &t.g,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        must(&[
            "ip",
            "link",
            "add",
            "gb",
            "netns",
            &t.g,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "netns",
            &t.b,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        // How frames spread over the gateway's two workers. A veth has no RSS of its own: the queue
        // a frame is received on (ga/gb rx-N) is the TX queue the *sending* end (a0/b0) picked, by
        // XPS when configured, else by the skb's flow hash. For VXLAN the edge VTEP keeps the inner
        // flow's hash (for TCP, each socket's own random `sk_txhash`), so red's requests and blue's
        // replies of one connection — sent by two different VTEPs, on two different wires — land on
        // independent queues, the same queue only by chance (1 in 2 per connection). To make "the
        // request on one worker, its reply on the other" certain rather than likely, XPS pins A's
        // VTEP to TX queue 0 (→ ga rx-0 → worker 0) and B's to TX queue 1 (→ gb rx-1 → worker 1).
        // The trace below then checks it from the gateway's side (`worker=` in each packet comment).
        let all = all_cpus_mask();
        t.sh(
            &t.a,
            &format!(
                "ip addr add 198.18.0.1/24 dev a0 && ip link set a0 up \
                 && echo {all} > /sys/class/net/a0/queues/tx-0/xps_cpus \
                 && echo 0 > /sys/class/net/a0/queues/tx-1/xps_cpus"
            ),
        );
        t.sh(&t.g, "ip addr add 198.18.0.254/24 dev ga && ip link set ga up && ip addr add 198.18.1.254/24 dev gb && ip link set gb up");
        t.sh(
            &t.b,
            &format!(
                "ip addr add 198.18.1.1/24 dev b0 && ip link set b0 up \
                 && echo 0 > /sys/class/net/b0/queues/tx-0/xps_cpus \
                 && echo {all} > /sys/class/net/b0/queues/tx-1/xps_cpus"
            ),
        );
        // A routed underlay: joypath re-encapsulates from its one `underlay_ip` (198.18.0.254, on ga)
        // whichever interface a frame leaves by, and the edge VTEPs learn inner MACs behind that
        // address, so B must reach 198.18.0.0/24 (and A 198.18.1.0/24) through the gateway.
        t.sh(&t.a, "ip route add 198.18.1.0/24 via 198.18.0.254 dev a0");
        t.sh(&t.b, "ip route add 198.18.0.0/24 via 198.18.1.254 dev b0");
        // Edge VTEPs. Checksums computed in software (`tx off`): over veth an offloaded checksum is
        // never filled in (the peer kernel would trust the skb's flag), but joypath reads the bytes
        // through AF_XDP and forwards them as they are, so B's TCP would drop every segment for a bad
        // checksum. No segmentation offload, and an inner MTU that leaves room for VXLAN's 50 bytes
        // over the 1500-byte underlay. Inner IPv6 addresses without DAD (the gateway drops DAD's
        // multicast, as the contract says); no static neighbours: each host resolves the other
        // through the gateway's ARP and neighbour-discovery answers.
        t.sh(&t.a, &format!("ip link add vx0 address {RED_MAC} mtu 1450 type vxlan id 100 local 198.18.0.1 remote 198.18.0.254 dstport 4789 \
             && ip addr add {RED4}/24 dev vx0 && ip addr add {RED4_DENIED}/24 dev vx0 \
             && ip -6 addr add {RED6}/64 dev vx0 nodad && ip link set vx0 up \
             && ethtool -K vx0 tx off tso off gso off >/dev/null && ethtool -K a0 tx off >/dev/null"));
        t.sh(&t.b, &format!("ip link add vx0 address {BLUE_MAC} mtu 1450 type vxlan id 1 local 198.18.1.1 remote 198.18.1.254 dstport 4789 gbp \
             && ip addr add {BLUE4}/24 dev vx0 && ip -6 addr add {BLUE6}/64 dev vx0 nodad && ip link set vx0 up \
             && ethtool -K vx0 tx off tso off gso off >/dev/null && ethtool -K b0 tx off >/dev/null"));
        // B's tenant id (GBP group 200 = blue) on everything leaving vx0, ARP and ND included,
        // unless the sender set its own mark (the spoofing test sends with mark 100 = red).
        t.sh(&t.b, "nft add table netdev jp && nft add chain netdev jp out '{ type filter hook egress device \"vx0\" priority 0; }' \
             && nft add rule netdev jp out meta mark 0 meta mark set 200");
        t
    }

    fn start_gateway(&mut self, config: &Path) {
        let err = self.dir.join("gw.err");
        let out = self.dir.join("gw.out");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.g, env!("CARGO_BIN_EXE_joypath")])
            .args(["run", "--json", "--interface", "ga,gb", "--queues", "2"])
            .args(["--cores", "0,1", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--socket")
            .arg(self.dir.join("jp.sock"))
            .env("JOYPATH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawning joypath run");
        self.gw = Some(child);
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&err).unwrap_or_default();
            if log.contains("joypath running") {
                eprintln!("{log}");
                return;
            }
            if let Some(st) = self.gw.as_mut().unwrap().try_wait().unwrap() {
                panic!("joypath run exited early ({st}): {log}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "joypath did not start: {log}"
            );
            sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.gw.as_ref().unwrap().id().to_string();
        // `ip netns exec` execs joypath in place, so the child's pid is joypath's.
        must(&["kill", sig, &pid]);
    }

    fn stop_gateway(&mut self) -> serde_json::Value {
        self.signal("-TERM");
        let mut c = self.gw.take().unwrap();
        let st = wait_child(&mut c, "joypath after SIGTERM", Duration::from_secs(60));
        let out = std::fs::read_to_string(self.dir.join("gw.out")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.join("gw.err")).unwrap_or_default();
        eprintln!("joypath stderr:\n{err}\njoypath stdout:\n{out}");
        assert!(st.success(), "joypath exited with {st}");
        serde_json::from_str(&out).expect("final counters are JSON")
    }

    /// `joypath ctl --json ARGS…` against the gateway's socket: (exit success, parsed stdout).
    fn ctl(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let o = Command::new(env!("CARGO_BIN_EXE_joypath"))
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.join("jp.sock"))
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            serde_json::Value::String(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        });
        (o.status.success(), v)
    }

    /// Waits until every worker runs policy `version` (`ctl verify`).
    fn wait_version(&self, version: u64) {
        let t0 = Instant::now();
        loop {
            let (ok, v) = self.ctl(&["verify"]);
            if ok && v["expected"]["version"] == version {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "workers never all ran version {version}: {v}"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Starts a TCP sink in `ns` on `ip:BLUE_PORT`. When the sender closes (`eof`) or nothing has
    /// arrived for `idle` seconds (`stall`), it closes and writes "<eof|stall> <bytes>" to `name`.
    fn tcp_sink(&self, ns: &str, ip: &str, idle: u32, name: &str) -> Child {
        let out = self.dir.join(name);
        let script = format!(
            "import socket,os\nip='{ip}'\ns=socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind((ip,{BLUE_PORT}));s.listen(1);s.settimeout(120)\nc,_=s.accept();c.settimeout({idle});n=0;how='eof'\n\
             while True:\n  try:\n    d=c.recv(65536)\n  except OSError:\n    how='stall';break\n  \
             if not d: break\n  n+=len(d)\n\
             c.close()\nf='{out}';open(f+'.tmp','w').write(how+' '+str(n));os.rename(f+'.tmp',f)\n",
            out = out.display()
        );
        let c = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Bounded wait until it listens.
        let probe = format!("ss -Hltn 'sport = :{BLUE_PORT}'");
        let t0 = Instant::now();
        while !String::from_utf8_lossy(&self.in_ns(ns, &["sh", "-c", &probe]).stdout)
            .contains("LISTEN")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the sink never listened"
            );
            sleep(Duration::from_millis(100));
        }
        c
    }

    /// Sends `chunks` × 64 KiB from `src` to `dst:BLUE_PORT`. Exits 0 once the sink has closed after
    /// all the bytes, 2 when it cannot connect, 3 when the connection stalls for 10 s (a send or the
    /// wait for the sink's close times out). With a `gate`, the sender writes `<gate>.half` once
    /// half the bytes are sent and acknowledged (nothing left in its send queue) and holds the connection open until the file `<gate>` exists, so the
    /// stream provably spans whatever the test does in between.
    fn tcp_send(&self, ns: &str, src: &str, dst: &str, chunks: u32, gate: Option<&str>) -> Child {
        let gate = gate
            .map(|g| format!("'{}'", self.dir.join(g).display()))
            .unwrap_or_else(|| "None".into());
        let script = format!(
            "import socket,time,os,fcntl,termios,struct\ngate={gate}\nfor a in range(40):\n  try:\n    c=socket.create_connection(('{dst}',{BLUE_PORT}),timeout=3,source_address=('{src}',0));break\n  \
             except OSError: time.sleep(0.5)\nelse: raise SystemExit(2)\nc.settimeout(10)\n\
             try:\n  \
             for i in range({chunks}):\n    \
               if gate and i == {chunks}//2:\n      \
                 for _ in range(300):\n        \
                   if struct.unpack('i',fcntl.ioctl(c.fileno(),termios.TIOCOUTQ,b'0000'))[0]==0: break\n        \
                   time.sleep(0.1)\n      \
                 open(gate+'.half','w').close()\n      \
                 for _ in range(1800):\n        \
                   if os.path.exists(gate): break\n        \
                   time.sleep(0.1)\n    \
               c.sendall(b'x'*65536)\n  \
             c.shutdown(socket.SHUT_WR);c.recv(1);c.close()\n\
             except OSError: raise SystemExit(3)\n"
        );
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits (generously) for a file the test's helpers write in the scratch directory.
    fn wait_file(&self, name: &str) {
        let t0 = Instant::now();
        while !self.dir.join(name).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{name} never appeared"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Whether a TCP connection from `src` (optionally from port `sport`) to `dst:port` gets
    /// established (a few attempts).
    fn tcp_connects(
        &self,
        ns: &str,
        src: &str,
        sport: Option<&str>,
        dst: &str,
        port: &str,
    ) -> bool {
        (0..3).any(|_| {
            let mut a = vec!["nc", "-z", "-w", "3", "-s", src];
            if let Some(p) = sport {
                a.extend_from_slice(&["-p", p]);
            }
            a.extend_from_slice(&[dst, port]);
            self.in_ns(ns, &a).status.success()
        })
    }

    /// What a sink wrote: ("eof" | "stall", bytes), waiting for it to finish (bounded).
    fn received(&self, name: &str, mut sink: Child) -> (String, u64) {
        wait_child(&mut sink, name, Duration::from_secs(180));
        let s = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let mut w = s.split_whitespace();
        let how = w.next().unwrap_or("none").to_string();
        (how, w.next().and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    /// A listener in `ns` for the rest of the test.
    fn listen(&mut self, ns: &str, spec: &str) {
        let l = Command::new("ip")
            .args(["netns", "exec", ns, "socat", spec, "/dev/null"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning socat");
        self.bg.push(l);
    }
}

/// An inner flow: (source, source port, destination, destination port, IP protocol).
type Flow = (Vec<u8>, u16, Vec<u8>, u16, u8);

/// One frame of a `ctl trace` pcapng: its comment's fields and the inner flow it belongs to.
#[derive(Debug)]
struct Traced {
    tenant: String,
    worker: String,
    flow: Option<Flow>,
}

/// Reads the enhanced packet blocks of a pcapng written by `ctl trace` (little-endian, as the
/// gateway writes it), with each packet's `opt_comment`.
fn read_trace(path: &Path) -> Vec<Traced> {
    let b = std::fs::read(path).unwrap_or_default();
    let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    let le16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let mut out = Vec::new();
    let mut o = 0;
    while o + 12 <= b.len() {
        let (ty, len) = (le32(o), le32(o + 4));
        assert!(
            len >= 12 && o + len <= b.len(),
            "bad pcapng block at {o} in {}",
            path.display()
        );
        if ty == 6 {
            let caplen = le32(o + 20);
            let data = &b[o + 28..o + 28 + caplen];
            let mut p = o + 28 + caplen.div_ceil(4) * 4;
            let mut comment = String::new();
            while p + 4 <= o + len - 4 {
                let (code, l) = (le16(p), le16(p + 2));
                if code == 0 {
                    break;
                }
                if code == 1 {
                    comment = String::from_utf8_lossy(&b[p + 4..p + 4 + l]).into_owned();
                }
                p += 4 + l.div_ceil(4) * 4;
            }
            let field = |k: &str| {
                comment
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .unwrap_or("")
                    .to_string()
            };
            out.push(Traced {
                tenant: field("tenant="),
                worker: field("worker="),
                flow: inner_flow(data),
            });
        }
        o += len;
    }
    out
}

/// The inner 5-tuple of an outer Ethernet/IPv4/UDP/VXLAN frame carrying inner IPv4 or IPv6 TCP/UDP.
fn inner_flow(f: &[u8]) -> Option<Flow> {
    let get = |o: usize, n: usize| f.get(o..o + n);
    if get(12, 2)? != [0x08, 0x00] {
        return None;
    }
    let ihl = (f.get(14)? & 0x0f) as usize * 4;
    let inner = 14 + ihl + 8 + 8; // outer IPv4, UDP, VXLAN
    let ethertype = get(inner + 12, 2)?;
    let ip = inner + 14;
    let (src, dst, proto, l4) = match ethertype {
        [0x08, 0x00] => {
            let ihl = (f.get(ip)? & 0x0f) as usize * 4;
            (
                get(ip + 12, 4)?.to_vec(),
                get(ip + 16, 4)?.to_vec(),
                *f.get(ip + 9)?,
                ip + ihl,
            )
        }
        [0x86, 0xdd] => (
            get(ip + 8, 16)?.to_vec(),
            get(ip + 24, 16)?.to_vec(),
            *f.get(ip + 6)?,
            ip + 40,
        ),
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    let port = |o: usize| get(o, 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    Some((src, port(l4)?, dst, port(l4 + 2)?, proto))
}

const POLICY: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"
udp_port = 4789
mtu = 1500
replies = "tracked"

[[segment]]
vni = 100
identity = "vni"
tenant = "red"

[[segment]]
vni = 1
identity = "gbp"

[[tenant]]
name = "red"
id = 100
vteps = ["198.18.0.1"]

[[tenant]]
name = "blue"
id = 200
vteps = ["198.18.1.1"]

[[endpoint]]
tenant = "red"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "red"
ip = "198.19.0.11"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "red"
ip = "2001:2:0:19::1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "blue"
ip = "198.19.0.2"
mac = "02:00:00:00:0b:01"
vtep = "198.18.1.1"
vni = 1

[[endpoint]]
tenant = "blue"
ip = "2001:2:0:19::2"
mac = "02:00:00:00:0b:01"
vtep = "198.18.1.1"
vni = 1

# One direction only: red may reach blue; blue's replies come back as tracked flows, and blue
# resolves red's addresses only for those flows.
[[rule]]
from = "red"
to = "blue"
from_cidr = "198.19.0.1/32"
action = "allow"
priority = 100

[[rule]]
from = "red"
to = "blue"
from_cidr = "2001:2:0:19::1/128"
action = "allow"
priority = 100
"#;

/// What SIGHUP loads: 198.19.0.11 may now reach blue too (still one-directional).
const POLICY_V2_EXTRA: &str = r#"
[[rule]]
from = "red"
to = "blue"
from_cidr = "198.19.0.11/32"
action = "allow"
priority = 100
"#;

/// The policies this test and the README run: valid, replies tracked, and one-directional — every
/// rule an allow from red to blue, none the other way.
fn assert_one_directional(what: &str, doc: &policy::Document) {
    let issues = doc.validate();
    assert!(issues.is_empty(), "{what}: {issues:?}");
    assert_eq!(doc.gateway.replies, policy::Replies::Tracked, "{what}");
    assert!(!doc.rules.is_empty(), "{what}: no rules");
    for r in &doc.rules {
        assert!(
            r.from == "red" && r.to == "blue" && r.action == policy::Action::Allow,
            "{what}: only red → blue allows: {r:?}"
        );
    }
}

fn dropped(v: &serde_json::Value, reason: &str) -> u64 {
    v["dropped"][reason].as_u64().unwrap_or(0)
}

/// Bytes each stream carries: 64 × 64 KiB = 4 MiB.
const CHUNKS: u32 = 64;
const STREAM: u64 = CHUNKS as u64 * 65536;

#[test]
fn live_gateway_between_linux_vteps() {
    let euid = String::from_utf8_lossy(&run(&["id", "-u"]).stdout)
        .trim()
        .to_string();
    assert_eq!(
        euid, "0",
        "the live AF_XDP test needs root (network namespaces, XDP, AF_XDP): run the suite as root"
    );
    let mut t = Topo::build();
    let config = t.dir.join("policy.toml");
    std::fs::write(&config, POLICY).unwrap();
    assert_one_directional(
        "the test's policy",
        &policy::Document::load(&config).unwrap(),
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/live.toml");
    assert_one_directional(
        "examples/live.toml",
        &policy::Document::load(&example).unwrap(),
    );
    t.start_gateway(&config);
    let (a, g, b) = (t.a.clone(), t.g.clone(), t.b.clone());
    let gw_log = std::fs::read_to_string(t.dir.join("gw.err")).unwrap_or_default();
    assert!(
        gw_log.contains("2 RX queue(s) taken"),
        "two queues, two workers: {gw_log}"
    );

    // The gateway's own kernel stack still answers on its underlay addresses.
    assert!(
        t.ping(&a, "198.18.0.1", "198.18.0.254", &[]),
        "gateway kernel (ga) answers A"
    );
    assert!(
        t.ping(&b, "198.18.1.1", "198.18.1.254", &[]),
        "gateway kernel (gb) answers B"
    );

    // A second gateway on the same interfaces is refused with a clear error.
    let second = t.in_ns(
        &g,
        &[
            env!("CARGO_BIN_EXE_joypath"),
            "run",
            "--no-mgmt",
            "-i",
            "ga",
            "-c",
            config.to_str().unwrap(),
        ],
    );
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && msg.contains("already attached"),
        "second run: {msg}"
    );

    // Listeners for the rest of the test: blue on 5003 (IPv4 and IPv6), red on 5002 (the ports blue
    // must not reach).
    t.listen(&b, &format!("TCP-LISTEN:5003,bind={BLUE4},reuseaddr,fork"));
    t.listen(
        &b,
        &format!("TCP6-LISTEN:5003,bind=[{BLUE6}],reuseaddr,fork"),
    );
    t.listen(&a, &format!("TCP-LISTEN:5002,bind={RED4},reuseaddr,fork"));
    t.listen(
        &a,
        &format!("TCP6-LISTEN:5002,bind=[{RED6}],reuseaddr,fork"),
    );

    // Red → blue, ping, over IPv4 and IPv6, with one-directional rules and no static neighbours:
    // red resolves blue through the gateway, and blue resolves red through the gateway too (answered
    // because red's echo requests are tracked flows toward blue).
    assert!(t.ping(&a, RED4, BLUE4, &[]), "allowed ping red→blue (IPv4)");
    assert!(t.ping(&a, RED6, BLUE6, &[]), "allowed ping red→blue (IPv6)");
    for (ns, ip, mac, who) in [
        (&a, BLUE4, BLUE_MAC, "red's ARP entry for blue"),
        (&a, BLUE6, BLUE_MAC, "red's ND entry for blue"),
        (&b, RED4, RED_MAC, "blue's ARP entry for red"),
        (&b, RED6, RED_MAC, "blue's ND entry for red"),
    ] {
        let (got, permanent) = t.neighbour(ns, ip);
        assert_eq!(got.as_deref(), Some(mac), "{who}");
        assert!(!permanent, "{who} is learnt, not static");
    }
    assert!(
        t.tcp_connects(&a, RED4, None, BLUE4, "5003"),
        "allowed TCP red→blue (IPv4)"
    );
    assert!(
        t.tcp_connects(&a, RED6, None, BLUE6, "5003"),
        "allowed TCP red→blue (IPv6)"
    );

    // Blue can start nothing toward red — though it knows red's MAC, and red's flows toward blue are
    // tracked right now: no ICMP echo, no TCP, not even from blue's server port (what a stateless
    // mirror of `red → blue` would let in).
    for (src, dst) in [(BLUE4, RED4), (BLUE6, RED6)] {
        assert!(t.ping_fails(&b, src, dst, &[]), "ping blue→red {dst}");
        assert!(
            !t.tcp_connects(&b, src, None, dst, "5002"),
            "TCP blue→red {dst}"
        );
        assert!(
            !t.tcp_connects(&b, src, Some(&BLUE_PORT.to_string()), dst, "5002"),
            "TCP blue→red {dst} from port {BLUE_PORT}"
        );
    }

    // The denied red address gets nothing, either way, ping or TCP.
    assert!(
        t.ping_fails(&a, RED4_DENIED, BLUE4, &[]),
        "denied ping red(.11)→blue"
    );
    assert!(
        t.ping_fails(&b, BLUE4, RED4_DENIED, &[]),
        "denied ping blue→red(.11)"
    );
    assert!(
        !t.tcp_connects(&a, RED4_DENIED, None, BLUE4, "5003"),
        "denied TCP red(.11)→blue"
    );

    // Spoofed identity: B claims red's group id (100), but only 198.18.0.1 may send for red.
    assert!(
        t.ping_fails(&b, BLUE4, RED4, &["-m", "100"]),
        "spoofed ping blue→red"
    );

    // Red streams 4 MiB to blue over IPv4, then IPv6, while a trace records forwarded frames: every
    // byte arrives, and a request and its reply (the same inner 5-tuple, mirrored) were handled by
    // different workers (see the XPS note in `Topo::build`).
    let mut cross = 0;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (src, dst)) in [(RED4, BLUE4), (RED6, BLUE6)].into_iter().enumerate() {
        let pcap = t.dir.join(format!("trace{i}.pcapng"));
        let mut trace = Command::new(env!("CARGO_BIN_EXE_joypath"))
            .arg("ctl")
            .arg("--socket")
            .arg(t.dir.join("jp.sock"))
            .args(["trace", "--count", "400", "--outcome", "forward"])
            .args(["--timeout-ms", "60000", "--out"])
            .arg(&pcap)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The trace arms asynchronously; a 4 MiB stream forwards thousands of frames, so it fills
        // its 400 even when it arms late (and the count below fails the test if it does not).
        sleep(Duration::from_millis(500));
        let sink = t.tcp_sink(&b, dst, 30, &format!("s{i}.bytes"));
        let mut send = t.tcp_send(&a, src, dst, CHUNKS, None);
        let st = wait_child(&mut send, "red→blue sender", Duration::from_secs(180));
        assert!(st.success(), "red→blue stream {src}→{dst}: sender {st}");
        assert_eq!(
            t.received(&format!("s{i}.bytes"), sink),
            ("eof".to_string(), STREAM),
            "red→blue stream {src}→{dst}"
        );
        let st = wait_child(&mut trace, "ctl trace", Duration::from_secs(90));
        assert!(st.success(), "ctl trace: {st}");
        let frames = read_trace(&pcap);
        assert!(frames.len() >= 100, "trace of {dst}: {frames:?}");
        for f in &frames {
            *seen
                .entry(format!("tenant={} worker={}", f.tenant, f.worker))
                .or_default() += 1;
        }
        for req in frames.iter().filter(|f| f.tenant == "red") {
            let Some((s, sp, d, dp, p)) = &req.flow else {
                continue;
            };
            let mirrored = Some((d.clone(), *dp, s.clone(), *sp, *p));
            if frames
                .iter()
                .any(|r| r.tenant == "blue" && r.worker != req.worker && r.flow == mirrored)
            {
                cross += 1;
            }
        }
    }
    eprintln!("traced frames: {seen:?}; requests whose reply another worker handled: {cross}");
    assert!(
        cross > 0,
        "no request and its reply handled by different workers: {seen:?}"
    );
    // Both workers processed frames (`status`: per-worker frame counts).
    let (ok, status) = t.ctl(&["status"]);
    assert!(ok, "status: {status}");
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 2, "two workers: {status}");
    for w in &workers {
        assert!(
            w["frames"].as_u64().unwrap_or(0) > 0,
            "worker {} processed no frames: {status}",
            w["id"]
        );
    }

    // A red → blue stream spans a SIGHUP reload that lets 198.19.0.11 reach blue too.
    let sink = t.tcp_sink(&b, BLUE4, 30, "hup.bytes");
    let mut send = t.tcp_send(&a, RED4, BLUE4, CHUNKS, Some("hup"));
    t.wait_file("hup.half");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap()
        .write_all(POLICY_V2_EXTRA.as_bytes())
        .unwrap();
    t.signal("-HUP");
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(t.dir.join("gw.err")).unwrap_or_default();
        // The management plane logs each change once: "policy changed … op=\"sighup\" version=2".
        if log.contains("policy reloaded, version 2")
            || log.lines().any(|l| {
                l.contains("policy changed") && l.contains("sighup") && l.contains("version=2")
            })
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no reload seen: {log}"
        );
        sleep(Duration::from_millis(100));
    }
    // The reload went through the management plane: version 2 in the store, every worker on it.
    t.wait_version(2);
    let (_, h) = t.ctl(&["history"]);
    assert!(h.to_string().contains("\"op\":\"sighup\""), "history: {h}");
    assert!(
        t.ping(&a, RED4_DENIED, BLUE4, &[]),
        "after SIGHUP: red(.11)→blue allowed"
    );
    assert!(
        t.tcp_connects(&a, RED4_DENIED, None, BLUE4, "5003"),
        "after SIGHUP: TCP red(.11)→blue allowed"
    );
    assert!(
        t.ping_fails(&b, BLUE4, RED4_DENIED, &[]),
        "after SIGHUP: still no ping blue→red(.11)"
    );
    // Let the stream send its second half over the new policy.
    std::fs::write(t.dir.join("hup"), b"").unwrap();
    let st = wait_child(&mut send, "sender across SIGHUP", Duration::from_secs(180));
    assert!(st.success(), "red→blue sender across the reload: {st}");
    assert_eq!(
        t.received("hup.bytes", sink),
        ("eof".to_string(), STREAM),
        "red→blue stream across the reload"
    );

    // A rule removed through the management socket stops an established stream: half the bytes
    // go through, the rule red → blue from 198.19.0.1/32 is removed, and the rest never arrives — the sink
    // stalls, and the sender neither finishes nor sees the sink's close (blue's FIN is a reply of
    // a flow no rule allows any more).
    let sink = t.tcp_sink(&b, BLUE4, 8, "cut.bytes");
    let mut send = t.tcp_send(&a, RED4, BLUE4, CHUNKS, Some("cut"));
    t.wait_file("cut.half");
    let (ok, doc) = t.ctl(&["get"]);
    assert!(ok, "get: {doc}");
    let index = doc["document"]["rule"]
        .as_array()
        .and_then(|r| r.iter().position(|r| r["from_cidr"] == "198.19.0.1/32"))
        .unwrap_or_else(|| panic!("no rule from 198.19.0.1/32: {doc}"));
    let (ok, r) = t.ctl(&["call", "rule.remove", &format!("index={index}")]);
    assert!(ok, "rule.remove: {r}");
    assert_eq!(r["version"], 3, "rule.remove: {r}");
    t.wait_version(3);
    std::fs::write(t.dir.join("cut"), b"").unwrap();
    let (how, n) = t.received("cut.bytes", sink);
    assert_eq!(
        how, "stall",
        "the stream stalls once its rule is gone ({n} bytes)"
    );
    assert!(
        (STREAM / 2..STREAM).contains(&n),
        "half the stream before the removal, not all of it: {n} bytes"
    );
    let st = wait_child(
        &mut send,
        "sender after rule.remove",
        Duration::from_secs(120),
    );
    assert_eq!(
        st.code(),
        Some(3),
        "the sender stalls (exit 3), never sees the stream through: {st}"
    );
    // IPv4 red → blue is gone altogether; IPv6 (its own rule) still goes.
    assert!(
        t.ping_fails(&a, RED4, BLUE4, &[]),
        "after rule.remove: ping red→blue (IPv4) denied"
    );
    assert!(
        t.ping(&a, RED6, BLUE6, &[]),
        "after rule.remove: ping red→blue (IPv6) still allowed"
    );

    let report = t.stop_gateway();
    assert_eq!(report["policy_version"], 3, "{report}");
    assert_eq!(report["reloads"], 1, "{report}");
    assert!(report["forwarded"].as_u64().unwrap() > 0, "{report}");
    assert!(report["arp_replied"].as_u64().unwrap() > 0, "{report}");
    assert!(report["nd_replied"].as_u64().unwrap() > 0, "{report}");
    assert!(
        dropped(&report, "policy_denied") > 0,
        "denied frames counted: {report}"
    );
    assert!(
        dropped(&report, "spoofed_identity") > 0,
        "spoofed frames counted: {report}"
    );
    assert!(report["driver"]["tx"].as_u64().unwrap() > 0, "{report}");

    // Everything is detached once joypath has exited.
    for dev in ["ga", "gb"] {
        let o = t.in_ns(&g, &["ip", "link", "show", "dev", dev]);
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(!s.contains("xdp"), "XDP program left on {dev}: {s}");
    }

    // ... and when it dies without a chance to clean up (SIGKILL): the bpf_link goes with it, and the
    // store on disk still holds every committed version.
    t.start_gateway(&config);
    t.signal("-KILL");
    let mut c = t.gw.take().unwrap();
    let _ = c.wait();
    for dev in ["ga", "gb"] {
        let t0 = Instant::now();
        loop {
            let o = t.in_ns(&g, &["ip", "link", "show", "dev", dev]);
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            if !s.contains("xdp") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "XDP program left on {dev} after SIGKILL: {s}"
            );
            sleep(Duration::from_millis(100));
        }
    }
    let store = std::fs::read_dir(t.dir.join("state/versions"))
        .unwrap()
        .count();
    assert!(store >= 3, "the store kept every version");
}
