//! `tvck index`, `tag`, `untag` through the binary, on temp copies of `checkpoints/`.

use crate::common;

use common::{copy_dir, root, tvck};
use std::path::Path;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn index(dir: &Path, idx: &Path) -> serde_json::Value {
    let out = tvck(
        &[
            "index",
            "--json",
            "--index",
            idx.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
        dir,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

#[test]
fn incremental_reindex_after_add_change_rename_delete() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    let r = index(&ck, &idx);
    let n = r["files"].as_u64().unwrap();
    assert!(n >= 5);
    assert_eq!(r["added"].as_u64(), Some(n));
    let r = index(&ck, &idx);
    assert_eq!(r["unchanged"].as_u64(), Some(n));
    assert_eq!(r["added"].as_u64(), Some(0));

    let files: Vec<_> = walkdir(&ck);
    // add: a copy of one file
    std::fs::copy(&files[0], ck.join("copy.pt")).unwrap();
    // rename another
    std::fs::rename(&files[1], ck.join("renamed.pt")).unwrap();
    // delete a third
    std::fs::remove_file(&files[2]).unwrap();
    let r = index(&ck, &idx);
    assert_eq!(r["added"].as_u64(), Some(1), "{r}");
    assert_eq!(r["renamed"].as_u64(), Some(1), "{r}");
    assert_eq!(r["removed"].as_u64(), Some(1), "{r}");
    assert_eq!(r["files"].as_u64(), Some(n));

    // change: rewrite the copy with another file's bytes
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(ck.join("copy.pt"), std::fs::read(&files[3]).unwrap()).unwrap();
    let r = index(&ck, &idx);
    assert_eq!(r["changed"].as_u64(), Some(1), "{r}");

    // human summary
    let out = tvck(
        &[
            "index",
            "--index",
            idx.to_str().unwrap(),
            ck.to_str().unwrap(),
        ],
        &ck,
    );
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains(&format!("{n} files")) && s.contains(&format!("{n} unchanged")),
        "{s}"
    );
}

fn walkdir(d: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walkdir(&p));
        } else if p
            .extension()
            .is_some_and(|e| e == "pt" || e == "pth" || e == "ckpt")
        {
            v.push(p);
        }
    }
    v.sort();
    v
}

#[test]
fn corrupt_index_is_an_error_and_untouched() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("bad.sqlite");
    std::fs::write(&idx, b"not a database at all, just text\n").unwrap();
    let out = tvck(
        &[
            "index",
            "--index",
            idx.to_str().unwrap(),
            ck.to_str().unwrap(),
        ],
        &ck,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a tvck index"), "{err}");
    assert!(err.contains("hint: tvck never overwrites it"), "{err}");
    assert_eq!(
        std::fs::read(&idx).unwrap(),
        b"not a database at all, just text\n"
    );
}

#[test]
fn tag_untag_and_env_var() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    // TVCK_INDEX names the index when --index is absent
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tvck"))
        .args(["index", ck.to_str().unwrap()])
        .env("TVCK_INDEX", &idx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(idx.exists());
    let file = walkdir(&ck).remove(0);
    let i = idx.to_str().unwrap();
    let out = tvck(
        &[
            "tag",
            "--json",
            "--index",
            i,
            file.to_str().unwrap(),
            "production",
        ],
        &ck,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    assert_eq!(j["action"], "tag");
    assert_eq!(j["name"], "production");
    let out = tvck(
        &["tag", "--index", i, file.to_str().unwrap(), "bad name!"],
        &ck,
    );
    // A bad alias name is a usage error (exit 2), as the README's table says.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an alias name"));
    let out = tvck(&["untag", "--index", i, "production"], &ck);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("untagged production"));
    let out = tvck(&["untag", "--index", i, "production"], &ck);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alias `production`"));
    // no index at all
    let out = tvck(
        &[
            "untag",
            "--index",
            t.path().join("none.sqlite").to_str().unwrap(),
            "x",
        ],
        &ck,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: create it with `tvck index DIR`"));
}

#[test]
fn ls_where_sort_limit_alias_and_errors() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    let i = idx.to_str().unwrap();
    let d = ck.to_str().unwrap();
    // no index yet: say so, and how to create one
    let out = tvck(&["ls", "--index", i, d], &ck);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: create it with `tvck index"));
    index(&ck, &idx);
    let out = tvck(&["ls", "--index", i, d], &ck);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("v5_12_4/best_Q.pt") && s.contains("v5_11_partial_freeze"),
        "{s}"
    );
    assert!(s.ends_with("8 checkpoints\n"), "{s}");

    let out = tvck(
        &[
            "ls",
            "--json",
            "--index",
            i,
            d,
            "--where",
            "version == v5_12_4",
            "--sort",
            "epoch:desc",
        ],
        &ck,
    );
    assert_eq!(out.status.code(), Some(0));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["version"]["version"] == "v5_12_4"),
        "{rows:?}"
    );
    assert_eq!(rows[0]["epoch"], 42);

    let out = tvck(
        &[
            "ls", "--json", "--index", i, d, "--sort", "Q:desc", "--limit", "1",
        ],
        &ck,
    );
    let rows = json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert!(rows[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("v5_12_4/best_Q.pt"));

    let file = ck.join("v5_11/best.pt");
    let out = tvck(
        &["tag", "--index", i, file.to_str().unwrap(), "production"],
        &ck,
    );
    assert_eq!(out.status.code(), Some(0));
    let out = tvck(
        &["ls", "--index", i, d, "--where", "alias == production"],
        &ck,
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("v5_11/best.pt") && s.contains("production") && s.ends_with("1 checkpoints\n"),
        "{s}"
    );

    // a bad --where: usage error with the column pointer
    let out = tvck(&["ls", "--index", i, d, "--where", "coverage >> 3"], &ck);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("column 11") && err.contains("coverage >> 3\n          ^"),
        "{err}"
    );
}

#[test]
fn select_for_config_with_and_without_index() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    let i = idx.to_str().unwrap();
    let cfg = root().join("tests/fixtures/configs/train_v5_12_4_partial.yaml");
    let cfg = cfg.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["select", "--json", "--for", cfg, "--index", i, "ck"];
        args.extend_from_slice(extra);
        let out = tvck(&args, t.path());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out)
    };
    let plain = run(&[]);
    assert_eq!(plain["from_index"], false);
    assert_eq!(plain["selected"]["path"], "ck/v5_12_4/best_Q.pt");
    assert_eq!(plain["selected"]["exact"], true);
    index(&ck, &idx);
    let indexed = run(&[]);
    assert_eq!(indexed["from_index"], true);
    assert_eq!(indexed["candidates"], plain["candidates"]);
    let all = plain["candidates"].as_array().unwrap().len();
    assert_eq!(plain["ranked"], all);
    // --limit lists the best few; the selection is the same
    let two = run(&["--limit", "2"]);
    assert_eq!(two["ranked"], all);
    assert_eq!(two["selected"], plain["selected"]);
    assert_eq!(
        two["candidates"].as_array().unwrap()[..],
        plain["candidates"].as_array().unwrap()[..2]
    );
    let out = tvck(
        &["select", "--for", cfg, "--index", i, "--limit", "3", "ck"],
        t.path(),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        s.lines()
            .filter(|l| l.starts_with("  ✓") || l.starts_with("  ·"))
            .count(),
        3,
        "{s}"
    );
    assert!(
        s.contains(&format!("  … {} more (--limit 0 lists every one)", all - 3)),
        "{s}"
    );
    assert!(s.contains(&format!("over {all} candidates")), "{s}");
    // filtered by the index: only the exports, none of which stores metrics
    let f = run(&["--where", "path ~ exports"]);
    let sel = f["selected"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(sel.starts_with("ck/exports/"), "{f}");
    // human output and exit 1 when nothing fits
    let out = tvck(
        &["select", "--for", cfg, "--index", i, "ck/v5_11"],
        t.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("does not fit") && s.contains("no checkpoint"),
        "{s}"
    );
    let out = tvck(
        &["select", "--for", cfg, "--index", i, "--by", "nope", "ck"],
        t.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn lineage_of_frozen_encoder_and_converted_file() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let conv = ck.join("conv.pt");
    let out = tvck(
        &[
            "convert",
            "ck/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "ck/conv.pt",
        ],
        t.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let idx = t.path().join("i.sqlite");
    let i = idx.to_str().unwrap();
    index(&ck, &idx);
    let holders = |l: &serde_json::Value, part: &str| -> Vec<(String, u64)> {
        l["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"] == part)
            .unwrap_or_else(|| panic!("no part {part} in {l}"))["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let p = h["path"].as_str().unwrap();
                let rel = p
                    .strip_prefix(ck.canonicalize().unwrap().to_str().unwrap())
                    .unwrap();
                (rel.to_string(), h["shared"].as_u64().unwrap())
            })
            .collect()
    };
    // v5.11's frozen encoder: the v5.5 checkpoint's bytes, all 10 tensors
    let out = tvck(
        &["lineage", "--json", "--index", i, "ck/v5_11/best.pt"],
        t.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = json(&out);
    assert_eq!(l["version"], "v5_11");
    assert!(
        holders(&l, "encoder_A").contains(&("/v5_5/latest.pt".into(), 10)),
        "{l}"
    );
    // the converted file: its migration record, and its encoder from v5_11/best.pt
    let out = tvck(
        &["lineage", "--json", "--index", i, conv.to_str().unwrap()],
        t.path(),
    );
    let l = json(&out);
    assert_eq!(l["migration"]["from_version"], "v5_11");
    assert_eq!(l["migration"]["to_version"], "v5_12_4");
    assert!(
        holders(&l, "encoder_A")
            .iter()
            .any(|(p, n)| p == "/v5_11/best.pt" && *n >= 8),
        "{l}"
    );
    let out = tvck(&["lineage", "--index", i, conv.to_str().unwrap()], t.path());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("converted by tvck: v5_11 → v5_12_4"), "{s}");
    // Graphviz of the tree
    let out = tvck(&["lineage", "--dot", "--index", i, "ck"], t.path());
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with("digraph lineage {") && s.contains("converted by v5_11_to_v5_12_4"),
        "{s}"
    );
    // a file not in the index
    let out = tvck(
        &[
            "lineage",
            "--index",
            i,
            root().join("Cargo.toml").to_str().unwrap(),
        ],
        t.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the index"));
}

#[test]
fn scan_from_index_is_identical_and_rereads_changed_files() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    copy_dir(&root().join("tests/fixtures/zip"), &ck.join("zip"));
    let idx = t.path().join("i.sqlite");
    let none = t.path().join("none.sqlite");
    let scan = |index: &Path, extra: &[&str]| {
        let mut args = vec!["scan", "ck", "--index", index.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = tvck(&args, t.path());
        (out.status.code(), out.stdout, out.stderr)
    };
    let plain: Vec<_> = [&[][..], &["--json"], &["--hash"], &["--hash", "--json"]]
        .iter()
        .map(|x| scan(&none, x))
        .collect();
    index(&ck, &idx);
    for (x, p) in [&[][..], &["--json"], &["--hash"], &["--hash", "--json"]]
        .iter()
        .zip(&plain)
    {
        assert_eq!(&scan(&idx, x), p, "scan {x:?} differs with an index");
    }
    // the index does answer: a file overwritten in place with the same size and mtime
    // (the index's identity of a file) is still reported as indexed
    let f = ck.join("v5_5_early/latest.pt");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let len = std::fs::metadata(&f).unwrap().len() as usize;
    {
        use std::io::Write;
        let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        h.write_all(&vec![0u8; len]).unwrap();
        h.set_modified(mtime).unwrap();
    }
    assert_eq!(scan(&idx, &["--json"]), plain[1]);
    assert_eq!(
        scan(&none, &["--json"]).0,
        Some(1),
        "a zeroed file is unreadable"
    );
    std::fs::remove_file(&f).unwrap();
    let plain_after_rm = scan(&none, &["--json"]);
    assert_eq!(
        scan(&idx, &["--json"]).1,
        plain_after_rm.1,
        "a vanished file is not listed"
    );
    // a changed file is re-read, not answered from the stale index
    std::fs::write(
        ck.join("v5_11/best.pt"),
        std::fs::read(ck.join("v5_5/latest.pt")).unwrap(),
    )
    .unwrap();
    let fresh = scan(&none, &["--json"]);
    assert_ne!(fresh, plain_after_rm);
    assert_eq!(scan(&idx, &["--json"]), fresh);
}

/// `text` with the tail of each line that starts with `start` and ends with `end` cut at
/// the last `sep` and replaced by `with` (a value that varies run to run).
fn mask_tail(text: String, start: &str, sep: &str, end: &str, with: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.rfind(sep) {
            Some(i) if line.starts_with(start) && line.trim_end().ends_with(end) => {
                out.push_str(&line[..i]);
                out.push_str(with);
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// The elapsed time of `tvck index`.
fn no_timing(text: String) -> String {
    mask_tail(text, "index ", " (", " s)", " ([ELAPSED] s)")
}

/// The time of a conversion (`, 2026-…Z` closing the "converted by tvck" line).
fn no_utc(text: String) -> String {
    mask_tail(text, "converted by tvck:", ", ", "Z", ", [UTC]")
}

#[test]
fn tables_are_pinned_whole() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    // One modification time for every file: the lineage's "older" falls to the epoch,
    // then the path, whatever order the copy wrote them in.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
    let same_age = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(when)
            .unwrap()
    };
    walkdir(&ck).iter().for_each(|p| same_age(p));
    let idx = t.path().join("i.sqlite");
    let i = idx.to_str().unwrap();
    let tmp = t.path().to_str().unwrap().to_string();
    let canon = t
        .path()
        .canonicalize()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let filters: Vec<(&str, &str)> = vec![(canon.as_str(), "[TMP]"), (tmp.as_str(), "[TMP]")];
    let cfg = root().join("tests/fixtures/configs/train_v5_12_4_partial.yaml");
    let cfg = cfg.to_str().unwrap();
    let run = |args: &[&str]| common::run_text(&tvck(args, t.path()), &filters);
    snap!("manager_ls_no_index", run(&["ls", "--index", i, "ck"]));
    snap!(
        "manager_index_first",
        no_timing(run(&["index", "--index", i, "ck"]))
    );
    std::fs::remove_file(ck.join("v5_5_early/latest.pt")).unwrap();
    snap!(
        "manager_index_again",
        no_timing(run(&["index", "--index", i, "ck"]))
    );
    snap!(
        "manager_tag",
        run(&["tag", "--index", i, "ck/v5_11/best.pt", "production"])
    );
    snap!(
        "manager_ls",
        run(&["ls", "--index", i, "ck", "--sort", "epoch:desc"])
    );
    snap!(
        "manager_ls_alias",
        run(&["ls", "--index", i, "ck", "--where", "alias == production"])
    );
    snap!(
        "manager_ls_bad_where",
        run(&["ls", "--index", i, "ck", "--where", "epoch > 20 and"])
    );
    snap!(
        "manager_select",
        run(&["select", "--for", cfg, "--index", i, "ck"])
    );
    snap!(
        "manager_select_none",
        run(&["select", "--for", cfg, "--index", i, "ck/v5_11"])
    );
    snap!("manager_untag", run(&["untag", "--index", i, "production"]));
    snap!(
        "manager_untag_unknown",
        run(&["untag", "--index", i, "production"])
    );
    snap!(
        "manager_lineage_frozen_encoder",
        run(&["lineage", "--index", i, "ck/v5_11_homeostasis/best.pt"])
    );
    let conv = run(&[
        "convert",
        "ck/v5_11/best.pt",
        "--to",
        "v5_12_4",
        "-o",
        "ck/conv.pt",
    ]);
    assert!(conv.starts_with("exit code: 0\n"), "{conv}");
    // written a day after the others
    std::fs::File::options()
        .write(true)
        .open(ck.join("conv.pt"))
        .unwrap()
        .set_modified(when + std::time::Duration::from_secs(86_400))
        .unwrap();
    index(&ck, &idx);
    snap!(
        "manager_lineage_converted",
        no_utc(run(&["lineage", "--index", i, "ck/conv.pt"]))
    );
    snap!(
        "manager_lineage_dot",
        run(&["lineage", "--dot", "--index", i, "ck"])
    );
}

#[test]
fn ls_warns_when_the_index_is_out_of_date() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    let i = idx.to_str().unwrap();
    index(&ck, &idx);
    let ls = || tvck(&["ls", "--index", i, "ck"], t.path());
    let fresh = ls();
    assert_eq!(fresh.status.code(), Some(0));
    assert!(
        fresh.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    // removed, added, changed: each one makes the listing stale until re-indexed
    let stale = |what: &str| {
        let o = ls();
        assert_eq!(o.status.code(), Some(0), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("warning: the index is out of date for ck")
                && err.contains("hint: refresh it with `tvck index ck`"),
            "{what}: {err}"
        );
        index(&ck, &idx);
        assert!(ls().stderr.is_empty(), "{what}: after re-indexing");
    };
    std::fs::remove_file(ck.join("v5_5_early/latest.pt")).unwrap();
    stale("removed");
    std::fs::copy(ck.join("v5_11/best.pt"), ck.join("copy.pt")).unwrap();
    stale("added");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        ck.join("copy.pt"),
        std::fs::read(ck.join("v5_5/latest.pt")).unwrap(),
    )
    .unwrap();
    stale("changed");
}

/// A second `tvck index` while another process holds the index's write lock: it waits the
/// busy timeout (TVCK_INDEX_BUSY_TIMEOUT_MS), then fails with exit 1 and says why; the
/// index is whole afterwards and the next run works. A bad timeout value is a usage error.
#[test]
fn a_second_index_fails_clearly_while_another_process_holds_the_write_lock() {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    copy_dir(&root().join("checkpoints"), &ck);
    let idx = t.path().join("i.sqlite");
    let n = index(&ck, &idx)["files"].as_u64().unwrap();
    std::fs::copy(ck.join("v5_11/best.pt"), ck.join("added.pt")).unwrap();
    let run = |timeout: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tvck"))
            .args(["index", "--index", idx.to_str().unwrap(), "."])
            .current_dir(&ck)
            .env("TVCK_INDEX_BUSY_TIMEOUT_MS", timeout)
            .output()
            .unwrap()
    };
    // This test process is the other writer: it holds the write lock.
    let holder = rusqlite::Connection::open(&idx).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let o = run("300");
    let filters = [(idx.to_str().unwrap(), "[INDEX]")];
    crate::snap_run!("manager_index_locked", o, &filters);
    assert_eq!(o.status.code(), Some(1));
    let o = run("soon");
    crate::snap_run!("manager_index_bad_busy_timeout", o, &filters);
    assert_eq!(o.status.code(), Some(2));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let o = run("300");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = index(&ck, &idx);
    assert_eq!(r["files"].as_u64(), Some(n + 1), "{r}");
    assert_eq!(r["unchanged"].as_u64(), Some(n + 1), "{r}");
}

/// The fuzz seeds of the manager's languages (tests/fixtures/queries, what
/// `scripts/fuzz manager_rules` starts from) are valid texts of the language their name
/// says, so the fuzzer starts inside each grammar.
#[test]
fn the_manager_language_seeds_parse() {
    let dir = root().join("tests/fixtures/queries");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let ok = if name.starts_with("where-") {
            tvck::manager::Query::parse(&text).is_ok()
        } else if name.starts_with("keep-") {
            tvck::manager::keep::Rules::parse(&text).is_ok()
        } else if name.starts_with("sort-") {
            tvck::manager::SortKey::parse(&text).is_ok()
        } else {
            panic!("{name}: a seed is named where-, keep- or sort-");
        };
        assert!(ok, "{name}: {text}");
        n += 1;
    }
    assert!(n >= 7, "{n} seeds");
}
