//! The library's module graph is a DAG that follows the flow lib.rs documents (format →
//! fingerprint / arch → command engines → report → cli): read from the sources, every
//! `crate::…` and `super::…` path of non-test code is an edge between modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`migrate::plan`) → source text without its test module.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(&src) {
        let e = e.unwrap();
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("rs") {
            continue;
        }
        let rel = p.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "main" || parts[0] == "cli" || parts[0] == "lib" {
            continue; // the binary, and the crate root (re-exports only)
        }
        if parts.last().map(String::as_str) == Some("mod") {
            parts.pop();
        }
        if parts.last().map(String::as_str) == Some("tests") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(parts.join("::"), code);
    }
    out
}

/// The longest known module that `path` (`a::b::Item`) names.
fn resolve(known: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        let here: Vec<String> = m.split("::").map(String::from).collect();
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let rest = &code[i..];
            let (base, skip): (Vec<String>, usize) = if rest.starts_with("crate::") {
                (Vec::new(), 7)
            } else if rest.starts_with("super::")
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
            {
                // `super::` from a file module means its parent; `super::super::` goes further.
                let mut base = here.clone();
                let mut skip = 0;
                while code[i + skip..].starts_with("super::") {
                    base.pop();
                    skip += 7;
                }
                (base, skip)
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            };
            let tail: String = code[i + skip..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut path = base;
            path.extend(tail.split("::").filter(|s| !s.is_empty()).map(String::from));
            if let Some(target) = resolve(&known, &path) {
                let related = target.starts_with(&format!("{m}::"))
                    || m.starts_with(&format!("{target}::"))
                    || target == *m;
                if !related {
                    graph.entry(m.clone()).or_default().insert(target);
                }
            }
            i += skip + tail.len().max(1);
        }
    }
    graph
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

#[test]
fn the_library_has_no_module_cycle() {
    let graph = edges();
    // The reader sees the edges it should (so an empty result means something).
    for (from, to) in [
        ("scan", "discover"),
        ("migrate::convert", "migrate::plan"),
        ("report::inspect", "inspect"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains(to)),
            "{from} → {to} not seen: {:?}",
            graph.get(from)
        );
    }
    // A cycle exists iff some module reaches itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(trail.join(" → ") + " → " + start);
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    // And between top-level modules (what the folders show). `report::safe`, the
    // sanitiser every layer may use, is a node of its own (it uses nothing of the crate:
    // checked here), as in the layers below.
    assert!(
        graph.get("report::safe").is_none_or(|t| t.is_empty()),
        "report::safe uses {:?}",
        graph.get("report::safe")
    );
    let node = |m: &'_ str| -> String {
        if m == "report::safe" {
            m.to_string()
        } else {
            top(m).to_string()
        }
    };
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, ts) in &graph {
        for t in ts {
            if node(m) != node(t) {
                tops.entry(node(m)).or_default().insert(node(t));
            }
        }
    }
    for (a, bs) in &tops {
        for b in bs {
            assert!(
                !tops.get(b).is_some_and(|x| x.contains(a)),
                "top-level cycle: {a} ↔ {b}"
            );
        }
    }
}

#[test]
fn layers_point_down_the_flow() {
    // The layer of each top-level module; a module may use only lower or equal layers,
    // and `report` (presentation) is used by no library module.
    let layer = |m: &str| match m {
        "format" | "yamledit" => 0,
        "fingerprint" | "arch" | "metrics" | "discover" | "config" => 1,
        "scan" | "inspect" | "check" | "autofix" | "diff" | "migrate" | "train" | "manager"
        | "monitor" | "dashboard" => 2,
        "report" => 3,
        other => {
            panic!("module `{other}` has no layer: add it to this test and to docs/architecture.md")
        }
    };
    // `report::safe` is the sanitiser of untrusted text (it uses nothing of the crate):
    // library modules that write to a terminal or a log (monitor alerts, lineage labels) use
    // it, so it counts as layer 0.
    let layer_of = |m: &str| {
        if m == "report::safe" {
            0
        } else {
            layer(top(m))
        }
    };
    let mut wrong = Vec::new();
    for (m, ts) in edges() {
        for t in ts {
            if layer_of(&t) > layer_of(&m) {
                wrong.push(format!("{m} → {t}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges against the flow:\n{}",
        wrong.join("\n")
    );
}
