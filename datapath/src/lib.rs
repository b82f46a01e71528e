//! The gateway's datapath: the sans-IO pipeline over batches of frame buffers with a policy snapshot and
//! a worker's counters, and the drivers that feed it (pcap replay here; AF_XDP workers in the binary).
//!
//! The pipeline never allocates per frame, takes no lock, and loads the policy once per batch.

pub mod capture;
pub mod counters;
pub mod live;
pub mod pipeline;
pub mod replay;
pub mod synth;

#[cfg(feature = "afxdp")]
pub mod afxdp;

pub use counters::{Counters, DropReason, TenantCounters};
pub use pipeline::{null_forward, Disposition, Frame, Neighbors, Outcome, Worker, HEADROOM};
