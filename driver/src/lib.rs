//! The I/O around joypath's sans-IO pipeline: the AF_XDP driver with its pinned poll-mode workers,
//! what a live worker shares with the control side, pcap/pcapng reading and writing, and replay.
//!
//! Every driver feeds the same `datapath::Worker::process` with batches of frame buffers.

pub mod capture;
pub mod live;
pub mod replay;

#[cfg(feature = "afxdp")]
pub mod afxdp;
