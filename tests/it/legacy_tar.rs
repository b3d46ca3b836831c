//! Pre-1.0 tar checkpoints: `tests/python/make_legacy_tar.py` builds one by hand the way
//! torch 2.13's `legacy_load` reads it (torch no longer writes the layout) and checks with
//! torch.load(weights_only=False) that every tensor loads as built; tvck must read the
//! same tensors (strides, offsets, a shared storage, a storage view) with the same bytes.
//! tests/fixtures/legacy/ holds the file and its manifest, as the script writes them.
//!
//! Needs the project's Python environment: `scripts/test` runs it (`#[ignore]`d in a plain
//! `cargo test`; `reader.rs::legacy_tar_checkpoints_are_read` reads the committed copy).

use crate::common;

use common::{python_cases, root, tvck};
use serde_json::Value as Json;

#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn legacy_tar_tensors_read_like_torch() {
    let (dir, manifest) = python_cases(
        "make_legacy_tar.py",
        "legacy-tar",
        " (torch did not load it as built?)",
    );
    let expected = manifest["legacy_tar.pt"]["tensors"].as_object().unwrap();
    let o = tvck(&["inspect", "legacy_tar.pt", "--json"], &dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "torch_legacy_tar");
    assert_eq!(v["epoch"], 4);
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len());
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["sha256"], expected[name], "{name}");
    }
    // The committed fixture is what the script writes.
    assert_eq!(
        std::fs::read(dir.join("legacy_tar.pt")).unwrap(),
        std::fs::read(root().join("tests/fixtures/legacy/legacy_tar.pt")).unwrap(),
        "regenerate tests/fixtures/legacy/ with make_legacy_tar.py"
    );
}
