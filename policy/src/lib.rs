//! The policy model — tenants, segments, endpoints, rules — with its validation, its compilation into an
//! immutable lookup table for the hot path, and the reachability audit.
//!
//! A [`Document`] is what users write (TOML config, or JSON over the management socket, same keys);
//! [`Table::compile`] turns a validated document into the read-only [`Table`] workers consult per frame.

pub mod audit;
pub mod document;
pub mod error;
pub mod names;
pub mod table;
pub mod time;

pub use audit::{reachability, Reach, Reachability};
pub use document::{
    Action, Document, Endpoint, Gateway, IdentityMode, Proto, Rule, Segment, Tenant,
};
pub use error::{ConfigError, Issue};
pub use table::{Decision, EndpointEntry, RuleChange, SegmentEntry, Table, TenantEntry, TenantIdx};
/// The inner 5-tuple a verdict is judged on (from `vtep`), for callers that build one themselves.
pub use vtep::Flow;
