//! Files that `torch.load(weights_only=False)` reads differently from a naive reader:
//! `tests/python/make_torch_differentials.py` writes each (polyglots, zip directory and
//! name-matching differentials, a TorchScript archive, payloads in pickles a strict
//! parser calls corrupt) and checks with real PyTorch, in a sandboxed subprocess, that
//! its payload runs. tvck must flag every one (exit 1, a finding naming the trick) and run
//! none.
//!
//! Needs the project's Python environment: `scripts/test` runs it (`#[ignore]`d in a plain
//! `cargo test`).

use crate::common;

use common::{python_cases, tvck};
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn torch_differentials_are_flagged_and_nothing_runs() {
    let (dir, manifest) = python_cases(
        "make_torch_differentials.py",
        "torch-differentials",
        " (a payload did not run under torch?)",
    );
    let manifest: BTreeMap<String, Json> = serde_json::from_value(manifest).unwrap();
    assert!(manifest.len() >= 10, "{:?}", manifest.keys());
    let work = tempfile::tempdir().unwrap();
    for (file, case) in &manifest {
        assert_eq!(case["payload_ran_under_torch"], true, "{file}");
        std::fs::copy(dir.join(file), work.path().join(file)).unwrap();
    }
    // scan: every file flagged, with a finding that names its trick.
    let o = tvck(&["scan", ".", "--json"], work.path());
    assert_eq!(o.status.code(), Some(1), "findings give exit code 1");
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), manifest.len());
    for (file, case) in &manifest {
        let f = files
            .iter()
            .find(|f| f["path"] == file.as_str())
            .unwrap_or_else(|| panic!("{file} not scanned"));
        let words = case["finding"].as_str().unwrap();
        let labels = f["unsafe_globals"].as_array().unwrap();
        assert!(!labels.is_empty(), "{file} is not flagged unsafe: {f}");
        let messages = f["findings"].to_string();
        assert!(
            messages.contains(words),
            "{file}: no finding names `{words}`: {f}"
        );
    }
    assert_eq!(
        v["totals"]["unsafe_files"].as_u64(),
        Some(manifest.len() as u64),
        "the summary counts every payload"
    );
    // inspect flags each one too (exit 1), whether or not the rest of it parses.
    for file in manifest.keys() {
        let o = tvck(&["inspect", file], work.path());
        assert_eq!(o.status.code(), Some(1), "{file}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("UNSAFE"), "{file}: {text}");
        assert!(!text.contains("Findings:\n  none"), "{file}: {text}");
    }
    // diff of a flagged file with itself: equal weights, still unsafe.
    let o = tvck(&["diff", "protocol0.pt", "protocol0.pt"], work.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("UNSAFE A"));
    assert!(
        !work.path().join("tvck-pwned.txt").exists(),
        "a payload ran under tvck!"
    );
}
