//! Deflated storages against real torch: `tests/python/make_deflated.py` writes a
//! training checkpoint whose `data/N` storages are deflate-compressed (torch.load reads it)
//! and a deflate bomb (a 1.5 MB file whose one storage inflates to 320 MiB, which
//! torch.load inflates whole). tvck must read the first lazily with torch's values, and
//! refuse the second with an error naming the file, the entry, the limit and the size,
//! without inflating it.
//!
//! Needs the project's Python environment: `scripts/test` runs it (`#[ignore]`d in a plain
//! `cargo test`).

use crate::common;

use common::{python_cases, tvck};
use serde_json::Value as Json;

#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn deflated_storages_read_like_torch_and_bombs_are_refused() {
    let (dir, manifest) = python_cases("make_deflated.py", "deflated", "");

    // The deflated checkpoint: every tensor hashes to torch's bytes.
    let o = tvck(&["inspect", "deflated.pt", "--json"], &dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    let expected = manifest["deflated.pt"]["tensors"].as_object().unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len());
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["sha256"], expected[name], "{name}");
    }
    assert!(
        manifest["deflated.pt"]["entries"]["archive/data/0"]["deflated"] == true,
        "the storages are deflated"
    );

    // The bomb: small on disk, 320 MiB declared.
    let bomb = &manifest["deflate_bomb.pt"];
    assert!(bomb["size"].as_u64().unwrap() < 2 << 20);
    let inflated = bomb["entries"]["archive/data/0"]["inflated"]
        .as_u64()
        .unwrap();
    assert_eq!(inflated, 320 << 20);
    let words = [
        "deflate_bomb.pt",
        "`archive/data/0`",
        "MAX_INFLATED_ENTRY",
        &(256u64 << 20).to_string(),
        &inflated.to_string(),
    ];
    let o = tvck(&["inspect", "deflate_bomb.pt"], &dir);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for w in words {
        assert!(err.contains(w), "no `{w}` in: {err}");
    }
    // scan: the bomb is unreadable (exit 1), the deflated checkpoint is read; with
    // --hash too, its fingerprint equals inspect's.
    for hash in [false, true] {
        let mut args = vec!["scan", ".", "--json"];
        if hash {
            args.push("--hash");
        }
        let o = tvck(&args, &dir);
        assert_eq!(o.status.code(), Some(1), "hash {hash}");
        let s: Json = serde_json::from_slice(&o.stdout).unwrap();
        let file = |name: &str| {
            s["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == name)
                .unwrap_or_else(|| panic!("{name} not scanned"))
                .clone()
        };
        let e = file("deflate_bomb.pt")["error"]
            .as_str()
            .unwrap()
            .to_string();
        for w in words.iter().filter(|w| **w != "deflate_bomb.pt") {
            assert!(e.contains(w), "no `{w}` in: {e}");
        }
        // The row names the file; its error does not name it again.
        assert!(!e.contains("deflate_bomb.pt"), "{e}");
        let ok = file("deflated.pt");
        assert!(ok["error"].is_null(), "{ok}");
        assert_eq!(ok["tensors"], 7);
        if hash {
            assert_eq!(ok["fingerprint"], v["fingerprint"]);
        }
    }
}

/// A zip shaped unlike torch.save's is read whole so that every check sees every byte;
/// past `MAX_WHOLE_READ` (1 GiB) it is refused before it is read, by every command that
/// reads it, so that no file costs more memory than the limit. The file is a hole (no
/// disk), so whether it was read shows in the peak memory of the process.
#[test]
#[cfg(unix)]
fn a_zip_too_large_to_read_whole_is_refused_unread() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("odd.pt")).unwrap();
    f.write_all(b"PK\x03\x04").unwrap();
    f.set_len((1 << 30) + 1).unwrap();
    drop(f);
    let words = ["odd.pt", "MAX_WHOLE_READ", "1073741825", "torch.save"];
    for args in [
        &["inspect", "odd.pt"][..],
        &["scan", "."],
        &["scan", ".", "--hash"],
        &["diff", "odd.pt", "odd.pt"],
    ] {
        let o = std::process::Command::new("/usr/bin/time")
            .arg("-f")
            .arg("peak-rss-kb %M")
            .arg(env!("CARGO_BIN_EXE_tvck"))
            .args(args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        // scan lists it on stdout, the others fail on stderr.
        let err = String::from_utf8_lossy(&o.stderr) + String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: no `{w}` in {err}");
        }
        let kb: u64 = err
            .lines()
            .find_map(|l| l.strip_prefix("peak-rss-kb "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{args:?}: no peak RSS in {err}"));
        assert!(
            kb < 256 << 10,
            "{args:?}: peak RSS {kb} kB: the file was read"
        );
    }
}
