//! Live interop test of `joypath run` (AF_XDP) against Linux's own VXLAN devices, in three network
//! namespaces built here and removed on drop (also on panic):
//!
//! ```text
//!   A [a0 198.18.0.1] ── [ga 198.18.0.254] G (joypath run -i ga,gb) [gb 198.18.1.254] ── [b0 198.18.1.1] B
//!   A: vx0 VNI 100 (legacy: the VNI is tenant acme), inner 198.19.0.1 (allowed) + 198.19.0.11 (denied)
//!   B: vx0 VNI 1 gbp (shared: tenant = group id, set by nftables `meta mark set 200` = globex),
//!      inner 198.19.0.2
//! ```
//!
//! The underlay is routed through G (A and B reach each other's /24 via G), since joypath sends every
//! re-encapsulated frame from its one `underlay_ip`.
//!
//! Needs root (it fails, never skips, without it), iproute2, nftables, ethtool, ping, python3, socat
//! and netcat-openbsd (`scripts/install-deps.sh`).
//! Only 198.18.0.0/15 addresses are used. No timing assertions: waits are generous and retried.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

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
            // End what still runs in the namespace (by pid), then delete it.
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
            t.must_ns(n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        }
        must(&[
            "ip", "link", "add", "a0", "netns", &t.a, "type", "veth", "peer", "name", "ga",
            "netns", &t.g,
        ]);
        must(&[
            "ip", "link", "add", "gb", "netns", &t.g, "type", "veth", "peer", "name", "b0",
            "netns", &t.b,
        ]);
        t.sh(
            &t.a,
            "ip addr add 198.18.0.1/24 dev a0 && ip link set a0 up",
        );
        t.sh(&t.g, "ip addr add 198.18.0.254/24 dev ga && ip link set ga up && ip addr add 198.18.1.254/24 dev gb && ip link set gb up");
        t.sh(
            &t.b,
            "ip addr add 198.18.1.1/24 dev b0 && ip link set b0 up",
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
        // over the 1500-byte underlay.
        t.sh(&t.a, "ip link add vx0 address 02:00:00:00:0a:01 mtu 1450 type vxlan id 100 local 198.18.0.1 remote 198.18.0.254 dstport 4789 \
             && ip addr add 198.19.0.1/24 dev vx0 && ip addr add 198.19.0.11/24 dev vx0 && ip link set vx0 up \
             && ethtool -K vx0 tx off tso off gso off >/dev/null && ethtool -K a0 tx off >/dev/null");
        t.sh(&t.b, "ip link add vx0 address 02:00:00:00:0b:01 mtu 1450 type vxlan id 1 local 198.18.1.1 remote 198.18.1.254 dstport 4789 gbp \
             && ip addr add 198.19.0.2/24 dev vx0 && ip link set vx0 up \
             && ethtool -K vx0 tx off tso off gso off >/dev/null && ethtool -K b0 tx off >/dev/null");
        // B's tenant id (GBP group 200 = globex) on everything leaving vx0, ARP included, unless the
        // sender set its own mark (the spoofing test sends with mark 100 = acme).
        t.sh(&t.b, "nft add table netdev jp && nft add chain netdev jp out '{ type filter hook egress device \"vx0\" priority 0; }' \
             && nft add rule netdev jp out meta mark 0 meta mark set 200");
        t
    }

    fn start_gateway(&mut self, config: &Path) {
        let err = self.dir.join("gw.err");
        let out = self.dir.join("gw.out");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.g, env!("CARGO_BIN_EXE_joypath")])
            .args(["run", "--json", "--interface", "ga,gb", "--config"])
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
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                panic!("joypath did not stop on SIGTERM");
            }
            sleep(Duration::from_millis(100));
        };
        let out = std::fs::read_to_string(self.dir.join("gw.out")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.join("gw.err")).unwrap_or_default();
        eprintln!("joypath stderr:\n{err}\njoypath stdout:\n{out}");
        assert!(st.success(), "joypath exited with {st}");
        serde_json::from_str(&out).expect("final counters are JSON")
    }

    /// Starts a TCP sink in `ns` on `ip:port` that writes the byte count it received to `name`.
    fn tcp_sink(&self, ns: &str, ip: &str, port: u16, name: &str) -> Child {
        let out = self.dir.join(name);
        let script = format!(
            "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{ip}',{port}));s.listen(1);s.settimeout(120)\nc,_=s.accept();c.settimeout(60);n=0\n\
             while True:\n  d=c.recv(65536)\n  if not d: break\n  n+=len(d)\nopen('{}','w').write(str(n))\n",
            out.display()
        );
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Sends `chunks` × 20 000 bytes from `src` to `dst:port`, paced over `chunks` × 0.1 s; the exit
    /// status says whether the sender finished cleanly. With a `gate`, the sender writes
    /// `<gate>.half` once half the bytes are sent and holds the connection open until the file
    /// `<gate>` exists, so the stream provably spans whatever the test does in between.
    fn tcp_send(
        &self,
        ns: &str,
        src: &str,
        dst: &str,
        port: u16,
        chunks: u32,
        gate: Option<&str>,
    ) -> Child {
        let gate = gate
            .map(|g| format!("'{}'", self.dir.join(g).display()))
            .unwrap_or_else(|| "None".into());
        let script = format!(
            "import socket,time,os\ngate={gate}\nfor a in range(40):\n  try:\n    c=socket.create_connection(('{dst}',{port}),timeout=3,source_address=('{src}',0));break\n  \
             except OSError: time.sleep(0.5)\nelse: raise SystemExit(2)\nc.settimeout(60)\n\
             for i in range({chunks}):\n  \
               if gate and i == {chunks}//2:\n    \
                 open(gate+'.half','w').close()\n    \
                 for _ in range(1800):\n      \
                   if os.path.exists(gate): break\n      \
                   time.sleep(0.1)\n  \
               c.sendall(b'x'*20000);time.sleep(0.1)\n\
             c.shutdown(socket.SHUT_WR);c.recv(1);c.close()\n"
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

    /// Whether a TCP connection from `src` to `dst:port` gets established (a few attempts).
    fn tcp_connects(&self, ns: &str, src: &str, dst: &str, port: &str) -> bool {
        (0..3).any(|_| {
            self.in_ns(ns, &["nc", "-z", "-w", "3", "-s", src, dst, port])
                .status
                .success()
        })
    }

    fn received(&self, name: &str, mut sink: Child) -> u64 {
        let t0 = Instant::now();
        while sink.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(150) {
                let _ = sink.kill();
                break;
            }
            sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

const POLICY: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"
udp_port = 4789
mtu = 1500

[[segment]]
vni = 100
identity = "vni"
tenant = "acme"

[[segment]]
vni = 1
identity = "gbp"

[[tenant]]
name = "acme"
id = 100
vteps = ["198.18.0.1"]

[[tenant]]
name = "globex"
id = 200
vteps = ["198.18.1.1"]

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "acme"
ip = "198.19.0.11"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "globex"
ip = "198.19.0.2"
mac = "02:00:00:00:0b:01"
vtep = "198.18.1.1"
vni = 1

[[rule]]
from = "acme"
to = "globex"
from_cidr = "198.19.0.1/32"
action = "allow"
priority = 100

[[rule]]
from = "globex"
to = "acme"
to_cidr = "198.19.0.1/32"
action = "allow"
priority = 100
"#;

/// What SIGHUP loads: 198.19.0.11 may now talk with globex too.
const POLICY_V2_EXTRA: &str = r#"
[[rule]]
from = "acme"
to = "globex"
from_cidr = "198.19.0.11/32"
action = "allow"
priority = 100

[[rule]]
from = "globex"
to = "acme"
to_cidr = "198.19.0.11/32"
action = "allow"
priority = 100
"#;

fn dropped(v: &serde_json::Value, reason: &str) -> u64 {
    v["dropped"][reason].as_u64().unwrap_or(0)
}

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
    t.start_gateway(&config);
    let (a, g, b) = (t.a.clone(), t.g.clone(), t.b.clone());

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

    // Allowed pair, both ways: ping.
    assert!(
        t.ping(&a, "198.19.0.1", "198.19.0.2", &[]),
        "allowed ping A→B"
    );
    assert!(
        t.ping(&b, "198.19.0.2", "198.19.0.1", &[]),
        "allowed ping B→A"
    );

    // Denied pair gets nothing, either way, ping or TCP (B listens on 5003 throughout).
    let listener = Command::new("ip")
        .args([
            "netns",
            "exec",
            &b,
            "socat",
            "TCP-LISTEN:5003,bind=198.19.0.2,reuseaddr,fork",
        ])
        .arg("/dev/null")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning socat");
    t.bg.push(listener);
    assert!(
        t.ping_fails(&a, "198.19.0.11", "198.19.0.2", &[]),
        "denied ping A(.11)→B"
    );
    assert!(
        t.ping_fails(&b, "198.19.0.2", "198.19.0.11", &[]),
        "denied ping B→A(.11)"
    );
    assert!(
        !t.tcp_connects(&a, "198.19.0.11", "198.19.0.2", "5003"),
        "denied TCP A(.11)→B"
    );
    assert!(
        t.tcp_connects(&a, "198.19.0.1", "198.19.0.2", "5003"),
        "allowed TCP A→B (the listener is up)"
    );

    // Spoofed identity: B claims acme's group id (100), but only 198.18.0.1 may send for acme.
    assert!(
        t.ping_fails(&b, "198.19.0.2", "198.19.0.1", &["-m", "100"]),
        "spoofed ping B→A"
    );

    // TCP both ways (B→A while A→B runs; the A→B stream spans the policy reload below).
    let sink_b = t.tcp_sink(&b, "198.19.0.2", 5001, "b.bytes");
    let sink_a = t.tcp_sink(&a, "198.19.0.1", 5002, "a.bytes");
    sleep(Duration::from_millis(500));
    let mut send_ab = t.tcp_send(&a, "198.19.0.1", "198.19.0.2", 5001, 80, Some("ab"));
    let mut send_ba = t.tcp_send(&b, "198.19.0.2", "198.19.0.1", 5002, 20, None);
    // The A→B stream has carried half its bytes and holds its connection open until "ab" exists.
    t.wait_file("ab.half");

    // SIGHUP: the new policy lets 198.19.0.11 through, while the A→B stream keeps going.
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
        if log.contains("policy reloaded, version 2") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no reload seen: {log}"
        );
        sleep(Duration::from_millis(100));
    }
    // The reload went through the management plane: version 2 in the store, every worker on it.
    let sock = t.dir.join("jp.sock");
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_joypath"))
            .arg("ctl")
            .arg("--socket")
            .arg(&sock)
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    loop {
        let v = ctl(&["verify"]);
        let text = String::from_utf8_lossy(&v.stdout).into_owned();
        if v.status.success() && text.contains("\"version\": 2") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "verify: {text}");
        sleep(Duration::from_millis(100));
    }
    let h = String::from_utf8_lossy(&ctl(&["history"]).stdout).into_owned();
    assert!(h.contains("\"op\": \"sighup\""), "history: {h}");
    assert!(
        t.ping(&a, "198.19.0.11", "198.19.0.2", &[]),
        "after SIGHUP: A(.11)→B allowed"
    );
    assert!(
        t.tcp_connects(&a, "198.19.0.11", "198.19.0.2", "5003"),
        "after SIGHUP: TCP A(.11)→B allowed"
    );
    // Let the A→B stream send its second half over the new policy.
    std::fs::write(t.dir.join("ab"), b"").unwrap();

    assert!(send_ab.wait().unwrap().success(), "A→B TCP sender failed");
    assert!(send_ba.wait().unwrap().success(), "B→A TCP sender failed");
    assert_eq!(
        t.received("b.bytes", sink_b),
        80 * 20_000,
        "A→B stream across the reload"
    );
    assert_eq!(t.received("a.bytes", sink_a), 20 * 20_000, "B→A stream");

    let report = t.stop_gateway();
    assert_eq!(report["policy_version"], 2, "{report}");
    assert_eq!(report["reloads"], 1, "{report}");
    assert!(report["forwarded"].as_u64().unwrap() > 0, "{report}");
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
    // store on disk still holds both committed versions.
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
    assert!(store >= 2, "the store kept both versions");
}
