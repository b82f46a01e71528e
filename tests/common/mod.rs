//! What the root crate's integration tests share: the `joypath` binary and the fixtures, a
//! `joypath replay --serve` gateway killed on drop (built by [`Gateway::in_temp`],
//! [`Gateway::in_dir`] or [`Gateway::at`]), the management answers' `ok`/`err`, and running `ctl` as
//! another (unprivileged) user.
#![allow(dead_code)] // each test file uses its own part

use mgmt::{Client, ErrorCode, Response};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_joypath");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcap-fixtures")
}

/// A temporary directory named `prefix…`.
pub fn tmp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// `joypath replay --serve --pps PPS --config CONFIG` with its socket (`s.sock`) and state
/// directory (`state`) in `dir`, then `extra`, replaying `verdicts.pcap`.
pub fn serve_command(dir: &Path, config: &Path, pps: u32, extra: &[String]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["replay", "--serve", "--pps", &pps.to_string(), "--config"])
        .arg(config)
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .arg(fixtures().join("verdicts.pcap"));
    c
}

/// A free loopback TCP address (bound, then released for the caller's server to take).
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits (30 s at the most) until a gateway answers on `sock`.
pub fn wait_for_socket(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "gateway did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `replay --serve` gateway (see [`serve_command`]), killed on drop.
pub struct Gateway {
    pub child: Child,
    dir: PathBuf,
    /// The temporary directory `dir` is, when the gateway owns it.
    temp: Option<tempfile::TempDir>,
}

/// Where a [`Gateway`] keeps its socket and state.
enum Place {
    /// A new temporary directory with this prefix, owned by the gateway.
    Temp(&'static str),
    /// This temporary directory, owned by the gateway.
    Given(tempfile::TempDir),
    /// A directory the caller owns.
    At(PathBuf),
}

/// How to start a [`Gateway`]: by default `fixtures.toml` at 20000 frames per second, no extra
/// arguments, stdout and stderr to /dev/null.
pub struct Launch {
    place: Place,
    config: PathBuf,
    pps: u32,
    extra: Vec<String>,
    env: Vec<(String, PathBuf)>,
    pipe_stdout: bool,
    pipe_stderr: bool,
}

impl Gateway {
    /// In a new temporary directory named `prefix…`.
    pub fn in_temp(prefix: &'static str) -> Launch {
        Launch::new(Place::Temp(prefix))
    }
    /// In `dir` (as it was left by [`Gateway::kill`], say).
    pub fn in_dir(dir: tempfile::TempDir) -> Launch {
        Launch::new(Place::Given(dir))
    }
    /// In `dir`, which the caller keeps.
    pub fn at(dir: &Path) -> Launch {
        Launch::new(Place::At(dir.to_path_buf()))
    }

    /// The directory of its socket and state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("s.sock")
    }
    pub fn client(&self) -> Client {
        Client::connect(&self.socket()).unwrap()
    }
    /// `joypath ctl ARGS --socket SOCKET`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .unwrap()
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }
    /// Kills the gateway and hands back its temporary directory, for another to start in.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.temp
            .take()
            .expect("a gateway started `at` a directory does not own it")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Launch {
    fn new(place: Place) -> Launch {
        Launch {
            place,
            config: fixtures().join("fixtures.toml"),
            pps: 20000,
            extra: Vec::new(),
            env: Vec::new(),
            pipe_stdout: false,
            pipe_stderr: false,
        }
    }
    pub fn config(mut self, config: &Path) -> Launch {
        self.config = config.to_path_buf();
        self
    }
    pub fn pps(mut self, pps: u32) -> Launch {
        self.pps = pps;
        self
    }
    /// Arguments after `--state-dir`, before the capture.
    pub fn args(mut self, extra: &[&str]) -> Launch {
        self.extra.extend(extra.iter().map(|a| a.to_string()));
        self
    }
    pub fn env(mut self, key: &str, value: &Path) -> Launch {
        self.env.push((key.to_string(), value.to_path_buf()));
        self
    }
    /// stdout to a pipe nobody reads (instead of /dev/null).
    pub fn pipe_stdout(mut self) -> Launch {
        self.pipe_stdout = true;
        self
    }
    /// stderr to a pipe nobody reads (instead of /dev/null).
    pub fn pipe_stderr(mut self) -> Launch {
        self.pipe_stderr = true;
        self
    }
    /// Starts the gateway and waits until it answers on its socket.
    pub fn start(self) -> Gateway {
        let (dir, temp) = match self.place {
            Place::Temp(prefix) => {
                let t = tmp(prefix);
                (t.path().to_path_buf(), Some(t))
            }
            Place::Given(t) => (t.path().to_path_buf(), Some(t)),
            Place::At(dir) => (dir, None),
        };
        let pipe = |piped| if piped { Stdio::piped() } else { Stdio::null() };
        let mut cmd = serve_command(&dir, &self.config, self.pps, &self.extra);
        cmd.stdout(pipe(self.pipe_stdout))
            .stderr(pipe(self.pipe_stderr));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start joypath");
        let g = Gateway { child, dir, temp };
        wait_for_socket(&g.socket());
        g
    }
}

/// The result of a successful answer.
pub fn ok(r: Response) -> Value {
    assert!(r.ok, "expected success, got {:?}", r.error);
    r.result.unwrap()
}

/// The code of an error answer.
pub fn err(r: Response) -> ErrorCode {
    err_message(r).0
}

/// The code and message of an error answer.
pub fn err_message(r: Response) -> (ErrorCode, String) {
    assert!(!r.ok, "expected an error, got {:?}", r.result);
    let e = r.error.unwrap();
    (e.code, e.message)
}

/// Waits (10 s at the most) until every worker runs policy version `v`.
pub fn wait_workers_on(c: &mut Client, v: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ok(c.call("status", json!({})).unwrap());
        if s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["active_version"] == json!(v))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers never reached version {v}: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Creates system user `name` (a member of `group`, created too, when given) unless it exists;
/// its uid and primary gid.
pub fn ensure_user(name: &str, group: Option<&str>) -> (u32, u32) {
    if let Some(gr) = group {
        let _ = Command::new("groupadd").arg("-f").arg(gr).status();
    }
    if Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let mut c = Command::new("useradd");
        c.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if let Some(gr) = group {
            c.args(["-G", gr]);
        }
        assert!(c.arg(name).status().unwrap().success(), "useradd {name}");
    }
    let id = |flag: &str| -> u32 {
        String::from_utf8(
            Command::new("id")
                .arg(flag)
                .arg(name)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    (id("-u"), id("-g"))
}

/// The gid of `group`.
pub fn group_id(group: &str) -> u32 {
    String::from_utf8(
        Command::new("getent")
            .args(["group", group])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split(':')
    .nth(2)
    .unwrap()
    .parse()
    .unwrap()
}

/// Lets other users reach a socket in `dir` (o+x on it and every directory above); the
/// credentials check is what the tests test.
pub fn open_to_others(dir: &Path) {
    let mut p = dir.to_path_buf();
    loop {
        let _ = Command::new("chmod").arg("o+x").arg(&p).status();
        if !p.pop() || p.as_os_str().len() <= 1 {
            break;
        }
    }
}

/// Runs `joypath ctl --socket SOCK --json ARGS…` as user `uid`, group `gid`, supplementary groups
/// `groups`; (exit code, stdout, stderr).
pub fn ctl_as(
    uid: u32,
    gid: u32,
    groups: &[u32],
    sock: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl")
        .arg("--socket")
        .arg(sock)
        .arg("--json")
        .args(args);
    let groups = groups.to_vec();
    // std's uid()/gid() would drop supplementary groups before our hook could set them, so the
    // whole identity change happens here: groups, then gid, then uid.
    // SAFETY: setgroups/setgid/setuid are async-signal-safe and touch no memory of the parent; they
    // run in the forked child before exec, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
