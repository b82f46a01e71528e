//! A hostile review of the management plane: a tenant administrator (and the owner, for malformed
//! input) trying to reach what is not theirs, and the store's promise that what it accepted still
//! loads. Most tests drive an in-process `mgmt::Server` (the very `handle_scoped` the socket thread
//! calls with the peer's access and tenant scope) over a stub dataplane; one drives a real
//! `joypath replay --serve`.

mod common;

use common::Gateway;
use mgmt::{
    Access, Client, Dataplane, ErrorCode, Response, Server, ServerConfig, Store, TraceRequest,
    WorkerStatus,
};
use policy::{Document, Table};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A dataplane without workers: mgmt only needs somewhere to publish.
struct NullPlane;

impl Dataplane for NullPlane {
    fn publish(&self, _table: Arc<Table>) {}
    fn workers(&self) -> Vec<WorkerStatus> {
        Vec::new()
    }
    fn stats(&self, _: &mgmt::TenantFilter) -> mgmt::Stats {
        mgmt::Stats::from_value(json!({}))
    }
    fn trace(&self, _req: &TraceRequest) -> Result<Value, String> {
        Err("no trace here".into())
    }
}

const BASE: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 100
identity = "vni"
tenant = "acme"

[[segment]]
vni = 200
identity = "vni"
tenant = "globex"

[[segment]]
vni = 1
identity = "gbp"

[[tenant]]
name = "acme"
id = 10
vteps = ["198.18.0.1"]

[[tenant]]
name = "globex"
id = 20
vteps = ["198.18.0.2"]

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100

[[endpoint]]
tenant = "globex"
ip = "198.19.1.1"
mac = "02:00:00:00:14:01"
vtep = "198.18.0.2"
vni = 200

[[rule]]
name = "acme-web"
from = "acme"
to = "globex"
proto = "tcp"
ports = "443"
action = "allow"
priority = 10

[[rule]]
name = "globex-deny-acme"
from = "globex"
to = "acme"
action = "deny"
priority = 100

[[rule]]
name = "compliance-block"
from = "*"
to = "globex"
proto = "tcp"
ports = "22"
action = "deny"
priority = 1000
"#;

/// A tenant with an id wider than GBP's 16-bit group id, and a tenant with an endpoint on a GBP
/// segment: no allow rule may join them (identity would be truncated on the way out).
const WIDE: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 1
identity = "gbp"

[[segment]]
vni = 300
identity = "vni"
tenant = "wide"

[[tenant]]
name = "acme"
id = 10

[[tenant]]
name = "wide"
id = 70000

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 1

[[endpoint]]
tenant = "wide"
ip = "198.19.3.1"
mac = "02:00:00:00:30:01"
vtep = "198.18.0.3"
vni = 300

[[rule]]
name = "acme-self"
from = "acme"
to = "acme"
action = "allow"
priority = 1
"#;

/// A server over a fresh store seeded with `toml` (as `joypath` seeds it from --config).
fn server_in(dir: &Path, toml: &str) -> Server {
    server_with(dir, toml, ServerConfig::new(dir.join("s.sock")))
}

/// The same, with socket settings `cfg`.
fn server_with(dir: &Path, toml: &str, cfg: ServerConfig) -> Server {
    let doc = Document::from_toml(toml, "review.toml").expect("fixture policy");
    let state = dir.join("state");
    let mut store = Store::open(&state, 64).unwrap();
    let digest = policy::table::digest(&doc);
    store
        .commit(Arc::new(doc), digest, 0, "config", None)
        .unwrap();
    let rec = store.current().unwrap().clone();
    let table = Table::compile(rec.document.clone(), 1, None).unwrap();
    store.settle_digest(table.digest());
    Server::new(cfg, store, Arc::new(table), Arc::new(NullPlane))
}

fn tmp() -> tempfile::TempDir {
    common::tmp("jp-review")
}

fn line(op: &str, args: Value) -> String {
    json!({"id": 1, "op": op, "args": args}).to_string()
}

/// As root (or the gateway's owner).
fn as_root(s: &Server, op: &str, args: Value) -> Response {
    s.handle_line(&line(op, args), 0, Access::ReadWrite)
}

/// As an administrator of tenant acme only.
fn as_acme(s: &Server, op: &str, args: Value) -> Response {
    as_admin_of(s, &["acme"], op, args)
}

/// As an administrator of the tenants `scope`.
fn as_admin_of(s: &Server, scope: &[&str], op: &str, args: Value) -> Response {
    let scope: Vec<String> = scope.iter().map(|t| t.to_string()).collect();
    s.handle_scoped(&line(op, args), 4242, Access::Tenant, &scope)
}

fn document(s: &Server) -> Value {
    let r = as_root(s, "policy.get", json!({}));
    assert!(r.ok, "{r:?}");
    r.result.unwrap()["document"].clone()
}

fn rule_named(doc: &Value, name: &str) -> Option<Value> {
    doc["rule"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == json!(name))
        .cloned()
}

fn version(s: &Server) -> u64 {
    let r = as_root(s, "status", json!({}));
    r.result.unwrap()["version"].as_u64().unwrap()
}

fn code(r: &Response) -> Option<ErrorCode> {
    r.error.as_ref().map(|e| e.code)
}

// ---------------------------------------------------------------------------------------------
// Tenant scope: which rule a rule.update / rule.remove means.

/// An acme administrator names its own rule 0 by index and another tenant's rule by name. The edit
/// (`rules::rule_index`) prefers `name`; `tenant_may` once checked the rule at `index` and let the
/// other tenant's rule go. It now finds the rule as the edit does, and checks that one.
#[test]
fn a_tenant_admin_cannot_remove_another_tenants_rule_named_beside_its_own_index() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let v = version(&s);
    let r = as_acme(
        &s,
        "rule.remove",
        json!({"index": 0, "name": "globex-deny-acme"}),
    );
    let doc = document(&s);
    assert!(
        rule_named(&doc, "globex-deny-acme").is_some(),
        "globex's rule was removed by acme's administrator: {r:?}"
    );
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    assert_eq!(version(&s), v);

    // The same inside a policy.edit.
    let r = as_acme(
        &s,
        "policy.edit",
        json!({"edits": [{"op": "rule.remove", "args": {"index": 0, "name": "compliance-block"}}]}),
    );
    assert!(
        rule_named(&document(&s), "compliance-block").is_some(),
        "the gateway-wide rule was removed by acme's administrator: {r:?}"
    );
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
}

/// The same hole through rule.update: the gateway-wide `*` deny is replaced by a rule of acme's
/// (one acme's administrator may write: within acme), and globex loses its compliance block.
#[test]
fn a_tenant_admin_cannot_replace_another_rule_named_beside_its_own_index() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let r = as_acme(
        &s,
        "rule.update",
        json!({"index": 0, "name": "compliance-block",
               "rule": {"from": "acme", "to": "acme", "proto": "tcp", "ports": "22",
                        "action": "allow", "priority": 5000}}),
    );
    let doc = document(&s);
    let block = rule_named(&doc, "compliance-block");
    assert!(
        block
            .as_ref()
            .is_some_and(|b| b["from"] == "*" && b["action"] == "deny"),
        "acme's administrator replaced the `*` rule: now {block:?} ({r:?})"
    );
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
}

/// Rules are addressed by name (docs/management.md), for a tenant administrator too: its
/// rule.update and rule.remove once looked only at a numeric `index` (its own rule by name was "no
/// rule 18446744073709551615"). (`acme-web` is an allow into globex: rewriting it takes an
/// administrator of both; removing it, acme's alone.)
#[test]
fn a_tenant_admin_addresses_its_own_rules_by_name() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let r = as_admin_of(
        &s,
        &["acme", "globex"],
        "rule.update",
        json!({"name": "acme-web", "rule": {"from": "acme", "to": "globex", "proto": "tcp",
                                             "ports": "8443", "action": "allow", "priority": 10}}),
    );
    assert!(
        r.ok,
        "rule.update by name of acme's own rule: {:?}",
        r.error
    );
    let r = as_acme(&s, "rule.remove", json!({"index": "acme-web"}));
    assert!(
        r.ok,
        "rule.remove by name (as index) of acme's own rule: {:?}",
        r.error
    );
    assert!(rule_named(&document(&s), "acme-web").is_none());
    // …and another tenant's rule by name is refused as such (not as "not found"), whichever way
    // it is named; a rule no one has is not found.
    for args in [
        json!({"name": "globex-deny-acme"}),
        json!({"index": "globex-deny-acme"}),
        json!({"index": 1}),
        json!({"index": "1"}),
    ] {
        let r = as_acme(&s, "rule.remove", args.clone());
        assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{args}: {r:?}");
    }
    let r = as_acme(&s, "rule.remove", json!({"name": "no-such-rule"}));
    assert_eq!(code(&r), Some(ErrorCode::NotFound), "{r:?}");
    assert!(rule_named(&document(&s), "globex-deny-acme").is_some());
}

/// Guard (passes today): an endpoint of acme on globex's `vni` segment is refused on the in-place
/// endpoint path a tenant administrator's change takes, and globex's segment is untouched.
#[test]
fn a_tenant_admin_cannot_put_an_endpoint_on_another_tenants_segment() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let v = version(&s);
    let r = as_acme(
        &s,
        "endpoint.add",
        json!({"endpoint": {"tenant": "acme", "ip": "198.19.0.50", "mac": "02:00:00:00:0a:50",
                            "vtep": "198.18.0.1", "vni": 200}}),
    );
    assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{r:?}");
    // An address globex holds in the shared address space is not acme's to take either.
    let r = as_acme(
        &s,
        "endpoint.add",
        json!({"endpoint": {"tenant": "acme", "ip": "198.19.1.1", "mac": "02:00:00:00:0a:51",
                            "vtep": "198.18.0.1", "vni": 100}}),
    );
    assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{r:?}");
    // Nor an update that moves globex's endpoint (keyed by tenant + ip).
    let r = as_acme(
        &s,
        "endpoint.update",
        json!({"endpoint": {"tenant": "globex", "ip": "198.19.1.1", "mac": "02:00:00:00:0a:52",
                            "vtep": "198.18.0.1", "vni": 200}}),
    );
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    assert_eq!(version(&s), v);
}

/// An allow rule decides who may reach its `to`: acme's administrator once added allows from acme
/// to globex or to `*`, and with tracked replies acme could then open connections into globex
/// without globex's consent. A tenant administrator now writes deny rules from its tenants to
/// anything, but allow rules only into its tenants — on rule.add, on rule.update (the rule written
/// and the rule replaced) and inside policy.edit; an administrator of both tenants, or the
/// operator, may open one to the other.
#[test]
fn a_tenant_admin_cannot_open_another_tenant_to_its_own() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let v = version(&s);
    let message = |r: &Response| {
        r.error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    let refused = |what: &str, r: Response| {
        assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{what}: {r:?}");
        let m = message(&r);
        assert!(
            m.contains("needs that tenant's administrator or the operator"),
            "{what}: {m}"
        );
        m
    };
    // rule.add: an allow into globex, or into every tenant.
    let m = refused(
        "allow to globex",
        as_acme(
            &s,
            "rule.add",
            json!({"rule": {"name": "acme-in", "from": "acme", "to": "globex", "proto": "tcp",
                            "ports": "5432", "action": "allow", "priority": 50}}),
        ),
    );
    assert!(m.contains("tenant \"globex\""), "{m}");
    let m = refused(
        "allow to *",
        as_acme(
            &s,
            "rule.add",
            json!({"rule": {"from": "acme", "to": "*", "action": "allow"}}),
        ),
    );
    assert!(m.contains("\"*\""), "{m}");
    // rule.update: acme's own allow into globex (written by the operator) cannot be rewritten by
    // acme alone — not even into a deny (removing it is acme's to do, below).
    refused(
        "update of an allow into globex",
        as_acme(
            &s,
            "rule.update",
            json!({"name": "acme-web", "rule": {"from": "acme", "to": "globex", "proto": "tcp",
                                                 "ports": "443", "action": "deny", "priority": 10}}),
        ),
    );
    // policy.edit: every edit is held to it.
    let r = as_acme(
        &s,
        "policy.edit",
        json!({"edits": [{"op": "rule.add", "args": {"rule": {"from": "acme", "to": "globex",
                                                              "action": "allow"}}}]}),
    );
    assert!(message(&r).starts_with("edits[0]"), "{r:?}");
    refused("policy.edit rule.add", r);
    assert_eq!(version(&s), v, "nothing was committed");

    // What acme's administrator may do: deny rules from acme to anything, allows within acme.
    for rule in [
        json!({"name": "acme-no-db", "from": "acme", "to": "globex", "proto": "tcp",
               "ports": "5432", "action": "deny", "priority": 50}),
        json!({"from": "acme", "to": "*", "proto": "udp", "action": "deny", "priority": 50}),
        json!({"name": "acme-inside", "from": "acme", "to": "acme", "action": "allow"}),
    ] {
        let r = as_acme(&s, "rule.add", json!({"rule": rule}));
        assert!(r.ok, "{rule}: {r:?}");
    }
    // Its own deny cannot become an allow into globex, directly or within a policy.edit…
    refused(
        "deny rewritten as an allow to globex",
        as_acme(
            &s,
            "rule.update",
            json!({"name": "acme-no-db", "rule": {"from": "acme", "to": "globex", "proto": "tcp",
                                                   "ports": "5432", "action": "allow", "priority": 50}}),
        ),
    );
    let r = as_acme(
        &s,
        "policy.edit",
        json!({"edits": [
            {"op": "rule.add", "args": {"rule": {"name": "step", "from": "acme", "to": "globex", "action": "deny"}}},
            {"op": "rule.update", "args": {"name": "step", "rule": {"from": "acme", "to": "globex", "action": "allow"}}},
        ]}),
    );
    assert!(message(&r).starts_with("edits[1]"), "{r:?}");
    refused("policy.edit deny then allow", r);
    // …but, being acme's own (its administrator wrote it: `owner`), it may be rewritten into an
    // allow within acme (lifting a deny into globex that the operator wrote is not acme's to do,
    // see `a_tenant_admin_cannot_lift_a_deny_into_another_tenant`); acme's allow within acme may
    // be rewritten, and the allow into globex may be removed.
    for name in ["acme-no-db", "acme-inside"] {
        let r = as_acme(
            &s,
            "rule.update",
            json!({"name": name, "rule": {"from": "acme", "to": "acme", "proto": "tcp",
                                          "ports": "5432", "action": "allow", "priority": 50}}),
        );
        assert!(r.ok, "{name}: {r:?}");
    }
    let r = as_acme(&s, "rule.remove", json!({"name": "acme-web"}));
    assert!(r.ok, "{r:?}");
    assert_eq!(version(&s), v + 6);

    // An administrator of both tenants, and the operator, may open globex to acme.
    let r = as_admin_of(
        &s,
        &["acme", "globex"],
        "rule.add",
        json!({"rule": {"name": "acme-web", "from": "acme", "to": "globex", "proto": "tcp",
                        "ports": "443", "action": "allow"}}),
    );
    assert!(r.ok, "{r:?}");
    let r = as_root(
        &s,
        "rule.add",
        json!({"rule": {"name": "acme-everywhere", "from": "acme", "to": "*", "action": "allow"}}),
    );
    assert!(r.ok, "{r:?}");
    let doc = document(&s);
    for name in ["acme-in", "step"] {
        assert!(rule_named(&doc, name).is_none(), "{name} was added");
    }
}

/// A deny rule from a tenant into another is often not that tenant's: an operator's compliance
/// block ("acme must not reach globex's database"). acme's administrator could once remove it, or
/// rewrite it into something harmless, and so reach what the operator closed whenever an allow
/// (the operator's `* → globex`, here) covers it. Lifting a deny opens what it closes, which is the
/// `to` tenant's to give, like an allow into it: a deny into another tenant (or `*`) is now lifted
/// only by an administrator of both tenants or the operator — by rule.remove, rule.update or inside
/// policy.edit. A deny into the administrator's own tenant may still go (an allow within its scope
/// could outrank it anyway), and deny rules into anything may still be added.
#[test]
fn a_tenant_admin_cannot_lift_a_deny_into_another_tenant() {
    let d = tmp();
    let toml = format!(
        "{BASE}
[[rule]]
name = \"globex-open\"
from = \"*\"
to = \"globex\"
action = \"allow\"
priority = 5

[[rule]]
name = \"acme-no-globex-db\"
from = \"acme\"
to = \"globex\"
proto = \"tcp\"
ports = \"5432\"
action = \"deny\"
priority = 50

[[rule]]
name = \"acme-no-udp\"
from = \"acme\"
to = \"*\"
proto = \"udp\"
action = \"deny\"
priority = 50

[[rule]]
name = \"acme-no-telnet\"
from = \"acme\"
to = \"acme\"
proto = \"tcp\"
ports = \"23\"
action = \"deny\"
priority = 50
"
    );
    let s = server_in(d.path(), &toml);
    let v = version(&s);
    let refused = |what: &str, r: Response| {
        assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{what}: {r:?}");
        let m = r
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(m.contains("lifting it opens what it closes"), "{what}: {m}");
        m
    };
    // The operator's deny into globex: not removed, not rewritten, not inside a policy.edit.
    let m = refused(
        "remove",
        as_acme(&s, "rule.remove", json!({"name": "acme-no-globex-db"})),
    );
    assert!(m.contains("tenant \"globex\""), "{m}");
    refused(
        "update into a narrower deny elsewhere",
        as_acme(
            &s,
            "rule.update",
            json!({"name": "acme-no-globex-db", "rule": {"from": "acme", "to": "acme",
                   "proto": "tcp", "ports": "5432", "action": "deny", "priority": 50}}),
        ),
    );
    let r = as_acme(
        &s,
        "policy.edit",
        json!({"edits": [{"op": "rule.remove", "args": {"name": "acme-no-globex-db"}}]}),
    );
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.message.starts_with("edits[0]")),
        "{r:?}"
    );
    refused("policy.edit", r);
    // A deny into every tenant is no one tenant's to lift.
    let m = refused(
        "remove a deny into *",
        as_acme(&s, "rule.remove", json!({"name": "acme-no-udp"})),
    );
    assert!(m.contains("every tenant"), "{m}");
    assert_eq!(version(&s), v, "nothing was committed");

    // A deny within acme is acme's: removed by acme's administrator.
    let r = as_acme(&s, "rule.remove", json!({"name": "acme-no-telnet"}));
    assert!(r.ok, "{r:?}");
    // An administrator of acme and globex may lift the deny into globex; the operator the one into `*`.
    let r = as_admin_of(
        &s,
        &["acme", "globex"],
        "rule.remove",
        json!({"name": "acme-no-globex-db"}),
    );
    assert!(r.ok, "{r:?}");
    let r = as_root(&s, "rule.remove", json!({"name": "acme-no-udp"}));
    assert!(r.ok, "{r:?}");
    assert_eq!(version(&s), v + 3);
    let doc = document(&s);
    for name in ["acme-no-telnet", "acme-no-globex-db", "acme-no-udp"] {
        assert!(rule_named(&doc, name).is_none(), "{name} is still there");
    }
    assert!(rule_named(&doc, "compliance-block").is_some());
}

/// The deny a tenant's administrator wrote itself (to keep its own tenant away from another) is
/// its to lift again: the gateway marks every rule a tenant administrator writes with its `owner`
/// (the rule's `from`, whatever the request said), and such a deny may be removed or replaced by
/// that tenant's administrator whatever its `to`. The operator's denies stay out of reach, and a
/// rule the operator rewrites becomes the operator's. An owner other than the rule's `from` is
/// refused from anyone.
#[test]
fn a_tenant_admin_lifts_the_denies_it_wrote_and_only_those() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let v = version(&s);
    let owner = |name: &str| rule_named(&document(&s), name).map(|r| r["owner"].clone());
    // Written by acme's administrator (claiming globex's name for it, which is not its to give).
    let deny = |name: &str, to: &str| {
        json!({"rule": {"name": name, "from": "acme", "to": to, "proto": "tcp", "ports": "22",
               "action": "deny", "priority": 60, "owner": "globex"}})
    };
    // The same, as a rule.update of the rule so named.
    let replace = |name: &str, to: &str| {
        let mut a = deny(name, to);
        a["name"] = json!(name);
        a
    };
    let r = as_acme(&s, "rule.add", deny("acme-no-globex-ssh", "globex"));
    assert!(r.ok, "{r:?}");
    assert_eq!(owner("acme-no-globex-ssh"), Some(json!("acme")));
    let edit = json!({"edits": [{"op": "rule.add", "args": deny("acme-no-ssh", "*")}]});
    let r = as_acme(&s, "policy.edit", edit);
    assert!(r.ok, "{r:?}");
    assert_eq!(owner("acme-no-ssh"), Some(json!("acme")));
    // Its own denies, into globex and into every tenant: replaced, then removed.
    let r = as_acme(&s, "rule.update", {
        let mut a = replace("acme-no-globex-ssh", "globex");
        a["rule"]["ports"] = json!("22-23");
        a
    });
    assert!(r.ok, "{r:?}");
    assert_eq!(owner("acme-no-globex-ssh"), Some(json!("acme")));
    let r = as_acme(&s, "rule.remove", json!({"name": "acme-no-globex-ssh"}));
    assert!(r.ok, "{r:?}");
    // …but not rewritten into an allow into globex, which is still globex's to give.
    let mut into_allow = replace("acme-no-ssh", "globex");
    into_allow["rule"]["action"] = json!("allow");
    let r = as_acme(&s, "rule.update", into_allow);
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    assert_eq!(version(&s), v + 4);
    // The operator rewrites acme's deny: it is the operator's now, and acme cannot lift it.
    let mut rewritten = replace("acme-no-ssh", "*");
    rewritten["rule"].as_object_mut().unwrap().remove("owner");
    let r = as_root(&s, "rule.update", rewritten);
    assert!(r.ok, "{r:?}");
    assert_eq!(owner("acme-no-ssh"), Some(Value::Null));
    let r = as_acme(&s, "rule.remove", json!({"name": "acme-no-ssh"}));
    assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    let m = r.error.map(|e| e.message).unwrap_or_default();
    assert!(
        m.contains("not written by this tenant's administrator"),
        "{m}"
    );
    // An owner that is not the rule's `from`: refused from the operator too, naming the field.
    let r = as_root(&s, "rule.add", deny("claimed", "globex"));
    assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{r:?}");
    let m = r.error.map(|e| e.message).unwrap_or_default();
    assert!(m.contains("owner") && m.contains("\"globex\""), "{m}");
    assert_eq!(version(&s), v + 5);
}

/// A tenant's `vteps` list is the only set of VTEPs allowed to send for it; an endpoint behind
/// another VTEP could never send, and frames to it would go to an underlay host the tenant was
/// never given. acme's administrator once aimed acme's inbound traffic at any VTEP this way. Now
/// such an endpoint is `invalid_policy` (naming it), added or moved, from the administrator or the
/// operator; and a tenant.update that leaves an endpoint's VTEP out of the list is refused too.
#[test]
fn an_endpoint_must_sit_behind_one_of_its_tenants_vteps() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    let v = version(&s);
    let ep = |ip: &str, vtep: &str| {
        json!({"endpoint": {"tenant": "acme", "ip": ip, "mac": "02:00:00:00:0a:60",
                            "vtep": vtep, "vni": 100}})
    };
    for (who, r) in [
        (
            "acme endpoint.add at globex's VTEP",
            as_acme(&s, "endpoint.add", ep("198.19.0.60", "198.18.0.2")),
        ),
        (
            "acme endpoint.add at an unknown VTEP",
            as_acme(&s, "endpoint.add", ep("198.19.0.60", "198.18.7.7")),
        ),
        (
            "acme endpoint.update moving its endpoint",
            as_acme(&s, "endpoint.update", ep("198.19.0.1", "198.18.7.7")),
        ),
        (
            "owner endpoint.add",
            as_root(&s, "endpoint.add", ep("198.19.0.60", "198.18.7.7")),
        ),
        (
            "acme policy.edit",
            as_acme(
                &s,
                "policy.edit",
                json!({"edits": [{"op": "endpoint.add", "args": ep("198.19.0.60", "198.18.7.7")}]}),
            ),
        ),
    ] {
        assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{who}: {r:?}");
        let m = r.error.map(|e| e.message).unwrap_or_default();
        assert!(
            m.contains("endpoint[") && m.contains("].vtep") && m.contains("of tenant \"acme\""),
            "{who}: {m}"
        );
        assert!(
            m.contains("not in the tenant's vteps [198.18.0.1]"),
            "{who}: {m}"
        );
    }
    // The tenant's list cannot be shrunk, or replaced, past an endpoint's VTEP…
    for vteps in [json!(["198.18.0.9"]), json!([])] {
        let r = as_root(
            &s,
            "tenant.update",
            json!({"tenant": {"name": "acme", "id": 10, "vteps": vteps}}),
        );
        assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{vteps}: {r:?}");
        let m = r.error.map(|e| e.message).unwrap_or_default();
        assert!(m.contains("198.19.0.1") && m.contains("198.18.0.1"), "{m}");
    }
    assert_eq!(version(&s), v, "nothing was committed");
    // …while one that keeps it is made, and then acme's endpoints may use the VTEP it adds.
    let r = as_root(
        &s,
        "tenant.update",
        json!({"tenant": {"name": "acme", "id": 10, "vteps": ["198.18.0.1", "198.18.7.7"]}}),
    );
    assert!(r.ok, "{r:?}");
    let r = as_acme(&s, "endpoint.add", ep("198.19.0.60", "198.18.7.7"));
    assert!(r.ok, "{r:?}");
    // A tenant without a list may put its endpoints behind any VTEP.
    let r = as_root(
        &s,
        "tenant.update",
        json!({"tenant": {"name": "acme", "id": 10}}),
    );
    assert!(r.ok, "{r:?}");
    let r = as_acme(&s, "endpoint.update", ep("198.19.0.1", "198.18.5.5"));
    assert!(r.ok, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Validation on the incremental paths, and the store's promise.

/// The 16-bit GBP rule ("Identity on the way out is never truncated… refused with an error
/// naming the tenant and the segment") is part of `Document::validate`, and a rule change made
/// in place (`commit_rule`'s fast path for the owner, `compile_next`'s in-place rule path for a
/// tenant administrator) is held to it too: `Table::check_rule` once checked the rule on its own.
#[test]
fn a_rule_letting_a_wide_tenant_reach_a_gbp_endpoint_is_refused_on_every_path() {
    let d = tmp();
    let s = server_in(d.path(), WIDE);
    let v = version(&s);
    let mut accepted = Vec::new();
    // Owner, rule.add (fast path).
    let r = as_root(
        &s,
        "rule.add",
        json!({"rule": {"name": "wide-to-acme", "from": "wide", "to": "acme", "action": "allow"}}),
    );
    if code(&r) != Some(ErrorCode::InvalidPolicy) {
        accepted.push(format!("owner rule.add: {r:?}"));
        assert!(as_root(&s, "rollback", json!({"version": v})).ok);
    }
    // Owner, rule.update (fast path).
    let r = as_root(
        &s,
        "rule.update",
        json!({"name": "acme-self", "rule": {"from": "acme", "to": "wide", "action": "allow"}}),
    );
    if code(&r) != Some(ErrorCode::InvalidPolicy) {
        accepted.push(format!("owner rule.update: {r:?}"));
        assert!(as_root(&s, "rollback", json!({"version": v})).ok);
    }
    // An administrator of acme and wide, rule.add from acme (replies would carry wide's id onto
    // GBP).
    let r = as_admin_of(
        &s,
        &["acme", "wide"],
        "rule.add",
        json!({"rule": {"name": "acme-to-wide", "from": "acme", "to": "wide", "action": "allow"}}),
    );
    if code(&r) != Some(ErrorCode::InvalidPolicy) {
        accepted.push(format!("tenant rule.add: {r:?}"));
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    let v = version(&s);
    assert_eq!(version(&s), v, "nothing was committed");
    let doc: Document = serde_json::from_value(document(&s)).unwrap();
    assert!(doc.validate().is_empty(), "{:?}", doc.validate());
}

/// The durability promise seen from a restart: whatever the server acknowledged must load again
/// (`open_policy` compiles the store's current version at start-up and exits when it fails). A
/// change accepted by an incremental path that the whole compile refuses leaves a gateway that
/// cannot start on its own state directory.
#[test]
fn every_acknowledged_version_loads_after_a_restart() {
    let d = tmp();
    let s = server_in(d.path(), WIDE);
    let r = as_root(
        &s,
        "rule.add",
        json!({"rule": {"name": "wide-to-acme", "from": "wide", "to": "acme", "action": "allow"}}),
    );
    let acked = r.ok;
    drop(s); // releases the store's lock, as the process exiting would
    let store = Store::open(&d.path().join("state"), 64).unwrap();
    let cur = store.current().unwrap();
    assert_eq!(cur.meta.version, if acked { 2 } else { 1 });
    let compiled = Table::compile(cur.document.clone(), cur.meta.version, None);
    assert!(
        compiled.is_ok(),
        "version {} was acknowledged (rule.add ok: {acked}) but the gateway cannot start on it: {}",
        cur.meta.version,
        compiled.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

/// The refusal on the in-place paths says what the whole validation says (naming the tenant and
/// the segment), and `*` rules are held to the same rule: `*` is any wide tenant as a sender and
/// any tenant with an endpoint on a GBP segment as a target.
#[test]
fn the_identity_width_refusal_is_worded_alike_on_every_path() {
    let d = tmp();
    let s = server_in(d.path(), WIDE);
    let v = version(&s);
    let message = |r: &Response| {
        r.error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    for rule in [
        json!({"from": "wide", "to": "acme", "action": "allow"}),
        json!({"from": "acme", "to": "wide", "action": "allow"}),
        json!({"from": "*", "to": "acme", "action": "allow"}),
        json!({"from": "wide", "to": "*", "action": "allow"}),
        json!({"from": "acme", "to": "*", "action": "allow"}),
    ] {
        // The owner's fast path (the rule checked against the running table)…
        let fast = as_root(&s, "rule.add", json!({"rule": rule}));
        assert_eq!(
            code(&fast),
            Some(ErrorCode::InvalidPolicy),
            "{rule}: {fast:?}"
        );
        let m = message(&fast);
        assert!(
            m.contains("tenant \"wide\" (id 70000)")
                && m.contains("tenant \"acme\"'s endpoints on GBP segment 1"),
            "{rule}: {m}"
        );
        // …and the whole document with that rule, applied.
        let mut doc: Document = serde_json::from_value(document(&s)).unwrap();
        doc.rules
            .push(serde_json::from_value(rule.clone()).unwrap());
        let whole = as_root(&s, "policy.apply", json!({"document": doc}));
        assert_eq!(code(&whole), Some(ErrorCode::InvalidPolicy), "{rule}");
        assert_eq!(message(&whole), m, "{rule}");
        // An administrator of acme and wide (the in-place path of a tenant's change), for the
        // rules from acme it may write (an allow to `*` it may not: no tenant administrator may).
        if rule["from"] == "acme" && rule["to"] != "*" {
            let scoped = as_admin_of(&s, &["acme", "wide"], "rule.add", json!({"rule": rule}));
            assert_eq!(code(&scoped), Some(ErrorCode::InvalidPolicy), "{rule}");
            assert_eq!(message(&scoped), m, "{rule}");
        }
    }
    // A deny between them is no exposure.
    let r = as_root(
        &s,
        "rule.add",
        json!({"rule": {"from": "wide", "to": "acme", "action": "deny"}}),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(version(&s), v + 1);
}

/// The endpoint half (guard: `Table::with_endpoint_change` sends an endpoint on a GBP segment to
/// the whole compile while an id is wider than 16 bits): an endpoint added on, or moved onto, a
/// GBP segment for a tenant that a wide tenant's allow already reaches is refused, from the owner
/// and from that tenant's administrator alike.
#[test]
fn an_endpoint_onto_gbp_for_a_tenant_a_wide_tenant_reaches_is_refused() {
    let d = tmp();
    let s = server_in(d.path(), WIDE);
    // initech has no endpoint on GBP, so wide may reach it.
    let r = as_root(
        &s,
        "policy.edit",
        json!({"edits": [
            {"op": "tenant.add", "args": {"tenant": {"name": "initech", "id": 30}}},
            {"op": "segment.add", "args": {"segment": {"vni": 400, "identity": "vni", "tenant": "initech"}}},
            {"op": "endpoint.add", "args": {"endpoint": {"tenant": "initech", "ip": "198.19.4.1",
                "mac": "02:00:00:00:40:01", "vtep": "198.18.0.4", "vni": 400}}},
            {"op": "rule.add", "args": {"rule": {"name": "wide-to-initech", "from": "wide",
                "to": "initech", "action": "allow"}}},
        ]}),
    );
    assert!(r.ok, "{r:?}");
    let v = version(&s);
    let added = json!({"endpoint": {"tenant": "initech", "ip": "198.19.4.2",
        "mac": "02:00:00:00:40:02", "vtep": "198.18.0.4", "vni": 1}});
    let moved = json!({"endpoint": {"tenant": "initech", "ip": "198.19.4.1",
        "mac": "02:00:00:00:40:01", "vtep": "198.18.0.4", "vni": 1}});
    let initech = |op: &str, args: Value| {
        s.handle_scoped(
            &line(op, args),
            4343,
            Access::Tenant,
            &["initech".to_string()],
        )
    };
    for (who, r) in [
        (
            "owner endpoint.add",
            as_root(&s, "endpoint.add", added.clone()),
        ),
        (
            "owner endpoint.update",
            as_root(&s, "endpoint.update", moved.clone()),
        ),
        (
            "initech endpoint.add",
            initech("endpoint.add", added.clone()),
        ),
        (
            "initech endpoint.update",
            initech("endpoint.update", moved.clone()),
        ),
    ] {
        assert_eq!(code(&r), Some(ErrorCode::InvalidPolicy), "{who}: {r:?}");
        let m = r.error.map(|e| e.message).unwrap_or_default();
        assert!(
            m.contains("\"wide\"") && m.contains("tenant \"initech\"'s endpoints on GBP segment 1"),
            "{who}: {m}"
        );
    }
    assert_eq!(version(&s), v);
}

// ---------------------------------------------------------------------------------------------
// Mistyped arguments.

/// `rule.add`'s `index` is "a number" (insert position); a string, a negative or a fraction must
/// be a `bad_args`, not a silent append at the end (which puts the rule elsewhere than asked, and
/// for a first-match reading of the list, changes what the operator meant).
#[test]
fn rule_add_with_a_mistyped_index_is_an_error_not_an_append() {
    let d = tmp();
    let s = server_in(d.path(), BASE);
    for bad in [json!("0"), json!(-1), json!(0.5), json!(true)] {
        let v = version(&s);
        let name = format!("probe-{}", v);
        let r = as_root(
            &s,
            "rule.add",
            json!({"index": bad, "rule": {"name": name, "from": "acme", "to": "globex",
                                         "action": "deny", "priority": 1}}),
        );
        let doc = document(&s);
        let at = doc["rule"]
            .as_array()
            .unwrap()
            .iter()
            .position(|r| r["name"] == json!(name));
        assert!(
            code(&r) == Some(ErrorCode::BadArgs) || (r.ok && at == Some(0) && bad == json!("0")),
            "rule.add with index {bad}: {:?}, the rule landed at {at:?}",
            r.error
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The socket: how many connections it serves.

/// Each connection holds a thread (and up to 64 MiB of request) for as long as its client keeps it
/// open, and nothing bounded how many: any peer allowed on the socket could open connections until
/// the process ran out of threads or memory. Past `max_connections`, a connection is answered with
/// one `busy` line and closed; a connection that closes gives its slot back.
#[test]
fn connections_past_the_limit_are_refused_busy_and_a_closed_one_frees_its_slot() {
    let d = tmp();
    let mut cfg = ServerConfig::new(d.path().join("s.sock"));
    cfg.max_connections = 3;
    let s = server_with(d.path(), BASE, cfg);
    let _h = s.spawn().unwrap();
    let sock = d.path().join("s.sock");
    let status = |c: &mut Client| c.call("status", json!({})).map(|r| r.ok);
    // Three clients, each served (so each holds its slot).
    let mut held: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::connect(&sock).unwrap();
            assert_eq!(status(&mut c).ok(), Some(true), "client {i}");
            c
        })
        .collect();
    // A fourth: one error line, then the connection is closed.
    let mut extra = Client::connect(&sock).unwrap();
    let r = extra.call("status", json!({})).unwrap();
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
    let m = r.error.map(|e| e.message).unwrap_or_default();
    assert!(
        m.contains("too many management connections (limit 3)"),
        "{m}"
    );
    assert!(extra.read_response().is_err(), "the connection was closed");
    // The held ones are still served.
    for c in &mut held {
        assert_eq!(status(c).ok(), Some(true));
    }
    // One closes: its slot is given back (as soon as its thread sees the end), and a new client
    // is served; the limit still holds after that.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        let mut c = Client::connect(&sock).unwrap();
        match c.call("status", json!({})) {
            Ok(r) if r.ok => break c,
            Ok(r) => assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}"),
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status(&mut again).ok(), Some(true));
    let mut over = Client::connect(&sock).unwrap();
    let r = over.call("status", json!({})).unwrap();
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// A real gateway: oversized arguments must be errors, never the end of the process.

/// Each connection could hold a whole `max_request` line while it arrived, so `max_connections`
/// clients sending large requests at once held 64 × 64 MiB. The bytes of request lines held at
/// once are now bounded over every connection (`max_buffered`): a line that would pass it is
/// answered `busy`, its rest read and dropped, and the connection stays usable; when the held
/// line is answered, its bytes are given back.
#[test]
fn request_bytes_held_at_once_are_bounded_over_every_connection() {
    let d = tmp();
    let mut cfg = ServerConfig::new(d.path().join("s.sock"));
    cfg.max_request = 1 << 20;
    cfg.max_buffered = (1 << 20) + 1;
    let s = server_with(d.path(), BASE, cfg);
    let _h = s.spawn().unwrap();
    let sock = d.path().join("s.sock");
    let padded = |len: usize| {
        let mut v = br#"{"id":7,"op":"status","args":{}}"#.to_vec();
        v.resize(len, b' ');
        v
    };
    // A sends most of a large request, and not its end: the server holds it.
    let mut a = Client::connect(&sock).unwrap();
    a.send_raw(&padded((1 << 20) - 100)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // B's request, small enough on its own, does not fit beside it.
    let mut b = Client::connect(&sock).unwrap();
    let mut req = padded(400 << 10);
    req.push(b'\n');
    b.send_raw(&req).unwrap();
    let r = b.read_response().unwrap();
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
    let m = r.error.map(|e| e.message).unwrap_or_default();
    assert!(m.contains("buffer"), "{m}");
    // B's connection is still usable for what fits.
    assert!(b.call("status", json!({})).unwrap().ok);
    // A's request ends and is answered; its bytes are given back, and B's large request fits.
    a.send_raw(b"\n").unwrap();
    let r = a.read_response().unwrap();
    assert!(r.ok, "{r:?}");
    b.send_raw(&req).unwrap();
    let r = b.read_response().unwrap();
    assert!(r.ok, "{r:?}");
    assert!(a.call("status", json!({})).unwrap().ok);
}

/// `trace {count}` sizes a bounded channel of `count` slots up front (`sync_channel(req.count)`):
/// a huge count is an allocation that cannot succeed, which aborts the process (not a panic
/// `catch_unwind` could turn into `internal`). It is a `bad_args` saying the limit, and the gateway
/// goes on.
#[test]
fn a_huge_trace_count_is_an_error_and_the_gateway_survives() {
    let mut g = Gateway::in_dir(tmp()).pps(1000).start();
    let out = g.dir().join("t.pcapng");
    let r = Client::connect(&g.socket()).and_then(|mut c| {
        c.call(
            "trace",
            json!({"count": 1u64 << 52, "path": out, "timeout_ms": 100}),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let exited = g.child.try_wait().ok().flatten();
    let alive = exited.is_none()
        && Client::connect(&g.socket())
            .and_then(|mut c| c.call("status", json!({})))
            .is_ok_and(|r| r.ok);
    assert!(
        alive,
        "the gateway died on trace count 2^52 ({exited:?}; answer: {r:?})"
    );
    let r = r.unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(code(&r), Some(ErrorCode::BadArgs), "{r:?}");
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.message.contains("10000")),
        "the error says the limit: {r:?}"
    );
    // A timeout past what the clock can count (and past the documented hour) is refused before
    // anything is attached, and the gateway goes on.
    for (count, timeout_ms) in [(1, u64::MAX), (1, 3_600_001), (10_001, 100)] {
        let r = Client::connect(&g.socket())
            .and_then(|mut c| {
                c.call(
                    "trace",
                    json!({"count": count, "path": out, "timeout_ms": timeout_ms}),
                )
            })
            .unwrap_or_else(|e| {
                panic!("the gateway died on trace count {count} timeout_ms {timeout_ms}: {e}")
            });
        assert_eq!(
            code(&r),
            Some(ErrorCode::BadArgs),
            "{count} {timeout_ms}: {r:?}"
        );
    }
    assert!(
        g.child.try_wait().ok().flatten().is_none(),
        "the gateway exited"
    );
    let r = Client::connect(&g.socket()).and_then(|mut c| c.call("status", json!({})));
    assert!(r.is_ok_and(|r| r.ok));
}
