//! The allow-list tested like an attacker would: `tests/python/make_attacks.py` writes one
//! file per known way around pickle scanners (callables reached through allow-listed
//! reconstructors, BUILD/`__setstate__`, INST/OBJ, the EXT registry, persistent ids,
//! protocol 0 text, getattr chains, module spellings, zip and legacy tar tricks) and
//! checks with real PyTorch, in a sandboxed process, that each payload runs. tvck must
//! flag every one (exit 1, a finding naming the global or the trick, checked against the
//! manifest) and run none: not `scan`, not `inspect`, not `check --auto-fix`, not
//! `Checkpoint::open`.
//!
//! Needs the project's Python environment: `scripts/test` runs it.

use crate::common;

use common::{python_cases, root, tvck};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use tvck::format::Checkpoint;

/// Every entry under `dir` (recursively), but the files the test put there.
fn new_entries(dir: &Path, ours: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let rel = e.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if !ours.contains(&rel.as_str()) {
            out.push(rel);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn every_attack_is_flagged_and_none_runs() {
    let (dir, manifest) = python_cases(
        "make_attacks.py",
        "attack-corpus",
        " (a payload did not run under torch?)",
    );
    let manifest: BTreeMap<String, Json> = serde_json::from_value(manifest).unwrap();
    assert!(manifest.len() >= 30, "{:?}", manifest.keys());
    let executed = manifest.values().filter(|c| c["executed"] == true).count();
    assert!(executed >= 30, "only {executed} cases ran under torch");
    for (file, case) in &manifest {
        let skipped = case.get("skipped").and_then(Json::as_str);
        match skipped {
            None => assert_eq!(case["executed"], true, "{file}"),
            Some(why) => {
                assert_eq!(case["executed"], false, "{file}");
                assert!(
                    why.starts_with("not executable under torch 2.13: "),
                    "{file}"
                );
            }
        }
    }

    // The library: every case that torch can read is unsafe, naming what the manifest says.
    for (file, case) in &manifest {
        let names: Vec<&str> = case["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        match Checkpoint::open(dir.join(file)) {
            Ok(c) => {
                assert!(c.has_unsafe_globals(), "{file}: {:?}", c.findings);
                let text: String = c.findings.iter().map(|f| f.message() + "\n").collect();
                for n in &names {
                    assert!(text.contains(n), "{file}: no finding names `{n}`: {text}");
                }
            }
            Err(e) => {
                assert!(case.get("skipped").is_some(), "{file}: {e}");
                for n in &names {
                    assert!(e.to_string().contains(n), "{file}: {e}");
                }
            }
        }
    }

    // scan: exit 1, every file flagged with a finding naming the global or trick.
    let work = tempfile::tempdir().unwrap();
    let files: Vec<&str> = manifest.keys().map(String::as_str).collect();
    for f in &files {
        std::fs::copy(dir.join(f), work.path().join(f)).unwrap();
    }
    let o = tvck(&["scan", ".", "--json"], work.path());
    assert_eq!(o.status.code(), Some(1), "findings give exit code 1");
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    let scanned = v["files"].as_array().unwrap();
    assert_eq!(scanned.len(), manifest.len());
    for (file, case) in &manifest {
        let f = scanned
            .iter()
            .find(|f| f["path"] == file.as_str())
            .unwrap_or_else(|| panic!("{file} not scanned"));
        let record = f.to_string();
        let record_text: String = serde_json::from_str::<Json>(&record)
            .map(|j| format!("{j:#}"))
            .unwrap();
        for n in case["names"].as_array().unwrap() {
            let n = n.as_str().unwrap();
            let escaped = serde_json::to_string(n).unwrap();
            let escaped = escaped.trim_matches('"');
            assert!(
                record_text.contains(n) || record.contains(escaped),
                "{file}: `{n}` not named: {record}"
            );
        }
        if case.get("skipped").is_none() {
            assert!(
                !f["unsafe_globals"].as_array().unwrap().is_empty(),
                "{file} is not flagged unsafe: {record}"
            );
        }
        // One file at a time too: exit 1.
        let o = tvck(&["scan", file], work.path());
        assert_eq!(o.status.code(), Some(1), "scan {file}");
    }

    // inspect: exit 1 on each, nothing run.
    for file in &files {
        let o = tvck(&["inspect", file], work.path());
        assert_eq!(o.status.code(), Some(1), "inspect {file}");
    }

    // check --auto-fix on a config whose frozen checkpoint is each case.
    let template =
        std::fs::read_to_string(root().join("tests/fixtures/configs/train_v5_12_4_partial.yaml"))
            .unwrap();
    for (file, case) in &manifest {
        let cfg = template.replace(
            "path: ../../../checkpoints/v5_12_4/best_Q.pt",
            &format!("path: {file}"),
        );
        assert!(cfg.contains(&format!("path: {file}")));
        std::fs::write(work.path().join("cfg.yaml"), &cfg).unwrap();
        let o = tvck(&["check", "cfg.yaml", "--auto-fix"], work.path());
        assert_eq!(o.status.code(), Some(1), "check {file}: {o:?}");
        if case.get("skipped").is_none() {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains(&format!("{file} contains unsafe pickle globals")),
                "check {file}: {out}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(work.path().join("cfg.yaml")).unwrap(),
            cfg,
            "the config stays as it was"
        );
    }

    let mut ours = files.clone();
    ours.push("cfg.yaml");
    assert_eq!(
        new_entries(work.path(), &ours),
        Vec::<String>::new(),
        "a payload ran under tvck!"
    );
    assert_eq!(
        new_entries(&dir, &{
            let mut m = files.clone();
            m.push("manifest.json");
            m
        }),
        Vec::<String>::new(),
        "a payload ran in the corpus folder!"
    );
}
