//! The fast TOML path (`policy::fastload`) against the `toml` crate: for generated documents written
//! with every optional field, escapes, comments and odd spacing, both read the same `Document`; for
//! syntax outside the fast path's subset, loading falls back and still succeeds; errors keep their
//! lines.

use policy::fastload::{parse, parse_reader, parse_with_toml};
use policy::{
    Action, ConfigError, Document, Endpoint, FlowTimeouts, Gateway, IdentityMode, Proto, Replies,
    Rule, Segment, Tenant,
};
use proptest::prelude::*;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A small deterministic generator for formatting choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Writes a string as a TOML basic or literal string, escaping in one of the ways TOML allows.
fn toml_str(out: &mut String, s: &str, r: &mut Rng) {
    let literal_ok = s
        .chars()
        .all(|c| c != '\'' && (c == '\t' || (c >= ' ' && c != '\u{7f}')));
    if literal_ok && r.one_in(3) {
        let _ = write!(out, "'{s}'");
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if r.one_in(2) => out.push_str("\\n"),
            '\t' if r.one_in(2) => out.push_str("\\t"),
            '\t' => out.push('\t'),
            '\r' if r.one_in(2) => out.push_str("\\r"),
            '\u{8}' if r.one_in(2) => out.push_str("\\b"),
            '\u{c}' if r.one_in(2) => out.push_str("\\f"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if !c.is_ascii() && r.one_in(3) => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
            c if !c.is_ascii() && (c as u32) < 0x10000 && r.one_in(3) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes an integer with an optional `+` and `_` separators.
fn toml_int(out: &mut String, v: i64, r: &mut Rng) {
    if v >= 0 && r.one_in(4) {
        out.push('+');
    }
    let s = v.to_string();
    let (sign, digits) = s.split_at(usize::from(v < 0));
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && r.one_in(4) {
            out.push('_');
        }
        out.push(c);
    }
}

enum V<'a> {
    S(&'a str),
    I(i64),
    A(Vec<String>),
}

/// A `key = value` line (or nothing for `None`), with odd spacing and comments.
fn kv(out: &mut String, k: &str, v: Option<V>, r: &mut Rng, nl: &str) {
    let Some(v) = v else { return };
    out.push_str(r.pick(&["", "", " ", "\t", "  "]));
    out.push_str(k);
    out.push_str(r.pick(&[" = ", "=", " =\t", "\t= ", "  =  "]));
    match v {
        V::S(s) => toml_str(out, s, r),
        V::I(i) => toml_int(out, i, r),
        V::A(items) => {
            out.push('[');
            out.push_str(r.pick(&["", " "]));
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(r.pick(&[",", ", ", " ,\t"]));
                }
                toml_str(out, s, r);
            }
            if !items.is_empty() && r.one_in(3) {
                out.push(',');
            }
            out.push_str(r.pick(&["", " "]));
            out.push(']');
        }
    }
    out.push_str(r.pick(&["", "", " ", " # note", "\t#é [x] = \"y\"", "#"]));
    out.push_str(nl);
}

/// Writes the lines of one table in a shuffled order.
fn table(out: &mut String, header: &str, mut lines: Vec<(&str, Option<V>)>, r: &mut Rng, nl: &str) {
    if r.one_in(4) {
        out.push_str("# a comment line ' \" [[x]]");
        out.push_str(nl);
    }
    out.push_str(header);
    out.push_str(r.pick(&["", " ", " # header"]));
    out.push_str(nl);
    for i in (1..lines.len()).rev() {
        let j = (r.next() % (i as u64 + 1)) as usize;
        lines.swap(i, j);
    }
    for (k, v) in lines {
        kv(out, k, v, r, nl);
        if r.one_in(8) {
            out.push_str(r.pick(&["", "   ", "\t# between"]));
            out.push_str(nl);
        }
    }
}

fn s(v: &Option<String>) -> Option<V<'_>> {
    v.as_deref().map(V::S)
}
fn u(v: Option<u32>) -> Option<V<'static>> {
    v.map(|v| V::I(v.into()))
}

/// The document as TOML, formatted by `seed`. Optional fields that hold their default may be written
/// or left out (`udp_port`, `mtu`, `replies`, `priority`).
fn render(doc: &Document, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let nl = if r.one_in(3) { "\r\n" } else { "\n" };
    let mut out = String::new();
    if r.one_in(2) {
        out.push_str("# generated");
        out.push_str(nl);
        out.push_str(nl);
    }
    let g = &doc.gateway;
    let udp = (g.udp_port != 4789 || r.one_in(2)).then_some(V::I(g.udp_port.into()));
    let mtu = (g.mtu != 1500 || r.one_in(2)).then_some(V::I(g.mtu.into()));
    let replies =
        (g.replies != Replies::Tracked || r.one_in(2)).then_some(V::S(g.replies.as_str()));
    let ip4 = g.underlay_ip.to_string();
    let ip6 = g.underlay_ip6.map(|a| a.to_string());
    table(
        &mut out,
        r.pick(&["[gateway]", "[ gateway ]", "  [gateway]"]),
        vec![
            ("underlay_ip", Some(V::S(&ip4))),
            ("underlay_ip6", s(&ip6)),
            ("udp_port", udp),
            ("mtu", mtu),
            ("replies", replies),
            ("max_flows", u(g.max_flows)),
            ("decision_cache", u(g.decision_cache)),
        ],
        &mut r,
        nl,
    );
    // Order of the sections: flow timeouts right after the gateway or later; the arrays interleaved.
    let ft_late = r.one_in(2);
    let ft = |out: &mut String, r: &mut Rng| {
        if let Some(f) = &g.flow_timeouts {
            table(
                out,
                "[gateway.flow_timeouts]",
                vec![
                    ("tcp", u(f.tcp)),
                    ("tcp_opening", u(f.tcp_opening)),
                    ("tcp_closing", u(f.tcp_closing)),
                    ("udp", u(f.udp)),
                    ("icmp", u(f.icmp)),
                    ("other", u(f.other)),
                ],
                r,
                nl,
            );
        }
    };
    if !ft_late {
        ft(&mut out, &mut r);
    }
    let mut next = [0usize; 4];
    let lens = [
        doc.segments.len(),
        doc.tenants.len(),
        doc.endpoints.len(),
        doc.rules.len(),
    ];
    while next.iter().zip(&lens).any(|(n, l)| n < l) {
        let k = (r.next() % 4) as usize;
        if next[k] >= lens[k] {
            continue;
        }
        let i = next[k];
        next[k] += 1;
        match k {
            0 => {
                let x = &doc.segments[i];
                table(
                    &mut out,
                    r.pick(&["[[segment]]", "[[ segment ]]"]),
                    vec![
                        ("vni", u(Some(x.vni))),
                        ("identity", Some(V::S(x.identity.as_str()))),
                        ("tenant", s(&x.tenant)),
                    ],
                    &mut r,
                    nl,
                );
            }
            1 => {
                let x = &doc.tenants[i];
                let vteps = x
                    .vteps
                    .as_ref()
                    .map(|v| V::A(v.iter().map(|a| a.to_string()).collect()));
                table(
                    &mut out,
                    "[[tenant]]",
                    vec![
                        ("name", Some(V::S(&x.name))),
                        ("id", u(Some(x.id))),
                        ("vteps", vteps),
                        ("address_space", x.address_space.as_deref().map(V::S)),
                    ],
                    &mut r,
                    nl,
                );
            }
            2 => {
                let x = &doc.endpoints[i];
                let (ip, vtep) = (x.ip.to_string(), x.vtep.to_string());
                let mac = if r.one_in(2) {
                    x.mac.to_string()
                } else {
                    x.mac.to_string().to_uppercase().replace(':', "-")
                };
                table(
                    &mut out,
                    "[[endpoint]]",
                    vec![
                        ("tenant", Some(V::S(&x.tenant))),
                        ("ip", Some(V::S(&ip))),
                        ("mac", Some(V::S(&mac))),
                        ("vtep", Some(V::S(&vtep))),
                        ("vni", u(Some(x.vni))),
                    ],
                    &mut r,
                    nl,
                );
            }
            _ => {
                let x = &doc.rules[i];
                let prio = (x.priority != 0 || r.one_in(2)).then_some(V::I(x.priority.into()));
                let action = match x.action {
                    Action::Allow => "allow",
                    Action::Deny => "deny",
                };
                table(
                    &mut out,
                    "[[rule]]",
                    vec![
                        ("from", Some(V::S(&x.from))),
                        ("to", Some(V::S(&x.to))),
                        ("proto", x.proto.map(|p| V::S(p.as_str()))),
                        ("ports", s(&x.ports)),
                        ("from_cidr", s(&x.from_cidr)),
                        ("to_cidr", s(&x.to_cidr)),
                        ("action", Some(V::S(action))),
                        ("priority", prio),
                        ("not_before", s(&x.not_before)),
                        ("not_after", s(&x.not_after)),
                        ("owner", x.owner.as_deref().map(V::S)),
                    ],
                    &mut r,
                    nl,
                );
            }
        }
    }
    if ft_late {
        ft(&mut out, &mut r);
    }
    if r.one_in(2) {
        // No newline after the last line.
        while out.ends_with('\n') || out.ends_with('\r') {
            out.pop();
        }
    }
    out
}

fn text() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        'a', 'z', 'Q', '0', '9', '-', '_', ' ', '*', '#', '=', '[', ']', '{', ',', '.', '"', '\'',
        '\\', '\t', '\n', '\r', '\u{0}', '\u{1}', '\u{8}', '\u{c}', '\u{1b}', '\u{7f}', 'é', '€',
        '\u{fffd}', '😀', '\u{feff}',
    ]);
    prop::collection::vec(chars, 0..10).prop_map(String::from_iter)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        (0u128..0x10000).prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn gateway() -> impl Strategy<Value = Gateway> {
    let timeouts = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(tcp, tcp_opening, tcp_closing, udp, icmp, other)| FlowTimeouts {
                tcp,
                tcp_opening,
                tcp_closing,
                udp,
                icmp,
                other,
            },
        );
    (
        any::<u32>(),
        proptest::option::of(any::<u128>()),
        prop_oneof![Just(4789u16), any::<u16>()],
        prop_oneof![Just(1500u16), any::<u16>()],
        prop_oneof![Just(Replies::Tracked), Just(Replies::Stateless)],
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(timeouts),
    )
        .prop_map(
            |(ip4, ip6, udp_port, mtu, replies, max_flows, decision_cache, flow_timeouts)| {
                Gateway {
                    underlay_ip: Ipv4Addr::from(ip4),
                    underlay_ip6: ip6.map(Ipv6Addr::from),
                    udp_port,
                    mtu,
                    replies,
                    max_flows,
                    decision_cache,
                    flow_timeouts,
                }
            },
        )
}

fn identity() -> impl Strategy<Value = IdentityMode> {
    prop_oneof![
        Just(IdentityMode::Vni),
        Just(IdentityMode::Gbp),
        Just(IdentityMode::Vlan)
    ]
}

fn document() -> impl Strategy<Value = Document> {
    let segment = (any::<u32>(), identity(), proptest::option::of(text())).prop_map(
        |(vni, identity, tenant)| Segment {
            vni,
            identity,
            tenant,
        },
    );
    let tenant = (
        text(),
        any::<u32>(),
        proptest::option::of(prop::collection::vec(ip(), 0..4)),
        proptest::option::of(text()),
    )
        .prop_map(|(name, id, vteps, address_space)| Tenant {
            name: name.into(),
            id,
            vteps: vteps.map(Into::into),
            address_space: address_space.map(Into::into),
        });
    let endpoint = (text(), ip(), any::<[u8; 6]>(), ip(), any::<u32>()).prop_map(
        |(tenant, ip, mac, vtep, vni)| Endpoint {
            tenant: tenant.into(),
            ip,
            mac: vtep::Mac(mac),
            vtep,
            vni,
        },
    );
    let proto = prop_oneof![
        Just(Proto::Tcp),
        Just(Proto::Udp),
        Just(Proto::Icmp),
        Just(Proto::Any)
    ];
    let rule = (
        (
            text(),
            text(),
            proptest::option::of(proto),
            proptest::option::of(text()),
        ),
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        (
            prop_oneof![Just(Action::Allow), Just(Action::Deny)],
            prop_oneof![Just(0i32), any::<i32>()],
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (from, to, proto, owner),
                (ports, from_cidr, to_cidr),
                (action, priority, nb, na),
            )| Rule {
                from: from.into(),
                to: to.into(),
                proto,
                ports,
                from_cidr,
                to_cidr,
                action,
                priority,
                not_before: nb,
                not_after: na,
                name: None,
                owner: owner.map(Into::into),
            },
        );
    (
        gateway(),
        prop::collection::vec(segment, 0..4),
        prop::collection::vec(tenant, 0..4),
        prop::collection::vec(endpoint, 0..4),
        prop::collection::vec(rule, 0..4),
    )
        .prop_map(|(gateway, segments, tenants, endpoints, rules)| Document {
            gateway,
            segments: segments.into(),
            tenants: tenants.into(),
            endpoints: endpoints.into(),
            rules: rules.into(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Generated documents in the subset: `toml` reads back the document, and so does the fast path,
    /// from text and from a reader.
    #[test]
    fn fast_path_equals_toml(doc in document(), seed in any::<u64>()) {
        let text = render(&doc, seed);
        let full = parse_with_toml(&text);
        prop_assert_eq!(full.as_ref(), Ok(&doc), "toml reads the rendering back:\n{}", text);
        let fast = parse(&text);
        prop_assert_eq!(fast.as_ref(), Some(&doc), "fast path:\n{}", text);
        let streamed = parse_reader(std::io::BufReader::with_capacity(7, text.as_bytes()));
        prop_assert_eq!(streamed.as_ref(), Some(&doc), "fast path from a reader:\n{}", text);
    }

    /// Mutated renderings (a byte range replaced by a few bytes): whenever the fast path accepts the
    /// text, `toml` accepts it too and reads the same document.
    #[test]
    fn fast_path_never_disagrees(
        doc in document(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..4,
        insert in prop::sample::select(vec![
            "", " ", "\t", "\n", "\r", "\r\n", "#", "=", "\"", "'", "\\", "\\u", "\\U0001", "[", "]",
            "[[", "]]", ",", ".", "_", "-", "+", "0", "1", "x", "e", "true", "{", "}", "\u{0}",
            "\u{7f}", "é", "\"\"\"", "'''", "inf", "0x1", "1979-05-27",
        ]),
    ) {
        let text = render(&doc, seed);
        let mut bytes = text.into_bytes();
        let i = at.index(bytes.len() + 1);
        let j = (i + cut).min(bytes.len());
        bytes.splice(i..j, insert.bytes());
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        if let Some(fast) = parse(&text) {
            let full = parse_with_toml(&text);
            prop_assert_eq!(full.as_ref(), Ok(&fast), "fast path accepted:\n{:?}", text);
        }
        let streamed = parse_reader(text.as_bytes());
        prop_assert_eq!(streamed, parse(&text), "reader and text disagree:\n{:?}", text);
    }
}

const BASE: &str = r#"[gateway]
underlay_ip = "198.18.0.254"

[[segment]]
vni = 100
identity = "vni"
tenant = "acme"

[[tenant]]
name = "acme"
id = 10

[[endpoint]]
tenant = "acme"
ip = "198.19.0.1"
mac = "02:00:00:00:0a:01"
vtep = "198.18.0.1"
vni = 100
"#;

#[test]
fn base_is_on_the_fast_path() {
    let doc = parse(BASE).expect("the subset");
    assert_eq!(Ok(&doc), parse_with_toml(BASE).as_ref());
    assert_eq!(Document::from_toml(BASE, "t.toml").unwrap(), doc);
}

/// Valid TOML outside the subset: the fast path declines, loading still succeeds, and to the same
/// document `toml` reads.
#[test]
fn unsupported_syntax_falls_back() {
    let cases = [
        // Inline table.
        BASE.replace(
            "underlay_ip = \"198.18.0.254\"",
            "underlay_ip = \"198.18.0.254\"\nflow_timeouts = { tcp = 5, udp = 7 }",
        ),
        // Multi-line array.
        BASE.replace(
            "id = 10",
            "id = 10\nvteps = [\n  \"198.18.0.1\",\n  \"198.18.0.2\", # b\n]",
        ),
        // Dotted keys, at the root and in a table.
        BASE.replace("[gateway]\nunderlay_ip", "gateway.underlay_ip"),
        BASE.replace(
            "underlay_ip = \"198.18.0.254\"",
            "underlay_ip = \"198.18.0.254\"\nflow_timeouts.tcp = 5",
        ),
        BASE.replace(
            "[[tenant]]\nname = \"acme\"",
            "[[tenant]]\nname = \"acme\"\n\"address_space\" = \"a\"",
        ),
        // Quoted keys, other integer forms, multi-line strings, a later super-table.
        BASE.replace("vni = 100\nidentity", "\"vni\" = 100\nidentity"),
        BASE.replace("vni = 100\nidentity", "vni = 0x64\nidentity"),
        BASE.replace("vni = 100\nidentity", "vni = 0o144\nidentity"),
        BASE.replace("name = \"acme\"", "name = \"\"\"acme\"\"\""),
        BASE.replace("name = \"acme\"", "name = '''acme'''"),
        BASE.replace(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"",
            "[gateway.flow_timeouts]\ntcp = 9\n\n[gateway]\nunderlay_ip = \"198.18.0.254\"",
        ),
        // An array of inline tables; a dotted header with spaces.
        format!(
            "tenant = [{{ name = \"acme\", id = 10 }}]\n{}",
            BASE.replace("[[tenant]]\nname = \"acme\"\nid = 10\n", "")
        ),
        BASE.replace(
            "underlay_ip = \"198.18.0.254\"\n",
            "underlay_ip = \"198.18.0.254\"\n[gateway . flow_timeouts]\ntcp = 1\n",
        ),
    ];
    for text in &cases {
        assert_eq!(parse(text), None, "the fast path declines:\n{text}");
        let full = parse_with_toml(text).unwrap_or_else(|e| panic!("valid TOML: {e}\n{text}"));
        let doc = Document::from_toml(text, "t.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(doc, full, "{text}");
    }
    let ft = Document::from_toml(&cases[0], "t.toml").unwrap();
    assert_eq!(ft.gateway.flow_timeouts.and_then(|f| f.udp), Some(7));
}

/// Errors keep the full parser's wording and positions (the fast path declines; `toml` words them).
#[test]
fn errors_keep_their_lines() {
    let cases: [(String, &str, &str); 8] = [
        (
            BASE.replace("vni = 100\nidentity", "vni = \"x\"\nidentity"),
            "t.toml:5:",
            "invalid type",
        ),
        (
            BASE.replace("id = 10", "id = 10\ncolour = \"red\""),
            "t.toml:12:",
            "colour",
        ),
        (
            BASE.replace("id = 10", "id = 10\nid = 11"),
            "t.toml:12:",
            "duplicate key",
        ),
        (
            BASE.replace("id = 10", "id = -1"),
            "t.toml:11:",
            "invalid value",
        ),
        (
            BASE.replace("identity = \"vni\"", "identity = \"VNI\""),
            "t.toml:6:",
            "unknown variant",
        ),
        (
            BASE.replace("mac = \"02:00:00:00:0a:01\"", "mac = \"02:00\""),
            "t.toml:16:",
            "six octets",
        ),
        (
            BASE.replace("[gateway]", "[gateway]\n[gateway]"),
            "t.toml:2:",
            "invalid table header",
        ),
        (
            BASE.replace("name = \"acme\"", "name = \"ac\\qme\""),
            "t.toml:10:",
            "escape",
        ),
    ];
    for (text, at, what) in &cases {
        assert_eq!(parse(text), None, "{text}");
        let e = Document::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with(at) && e.contains(what), "{e}\n---\n{text}");
    }
}

#[test]
fn validation_issues_keep_their_lines() {
    let text = BASE.replace("tenant = \"acme\"\nip", "tenant = \"nobody\"\nip");
    assert!(parse(&text).is_some(), "valid TOML in the subset");
    let ConfigError::Invalid { issues, .. } = Document::from_toml(&text, "t.toml").unwrap_err()
    else {
        panic!("an invalid document")
    };
    assert!(issues
        .iter()
        .any(|i| i.path == "endpoint[0].tenant" && i.line == Some(14)));
}

#[test]
fn load_reads_files_on_both_paths() {
    let dir = std::env::temp_dir().join(format!("joypath-fastload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(Document::load(&good).unwrap(), parse(BASE).unwrap());

    let exotic = dir.join("exotic.toml");
    let text = BASE.replace("vni = 100\nidentity", "vni = 0x64\nidentity");
    std::fs::write(&exotic, &text).unwrap();
    assert_eq!(Document::load(&exotic).unwrap().segments[0].vni, 100);

    let invalid = dir.join("invalid.toml");
    std::fs::write(&invalid, BASE.replace("id = 10", "id = 0")).unwrap();
    let ConfigError::Invalid { issues, file } = Document::load(&invalid).unwrap_err() else {
        panic!("an invalid document")
    };
    assert!(file.ends_with("invalid.toml"));
    assert!(issues
        .iter()
        .any(|i| i.path == "tenant[0].id" && i.line == Some(11)));

    let e = Document::load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e}");

    let latin1 = dir.join("latin1.toml");
    std::fs::write(
        &latin1,
        b"[gateway]\nunderlay_ip = \"198.18.0.254\" # \xe9\n",
    )
    .unwrap();
    let e = Document::load(&latin1).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
