//! A fast path for loading TOML configs: a line-oriented reader for the subset of TOML the config
//! uses, building the [`Document`] directly — no syntax tree, no spans, no serde.
//!
//! The subset: comments and blank lines; the headers `[gateway]`, `[gateway.flow_timeouts]`,
//! `[[segment]]`, `[[tenant]]`, `[[endpoint]]`, `[[rule]]`; `key = value` lines with bare keys, whose
//! values are basic strings `"…"` (with TOML's escapes), literal strings `'…'`, decimal integers (sign,
//! `_` separators), booleans, and single-line arrays of strings.
//!
//! It answers `None` for anything else — unsupported syntax, invalid TOML, a value of the wrong type,
//! an unknown or repeated key, a missing field — and the caller then parses with the `toml` crate,
//! which accepts the rest of TOML and words the errors (with their line and column). So whenever this
//! reader returns a document, it is the one `toml` + serde would have built: the same defaults, the
//! same `deny_unknown_fields` refusals, the same value conversions (`property` tests and the
//! `config_fast` fuzz target check it).

use crate::document::{
    Action, Document, Endpoint, FlowTimeouts, Gateway, IdentityMode, Proto, Replies, Rule, Segment,
    Tenant,
};
use crate::section::{TenantName, VtepList};
use std::borrow::Cow;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vtep::Mac;

/// Parses TOML text in the supported subset; `None` means "use the full parser".
pub fn parse(text: &str) -> Option<Document> {
    if text.starts_with('\u{feff}') {
        return None;
    }
    let mut p = Parser::default();
    let mut rest = text;
    loop {
        match rest.find('\n') {
            Some(i) => {
                p.line(strip_cr(&rest[..i]))?;
                rest = &rest[i + 1..];
            }
            None => {
                // The last line has no newline: a carriage return there is not a line ending.
                p.line(rest)?;
                break;
            }
        }
    }
    p.finish()
}

/// Like [`parse`], reading line by line from `r` (the whole text is never held in memory). `None`
/// also when reading fails or the text is not UTF-8: the caller's full path reports those.
pub fn parse_reader<R: BufRead>(mut r: R) -> Option<Document> {
    let mut p = Parser::default();
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut first = true;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).ok()?;
        if n == 0 {
            break;
        }
        let terminated = buf.last() == Some(&b'\n');
        let raw = if terminated {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let line = std::str::from_utf8(raw).ok()?;
        if first && line.starts_with('\u{feff}') {
            return None;
        }
        first = false;
        p.line(if terminated { strip_cr(line) } else { line })?;
        if !terminated {
            break;
        }
    }
    p.finish()
}

/// The `toml` crate's reading of `text` (what the fast path must agree with), for tests and fuzzing.
pub fn parse_with_toml(text: &str) -> Result<Document, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// A value as written.
enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool,
    Arr(Vec<Cow<'a, str>>),
}

impl<'a> Val<'a> {
    fn string(self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s.into_owned()),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    fn int<T: TryFrom<i64>>(&self) -> Option<T> {
        match self {
            Val::Int(v) => T::try_from(*v).ok(),
            _ => None,
        }
    }
    fn parsed<T: std::str::FromStr>(&self) -> Option<T> {
        self.str()?.parse().ok()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Sec {
    /// Before the first header: the root table, which takes no keys here.
    #[default]
    Root,
    Gateway,
    FlowTimeouts,
    Segment,
    Tenant,
    Endpoint,
    Rule,
}

#[derive(Default)]
struct GatewayP {
    underlay_ip: Option<Ipv4Addr>,
    underlay_ip6: Option<Ipv6Addr>,
    udp_port: Option<u16>,
    mtu: Option<u16>,
    replies: Option<Replies>,
    max_flows: Option<u32>,
    decision_cache: Option<u32>,
}

#[derive(Default)]
struct SegmentP {
    vni: Option<u32>,
    identity: Option<IdentityMode>,
    tenant: Option<String>,
}

#[derive(Default)]
struct TenantP {
    name: Option<String>,
    id: Option<u32>,
    vteps: Option<Vec<IpAddr>>,
    address_space: Option<String>,
}

#[derive(Default)]
struct EndpointP {
    tenant: Option<String>,
    ip: Option<IpAddr>,
    mac: Option<Mac>,
    vtep: Option<IpAddr>,
    vni: Option<u32>,
}

#[derive(Default)]
struct RuleP {
    from: Option<String>,
    to: Option<String>,
    proto: Option<Proto>,
    ports: Option<String>,
    from_cidr: Option<String>,
    to_cidr: Option<String>,
    action: Option<Action>,
    priority: Option<i32>,
    not_before: Option<String>,
    not_after: Option<String>,
    name: Option<String>,
    owner: Option<String>,
}

#[derive(Default)]
struct Parser {
    sec: Sec,
    gateway: Option<GatewayP>,
    flow_timeouts: Option<FlowTimeouts>,
    seg: SegmentP,
    ten: TenantP,
    ep: EndpointP,
    rule: RuleP,
    segments: Vec<Segment>,
    tenants: Vec<Tenant>,
    endpoints: Vec<Endpoint>,
    rules: Vec<Rule>,
    /// Address space names seen, shared by every tenant of a space.
    spaces: Vec<TenantName>,
    /// Tenant names seen (as a tenant's name, an endpoint's tenant or a rule's `from`, `to` or
    /// `owner`): one shared string a name, however often the document names it.
    names: hashbrown::HashSet<TenantName>,
}

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Whether `s` (a comment's text after `#`) holds only what TOML allows there: tab, printable ASCII,
/// non-ASCII.
fn comment_ok(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// After a value or header: optional whitespace, then the end of the line or a comment.
fn line_end(s: &str) -> Option<()> {
    let s = skip_ws(s);
    match s.as_bytes().first() {
        None => Some(()),
        Some(b'#') if comment_ok(&s[1..]) => Some(()),
        _ => None,
    }
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Splits a bare key off the front of `s`.
fn bare_key(s: &str) -> Option<(&str, &str)> {
    let n = s.bytes().take_while(|b| is_bare(*b)).count();
    (n > 0).then(|| s.split_at(n))
}

/// A basic string after its opening quote: the value and the text after the closing quote.
fn basic_string(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let b = s.as_bytes();
    // The common case: no escapes, borrowed.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((Cow::Borrowed(&s[..i]), &s[i + 1..])),
            b'\\' => break,
            c if (c < 0x20 && c != b'\t') || c == 0x7f => return None,
            _ => i += 1,
        }
    }
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..i]);
    let mut rest = &s[i..];
    loop {
        let mut chars = rest.char_indices();
        let (_, c) = chars.next()?;
        match c {
            '"' => return Some((Cow::Owned(out), &rest[1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                let (v, len) = match e {
                    'b' => ('\u{8}', 2),
                    't' => ('\t', 2),
                    'n' => ('\n', 2),
                    'f' => ('\u{c}', 2),
                    'r' => ('\r', 2),
                    '"' => ('"', 2),
                    '\\' => ('\\', 2),
                    'u' => (hex_char(rest.get(2..6)?)?, 6),
                    'U' => (hex_char(rest.get(2..10)?)?, 10),
                    _ => return None,
                };
                out.push(v);
                rest = &rest[len..];
            }
            c if (c < '\u{20}' && c != '\t') || c == '\u{7f}' => return None,
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
}

/// The character of a `\u`/`\U` escape's hex digits (a Unicode scalar value).
fn hex_char(h: &str) -> Option<char> {
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    char::from_u32(u32::from_str_radix(h, 16).ok()?)
}

/// A literal string after its opening quote.
fn literal_string(s: &str) -> Option<(&str, &str)> {
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'\'' => return Some((&s[..i], &s[i + 1..])),
            c if (c < 0x20 && c != b'\t') || c == 0x7f => return None,
            _ => {}
        }
    }
    None
}

/// A string value (basic or literal, not multi-line) at the front of `s`.
fn string(s: &str) -> Option<(Cow<'_, str>, &str)> {
    if let Some(r) = s.strip_prefix('"') {
        if r.starts_with("\"\"") {
            return None; // multi-line
        }
        basic_string(r)
    } else if let Some(r) = s.strip_prefix('\'') {
        if r.starts_with("''") {
            return None; // multi-line
        }
        literal_string(r).map(|(v, rest)| (Cow::Borrowed(v), rest))
    } else {
        None
    }
}

/// A decimal integer token: sign, digits with single `_` between digits, no leading zero.
fn integer(tok: &str) -> Option<i64> {
    let (neg, digits) = match tok.as_bytes().first()? {
        b'-' => (true, &tok[1..]),
        b'+' => (false, &tok[1..]),
        _ => (false, tok),
    };
    let d = digits.as_bytes();
    if d.is_empty() || (d[0] == b'0' && d.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    let mut prev_digit = false;
    for &c in d {
        if c == b'_' {
            if !prev_digit {
                return None;
            }
            prev_digit = false;
            continue;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        let x = i64::from(c - b'0');
        // Accumulate negatively so that i64::MIN fits.
        v = v.checked_mul(10)?.checked_sub(x)?;
        prev_digit = true;
    }
    if !prev_digit {
        return None; // trailing '_'
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// A value at the front of `s` and the text after it.
fn value(s: &str) -> Option<(Val<'_>, &str)> {
    match s.as_bytes().first()? {
        b'"' | b'\'' => string(s).map(|(v, r)| (Val::Str(v), r)),
        b'[' => {
            let mut items = Vec::new();
            let mut r = skip_ws(&s[1..]);
            loop {
                if let Some(after) = r.strip_prefix(']') {
                    return Some((Val::Arr(items), after));
                }
                let (v, after) = string(r)?;
                items.push(v);
                r = skip_ws(after);
                if let Some(after) = r.strip_prefix(',') {
                    r = skip_ws(after);
                } else if !r.starts_with(']') {
                    return None;
                }
            }
        }
        _ => {
            let n = s
                .bytes()
                .take_while(|b| !is_ws(*b) && *b != b'#' && *b != b',' && *b != b']')
                .count();
            let (tok, rest) = s.split_at(n);
            match tok {
                "true" | "false" => Some((Val::Bool, rest)),
                _ => integer(tok).map(|v| (Val::Int(v), rest)),
            }
        }
    }
}

fn replies(v: &Val) -> Option<Replies> {
    match v.str()? {
        "tracked" => Some(Replies::Tracked),
        "stateless" => Some(Replies::Stateless),
        _ => None,
    }
}

fn identity(v: &Val) -> Option<IdentityMode> {
    match v.str()? {
        "vni" => Some(IdentityMode::Vni),
        "gbp" => Some(IdentityMode::Gbp),
        "vlan" => Some(IdentityMode::Vlan),
        _ => None,
    }
}

fn proto(v: &Val) -> Option<Proto> {
    match v.str()? {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "icmp" => Some(Proto::Icmp),
        "any" => Some(Proto::Any),
        _ => None,
    }
}

fn action(v: &Val) -> Option<Action> {
    match v.str()? {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        _ => None,
    }
}

/// Sets `slot` once.
fn set<T>(slot: &mut Option<T>, v: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v?);
    Some(())
}

impl Parser {
    fn line(&mut self, line: &str) -> Option<()> {
        let s = skip_ws(line);
        match s.as_bytes().first() {
            None => Some(()),
            Some(b'#') => comment_ok(&s[1..]).then_some(()),
            Some(b'[') => self.header(s),
            Some(_) => {
                let (key, rest) = bare_key(s)?;
                let rest = skip_ws(rest).strip_prefix('=')?;
                let (v, rest) = value(skip_ws(rest))?;
                line_end(rest)?;
                self.key(key, v)
            }
        }
    }

    fn header(&mut self, s: &str) -> Option<()> {
        let (array, inner) = match s.strip_prefix("[[") {
            Some(r) => (true, r),
            None => (false, &s[1..]),
        };
        let close = if array { "]]" } else { "]" };
        let end = inner.find(']')?;
        let name = inner[..end].trim_matches([' ', '\t']);
        let rest = inner[end..].strip_prefix(close)?;
        line_end(rest)?;
        self.close()?;
        self.sec = match (array, name) {
            (false, "gateway") => {
                if self.gateway.is_some() {
                    return None;
                }
                self.gateway = Some(GatewayP::default());
                Sec::Gateway
            }
            (false, "gateway.flow_timeouts") => {
                // Only after [gateway] (a super-table defined later is valid TOML, but rare).
                if self.gateway.is_none() || self.flow_timeouts.is_some() {
                    return None;
                }
                self.flow_timeouts = Some(FlowTimeouts::default());
                Sec::FlowTimeouts
            }
            (true, "segment") => Sec::Segment,
            (true, "tenant") => Sec::Tenant,
            (true, "endpoint") => Sec::Endpoint,
            (true, "rule") => Sec::Rule,
            _ => return None,
        };
        Some(())
    }

    fn key(&mut self, key: &str, v: Val) -> Option<()> {
        match self.sec {
            Sec::Root => None,
            Sec::Gateway => {
                let g = self.gateway.as_mut()?;
                match key {
                    "underlay_ip" => set(&mut g.underlay_ip, v.parsed()),
                    "underlay_ip6" => set(&mut g.underlay_ip6, v.parsed()),
                    "udp_port" => set(&mut g.udp_port, v.int()),
                    "mtu" => set(&mut g.mtu, v.int()),
                    "replies" => set(&mut g.replies, replies(&v)),
                    "max_flows" => set(&mut g.max_flows, v.int()),
                    "decision_cache" => set(&mut g.decision_cache, v.int()),
                    _ => None,
                }
            }
            Sec::FlowTimeouts => {
                let f = self.flow_timeouts.as_mut()?;
                match key {
                    "tcp" => set(&mut f.tcp, v.int()),
                    "tcp_opening" => set(&mut f.tcp_opening, v.int()),
                    "tcp_closing" => set(&mut f.tcp_closing, v.int()),
                    "udp" => set(&mut f.udp, v.int()),
                    "icmp" => set(&mut f.icmp, v.int()),
                    "other" => set(&mut f.other, v.int()),
                    _ => None,
                }
            }
            Sec::Segment => {
                let s = &mut self.seg;
                match key {
                    "vni" => set(&mut s.vni, v.int()),
                    "identity" => set(&mut s.identity, identity(&v)),
                    "tenant" => set(&mut s.tenant, v.string()),
                    _ => None,
                }
            }
            Sec::Tenant => {
                let t = &mut self.ten;
                match key {
                    "name" => set(&mut t.name, v.string()),
                    "id" => set(&mut t.id, v.int()),
                    "vteps" => {
                        let Val::Arr(items) = v else { return None };
                        let ips = items.iter().map(|s| s.parse().ok()).collect();
                        set(&mut t.vteps, ips)
                    }
                    "address_space" => set(&mut t.address_space, v.string()),
                    _ => None,
                }
            }
            Sec::Endpoint => {
                let e = &mut self.ep;
                match key {
                    "tenant" => set(&mut e.tenant, v.string()),
                    "ip" => set(&mut e.ip, v.parsed()),
                    "mac" => set(&mut e.mac, v.parsed()),
                    "vtep" => set(&mut e.vtep, v.parsed()),
                    "vni" => set(&mut e.vni, v.int()),
                    _ => None,
                }
            }
            Sec::Rule => {
                let r = &mut self.rule;
                match key {
                    "from" => set(&mut r.from, v.string()),
                    "to" => set(&mut r.to, v.string()),
                    "proto" => set(&mut r.proto, proto(&v)),
                    "ports" => set(&mut r.ports, v.string()),
                    "from_cidr" => set(&mut r.from_cidr, v.string()),
                    "to_cidr" => set(&mut r.to_cidr, v.string()),
                    "owner" => set(&mut r.owner, v.string()),
                    "action" => set(&mut r.action, action(&v)),
                    "priority" => set(&mut r.priority, v.int()),
                    "not_before" => set(&mut r.not_before, v.string()),
                    "not_after" => set(&mut r.not_after, v.string()),
                    "name" => set(&mut r.name, v.string()),
                    _ => None,
                }
            }
        }
    }

    /// Ends the current table: an array-of-tables entry is complete here (its required fields set).
    fn close(&mut self) -> Option<()> {
        match self.sec {
            Sec::Root | Sec::Gateway | Sec::FlowTimeouts => {}
            Sec::Segment => {
                let s = std::mem::take(&mut self.seg);
                self.segments.push(Segment {
                    vni: s.vni?,
                    identity: s.identity?,
                    tenant: s.tenant,
                });
            }
            Sec::Tenant => {
                let t = std::mem::take(&mut self.ten);
                let name = self.name(t.name?);
                self.tenants.push(Tenant {
                    name,
                    id: t.id?,
                    vteps: t.vteps.map(VtepList::from),
                    address_space: t.address_space.map(|a| {
                        match self.spaces.iter().find(|s| ***s == *a) {
                            Some(s) => s.clone(),
                            None => {
                                let s = TenantName::from(a);
                                if self.spaces.len() < 64 {
                                    self.spaces.push(s.clone());
                                }
                                s
                            }
                        }
                    }),
                });
            }
            Sec::Endpoint => {
                let e = std::mem::take(&mut self.ep);
                let tenant = self.name(e.tenant?);
                self.endpoints.push(Endpoint {
                    tenant,
                    ip: e.ip?,
                    mac: e.mac?,
                    vtep: e.vtep?,
                    vni: e.vni?,
                });
            }
            Sec::Rule => {
                let r = std::mem::take(&mut self.rule);
                let (from, to) = (self.name(r.from?), self.name(r.to?));
                let owner = r.owner.map(|o| self.name(o));
                self.rules.push(Rule {
                    from,
                    to,
                    proto: r.proto,
                    ports: r.ports,
                    from_cidr: r.from_cidr,
                    to_cidr: r.to_cidr,
                    owner,
                    action: r.action?,
                    priority: r.priority.unwrap_or_default(),
                    not_before: r.not_before,
                    not_after: r.not_after,
                    name: r.name,
                });
            }
        }
        Some(())
    }

    /// The shared string of tenant name `s`.
    fn name(&mut self, s: String) -> TenantName {
        if let Some(n) = self.names.get(s.as_str()) {
            return n.clone();
        }
        let n = TenantName::from(s);
        self.names.insert(n.clone());
        n
    }

    fn finish(mut self) -> Option<Document> {
        self.close()?;
        let g = self.gateway?;
        let doc = Document {
            gateway: Gateway {
                underlay_ip: g.underlay_ip?,
                underlay_ip6: g.underlay_ip6,
                udp_port: g.udp_port.unwrap_or(vtep::VXLAN_PORT),
                mtu: g.mtu.unwrap_or(1500),
                replies: g.replies.unwrap_or_default(),
                max_flows: g.max_flows,
                decision_cache: g.decision_cache,
                flow_timeouts: self.flow_timeouts,
            },
            segments: self.segments.into(),
            tenants: self.tenants.into(),
            endpoints: self.endpoints.into(),
            rules: self.rules.into(),
        };
        // (No spare room from the lists' doubling is kept: a section copies a list into chunks.)
        Some(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(integer("0"), Some(0));
        assert_eq!(integer("+0"), Some(0));
        assert_eq!(integer("-0"), Some(0));
        assert_eq!(integer("1_000"), Some(1000));
        assert_eq!(integer("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(integer("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "+",
            "-",
            "01",
            "1__0",
            "_1",
            "1_",
            "0x10",
            "1e3",
            "1.0",
            "9223372036854775808",
            "+_1",
        ] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strings() {
        let s = |t: &str| string(t).map(|(v, r)| (v.into_owned(), r.to_string()));
        assert_eq!(
            s(r#""a\tb\u00e9\U0001F600\\\"" x"#).unwrap().0,
            "a\tb\u{e9}\u{1f600}\\\""
        );
        assert_eq!(
            s(r#""plain" # c"#).unwrap(),
            ("plain".into(), " # c".into())
        );
        assert_eq!(s(r"'C:\x' y").unwrap(), (r"C:\x".into(), " y".into()));
        for bad in [
            r#""\x41""#,
            r#""\uD800""#,
            r#""\u12""#,
            "\"a\u{1}\"",
            "\"unterminated",
            "'''ml'''",
            r#""""ml""""#,
            "'a\u{7f}'",
        ] {
            assert!(s(bad).is_none(), "{bad:?}");
        }
    }

    /// Every place the document names a tenant shares one string (at a million tenants, endpoints
    /// and rules, a string each would cost ~110 MB more), whichever comes first in the file.
    #[test]
    fn tenant_names_are_one_string_each() {
        let text = r#"[gateway]
underlay_ip = "198.18.0.254"

[[rule]]
from = "acme"
to = "globex"
action = "allow"
owner = "acme"

[[tenant]]
name = "acme"
id = 1

[[tenant]]
name = "globex"
id = 2

[[endpoint]]
tenant = "globex"
ip = "198.19.0.2"
mac = "02:00:00:00:00:02"
vtep = "198.18.0.2"
vni = 100

[[rule]]
from = "globex"
to = "acme"
action = "allow"
"#;
        let d = parse(text).expect("the fast path's");
        let at = |n: &str| n.as_ptr();
        let (acme, globex) = (at(&d.tenants[0].name), at(&d.tenants[1].name));
        assert_ne!(acme, globex);
        assert_eq!(at(&d.endpoints[0].tenant), globex);
        let r0 = &d.rules[0];
        assert_eq!(
            (at(&r0.from), at(&r0.to), at(r0.owner.as_deref().unwrap())),
            (acme, globex, acme)
        );
        assert_eq!((at(&d.rules[1].from), at(&d.rules[1].to)), (globex, acme));
    }
}
