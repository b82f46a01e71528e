//! The management plane: a versioned policy store persisted crash-safely in a state directory, and a
//! Unix-socket server speaking JSON lines (one request a line, one response a line) with its client.
//!
//! mgmt never touches frames: it compiles a new [`policy::Table`] off the hot path and hands it to the
//! [`Dataplane`] the binary implements, which publishes it to the workers with one `ArcSwap::store`.

pub mod client;
pub mod edit;
pub mod explain;
pub mod fleet;
pub mod metrics;
pub mod protocol;
pub mod rules;
pub mod server;
pub mod store;

pub use client::Client;
pub use fleet::{Fleet, FleetConfig, FleetError};
pub use protocol::{ErrorCode, Request, Response};
pub use server::{
    Access, Dataplane, Server, ServerConfig, Stats, TenantFilter, TenantLines, TraceRequest,
    WorkerStatus,
};
pub use store::{Change, Store, StoreError, VersionMeta, VersionRecord};
