//! `explain`: what the running table would do with a packet — the destination endpoint, the verdict and
//! the rule that decided it, and where it would leave — like OVS's `ofproto/trace`. Built only on the
//! table's public queries (`tenant_by_name`, `endpoint`, `verdict`, `tenant`, `document`), so it
//! follows whatever the table becomes.

use crate::protocol::{ErrorCode, OpError};
use policy::Table;
use serde_json::{json, Value};
use std::net::IpAddr;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn bad(msg: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::BadArgs, msg)
}

fn ip_arg(args: &Value, key: &str) -> Result<IpAddr, OpError> {
    let s = args
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("missing argument {key:?} (an IP address)")))?;
    s.parse()
        .map_err(|_| bad(format!("argument {key:?}: {s:?} is not an IP address")))
}

fn port_arg(args: &Value, key: &str) -> Result<u16, OpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| bad(format!("argument {key:?}: {v} is not a port (0–65535)"))),
    }
}

/// The IP protocol number of `proto` ("tcp", "udp", "icmp" or a number) for addresses of `v6`.
fn proto_arg(args: &Value, v6: bool) -> Result<u8, OpError> {
    match args.get("proto") {
        None | Some(Value::Null) => Ok(TCP),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| bad(format!("argument \"proto\": {n} is not a protocol number"))),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(TCP),
            "udp" => Ok(UDP),
            "icmp" | "icmpv6" if v6 => Ok(ICMPV6),
            "icmp" => Ok(ICMP),
            other => other.parse().map_err(|_| {
                bad(format!(
                    "argument \"proto\": {s:?}: tcp, udp, icmp or a protocol number"
                ))
            }),
        },
        Some(v) => Err(bad(format!("argument \"proto\": {v}"))),
    }
}

/// The display name of rule `index` of the table's document.
pub fn rule_name(table: &Table, index: u32) -> String {
    policy::names::rule_name(table.document(), index as usize)
}

/// Explains a packet of `args` (`tenant`, `src`, `dst`, `proto`, `sport`, `dport`) at Unix time `now`.
pub fn explain(table: &Table, args: &Value, now: i64) -> Result<Value, OpError> {
    let tenant = args
        .get("tenant")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing argument \"tenant\""))?;
    let s = table
        .tenant_by_name(tenant)
        .ok_or_else(|| OpError::new(ErrorCode::NotFound, format!("no tenant {tenant:?}")))?;
    let src = ip_arg(args, "src")?;
    let dst = ip_arg(args, "dst")?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(bad("src and dst are of different IP families"));
    }
    let proto = proto_arg(args, dst.is_ipv6())?;
    let (sport, dport) = if matches!(proto, TCP | UDP) {
        (port_arg(args, "sport")?, port_arg(args, "dport")?)
    } else {
        (0, 0)
    };
    let flow = policy::Flow {
        src,
        dst,
        proto,
        src_port: sport,
        dst_port: dport,
    };
    let source_known = table.endpoint(s, src).is_some_and(|e| e.tenant == s);
    let mut r = json!({
        "version": table.version(),
        "tenant": tenant,
        "src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport,
        "source_endpoint": source_known,
    });
    let Some(ep) = table.endpoint(s, dst) else {
        r["verdict"] = json!("drop");
        r["drop_reason"] = json!("no_endpoint");
        r["rule"] = Value::Null;
        r["why"] = json!(format!(
            "{dst} is not an endpoint in tenant {tenant:?}'s address space"
        ));
        return Ok(r);
    };
    let d = ep.tenant;
    let dname = table.tenant(d).name.to_string();
    let decision = table.verdict(s, d, &flow, now);
    let rule = decision.rule.map(|i| rule_name(table, i));
    r["dst_tenant"] = json!(dname);
    r["verdict"] = json!(if decision.allow { "forward" } else { "drop" });
    if !decision.allow {
        r["drop_reason"] = json!("policy_denied");
    }
    r["rule"] = json!(rule.clone().unwrap_or_else(|| "default".into()));
    r["rule_index"] = json!(decision.rule);
    r["egress_vtep"] = json!(ep.vtep);
    r["egress_vni"] = json!(ep.vni);
    r["egress_identity"] = json!(ep.egress.as_str());
    r["egress_mac"] = json!(ep.mac.to_string());
    let why = match (&rule, decision.allow, s == d) {
        (Some(n), true, _) => format!("rule {n:?} allows it"),
        (Some(n), false, _) => format!("rule {n:?} denies it"),
        (None, true, _) => "same tenant, no rule: allowed by default".to_string(),
        (None, false, _) => format!("{tenant} -> {dname}: no rule allows it: denied by default"),
    };
    r["why"] = json!(why);
    Ok(r)
}
