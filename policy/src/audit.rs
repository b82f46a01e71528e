//! The reachability audit: which tenant may open traffic to which, on what, decided by which rule —
//! computed from a compiled table with the very verdict semantics of the hot path, as data or DOT.

use crate::document::Proto;
use crate::table::{Table, TenantIdx};
use serde::Serialize;

/// One allowed class of traffic from a tenant to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub from: String,
    pub to: String,
    /// `tcp`, `udp`, `icmp`, `other` (any other IP protocol) or `any` (all of them).
    pub proto: String,
    /// Destination ports for tcp/udp ("443", "8000-8080", "0-65535").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// The deciding rule's index in the document; `None`: the default intra-tenant allow.
    pub rule: Option<u32>,
    /// The deciding rule's name; `None`: the default intra-tenant allow.
    pub rule_name: Option<String>,
    /// The deciding rule has CIDRs: only those inner addresses are allowed.
    pub conditional: bool,
}

/// Who may reach whom, at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    pub version: u64,
    pub at: String,
    pub reach: Vec<Reach>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Tcp,
    Udp,
    Icmp,
    Other,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Tcp => "tcp",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::Other => "other",
        }
    }
    fn matched_by(self, p: Proto) -> bool {
        matches!(
            (p, self),
            (Proto::Any, _)
                | (Proto::Tcp, Class::Tcp)
                | (Proto::Udp, Class::Udp)
                | (Proto::Icmp, Class::Icmp)
        )
    }
}

fn ports_str((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// Computes the reachability of every tenant pair that any rule (or the intra-tenant default) connects.
/// With wildcard rules every pair of live tenants is examined.
pub fn reachability(t: &Table, now: i64) -> Reachability {
    let live: Vec<TenantIdx> = t
        .tenants()
        .filter(|(_, e)| e.live)
        .map(|(i, _)| i)
        .collect();
    let mut pairs: Vec<(TenantIdx, TenantIdx)> = live.iter().map(|&i| (i, i)).collect();
    if t.has_wildcards() {
        for &a in &live {
            for &b in &live {
                if a != b {
                    pairs.push((a, b));
                }
            }
        }
    } else {
        pairs.extend(t.rule_pairs().filter(|(a, b)| a != b));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut reach = Vec::new();
    for (s, d) in pairs {
        audit_pair(t, s, d, now, &mut reach);
    }
    for r in &mut reach {
        r.rule_name = r
            .rule
            .map(|i| crate::names::rule_name(t.document(), i as usize));
    }
    Reachability {
        version: t.version(),
        at: crate::time::format_rfc3339(now),
        reach,
    }
}

fn audit_pair(t: &Table, s: TenantIdx, d: TenantIdx, now: i64, out: &mut Vec<Reach>) {
    // Rules in force, in decision order: priority descending, deny first on ties.
    let mut rules: Vec<_> = t
        .forward_rules(s, d)
        .filter(|r| r.6 <= now && now <= r.7)
        .collect();
    rules.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)));
    let from = t.tenant(s).name.to_string();
    let to = t.tenant(d).name.to_string();
    // Decide one elementary class of traffic: (allow, rule, conditional).
    let decide = |class: Class, port: Option<u16>| -> (bool, Option<u32>, bool) {
        for &(idx, allow, _, proto, ports, cidrs, _, _) in &rules {
            if !class.matched_by(proto) {
                continue;
            }
            if let Some(p) = port {
                if !(ports.0..=ports.1).contains(&p) {
                    continue;
                }
            }
            if cidrs && !allow {
                // A deny limited to some addresses does not close the class as a whole.
                continue;
            }
            return (allow, Some(idx), cidrs);
        }
        (s == d, None, false)
    };
    let mut found: Vec<Reach> = Vec::new();
    for class in [Class::Tcp, Class::Udp] {
        let mut cuts: Vec<u32> = vec![0, 65536];
        for r in &rules {
            if class.matched_by(r.3) {
                cuts.push(u32::from(r.4 .0));
                cuts.push(u32::from(r.4 .1) + 1);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut run: Option<((u16, u16), Option<u32>, bool)> = None;
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
            let (allow, rule, cond) = decide(class, Some(lo));
            match (&mut run, allow) {
                (Some((range, r, c)), true) if *r == rule && *c == cond => range.1 = hi,
                _ => {
                    if let Some((range, r, c)) = run.take() {
                        found.push(reach(&from, &to, class.name(), Some(range), r, c));
                    }
                    if allow {
                        run = Some(((lo, hi), rule, cond));
                    }
                }
            }
        }
        if let Some((range, r, c)) = run {
            found.push(reach(&from, &to, class.name(), Some(range), r, c));
        }
    }
    for class in [Class::Icmp, Class::Other] {
        let (allow, rule, cond) = decide(class, None);
        if allow {
            found.push(reach(&from, &to, class.name(), None, rule, cond));
        }
    }
    // Everything allowed by one decision: say "any".
    let full = |p: &str| {
        found
            .iter()
            .any(|r| r.proto == p && r.ports.as_deref().is_none_or(|x| x == "0-65535"))
    };
    if found.len() == 4
        && ["tcp", "udp", "icmp", "other"].iter().all(|p| full(p))
        && found
            .iter()
            .all(|r| r.rule == found[0].rule && r.conditional == found[0].conditional)
    {
        let mut any = found[0].clone();
        any.proto = "any".into();
        any.ports = None;
        found = vec![any];
    }
    out.extend(found);
}

fn reach(
    from: &str,
    to: &str,
    proto: &str,
    ports: Option<(u16, u16)>,
    rule: Option<u32>,
    conditional: bool,
) -> Reach {
    Reach {
        from: from.to_string(),
        to: to.to_string(),
        proto: proto.to_string(),
        ports: ports.map(ports_str),
        rule,
        rule_name: None,
        conditional,
    }
}

fn dot_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Reachability {
    /// A Graphviz digraph meant to be read: one edge per tenant pair, labelled compactly with what may
    /// pass (`tcp 443, 8000-8080 · udp 53`) and by which rules; solid green where every address may,
    /// dashed orange where only some addresses (the rules have CIDRs) may, a legend; intra-tenant
    /// traffic allowed by default draws no self-loop — a tenant whose own traffic rules restrict is
    /// marked on its node instead.
    pub fn to_dot(&self) -> String {
        use std::collections::BTreeMap;
        let mut s = format!(
            "digraph reachability {{\n  label=\"joypath policy v{} at {}\";\n  labelloc=t;\n  rankdir=LR;\n  \
             node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
            self.version,
            dot_str(&self.at)
        );
        // Tenants in order of appearance; intra-tenant restrictions.
        let mut nodes: Vec<&str> = Vec::new();
        let mut pairs: BTreeMap<(&str, &str), Vec<&Reach>> = BTreeMap::new();
        for r in &self.reach {
            for n in [r.from.as_str(), r.to.as_str()] {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
            pairs.entry((&r.from, &r.to)).or_default().push(r);
        }
        for n in &nodes {
            let own = pairs.get(&(*n, *n));
            let open = own.is_some_and(|v| {
                v.len() == 1 && v[0].proto == "any" && v[0].rule.is_none() && !v[0].conditional
            });
            if open {
                s.push_str(&format!("  \"{}\";\n", dot_str(n)));
            } else {
                s.push_str(&format!(
                    "  \"{}\" [label=\"{}\\nown traffic restricted\", color=gray40];\n",
                    dot_str(n),
                    dot_str(n)
                ));
            }
        }
        for ((from, to), items) in &pairs {
            // Default intra-tenant allows are not drawn.
            let items: Vec<&&Reach> = items
                .iter()
                .filter(|r| !(from == to && r.rule.is_none()))
                .collect();
            if items.is_empty() {
                continue;
            }
            let mut by_proto: Vec<(String, Vec<String>)> = Vec::new();
            for r in &items {
                let part = match (&r.ports, r.conditional) {
                    (Some(p), c) if p != "0-65535" => format!("{p}{}", if c { "*" } else { "" }),
                    (_, true) => "*".to_string(),
                    _ => String::new(),
                };
                match by_proto.iter_mut().find(|(p, _)| *p == r.proto) {
                    Some((_, v)) => v.push(part),
                    None => by_proto.push((r.proto.clone(), vec![part])),
                }
            }
            let what: Vec<String> = by_proto
                .into_iter()
                .map(|(p, parts)| {
                    let parts: Vec<String> = parts.into_iter().filter(|x| !x.is_empty()).collect();
                    if parts.is_empty() {
                        p
                    } else if parts.iter().all(|x| x == "*") {
                        format!("{p}*")
                    } else {
                        format!("{p} {}", parts.join(", "))
                    }
                })
                .collect();
            let mut rules: Vec<&str> = Vec::new();
            for r in &items {
                let n = r.rule_name.as_deref().unwrap_or("default");
                if !rules.contains(&n) {
                    rules.push(n);
                }
            }
            let rules_line = if rules.len() <= 2 {
                rules.join(", ")
            } else {
                format!("{}, {} +{} more", rules[0], rules[1], rules.len() - 2)
            };
            let all_cond = items.iter().all(|r| r.conditional);
            let some_cond = items.iter().any(|r| r.conditional);
            let style = if all_cond {
                "color=darkorange, fontcolor=darkorange, style=dashed"
            } else if some_cond {
                "color=darkgreen, fontcolor=darkorange"
            } else {
                "color=darkgreen, fontcolor=darkgreen"
            };
            s.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\\n{}\", tooltip=\"{}\", {}];\n",
                dot_str(from),
                dot_str(to),
                dot_str(&what.join(" · ")),
                dot_str(&rules_line),
                dot_str(&rules.join(", ")),
                style
            ));
        }
        s.push_str(
            "  subgraph cluster_legend {\n    label=\"legend\"; fontsize=10; color=gray70;\n    \
             node [shape=plaintext, style=\"\", fontsize=9];\n    \
             la [label=\"A\"]; lb [label=\"B\"]; lc [label=\"A\"]; ld [label=\"B\"];\n    \
             la -> lb [label=\"A may open to B\\n(proto ports · rules)\", color=darkgreen, fontcolor=darkgreen, fontsize=9];\n    \
             lc -> ld [label=\"only some addresses (CIDR rules, *)\", color=darkorange, fontcolor=darkorange, style=dashed, fontsize=9];\n  }\n",
        );
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(
        from: &str,
        to: &str,
        proto: &str,
        ports: Option<&str>,
        rule: Option<u32>,
        c: bool,
    ) -> Reach {
        Reach {
            from: from.into(),
            to: to.into(),
            proto: proto.into(),
            ports: ports.map(str::to_string),
            rule,
            rule_name: rule.map(|i| format!("r{i}")),
            conditional: c,
        }
    }

    #[test]
    fn dot_has_one_edge_per_pair_no_default_self_loops_and_a_legend() {
        let a = Reachability {
            version: 3,
            at: "2026-06-01T00:00:00Z".into(),
            reach: vec![
                r("a", "a", "any", None, None, false),
                r("b", "b", "tcp", Some("0-22"), None, false),
                r("b", "b", "tcp", Some("24-65535"), None, false),
                r("a", "b", "tcp", Some("443"), Some(1), false),
                r("a", "b", "tcp", Some("8000-8080"), Some(2), false),
                r("a", "b", "udp", Some("53"), Some(3), true),
                r("b", "a", "any", None, Some(4), true),
            ],
        };
        let d = a.to_dot();
        let edges: Vec<&str> = d
            .lines()
            .filter(|l| {
                l.contains("->") && !l.contains("label=\"A may") && !l.contains("only some")
            })
            .collect();
        assert_eq!(edges.len(), 2, "{d}");
        assert!(edges[0].contains("tcp 443, 8000-8080 · udp 53*"), "{d}");
        assert!(edges[0].contains("r1, r2 +1 more"), "{d}");
        assert!(
            edges[1].contains("style=dashed") && edges[1].contains("any*"),
            "{d}"
        );
        assert!(
            !d.contains("\"a\" -> \"a\"") && !d.contains("\"b\" -> \"b\""),
            "{d}"
        );
        assert!(d.contains("own traffic restricted") && d.contains("cluster_legend"));
    }
}
