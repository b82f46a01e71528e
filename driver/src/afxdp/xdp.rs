//! The XDP program on each interface: loaded with aya, attached through a bpf_link (so the kernel
//! removes it when the process exits, however it exits), native mode first and generic otherwise.

use super::{AfxdpError, XdpMode};
use aya::maps::XskMap;
use aya::programs::{ProgramError, Xdp, XdpFlags};
use aya::{Ebpf, EbpfLoader};
use std::os::fd::AsRawFd;

/// The ELF object, 8-byte aligned as the ELF parser requires (include_bytes! alone aligns to 1).
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static PROGRAM: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xsk_redirect.o")));

/// Mode an XDP program ended up attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attached::Native => "native (driver)",
            Attached::Generic => "generic (skb)",
        })
    }
}

/// Our program attached to one interface. Dropping it detaches the program (closes the link).
pub struct XdpAttachment {
    pub ifname: String,
    pub mode: Attached,
    ebpf: Ebpf,
}

impl std::fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpAttachment")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .finish()
    }
}

fn errno_of(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError { io_error }) => {
            io_error.raw_os_error()
        }
        _ => None,
    }
}

fn map_err(ifname: &str, what: &'static str, e: ProgramError) -> AfxdpError {
    match errno_of(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => AfxdpError::Privileges {
            what: format!("{what} on {ifname}"),
        },
        Some(libc::EBUSY) | Some(libc::EEXIST) => AfxdpError::XdpAlreadyAttached(ifname.into()),
        _ => AfxdpError::Xdp {
            ifname: ifname.into(),
            what,
            detail: format!("{e:#}: {}", source_chain(&e)),
        },
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&c.to_string());
        s.push_str("; ");
        cur = c.source();
    }
    s
}

impl XdpAttachment {
    /// Loads the program (with the VXLAN port baked in) and attaches it to `ifname`.
    pub fn attach(ifname: &str, port: u16, mode: XdpMode) -> Result<XdpAttachment, AfxdpError> {
        let port_be = port.to_be();
        let mut ebpf = EbpfLoader::new()
            .set_global("PORT_BE", &port_be, true)
            .load(&PROGRAM.0)
            .map_err(|e| {
                let detail = format!("{e}: {}", source_chain(&e));
                if detail.contains("Operation not permitted") || detail.contains("EPERM") {
                    AfxdpError::Privileges {
                        what: "loading the XDP program".into(),
                    }
                } else {
                    AfxdpError::Xdp {
                        ifname: ifname.into(),
                        what: "loading the XDP program",
                        detail,
                    }
                }
            })?;
        let prog: &mut Xdp = ebpf
            .program_mut("xsk_redirect")
            .expect("xsk_redirect is in the object")
            .try_into()
            .expect("xsk_redirect is an XDP program");
        prog.load()
            .map_err(|e| map_err(ifname, "verifying the XDP program", e))?;
        let attached = match mode {
            XdpMode::Native => {
                prog.attach(ifname, XdpFlags::DRV_MODE)
                    .map_err(|e| map_err(ifname, "attaching in native mode", e))?;
                Attached::Native
            }
            XdpMode::Generic => {
                prog.attach(ifname, XdpFlags::SKB_MODE)
                    .map_err(|e| map_err(ifname, "attaching in generic mode", e))?;
                Attached::Generic
            }
            XdpMode::Auto => match prog.attach(ifname, XdpFlags::DRV_MODE) {
                Ok(_) => Attached::Native,
                Err(e) => {
                    let err = map_err(ifname, "attaching in native mode", e);
                    if matches!(
                        err,
                        AfxdpError::XdpAlreadyAttached(_) | AfxdpError::Privileges { .. }
                    ) {
                        return Err(err);
                    }
                    tracing::info!("{ifname}: native XDP unavailable ({err}); trying generic");
                    prog.attach(ifname, XdpFlags::SKB_MODE)
                        .map_err(|e| map_err(ifname, "attaching in generic mode", e))?;
                    Attached::Generic
                }
            },
        };
        Ok(XdpAttachment {
            ifname: ifname.into(),
            mode: attached,
            ebpf,
        })
    }

    /// Steers `queue`'s overlay traffic to the AF_XDP socket `fd`.
    pub fn register(&mut self, queue: u32, fd: &impl AsRawFd) -> Result<(), AfxdpError> {
        let map = self.ebpf.map_mut("xsks").expect("xsks is in the object");
        let mut xsks = XskMap::try_from(map).map_err(|e| AfxdpError::Xdp {
            ifname: self.ifname.clone(),
            what: "opening the XSK map",
            detail: e.to_string(),
        })?;
        xsks.set(queue, fd.as_raw_fd(), 0)
            .map_err(|e| AfxdpError::Xdp {
                ifname: self.ifname.clone(),
                what: "registering the AF_XDP socket",
                detail: format!("{e}: {}", source_chain(&e)),
            })
    }
}
