//! Edits of a checkpoint's non-model tree by dotted path: what a spec's entry rules
//! (`drop`, `set`) do, shared by the planner (the dry run shows the edited tree) and the
//! conversion.

use crate::format::Value;

use super::spec::EntryAction;
use super::EntryPlan;

/// Apply a step's entry rules (drop, set) to a tree.
pub(crate) fn apply_entries(root: &mut Value, entries: &[EntryPlan]) {
    for e in entries.iter().filter(|e| e.applies) {
        match &e.action {
            EntryAction::Drop => remove_path(root, &e.key),
            EntryAction::Set(v) => set_path(root, &e.key, v.clone()),
            EntryAction::Keep => {}
        }
    }
}

fn dict_mut<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    match v {
        Value::Dict(items) => items
            .iter_mut()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn parent_mut<'v>(root: &'v mut Value, path: &str) -> Option<(&'v mut Value, String)> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop()?.to_string();
    let mut at = root;
    for p in parts {
        at = dict_mut(at, p)?;
    }
    Some((at, last))
}

fn remove_path(root: &mut Value, path: &str) {
    if let Some((Value::Dict(items), last)) = parent_mut(root, path) {
        items.retain(|(k, _)| !matches!(k, Value::Str(s) if *s == last));
    }
}

pub(crate) fn set_path(root: &mut Value, path: &str, value: Value) {
    if let Some((parent, last)) = parent_mut(root, path) {
        if let Some(slot) = dict_mut(parent, &last) {
            *slot = value;
        } else if let Value::Dict(items) = parent {
            items.push((Value::Str(last), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn paths_are_set_and_removed() {
        let mut root = Value::Dict(vec![(
            s("config"),
            Value::Dict(vec![(s("model"), Value::Dict(vec![(s("name"), s("A"))]))]),
        )]);
        set_path(&mut root, "config.model.name", s("B"));
        set_path(&mut root, "config.model.layers", Value::Int(2));
        set_path(&mut root, "nothing.here", Value::Int(1));
        assert_eq!(root.get_path("config.model.name"), Some(&s("B")));
        assert_eq!(root.get_path("config.model.layers"), Some(&Value::Int(2)));
        assert!(root.get("nothing").is_none());
        remove_path(&mut root, "config.model");
        assert!(root.get_path("config.model").is_none());
    }
}
