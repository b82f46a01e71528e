//! Edits of a policy document — add, update, remove tenants, segments, endpoints and rules — and the
//! diff between two documents that `policy.validate` reports. Pure functions over `Document`.

use crate::protocol::{ErrorCode, OpError};
use policy::{Document, Endpoint, Rule, Segment, Tenant};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::IpAddr;

fn arg<T: DeserializeOwned>(args: &Value, key: &str) -> Result<T, OpError> {
    let v = args
        .get(key)
        .ok_or_else(|| OpError::new(ErrorCode::BadArgs, format!("missing argument {key:?}")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| OpError::new(ErrorCode::BadArgs, format!("argument {key:?}: {e}")))
}

fn not_found(what: String) -> OpError {
    OpError::new(ErrorCode::NotFound, what)
}

fn exists(what: String) -> OpError {
    OpError::new(ErrorCode::AlreadyExists, what)
}

/// Applies the edit `op` with `args` to `doc`. Returns false if `op` is not an edit.
pub fn apply(op: &str, args: &Value, doc: &mut Document) -> Result<bool, OpError> {
    apply_with(op, args, doc, None)
}

/// [`apply`], with `table` compiled from `doc` (as it is before the edit), whose rule-name index then
/// finds the rules the edit names and checks the names it gives without reading every rule's.
pub fn apply_with(
    op: &str,
    args: &Value,
    doc: &mut Document,
    table: Option<&policy::Table>,
) -> Result<bool, OpError> {
    edit(op, args, doc, table, true)
}

/// An edit of the committed history (a delta read back at start-up, a fleet's version) applied as
/// it was committed: a rule added is not checked against the others' names, which builds before
/// stop 31 did not do in every path (a document that ends up invalid is then refused by its
/// compile, by name, instead of its version being dropped here), and a `rule.add` whose `index` is
/// not a non-negative integer appends, as earlier builds committed it.
pub fn replay(op: &str, args: &Value, doc: &mut Document) -> Result<bool, OpError> {
    edit(op, args, doc, None, false)
}

/// `fresh`: a new change, checked as this build checks one (rather than replayed as committed).
fn edit(
    op: &str,
    args: &Value,
    doc: &mut Document,
    table: Option<&policy::Table>,
    fresh: bool,
) -> Result<bool, OpError> {
    match op {
        "tenant.add" => {
            let t: Tenant = arg(args, "tenant")?;
            if doc.tenants.iter().any(|x| x.name == t.name) {
                return Err(exists(format!("tenant {:?} exists", t.name)));
            }
            doc.tenants.push(t);
        }
        "tenant.update" => {
            let t: Tenant = arg(args, "tenant")?;
            let slot = doc
                .tenants
                .find_mut(|x| x.name == t.name)
                .ok_or_else(|| not_found(format!("no tenant {:?}", t.name)))?;
            *slot = t;
        }
        "tenant.remove" => {
            let name: String = arg(args, "name")?;
            let cascade = args
                .get("cascade")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let before = doc.tenants.len();
            doc.tenants.retain(|t| t.name != name);
            if doc.tenants.len() == before {
                return Err(not_found(format!("no tenant {name:?}")));
            }
            if cascade {
                doc.endpoints.retain(|e| e.tenant != name);
                doc.rules.retain(|r| r.from != name && r.to != name);
                doc.segments
                    .retain(|s| s.tenant.as_deref() != Some(name.as_str()));
            }
        }
        "segment.add" => {
            let s: Segment = arg(args, "segment")?;
            if doc.segments.iter().any(|x| x.vni == s.vni) {
                return Err(exists(format!("segment with VNI {} exists", s.vni)));
            }
            doc.segments.push(s);
        }
        "segment.update" => {
            let s: Segment = arg(args, "segment")?;
            let slot = doc
                .segments
                .find_mut(|x| x.vni == s.vni)
                .ok_or_else(|| not_found(format!("no segment with VNI {}", s.vni)))?;
            *slot = s;
        }
        "segment.remove" => {
            let vni: u32 = arg(args, "vni")?;
            let before = doc.segments.len();
            doc.segments.retain(|s| s.vni != vni);
            if doc.segments.len() == before {
                return Err(not_found(format!("no segment with VNI {vni}")));
            }
        }
        "endpoint.add" => {
            let e: Endpoint = arg(args, "endpoint")?;
            if doc
                .endpoints
                .iter()
                .any(|x| x.tenant == e.tenant && x.ip == e.ip)
            {
                return Err(exists(format!(
                    "endpoint {} of tenant {:?} exists",
                    e.ip, e.tenant
                )));
            }
            doc.endpoints.push(e);
        }
        "endpoint.update" => {
            let e: Endpoint = arg(args, "endpoint")?;
            let slot = doc
                .endpoints
                .find_mut(|x| x.tenant == e.tenant && x.ip == e.ip)
                .ok_or_else(|| {
                    not_found(format!("no endpoint {} of tenant {:?}", e.ip, e.tenant))
                })?;
            *slot = e;
        }
        "endpoint.remove" => {
            let tenant: String = arg(args, "tenant")?;
            let ip: IpAddr = arg(args, "ip")?;
            let before = doc.endpoints.len();
            doc.endpoints
                .retain(|e| !(e.tenant == tenant && e.ip == ip));
            if doc.endpoints.len() == before {
                return Err(not_found(format!("no endpoint {ip} of tenant {tenant:?}")));
            }
        }
        "rule.add" => {
            let mut r: Rule = arg(args, "rule")?;
            let at = if fresh {
                crate::rules::insert_index(args)?
            } else {
                args.get("index")
                    .and_then(Value::as_u64)
                    .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            };
            if (fresh && r.name.is_some()) || table.is_some() {
                // A name another rule has is refused here, wherever the rule lands. An unnamed
                // rule is named after the edit (`names::name_new_rules`), or here when a table's
                // name index can probe for a free name: the same name, as it is the one new rule.
                crate::rules::name_for(doc, table, doc.rules.len(), &mut r)?;
            }
            match at {
                Some(i) if i <= doc.rules.len() => doc.rules.insert(i, r),
                Some(i) => return Err(not_found(format!("rule index {i} is past the end"))),
                None => doc.rules.push(r),
            }
        }
        "rule.update" => {
            let i = crate::rules::rule_index(doc, table, args)?;
            let mut r: Rule = arg(args, "rule")?;
            crate::rules::name_for(doc, table, i, &mut r)?;
            doc.rules[i] = r;
        }
        "rule.remove" => {
            let i = crate::rules::rule_index(doc, table, args)?;
            doc.rules.remove(i);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The operations `apply` knows.
pub const EDIT_OPS: &[&str] = &[
    "tenant.add",
    "tenant.update",
    "tenant.remove",
    "segment.add",
    "segment.update",
    "segment.remove",
    "endpoint.add",
    "endpoint.update",
    "endpoint.remove",
    "rule.add",
    "rule.update",
    "rule.remove",
];

fn keyed_diff<T: PartialEq + serde::Serialize, K: PartialEq + serde::Serialize>(
    old: &policy::section::Section<T>,
    new: &policy::section::Section<T>,
    key: impl Fn(&T) -> K,
) -> Value {
    let added: Vec<&T> = new
        .iter()
        .filter(|n| !old.iter().any(|o| key(o) == key(n)))
        .collect();
    let removed: Vec<&T> = old
        .iter()
        .filter(|o| !new.iter().any(|n| key(o) == key(n)))
        .collect();
    let changed: Vec<&T> = new
        .iter()
        .filter(|n| old.iter().any(|o| key(o) == key(n) && o != *n))
        .collect();
    json!({"added": added, "removed": removed, "changed": changed})
}

/// What changes from `old` to `new`: per section, the added, removed and changed entries (rules keyed
/// by name).
pub fn diff(old: &Document, new: &Document) -> Value {
    json!({
        "gateway": if old.gateway != new.gateway { json!({"from": old.gateway, "to": new.gateway}) } else { Value::Null },
        "tenants": keyed_diff(&old.tenants, &new.tenants, |t| t.name.clone()),
        "segments": keyed_diff(&old.segments, &new.segments, |s| s.vni),
        "endpoints": keyed_diff(&old.endpoints, &new.endpoints, |e| (e.tenant.clone(), e.ip)),
        "rules": crate::rules::rules_diff(old, new),
    })
}
