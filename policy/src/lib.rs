//! The policy model — tenants, segments, endpoints, rules — with its validation, its compilation into
//! the immutable, query-only table of the hot path, and the reachability audit.
//!
//! A [`Document`] is what users write (TOML config, or JSON over the management socket, same keys);
//! [`Table::compile`] (in `compile`) turns a validated document into the read-only [`Table`] (in
//! `table`: flat, packed, prefetchable lookups) that workers consult per frame.

pub mod audit;
pub mod compile;
pub mod document;
pub mod error;
pub mod fastload;
pub mod flat;
pub mod huge;
pub mod names;
pub mod section;
pub mod table;
pub mod time;

pub use audit::{reachability, Reach, Reachability};
pub use compile::{digest, Addition, EndpointChange, RuleChange, SegmentEdit, TenantEdit};
pub use document::{
    Action, Document, Endpoint, FlowTimeouts, Gateway, IdentityMode, Proto, Replies, Rule, Segment,
    Tenant, MAX_DECISION_CACHE,
};
pub use error::{ConfigError, Issue};
pub use section::{TenantName, VtepList};
pub use table::{
    Decision, EndpointEntry, Ep, FlowKey, Ident, Scope, Seg, SegmentEntry, Table, TenantEntry,
    TenantIdx, VtepIdx,
};
/// The inner 5-tuple a verdict is judged on (from `vtep`), for callers that build one themselves.
pub use vtep::Flow;
