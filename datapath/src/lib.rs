//! The gateway's sans-IO core: the staged pipeline over a batch of frame buffers, a policy snapshot and
//! a worker's counters, with the shared flow table, fragment memory and drop reasons it uses.
//!
//! No threads, files or sockets live here (the drivers are in the `driver` crate). The pipeline never
//! allocates per frame, takes no lock, and loads the policy once per batch.

pub mod counters;
pub mod flows;
pub mod frags;
pub mod pipeline;

pub use counters::{Counters, DropReason, Event, TenantCounters};
pub use flows::{FlowStats, FlowTable, Timeouts};
pub use pipeline::{
    decision_cache_for, flow_table_for, null_forward, Disposition, Frame, Neighbors, Outcome,
    Worker, HEADROOM,
};

/// A 64-bit mix (for the worker's small tables).
#[inline(always)]
pub(crate) fn hash64(k: u64) -> u64 {
    let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}
