//! Reading pcap and pcapng captures and writing pcap (and pcapng with per-packet comments).
//! Hand-written because pcap-file 2.0 reads pcapng timestamps as nanoseconds whatever the interface's
//! `if_tsresol` says and rejects records whose original length exceeds the snap length.

use std::io::{self, Write};
use std::path::Path;

/// Ethernet, the only link type the gateway reads.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: {what} at byte {offset}")]
    Format {
        file: String,
        what: String,
        offset: usize,
    },
}

fn rd16(b: &[u8], le: bool) -> u16 {
    let a = [b[0], b[1]];
    if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    }
}
fn rd32(b: &[u8], le: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

/// Reads a pcap or pcapng file (detected by its magic number). Only Ethernet link types are accepted.
pub fn read_capture(path: &Path) -> Result<Vec<Captured>, CaptureError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CaptureError::Io {
        file: file.clone(),
        source,
    })?;
    parse_capture(&bytes).map_err(|(what, offset)| CaptureError::Format { file, what, offset })
}

/// Parses pcap or pcapng bytes; errors carry a description and the byte offset.
pub fn parse_capture(b: &[u8]) -> Result<Vec<Captured>, (String, usize)> {
    if b.len() < 4 {
        return Err(("too short for a capture file".into(), 0));
    }
    match [b[0], b[1], b[2], b[3]] {
        [0x0a, 0x0d, 0x0d, 0x0a] => parse_pcapng(b),
        _ => parse_pcap(b),
    }
}

fn parse_pcap(b: &[u8]) -> Result<Vec<Captured>, (String, usize)> {
    if b.len() < 24 {
        return Err(("truncated pcap header".into(), 0));
    }
    let (le, nanos) = match [b[0], b[1], b[2], b[3]] {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err(("not a pcap or pcapng file (unknown magic)".into(), 0)),
    };
    let linktype = rd32(&b[20..], le) & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err((format!("link type {linktype} is not Ethernet (1)"), 20));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < b.len() {
        if b.len() - at < 16 {
            return Err(("truncated record header".into(), at));
        }
        let sec = u64::from(rd32(&b[at..], le));
        let frac = u64::from(rd32(&b[at + 4..], le));
        let incl = rd32(&b[at + 8..], le) as usize;
        at += 16;
        if b.len() - at < incl {
            return Err(("truncated record".into(), at));
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        out.push(Captured {
            ts_ns,
            data: b[at..at + incl].to_vec(),
        });
        at += incl;
    }
    Ok(out)
}

fn parse_pcapng(b: &[u8]) -> Result<Vec<Captured>, (String, usize)> {
    let mut out = Vec::new();
    let mut le = true;
    // Per interface of the current section: (link type, nanoseconds per tick or ticks per ns).
    let mut ifaces: Vec<(u32, TsRes)> = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if b.len() - at < 12 {
            return Err(("truncated block header".into(), at));
        }
        let raw_type = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if raw_type == [0x0a, 0x0d, 0x0d, 0x0a] {
            le = match [b[at + 8], b[at + 9], b[at + 10], b[at + 11]] {
                [0x4d, 0x3c, 0x2b, 0x1a] => true,
                [0x1a, 0x2b, 0x3c, 0x4d] => false,
                _ => return Err(("bad section byte-order magic".into(), at + 8)),
            };
            ifaces.clear();
        }
        let btype = rd32(&b[at..], le);
        let blen = rd32(&b[at + 4..], le) as usize;
        if blen < 12 || !blen.is_multiple_of(4) || b.len() - at < blen {
            return Err((format!("bad block length {blen}"), at + 4));
        }
        let body = &b[at + 8..at + blen - 4];
        match btype {
            1 => {
                if body.len() < 8 {
                    return Err(("truncated interface description".into(), at));
                }
                let lt = u32::from(rd16(body, le));
                let res = pcapng_tsresol(&body[8..], le);
                ifaces.push((lt, res));
            }
            6 => {
                if body.len() < 20 {
                    return Err(("truncated enhanced packet block".into(), at));
                }
                let ifid = rd32(body, le) as usize;
                let ts = (u64::from(rd32(&body[4..], le)) << 32) | u64::from(rd32(&body[8..], le));
                let caplen = rd32(&body[12..], le) as usize;
                if body.len() - 20 < caplen {
                    return Err(("packet data beyond its block".into(), at));
                }
                let &(lt, res) = ifaces
                    .get(ifid)
                    .ok_or_else(|| (format!("packet on undeclared interface {ifid}"), at))?;
                if lt != LINKTYPE_ETHERNET {
                    return Err((format!("link type {lt} is not Ethernet (1)"), at));
                }
                out.push(Captured {
                    ts_ns: res.to_ns(ts),
                    data: body[20..20 + caplen].to_vec(),
                });
            }
            3 => {
                if body.len() < 4 {
                    return Err(("truncated simple packet block".into(), at));
                }
                let lt = ifaces.first().map(|i| i.0).unwrap_or(0);
                if lt != LINKTYPE_ETHERNET {
                    return Err((format!("link type {lt} is not Ethernet (1)"), at));
                }
                let orig = rd32(body, le) as usize;
                let n = orig.min(body.len() - 4);
                out.push(Captured {
                    ts_ns: 0,
                    data: body[4..4 + n].to_vec(),
                });
            }
            _ => {}
        }
        at += blen;
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum TsRes {
    Pow10(u32),
    Pow2(u32),
}

impl TsRes {
    fn to_ns(self, ticks: u64) -> u64 {
        match self {
            TsRes::Pow10(e) if e <= 9 => ticks.saturating_mul(10u64.pow(9 - e)),
            TsRes::Pow10(e) => ticks / 10u64.pow((e - 9).min(19)),
            TsRes::Pow2(e) => ((u128::from(ticks) * 1_000_000_000) >> e.min(127)) as u64,
        }
    }
}

fn pcapng_tsresol(mut opts: &[u8], le: bool) -> TsRes {
    while opts.len() >= 4 {
        let code = rd16(opts, le);
        let len = usize::from(rd16(&opts[2..], le));
        let padded = (len + 3) & !3;
        if code == 0 || opts.len() < 4 + padded {
            break;
        }
        if code == 9 && len >= 1 {
            let v = opts[4];
            return if v & 0x80 != 0 {
                TsRes::Pow2(u32::from(v & 0x7f))
            } else {
                TsRes::Pow10(u32::from(v))
            };
        }
        opts = &opts[4 + padded..];
    }
    TsRes::Pow10(6)
}

/// Writes frames as a classic pcap (microsecond timestamps, Ethernet).
pub fn write_pcap<'a>(
    path: &Path,
    frames: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> io::Result<()> {
    let mut w = io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0])?;
    w.write_all(&[0; 8])?;
    w.write_all(&262_144u32.to_le_bytes())?;
    w.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
    for (ts_ns, data) in frames {
        w.write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
        w.write_all(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes())?;
        w.write_all(&(data.len() as u32).to_le_bytes())?;
        w.write_all(&(data.len() as u32).to_le_bytes())?;
        w.write_all(data)?;
    }
    w.flush()
}

/// A pcapng writer whose packets carry an `opt_comment` (Wireshark shows it as the packet comment).
pub struct PcapNgWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header and one Ethernet interface (nanosecond timestamps).
    pub fn new(mut w: W, application: &str) -> io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        push_opt(&mut shb, 4, application.as_bytes()); // shb_userappl
        push_opt(&mut shb, 0, &[]);
        block(&mut w, 0x0a0d_0d0a, &shb)?;
        let mut idb = Vec::new();
        idb.extend_from_slice(&(LINKTYPE_ETHERNET as u16).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        push_opt(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
        push_opt(&mut idb, 0, &[]);
        block(&mut w, 1, &idb)?;
        Ok(PcapNgWriter { w })
    }

    pub fn write(&mut self, ts_ns: u64, data: &[u8], comment: &str) -> io::Result<()> {
        let mut epb = Vec::with_capacity(data.len() + comment.len() + 40);
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        epb.resize((epb.len() + 3) & !3, 0);
        push_opt(&mut epb, 1, comment.as_bytes()); // opt_comment
        push_opt(&mut epb, 0, &[]);
        block(&mut self.w, 6, &epb)
    }

    pub fn into_inner(self) -> W {
        self.w
    }
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn push_opt(v: &mut Vec<u8>, code: u16, val: &[u8]) {
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(&(val.len() as u16).to_le_bytes());
    v.extend_from_slice(val);
    v.resize((v.len() + 3) & !3, 0);
}

fn block<W: Write>(w: &mut W, btype: u32, body: &[u8]) -> io::Result<()> {
    let len = (body.len() + 12) as u32;
    w.write_all(&btype.to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.write_all(&len.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_round_trip_with_comments() {
        let mut w = PcapNgWriter::new(Vec::new(), "test").unwrap();
        w.write(1_700_000_000_123_456_789, &[1, 2, 3, 4, 5], "tenant=acme")
            .unwrap();
        w.write(5, &[9; 64], "").unwrap();
        let bytes = w.into_inner();
        let frames = parse_capture(&bytes).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].ts_ns, 1_700_000_000_123_456_789);
        assert_eq!(frames[0].data, vec![1, 2, 3, 4, 5]);
        assert_eq!(frames[1].data.len(), 64);
    }

    #[test]
    fn pcap_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("jp-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.pcap");
        write_pcap(&p, [(2_000_001_000u64, &[7u8; 60][..])]).unwrap();
        let f = read_capture(&p).unwrap();
        assert_eq!(
            f,
            vec![Captured {
                ts_ns: 2_000_001_000,
                data: vec![7; 60]
            }]
        );
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(parse_capture(&bytes).unwrap_err().0.contains("truncated"));
        assert!(parse_capture(&[0u8; 30]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
