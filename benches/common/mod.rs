//! Shared set-up of the criterion benches: synthetic workloads at three scales, compiled once each,
//! and a batch arena like the replay driver's (frames copied into buffers with headroom).
#![allow(dead_code)]

use datapath::{Frame, HEADROOM};
use driver::replay::Captured;
use policy::Table;
use std::sync::Arc;
use std::time::Instant;
use synth::{self, Params};

/// (label, tenants, endpoints, rules).
pub const SCALES: [(&str, u32, u32, u32); 3] = [
    ("10t", 10, 100, 10),
    ("10kt", 10_000, 100_000, 10_000),
    ("1Mt", 1_000_000, 1_000_000, 100_000),
];

/// Frames per batch, as the replay driver and a live worker take them.
pub const BATCH: usize = 64;

pub struct Setup {
    pub table: Table,
    pub frames: Vec<Captured>,
    /// The frames' capture second (rules' validity windows are judged at it).
    pub now: i64,
}

/// Generates and compiles the workload of one scale (printing how long that took).
pub fn setup(label: &str, tenants: u32, endpoints: u32, rules: u32) -> Setup {
    let t0 = Instant::now();
    let w = synth::generate(&Params::scale(tenants, endpoints, rules)).expect("synth");
    let gen = t0.elapsed();
    let table = Table::compile(Arc::new(w.doc), 1, None).expect("synth documents are valid");
    eprintln!(
        "[setup {label}] {tenants} tenants, {endpoints} endpoints, {rules} rules: generated in {:.2?}, compiled in {:.2?}",
        gen,
        t0.elapsed() - gen
    );
    let now = (w.frames[0].ts_ns / 1_000_000_000) as i64;
    Setup {
        table,
        frames: w.frames,
        now,
    }
}

/// BATCH frame buffers with HEADROOM before each frame.
pub struct Arena {
    slot: usize,
    bytes: Vec<u8>,
}

impl Arena {
    pub fn new(frames: &[Captured]) -> Arena {
        let max = frames.iter().map(|f| f.data.len()).max().unwrap_or(0);
        let slot = (HEADROOM + max + 63) & !63;
        Arena {
            slot,
            bytes: vec![0; slot * BATCH],
        }
    }

    /// Copies `frames` (at most BATCH) into the buffers and runs `f` over them as one batch.
    #[inline]
    pub fn run<R>(&mut self, frames: &[Captured], f: impl FnOnce(&mut [Frame<'_>]) -> R) -> R {
        let n = frames.len().min(BATCH);
        let mut chunks = self.bytes.chunks_exact_mut(self.slot);
        let mut batch: [Frame<'_>; BATCH] = std::array::from_fn(|i| {
            let buf = chunks.next().expect("BATCH slots");
            match frames.get(i) {
                Some(c) => {
                    let len = c.data.len();
                    buf[HEADROOM..HEADROOM + len].copy_from_slice(&c.data);
                    Frame::new(buf, HEADROOM, len)
                }
                None => Frame::new(buf, HEADROOM, 0),
            }
        });
        f(&mut batch[..n])
    }
}
