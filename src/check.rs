//! `joypath check`: every problem of a config file in one pass. First the shape — unknown keys, wrong
//! types, values out of range, unknown enum values — field by field over the parsed TOML (so one type
//! error does not hide the next), each with the bad value and a "did you mean"; then, when the shape is
//! right, the policy's own validation (unknown tenants, duplicates, …), with suggestions for names.

use crate::out::outln;
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use toml::Value;

/// One problem, as `check --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// An integer within the bounds.
    Int(i64, i64),
    Ip,
    Ipv4,
    Ipv6,
    IpList,
    Mac,
    Enum(&'static [&'static str]),
    Ports,
    Cidr,
    Time,
    /// A table of optional seconds (`[gateway.flow_timeouts]`).
    Timeouts,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn f(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
    }
}

const GATEWAY: &[Field] = &[
    f("underlay_ip", Kind::Ipv4, true),
    f("underlay_ip6", Kind::Ipv6, false),
    f("udp_port", Kind::Int(1, 65535), false),
    f("mtu", Kind::Int(576, 9216), false),
    f("replies", Kind::Enum(&["tracked", "stateless"]), false),
    f("max_flows", Kind::Int(1, u32::MAX as i64), false),
    f(
        "decision_cache",
        Kind::Int(0, policy::MAX_DECISION_CACHE as i64),
        false,
    ),
    f("flow_timeouts", Kind::Timeouts, false),
];

/// The keys of `[gateway.flow_timeouts]`.
const TIMEOUT_KEYS: &[&str] = &["tcp", "tcp_opening", "tcp_closing", "udp", "icmp", "other"];
const SEGMENT: &[Field] = &[
    f("vni", Kind::Int(0, 0x00ff_ffff), true),
    f("identity", Kind::Enum(&["vni", "gbp", "vlan"]), true),
    f("tenant", Kind::Str, false),
];
const TENANT: &[Field] = &[
    f("name", Kind::Str, true),
    f("id", Kind::Int(1, u32::MAX as i64), true),
    f("vteps", Kind::IpList, false),
    f("address_space", Kind::Str, false),
];
const ENDPOINT: &[Field] = &[
    f("tenant", Kind::Str, true),
    f("ip", Kind::Ip, true),
    f("mac", Kind::Mac, true),
    f("vtep", Kind::Ip, true),
    f("vni", Kind::Int(0, 0x00ff_ffff), true),
];
const RULE: &[Field] = &[
    f("name", Kind::Str, false),
    f("from", Kind::Str, true),
    f("to", Kind::Str, true),
    f("proto", Kind::Enum(&["tcp", "udp", "icmp", "any"]), false),
    f("ports", Kind::Ports, false),
    f("from_cidr", Kind::Cidr, false),
    f("to_cidr", Kind::Cidr, false),
    f("action", Kind::Enum(&["allow", "deny"]), true),
    f(
        "priority",
        Kind::Int(i32::MIN as i64, i32::MAX as i64),
        false,
    ),
    f("not_before", Kind::Time, false),
    f("not_after", Kind::Time, false),
    f("owner", Kind::Str, false),
];
/// Top-level keys: `[gateway]` is a table, the others arrays of tables.
const SECTIONS: &[(&str, &[Field], bool)] = &[
    ("gateway", GATEWAY, false),
    ("segment", SEGMENT, true),
    ("tenant", TENANT, true),
    ("endpoint", ENDPOINT, true),
    ("rule", RULE, true),
];

/// The closest candidate to `s`, if close enough to be a plausible typo.
pub fn did_you_mean<'a>(s: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let s = s.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = strsim::damerau_levenshtein(&s, &c.to_lowercase());
            let jw = strsim::jaro_winkler(&s, &c.to_lowercase());
            (d, jw, c)
        })
        .filter(|(d, jw, c)| *d <= (c.len().max(s.len()) / 3).max(1) || *jw >= 0.9)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c.to_string())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    }
}

/// What is wrong with a value of a field, with an optional suggestion.
fn check_value(kind: Kind, v: &Value) -> Option<(String, Option<String>)> {
    let want_str = |what: &str| Some((format!("expected {what}, got {}", type_name(v)), None));
    match kind {
        Kind::Str => match v {
            Value::String(_) => None,
            _ => want_str("a string"),
        },
        Kind::Int(lo, hi) => match v {
            Value::Integer(n) if (lo..=hi).contains(n) => None,
            Value::Integer(n) => Some((format!("{n} is outside {lo}–{hi}"), None)),
            Value::String(s) if s.trim().parse::<i64>().is_ok() => Some((
                format!("expected an integer {lo}–{hi}, got a string"),
                Some(s.trim().to_string()),
            )),
            _ => Some((
                format!("expected an integer {lo}–{hi}, got {}", type_name(v)),
                None,
            )),
        },
        Kind::Ip | Kind::Ipv4 | Kind::Ipv6 => {
            let Value::String(s) = v else {
                return want_str("an IP address string");
            };
            let ok = match kind {
                Kind::Ipv4 => s.parse::<Ipv4Addr>().is_ok(),
                Kind::Ipv6 => s.parse::<Ipv6Addr>().is_ok(),
                _ => s.parse::<IpAddr>().is_ok(),
            };
            let what = match kind {
                Kind::Ipv4 => "an IPv4 address",
                Kind::Ipv6 => "an IPv6 address",
                _ => "an IP address",
            };
            (!ok).then(|| {
                let hint = s
                    .split_once('/')
                    .filter(|(a, _)| a.parse::<IpAddr>().is_ok())
                    .map(|(a, _)| a.to_string());
                (format!("{s:?} is not {what}"), hint)
            })
        }
        Kind::IpList => match v {
            Value::Array(items) => items.iter().find_map(|i| {
                check_value(Kind::Ip, i).map(|(m, s)| (format!("in the list: {m}"), s))
            }),
            _ => want_str("a list of IP addresses"),
        },
        Kind::Mac => {
            let Value::String(s) = v else {
                return want_str("a MAC address string");
            };
            s.parse::<vtep::Mac>().err().map(|_| {
                let fixed = s.replace('-', ":");
                let hint = fixed.parse::<vtep::Mac>().is_ok().then_some(fixed);
                (
                    format!("{s:?} is not a MAC address (02:00:00:00:0a:01)"),
                    hint,
                )
            })
        }
        Kind::Enum(allowed) => {
            let Value::String(s) = v else {
                return want_str(&format!("one of {}", allowed.join(", ")));
            };
            (!allowed.contains(&s.as_str())).then(|| {
                (
                    format!("{s:?} is not one of {}", allowed.join(", ")),
                    did_you_mean(s, allowed.iter().copied()),
                )
            })
        }
        Kind::Ports => match v {
            Value::String(s) => policy::document::parse_ports(s).err().map(|e| (e, None)),
            Value::Integer(n) => Some((
                "ports are a string: \"443\" or \"8000-8080\"".into(),
                Some(format!("\"{n}\"")),
            )),
            _ => want_str("a port string (\"443\" or \"8000-8080\")"),
        },
        Kind::Cidr => match v {
            Value::String(s) => policy::document::Cidr::parse(s).err().map(|e| (e, None)),
            _ => want_str("a CIDR string"),
        },
        Kind::Time => match v {
            Value::String(s) => policy::time::parse_rfc3339(s).err().map(|e| (e, None)),
            Value::Datetime(d) => Some((
                "expected an RFC 3339 string in quotes, got a bare TOML date".into(),
                Some(format!("\"{d}\"")),
            )),
            _ => want_str("an RFC 3339 time string"),
        },
        Kind::Timeouts => match v {
            Value::Table(t) => t.iter().find_map(|(k, v)| {
                if !TIMEOUT_KEYS.contains(&k.as_str()) {
                    return Some((
                        format!("unknown timeout {k:?}"),
                        did_you_mean(k, TIMEOUT_KEYS.iter().copied()),
                    ));
                }
                check_value(Kind::Int(0, u32::MAX as i64), v).map(|(m, s)| (format!("{k}: {m}"), s))
            }),
            _ => want_str("a table of seconds"),
        },
    }
}

fn check_table(
    path: &str,
    fields: &[Field],
    t: &toml::map::Map<String, Value>,
    out: &mut Vec<Problem>,
) {
    for (k, v) in t {
        let p = format!("{path}.{k}");
        match fields.iter().find(|f| f.name == k) {
            None => out.push(Problem {
                path: p,
                line: None,
                message: format!("unknown key {k:?}"),
                value: Some(shown(v)),
                suggestion: did_you_mean(k, fields.iter().map(|f| f.name)),
            }),
            Some(f) => {
                if let Some((message, suggestion)) = check_value(f.kind, v) {
                    out.push(Problem {
                        path: p,
                        line: None,
                        message,
                        value: Some(shown(v)),
                        suggestion,
                    });
                }
            }
        }
    }
    for f in fields
        .iter()
        .filter(|f| f.required && !t.contains_key(f.name))
    {
        out.push(Problem {
            path: format!("{path}.{}", f.name),
            line: None,
            message: format!("missing {}", f.name),
            value: None,
            suggestion: None,
        });
    }
}

/// The shape problems of a parsed config.
fn check_shape(root: &toml::map::Map<String, Value>) -> Vec<Problem> {
    let mut out = Vec::new();
    for (k, v) in root {
        let Some((name, fields, many)) = SECTIONS.iter().find(|s| s.0 == k) else {
            out.push(Problem {
                path: k.clone(),
                line: None,
                message: format!("unknown section {k:?}"),
                value: None,
                suggestion: did_you_mean(k, SECTIONS.iter().map(|s| s.0)),
            });
            continue;
        };
        match (v, many) {
            (Value::Table(t), false) => check_table(name, fields, t, &mut out),
            (Value::Array(items), true) => {
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::Table(t) => {
                            check_table(&format!("{name}[{i}]"), fields, t, &mut out)
                        }
                        v => out.push(Problem {
                            path: format!("{name}[{i}]"),
                            line: None,
                            message: format!("expected a table, got {}", type_name(v)),
                            value: Some(shown(v)),
                            suggestion: None,
                        }),
                    }
                }
            }
            (v, _) => out.push(Problem {
                path: k.clone(),
                line: None,
                message: format!(
                    "expected {}, got {}",
                    if *many {
                        format!("[[{name}]] tables")
                    } else {
                        format!("a [{name}] table")
                    },
                    type_name(v)
                ),
                value: None,
                suggestion: None,
            }),
        }
    }
    if !root.contains_key("gateway") {
        out.push(Problem {
            path: "gateway".into(),
            line: None,
            message: "missing the [gateway] table".into(),
            value: None,
            suggestion: None,
        });
    }
    out
}

/// Adds a suggestion to a semantic issue naming an unknown tenant.
fn suggest_tenant(message: &str, root: &toml::map::Map<String, Value>) -> Option<String> {
    let rest = message.strip_prefix("unknown tenant ")?;
    let name: String = serde_json::from_str(rest).ok()?;
    let tenants = root.get("tenant")?.as_array()?;
    let names: Vec<&str> = tenants
        .iter()
        .filter_map(|t| t.get("name")?.as_str())
        .collect();
    did_you_mean(&name, names.iter().copied())
}

/// Every problem of a config's text; empty when valid.
/// The document, when the fast reader takes it and it is valid. The fast reader refuses unknown keys
/// and values of the wrong type, so such a document leaves nothing to word and needs no generic TOML
/// tree (for a million tenants that tree alone took 80 s and 9.8 GB).
fn valid_fast(text: &str) -> Option<policy::Document> {
    let mut doc = policy::fastload::parse(text)?;
    policy::names::name_rules(&mut doc);
    doc.validate().is_empty().then_some(doc)
}

pub fn check_text(text: &str, file: &str) -> Result<Vec<Problem>, policy::ConfigError> {
    if valid_fast(text).is_some() {
        return Ok(Vec::new());
    }
    let root: toml::map::Map<String, Value> = match toml::from_str(text) {
        Ok(r) => r,
        Err(_) => {
            // A syntax error: the loader names file, line and column.
            return policy::Document::from_toml(text, file).map(|_| Vec::new());
        }
    };
    let mut problems = check_shape(&root);
    if problems.is_empty() {
        match policy::Document::from_toml(text, file) {
            Ok(_) => {}
            Err(policy::ConfigError::Invalid { issues, .. }) => {
                for i in issues {
                    let suggestion = suggest_tenant(&i.message, &root);
                    problems.push(Problem {
                        path: i.path,
                        line: i.line,
                        message: i.message,
                        value: None,
                        suggestion,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
    for p in &mut problems {
        if p.line.is_none() {
            p.line = policy::document::locate(text, &p.path);
        }
    }
    Ok(problems)
}

/// `joypath check`: exit 0 when valid, 1 when not.
pub fn cmd_check(path: &Path, json: bool) -> Result<i32> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::out::usage(format!("{file}: cannot read: {e}")))?;
    if let Some(doc) = valid_fast(&text) {
        drop(text);
        return report_exit(print_report(&file, &[], Some(&doc), json), 0);
    }
    let problems = match check_text(&text, &file) {
        Ok(p) => p,
        Err(policy::ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) => vec![Problem {
            path: String::new(),
            line: Some(line),
            message: format!("column {column}: {message}"),
            value: None,
            suggestion: None,
        }],
        Err(e) => return Err(e.into()),
    };
    let doc = if problems.is_empty() {
        Some(policy::Document::from_toml(&text, &file)?)
    } else {
        None
    };
    let code = if problems.is_empty() { 0 } else { 1 };
    report_exit(print_report(&file, &problems, doc.as_ref(), json), code)
}

/// A closed pipe cuts the report short but does not hide the verdict: the exit code stays.
fn report_exit(printed: Result<()>, code: i32) -> Result<i32> {
    match printed {
        Err(e) if crate::is_broken_pipe(&e) => Ok(code),
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}

fn print_report(
    file: &str,
    problems: &[Problem],
    doc: Option<&policy::Document>,
    json: bool,
) -> Result<()> {
    if json {
        let mut v = json!({"file": file, "valid": problems.is_empty(), "issues": problems});
        if let Some(d) = doc {
            v["counts"] = json!({"segments": d.segments.len(), "tenants": d.tenants.len(),
                "endpoints": d.endpoints.len(), "rules": d.rules.len()});
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(d) = doc {
        outln!(
            "{file}: valid: {} segments, {} tenants, {} endpoints, {} rules",
            d.segments.len(),
            d.tenants.len(),
            d.endpoints.len(),
            d.rules.len()
        );
    } else {
        outln!(
            "{file}: {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in problems {
            let at = p.line.map(|l| format!("{file}:{l}: ")).unwrap_or_default();
            let path = if p.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", p.path)
            };
            let hint = p
                .suggestion
                .as_ref()
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            outln!("  {at}{path}{}{hint}", p.message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = r#"
[gateway]
underlay_ip = "198.18.0.254"
udp_port = "4789"
mtu = 99999

[[segment]]
vni = 100
identity = "vnii"
tenant = "acme"

[[tenant]]
name = "acme"
id = 10
colour = "red"

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1/32"
mac = "02:00:00:00:0a"
vtep = "198.18.0.1"
vni = 100

[[rule]]
from = "acme"
to = "*"
proto = "tpc"
ports = 443
action = "alow"
"#;

    #[test]
    fn every_shape_problem_in_one_pass_with_value_and_suggestion() {
        let p = check_text(BAD, "t.toml").unwrap();
        let find = |path: &str| {
            p.iter()
                .find(|x| x.path == path)
                .unwrap_or_else(|| panic!("no problem at {path}: {p:#?}"))
        };
        assert_eq!(p.len(), 9, "{p:#?}");
        let port = find("gateway.udp_port");
        assert_eq!(port.line, Some(4));
        assert_eq!(port.suggestion.as_deref(), Some("4789"));
        assert!(!port.message.contains("u16"), "{}", port.message);
        assert!(find("gateway.mtu").message.contains("99999"));
        assert_eq!(
            find("segment[0].identity").suggestion.as_deref(),
            Some("vni")
        );
        assert_eq!(find("tenant[0].colour").line, Some(15));
        assert_eq!(
            find("endpoint[0].ip").suggestion.as_deref(),
            Some("198.19.0.1")
        );
        assert!(find("endpoint[0].mac").message.contains("02:00:00:00:0a"));
        let proto = find("rule[0].proto");
        assert_eq!(proto.value.as_deref(), Some("\"tpc\""));
        assert_eq!(proto.suggestion.as_deref(), Some("tcp"));
        assert_eq!(find("rule[0].ports").suggestion.as_deref(), Some("\"443\""));
        assert_eq!(find("rule[0].action").suggestion.as_deref(), Some("allow"));
    }

    #[test]
    fn semantic_problems_suggest_tenant_names() {
        let text = BAD
            .replace("udp_port = \"4789\"\nmtu = 99999\n", "")
            .replace("vnii", "vni")
            .replace("colour = \"red\"\n", "")
            .replace("198.19.0.1/32", "198.19.0.1")
            .replace("02:00:00:00:0a\"", "02:00:00:00:0a:01\"")
            .replace("tpc", "tcp")
            .replace("ports = 443", "ports = \"443\"")
            .replace("alow", "allow")
            .replace("from = \"acme\"", "from = \"acmee\"");
        let p = check_text(&text, "t.toml").unwrap();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].path, "rule[0].from");
        assert_eq!(p[0].suggestion.as_deref(), Some("acme"));
        assert!(p[0].line.is_some());
    }

    #[test]
    fn a_decision_cache_too_big_or_negative_is_named_with_its_line() {
        let good = "[gateway]\nunderlay_ip = \"198.18.0.254\"\ndecision_cache = 0\n";
        assert!(check_text(good, "t.toml").unwrap().is_empty());
        for (v, want) in [
            ("4194305", "4194305"),
            ("-1", "-1"),
            ("\"big\"", "a string"),
        ] {
            let text = good.replace("= 0", &format!("= {v}"));
            let p = check_text(&text, "t.toml").unwrap();
            assert_eq!(p.len(), 1, "{v}: {p:#?}");
            assert_eq!(p[0].path, "gateway.decision_cache");
            assert_eq!(p[0].line, Some(3));
            assert!(p[0].message.contains(want), "{}", p[0].message);
        }
        // The policy library refuses it too (a document not read through `check`).
        let mut doc: policy::Document = toml::from_str(good).unwrap();
        doc.gateway.decision_cache = Some(policy::MAX_DECISION_CACHE + 1);
        let e = doc.check().unwrap_err().to_string();
        assert!(e.contains("gateway.decision_cache"), "{e}");
    }

    #[test]
    fn the_fixtures_are_clean() {
        for f in [
            "pcap-fixtures/fixtures.toml",
            "pcap-fixtures/stateless.toml",
            "examples/live.toml",
            "examples/gateway.toml",
        ] {
            let path = format!("{}/{f}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let p = check_text(&text, &path).unwrap();
            assert!(p.is_empty(), "{f}: {p:#?}");
        }
        let bad = "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[gateway.flow_timeouts]\ntcpp = 5\n";
        let p = check_text(bad, "t.toml").unwrap();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].suggestion.as_deref(), Some("tcp"));
    }
}
