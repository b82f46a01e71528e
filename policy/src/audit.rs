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
        conditional,
    }
}

impl Reachability {
    /// A Graphviz digraph: one edge per allowed class, labelled with protocol, ports and rule.
    pub fn to_dot(&self) -> String {
        let mut s = format!(
            "digraph reachability {{\n  label=\"joypath policy v{} at {}\";\n  node [shape=box];\n",
            self.version, self.at
        );
        for r in &self.reach {
            let mut label = r.proto.clone();
            if let Some(p) = &r.ports {
                label.push(' ');
                label.push_str(p);
            }
            match r.rule {
                Some(i) => label.push_str(&format!(" (rule {i})")),
                None => label.push_str(" (default)"),
            }
            if r.conditional {
                label.push_str(" [cidr]");
            }
            s.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"{}];\n",
                r.from.replace('"', "\\\""),
                r.to.replace('"', "\\\""),
                label,
                if r.from == r.to { ", style=dashed" } else { "" }
            ));
        }
        s.push_str("}\n");
        s
    }
}
