//! Rule names: every rule has a unique name by which operations, traces, audits and counters refer to
//! it. A rule without one in the document gets one generated from what it matches —
//! `acme-globex-tcp-443`, `any-shared` — with `-2`, `-3`… when that is taken.

use crate::document::{Document, Rule, ANY_TENANT};
use hashbrown::HashSet;

/// The name a rule without one would be given, before disambiguation.
pub fn base_name(r: &Rule) -> String {
    let side = |t: &str| {
        if t == ANY_TENANT {
            "any".to_string()
        } else {
            t.to_string()
        }
    };
    let mut n = format!("{}-{}", side(&r.from), side(&r.to));
    if let Some(p) = r.proto.filter(|p| *p != crate::Proto::Any) {
        n.push('-');
        n.push_str(p.as_str());
    }
    if let Some(ports) = &r.ports {
        n.push('-');
        n.push_str(ports);
    }
    if r.action == crate::Action::Deny {
        n.push_str("-deny");
    }
    n
}

/// A name for `r` not in `taken`.
pub fn fresh_name(r: &Rule, taken: &dyn Fn(&str) -> bool) -> String {
    let base = base_name(r);
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|k| format!("{base}-{k}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}

/// A name for `r` that neither `names` nor `taken` holds. The base name is tried first, with one
/// pass of comparisons that mostly stop at the length; when it is taken, one pass gathers the names
/// a suffixed one could collide with (they all start with its base), however many suffixes are
/// tried. For one rule added to a big list, where a set of every name would cost more.
pub fn fresh_name_among<'a>(
    r: &Rule,
    names: impl Iterator<Item = &'a str> + Clone,
    taken: &dyn Fn(&str) -> bool,
) -> String {
    let base = base_name(r);
    if !taken(&base) && !names.clone().any(|n| n == base) {
        return base;
    }
    let near: HashSet<&str> = names.filter(|n| n.starts_with(base.as_str())).collect();
    fresh_name(r, &|n| near.contains(n) || taken(n))
}

/// Gives every unnamed rule a generated name, unique among all rules' names. Deterministic: the same
/// document always gets the same names.
pub fn name_rules(doc: &mut Document) {
    let unnamed: Vec<usize> = (doc.rules.iter().enumerate())
        .filter(|(_, r)| r.name.is_none())
        .map(|(i, _)| i)
        .collect();
    name_rules_with(doc, unnamed, 16)
}

/// [`name_rules`] for `doc` made by an edit of `base`, whose rules all have names: only the rules
/// the edit wrote (the chunks of the rule list `doc` does not share with `base`) are looked at.
pub fn name_new_rules(doc: &mut Document, base: &Document) {
    let unnamed: Vec<usize> = (doc.rules.unshared_with(&base.rules).into_iter())
        .flatten()
        .filter(|&i| doc.rules[i].name.is_none())
        .collect();
    name_rules_with(doc, unnamed, 16)
}

/// Names the rules `unnamed` (in order), looking the taken names up rule by rule when there are
/// at most `few` of them.
fn name_rules_with(doc: &mut Document, unnamed: Vec<usize>, few: usize) {
    if unnamed.is_empty() {
        return;
    }
    // Named in order, each name taken once given; only the chunks of the rules named are copied
    // (a document's sections share their chunks with the version they came from).
    let names: Vec<String> = {
        let mut given: HashSet<String> = HashSet::new();
        let mut names = Vec::with_capacity(unnamed.len());
        if unnamed.len() <= few {
            // A rule or a few added to a big list: looked up rule by rule, instead of a set of
            // every name.
            for &i in &unnamed {
                let all = doc.rules.iter().filter_map(|r| r.name.as_deref());
                let n = fresh_name_among(&doc.rules[i], all, &|n| given.contains(n));
                given.insert(n.clone());
                names.push(n);
            }
        } else {
            let taken: HashSet<&str> = doc.rules.iter().filter_map(|r| r.name.as_deref()).collect();
            for &i in &unnamed {
                let n = fresh_name(&doc.rules[i], &|n| taken.contains(n) || given.contains(n));
                given.insert(n.clone());
                names.push(n);
            }
        }
        names
    };
    for (i, n) in unnamed.into_iter().zip(names) {
        if let Some(r) = doc.rules.get_mut(i) {
            r.name = Some(n);
        }
    }
}

/// The display name of rule `index` of a document: its name, or `#index` if it has none.
pub fn rule_name(doc: &Document, index: usize) -> String {
    doc.rules
        .get(index)
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| format!("#{index}"))
}

/// What is wrong with a rule name, if anything.
pub fn name_problem(n: &str) -> Option<String> {
    if n.is_empty() || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some(format!("{n:?}: a rule name is non-empty, without spaces"))
    } else if n.parse::<u64>().is_ok() {
        Some(format!(
            "{n:?}: a rule name is not a number (numbers are rule indexes)"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str, name: Option<&str>) -> Rule {
        Rule {
            name: name.map(str::to_string),
            from: from.into(),
            to: to.into(),
            proto: Some(crate::Proto::Tcp),
            ports: Some("443".into()),
            from_cidr: None,
            to_cidr: None,
            action: crate::Action::Allow,
            priority: 0,
            not_before: None,
            not_after: None,
            owner: None,
        }
    }

    #[test]
    fn generated_names_are_unique_and_keep_explicit_ones() {
        let mut d = Document::from_toml(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[tenant]]\nname=\"a\"\nid=1\n[[tenant]]\nname=\"b\"\nid=2\n",
            "t",
        )
        .unwrap();
        d.rules = vec![
            rule("a", "b", None),
            rule("a", "b", Some("a-b-tcp-443")),
            rule("a", "b", None),
            rule("*", "b", None),
        ]
        .into();
        name_rules(&mut d);
        let names: Vec<&str> = d.rules.iter().map(|r| r.name.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "a-b-tcp-443-2",
                "a-b-tcp-443",
                "a-b-tcp-443-3",
                "any-b-tcp-443"
            ]
        );
        let again = {
            let mut e = d.clone();
            name_rules(&mut e);
            e
        };
        assert_eq!(again, d);
        // Both ways of looking the taken names up give the same names.
        let mut many = d.clone();
        many.rules = (0..40)
            .map(|k| match k % 4 {
                0 => rule("a", "b", None),
                1 => rule("*", "b", Some(&format!("any-b-tcp-443-{}", k / 4 + 2))),
                2 => rule("*", "b", None),
                _ => rule("b", "a", None),
            })
            .collect::<Vec<_>>()
            .into();
        let (mut by_rule, mut by_set) = (many.clone(), many.clone());
        let unnamed: Vec<usize> = (0..40).filter(|k| k % 4 != 1).collect();
        name_rules_with(&mut by_rule, unnamed.clone(), usize::MAX);
        name_rules_with(&mut by_set, unnamed, 0);
        assert_eq!(by_rule, by_set);
        let mut names: Vec<&str> = by_set
            .rules
            .iter()
            .map(|r| r.name.as_deref().unwrap())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 40, "unique");
        // A rule inserted into a named list: only it is looked at, and it gets the name the whole
        // pass would give it.
        let mut inserted = by_set.clone();
        inserted.rules.insert(17, rule("a", "b", None));
        let mut whole = inserted.clone();
        name_new_rules(&mut inserted, &by_set);
        name_rules(&mut whole);
        assert_eq!(inserted, whole);
        assert_eq!(inserted.rules[17].name.as_deref(), Some("a-b-tcp-443-11"));
        assert!(name_problem("12").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem("web-in").is_none());
    }
}
