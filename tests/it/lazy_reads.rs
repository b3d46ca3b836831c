//! Files read lazily, against real torch: `tests/python/make_lazy_cases.py` writes one
//! state dict as a safetensors file, a legacy pickle stream, a pre-1.0 tar checkpoint
//! and a torch.save zip, and tar checkpoints with long member names (GNU `././@LongLink`
//! and PAX `path` records), each loaded back with torch (and listed with Python's
//! tarfile). tvck reads the headers and pickles of these files and each tensor's bytes
//! from the file when it hashes or compares them (the memory this takes is measured by
//! scripts/bench-memory, docs/benchmarks.md): the hashes must be torch's, the four
//! layouts must fingerprint alike and diff as identical, tar member names must be
//! tarfile's, and a tar whose members are named only by long names (their headers say
//! otherwise) must be flagged.
//!
//! Needs the project's Python environment: `scripts/test` runs it (`#[ignore]`d in a plain
//! `cargo test`).

use crate::common;

use common::{python_cases, tvck};
use serde_json::Value as Json;
use std::path::Path;

const BIG: [&str; 4] = [
    "big.safetensors",
    "big_legacy.pt",
    "big_tar.pt",
    "big_zip.pt",
];

fn inspect(dir: &Path, file: &str) -> (Option<i32>, Json) {
    let o = tvck(&["inspect", file, "--json"], dir);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{file}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), v)
}

/// Every tensor of `v` (inspect --json) hashes as torch's tensor of that name.
fn assert_torch_hashes(file: &str, v: &Json, manifest: &Json) {
    let expected = manifest[file]["tensors"].as_object().unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len(), "{file}");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["sha256"], expected[name], "{file}: {name}");
    }
}

/// The member names of the legacy tar note (`… members: `a`, `b`): …`).
fn tar_names(file: &str, v: &Json) -> Vec<String> {
    let note = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["message"].as_str())
        .find(|m| m.starts_with("legacy tar checkpoint"))
        .unwrap_or_else(|| panic!("{file}: no tar note in {v}"));
    let list = note
        .split_once("members: ")
        .and_then(|(_, rest)| rest.split_once("): "))
        .unwrap()
        .0;
    list.split(", ")
        .map(|n| n.trim_matches('`').to_string())
        .collect()
}

fn kinds(v: &Json) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn lazily_read_files_hash_like_torch_and_tar_names_follow_tarfile() {
    let (dir, manifest) = python_cases("make_lazy_cases.py", "lazy-reads", "");
    let formats = [
        "safetensors",
        "torch_legacy",
        "torch_legacy_tar",
        "torch_zip",
    ];
    for (file, format) in BIG.iter().zip(formats) {
        let (code, v) = inspect(&dir, file);
        assert_eq!(code, Some(0), "{file}: {v}");
        assert_eq!(v["format"], format, "{file}");
        assert_torch_hashes(file, &v, &manifest);
        assert!(v["size"].as_u64().unwrap() > 20 << 20, "{file} is big");
    }

    // scan --hash: the same weights whatever the layout.
    let big = dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for file in BIG {
        std::fs::rename(dir.join(file), big.join(file)).unwrap();
    }
    let o = tvck(&["scan", "--hash", "big", "--json"], &dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    let prints: Vec<&str> = files
        .iter()
        .map(|f| f["fingerprint"].as_str().unwrap())
        .collect();
    assert!(
        prints.iter().all(|p| *p == prints[0] && p.len() == 64),
        "{prints:?}"
    );
    // diff reads both sides' values: identical across layouts.
    for (a, b) in [
        ("big_legacy.pt", "big.safetensors"),
        ("big_tar.pt", "big_zip.pt"),
    ] {
        let o = tvck(&["diff", &format!("big/{a}"), &format!("big/{b}")], &dir);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{a} {b}: {out}");
        assert!(out.contains("SAME: 5 identical"), "{a} {b}: {out}");
    }

    // Long member names, as tarfile lists them; not a finding when the members torch
    // reads have their own names.
    for file in ["big/big_tar.pt", "long_gnu_tar.pt", "long_pax_tar.pt"] {
        let key = file.trim_start_matches("big/");
        let (code, v) = inspect(&dir, file);
        assert_eq!(code, Some(0), "{file}: {v}");
        assert_torch_hashes(key, &v, &manifest);
        let want: Vec<String> = manifest[key]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(tar_names(file, &v), want, "{file}");
        assert!(!kinds(&v).contains(&"ambiguous".to_string()), "{file}: {v}");
    }
    assert!(
        manifest["long_gnu_tar.pt"]["names"][1]
            .as_str()
            .unwrap()
            .len()
            > 100
    );

    // Members named by long names over decoy headers: read as torch reads them, and
    // flagged (exit 1) for the reader that would not.
    let (code, v) = inspect(&dir, "renamed_tar.pt");
    assert_eq!(code, Some(1), "{v}");
    assert_torch_hashes("renamed_tar.pt", &v, &manifest);
    assert_eq!(
        tar_names("renamed_tar.pt", &v),
        ["sys_info", "storages", "tensors", "pickle"]
    );
    let flagged = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "ambiguous")
        .unwrap_or_else(|| panic!("not flagged: {v}"));
    let m = flagged["message"].as_str().unwrap();
    for w in [
        "tar member names that readers disagree on",
        "`storages` (its header says `decoy-storages`)",
        "`pickle` (its header says `decoy-pickle`)",
    ] {
        assert!(m.contains(w), "no `{w}` in {m}");
    }
    let o = tvck(&["scan", "renamed_tar.pt"], &dir);
    assert_eq!(o.status.code(), Some(1));
}
