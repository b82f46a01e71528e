//! Rules by name: which rule an operation means (`name`, or `index` as a number or a name), naming new
//! rules, and the rule part of a diff (a rule whose name stays and whose content changes is a change).

use crate::protocol::{ErrorCode, OpError};
use policy::{Document, Rule, Table};
use serde_json::{json, Value};

/// The list index of the rule named `n` in `doc`: through `table`'s name index (one probe) when
/// `table` was compiled from `doc`'s very rule list, else by reading every rule's name.
pub fn index_by_name(doc: &Document, table: Option<&Table>, n: &str) -> Option<usize> {
    match table {
        Some(t) if t.document().rules.same(&doc.rules) => t.rule_index_by_name(n),
        _ => doc.rules.iter().position(|r| r.name.as_deref() == Some(n)),
    }
}

/// The rule `args` designate: `name` (a string), or `index` (a number, or a string naming the rule).
/// `table`: one compiled from `doc`, if the caller has it (names are then looked up in its index).
pub fn rule_index(doc: &Document, table: Option<&Table>, args: &Value) -> Result<usize, OpError> {
    let by_name = |n: &str| {
        index_by_name(doc, table, n)
            .ok_or_else(|| OpError::new(ErrorCode::NotFound, format!("no rule named {n:?}")))
    };
    match (args.get("name"), args.get("index")) {
        (Some(Value::String(n)), _) => by_name(n),
        (_, Some(Value::String(n))) => match n.parse::<usize>() {
            Ok(i) => by_index(doc, i),
            Err(_) => by_name(n),
        },
        (_, Some(v)) => match v.as_u64() {
            Some(i) => by_index(doc, i as usize),
            None => Err(OpError::new(
                ErrorCode::BadArgs,
                format!("argument \"index\": a number or a rule name, not {v}"),
            )),
        },
        _ => Err(OpError::new(
            ErrorCode::BadArgs,
            "missing argument \"name\" (or \"index\")",
        )),
    }
}

/// Where `rule.add` inserts its rule: `index` when given (a non-negative integer), `None` (at the
/// end) when absent or null. An `index` of another type — a string, a negative number, a fraction, a
/// boolean — is a `bad_args`, not an append somewhere else than asked.
pub fn insert_index(args: &Value) -> Result<Option<usize>, OpError> {
    match args.get("index") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::BadArgs,
                    format!(
                        "argument \"index\": the position to insert the rule at, a non-negative integer (or absent, to append), not {v}"
                    ),
                )
            }),
    }
}

fn by_index(doc: &Document, i: usize) -> Result<usize, OpError> {
    if i < doc.rules.len() {
        Ok(i)
    } else {
        Err(OpError::new(ErrorCode::NotFound, format!("no rule {i}")))
    }
}

/// Gives `rule` a name for its place `index` in `doc` (replacing rule `index`, or appended when it is
/// past the end): the old rule's name on an update without one, else a generated one. Refuses a name
/// another rule has. `table`: one compiled from `doc`, if the caller has it (names are then looked
/// up in its index).
pub fn name_for(
    doc: &Document,
    table: Option<&Table>,
    index: usize,
    rule: &mut Rule,
) -> Result<(), OpError> {
    let indexed = table.filter(|t| t.document().rules.same(&doc.rules));
    let others = |n: &str| index_by_name(doc, indexed, n).is_some_and(|i| i != index);
    match &rule.name {
        Some(n) if others(n) => Err(OpError::new(
            ErrorCode::InvalidPolicy,
            format!("rule name {n:?} is taken by another rule"),
        )
        .with_details(json!({"issues": [{"path": "rule.name", "message": format!("rule name {n:?} is used twice")}]}))),
        Some(_) => Ok(()),
        None => {
            rule.name = match doc.rules.get(index).and_then(|r| r.name.clone()) {
                Some(old) => Some(old),
                // Each name tried is one probe of the index…
                None if indexed.is_some() => Some(policy::names::fresh_name(rule, &others)),
                // …or, without one, one pass gathers the names it could collide with.
                None => {
                    let names = (doc.rules.iter().enumerate())
                        .filter(|&(i, _)| i != index)
                        .filter_map(|(_, r)| r.name.as_deref());
                    Some(policy::names::fresh_name_among(rule, names, &|_| false))
                }
            };
            Ok(())
        }
    }
}

/// The rule part of a diff, keyed by name: added, removed, changed (`{name, from, to}`), and moved
/// (same rule, other position — the order matters only for listing).
pub fn rules_diff(old: &Document, new: &Document) -> Value {
    let name = |d: &Document, i: usize| policy::names::rule_name(d, i);
    let find = |d: &Document, n: &str| (0..d.rules.len()).find(|&i| name(d, i) == n);
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (i, r) in new.rules.iter().enumerate() {
        let n = name(new, i);
        match find(old, &n) {
            None => added.push(json!({"index": i, "name": n, "rule": r})),
            Some(j) if old.rules[j] != *r => {
                changed.push(json!({"index": i, "name": n, "from": old.rules[j], "to": r}))
            }
            Some(_) => {}
        }
    }
    let removed: Vec<Value> = old
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| find(new, &name(old, *i)).is_none())
        .map(|(i, r)| json!({"index": i, "name": name(old, i), "rule": r}))
        .collect();
    json!({"added": added, "removed": removed, "changed": changed})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: Option<&str>, port: &str) -> Rule {
        serde_json::from_value(json!({"name": name, "from": "a", "to": "b", "proto": "tcp", "ports": port, "action": "allow"}))
            .unwrap()
    }

    /// A rule added or replaced without a name gets its base name with the first free suffix (the
    /// names it could collide with are gathered in one pass, or probed in a table's name index);
    /// one replaced keeps its old name; an explicit name another rule has is refused; rules are
    /// found by name and by index alike both ways.
    #[test]
    fn a_changed_rule_gets_the_first_free_generated_name() {
        let mut d = Document::from_toml(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[tenant]]\nname=\"a\"\nid=1\n[[tenant]]\nname=\"b\"\nid=2\n",
            "t",
        )
        .unwrap();
        d.rules = vec![
            rule(Some("a-b-tcp-443"), "443"),
            rule(Some("a-b-tcp-443-2"), "443"),
            rule(Some("a-b-tcp-443-4"), "443"),
            rule(Some("a-b-tcp-80"), "80"),
        ]
        .into();
        // Alike by reading every name, and through the name index of a table compiled from `d`.
        let compiled = Table::compile(std::sync::Arc::new(d.clone()), 1, None).unwrap();
        assert!(
            compiled.document().rules.same(&d.rules),
            "the index serves `d`"
        );
        for table in [None, Some(&compiled)] {
            let mut r = rule(None, "443");
            name_for(&d, table, 4, &mut r).unwrap();
            assert_eq!(r.name.as_deref(), Some("a-b-tcp-443-3"));
            // Replacing rule 1: its own name is not taken from it, and it keeps it.
            let mut r = rule(None, "443");
            name_for(&d, table, 1, &mut r).unwrap();
            assert_eq!(r.name.as_deref(), Some("a-b-tcp-443-2"));
            let mut r = rule(None, "8080");
            name_for(&d, table, 4, &mut r).unwrap();
            assert_eq!(r.name.as_deref(), Some("a-b-tcp-8080"));
            let mut r = rule(Some("a-b-tcp-80"), "443");
            assert!(name_for(&d, table, 4, &mut r).is_err());
            assert!(name_for(&d, table, 3, &mut r).is_ok());
            let found = |args: Value| rule_index(&d, table, &args).map_err(|e| e.code);
            assert_eq!(found(json!({"name": "a-b-tcp-443-4"})), Ok(2));
            assert_eq!(found(json!({"index": "a-b-tcp-80"})), Ok(3));
            assert_eq!(found(json!({"index": 1})), Ok(1));
            assert_eq!(
                found(json!({"name": "a-b-tcp-443-3"})),
                Err(ErrorCode::NotFound)
            );
        }
    }

    /// `rule.add`'s `index`: absent or null appends, a non-negative integer inserts, anything else
    /// is `bad_args` — for a new edit. An edit of the committed history replays as it was made
    /// (earlier builds appended on such an index), so a state directory they wrote still loads.
    #[test]
    fn a_mistyped_insert_index_is_bad_args_but_replays_as_committed() {
        let d = Document::from_toml(
            "[gateway]\nunderlay_ip = \"198.18.0.254\"\n[[tenant]]\nname=\"a\"\nid=1\n[[tenant]]\nname=\"b\"\nid=2\n",
            "t",
        )
        .unwrap();
        let at = |v: Value| insert_index(&json!({ "index": v })).map_err(|e| e.code);
        assert_eq!(insert_index(&json!({})).unwrap(), None);
        assert_eq!(at(Value::Null), Ok(None));
        assert_eq!(at(json!(0)), Ok(Some(0)));
        assert_eq!(at(json!(7)), Ok(Some(7)));
        let r = json!({"from": "a", "to": "b", "action": "deny"});
        for bad in [
            json!("0"),
            json!(-1),
            json!(0.5),
            json!(true),
            json!([0]),
            json!({}),
        ] {
            assert_eq!(at(bad.clone()), Err(ErrorCode::BadArgs), "{bad}");
            let args = json!({"rule": r, "index": bad});
            let e = crate::edit::apply("rule.add", &args, &mut d.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadArgs, "{bad}");
            assert!(e.message.contains("\"index\""), "{bad}: {}", e.message);
            let mut replayed = d.clone();
            assert!(crate::edit::replay("rule.add", &args, &mut replayed).unwrap());
            assert_eq!(replayed.rules.len(), 1, "{bad}: appended, as committed");
        }
    }
}
