//! `tvck train --resume RUN_DIR` (cargo feature `train`), on the CPU:
//!
//! * a run killed with SIGKILL after epoch k and continued writes the same metrics.jsonl,
//!   latest.pt, best.pt, best_Q.pt and training.svg, byte for byte, as the run that was
//!   never interrupted (tests/fixtures/configs/train_resume.yaml: PartialFreeze with
//!   dropout, a homeostasis freeze at epoch 2, so the optimizer rebuild, the schedule
//!   restart and the stale gradients are part of what is continued);
//! * SIGTERM ends the epoch, writes latest.pt and exits 0; the run then continues to the
//!   same files; a finished run says so (exit 0); a larger epoch count extends it;
//! * latest.pt loads with `torch.load(weights_only=True)` after kills at random moments
//!   (and while its temporary file is being written), and each killed run continues;
//! * the refusals: no latest.pt, another config (the keys named), another seed, a folder
//!   another run is writing.
#![cfg(feature = "train")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{python, root, stdout, tvck};

/// The files a run writes, compared byte for byte.
const OUTPUTS: [&str; 5] = [
    "metrics.jsonl",
    "latest.pt",
    "best.pt",
    "best_Q.pt",
    "training.svg",
];
const SEED: &str = "5";
const EPOCHS: usize = 5;

/// The test config with its frozen checkpoint as an absolute path, so that a copy of it
/// elsewhere (`variant`) resolves the same checkpoint.
fn config_text() -> String {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/configs/train_resume.yaml")).unwrap();
    let abs = root().join("checkpoints/v5_12_4/best_Q.pt");
    let out = text.replace(
        "path: ../../../checkpoints/v5_12_4/best_Q.pt",
        &format!("path: {}", abs.display()),
    );
    assert_ne!(out, text, "the fixture names its frozen checkpoint");
    out
}

/// A scratch folder of this test process (under cargo's target tmp dir), empty. The
/// process id keeps apart runners that start a process per test (cargo nextest): each
/// makes its own config and reference run, which `cargo test` makes once for all.
fn scratch(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        // The folders of earlier test processes that are gone (4.5 MB each), where
        // /proc tells which processes live.
        if !cfg!(target_os = "linux") {
            return;
        }
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("train_resume-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
    let d = tmp
        .join(format!("train_resume-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The config file every run of these tests trains with.
fn config() -> &'static Path {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| {
        let p = scratch("config").join("train_resume.yaml");
        std::fs::write(&p, config_text()).unwrap();
        p
    })
}

fn check(o: &Output) -> String {
    let text = stdout(o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

fn train(args: &[&str]) -> Output {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    tvck(&all, &root())
}

/// The uninterrupted run, trained once for every test of the binary.
fn reference() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let out = scratch("reference");
        let c = config().to_str().unwrap();
        check(&train(&[
            "--config",
            c,
            "--seed",
            SEED,
            "--out",
            out.to_str().unwrap(),
        ]));
        out
    })
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tvck"))
        .arg("train")
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Wait until metrics.jsonl has `n` lines (epoch n − 1 trained).
fn wait_for_lines(dir: &Path, n: usize, child: &mut Child) {
    let start = Instant::now();
    while lines(dir) < n {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch {}",
            n - 1
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn assert_same_outputs(a: &Path, b: &Path) {
    for f in OUTPUTS {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for f in OUTPUTS {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn sigkill_after_epoch_k_then_resume_equals_the_uninterrupted_run() {
    let reference = reference();
    let dir = scratch("sigkill");
    let d = dir.to_str().unwrap();
    let c = config().to_str().unwrap();
    let mut child = spawn(&["--config", c, "--seed", SEED, "--out", d]);
    // epoch 3 in metrics.jsonl (after the freeze at epoch 2), then SIGKILL.
    wait_for_lines(&dir, 4, &mut child);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(lines(&dir) < EPOCHS + 1, "killed before the end");
    let text = check(&train(&["--resume", d]));
    assert!(text.contains("continuing after epoch"), "{text}");
    assert!(text.contains("continued after epoch"), "{text}");
    assert_same_outputs(reference, &dir);
}

#[test]
fn sigterm_ends_the_epoch_then_the_run_continues_to_the_same_files() {
    let reference = reference();
    let dir = scratch("sigterm");
    let d = dir.to_str().unwrap();
    let c = config().to_str().unwrap();
    let mut child = spawn(&["--config", c, "--seed", SEED, "--out", d]);
    wait_for_lines(&dir, 2, &mut child);
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    let text = check(&o);
    assert!(text.contains("interrupted"), "{text}");
    let n = lines(&dir);
    assert!(n < EPOCHS + 1, "stopped early: {n} lines");
    let latest = tvck::format::Checkpoint::open(dir.join("latest.pt")).unwrap();
    // latest.pt of the epoch the signal ended (upstream's 0-based epoch), not finished.
    assert_eq!(
        latest.root.get("epoch").and_then(|e| e.as_i64()),
        Some(n as i64 - 2)
    );
    assert_eq!(
        latest.root.get_path("resume.finished"),
        Some(&tvck::format::Value::None)
    );
    check(&train(&["--resume", d]));
    assert_same_outputs(reference, &dir);
    // A finished run: nothing to do, exit 0, nothing written.
    let text = check(&train(&["--resume", d]));
    assert!(
        text.contains("nothing to do") && text.contains("completed"),
        "{text}"
    );
    assert_same_outputs(reference, &dir);
    // More epochs extend it: epoch 6 appended after the reference's lines.
    let text = check(&train(&["--resume", d, "--epochs", "6"]));
    assert!(text.contains("continuing after epoch 5 of 6"), "{text}");
    let before = std::fs::read_to_string(reference.join("metrics.jsonl")).unwrap();
    let after = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(after.starts_with(&before));
    let added: Vec<&str> = after[before.len()..].lines().collect();
    assert_eq!(added.len(), 1);
    assert!(added[0].starts_with("{\"epoch\":6,"), "{}", added[0]);
}

/// latest.pt as PyTorch loads it: the model state, upstream's keys and the resume state.
const LOAD: &str = "import sys, torch\nd = torch.load(sys.argv[1], weights_only=True)\nassert len(d['model_state_dict']) == 84\nr = d['resume']\nassert r['format'] == 1 and r['orig_radii'].shape == (19683,), r.keys()\nassert isinstance(r['passive_grads'], dict) and isinstance(d['homeostasis'], dict)\nassert d['optimizer_state']['param_groups'] and 'best_Q' in d\nprint(d['epoch'])\n";

fn torch_epoch(latest: &Path) -> i64 {
    let py = Command::new(python())
        .args(["-c", LOAD, latest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "torch.load(weights_only=True) of {}: {}",
        latest.display(),
        String::from_utf8_lossy(&py.stderr)
    );
    String::from_utf8_lossy(&py.stdout).trim().parse().unwrap()
}

#[test]
fn latest_pt_loads_whatever_moment_the_kill_comes() {
    let dir = scratch("random_kills");
    let d = dir.to_str().unwrap();
    let c = config().to_str().unwrap();
    let latest = dir.join("latest.pt");
    // The temporary files of latest.pt in the folder.
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".latest.pt.tvck-"))
            .collect()
    };
    // A fixed pseudo-random sequence of delays (xorshift), so a failure replays.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut last_epoch = -1;
    let mut kills_during_write = 0;
    for round in 0..6 {
        let mut child = if round == 0 {
            spawn(&["--config", c, "--seed", SEED, "--epochs", "40", "--out", d])
        } else {
            spawn(&["--resume", d])
        };
        if round % 2 == 1 {
            // While latest.pt's temporary file is being written, when the poll sees one
            // (not one a kill before left).
            let stale = temporaries();
            let writing = || temporaries().iter().any(|t| !stale.contains(t));
            let start = Instant::now();
            while !writing() && start.elapsed() < Duration::from_secs(120) {
                assert!(child.try_wait().unwrap().is_none(), "the run ended");
                std::thread::sleep(Duration::from_micros(200));
            }
            kills_during_write += usize::from(writing());
        } else {
            // Any moment within the next two epochs once training started.
            let start = Instant::now();
            while !latest.exists() && start.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(next() % 6000));
        }
        child.kill().unwrap();
        let _ = child.wait();
        let epoch = torch_epoch(&latest);
        assert!(epoch >= last_epoch, "round {round}: {epoch} < {last_epoch}");
        last_epoch = epoch;
    }
    assert!(
        kills_during_write > 0,
        "no kill landed while latest.pt was written"
    );
    // The last killed run continues: stale temporaries removed, metrics.jsonl one line per
    // epoch, no duplicates.
    // SIGTERM once it wrote a latest.pt of its own (metrics.jsonl may hold lines of epochs
    // after the killed run's latest.pt: they are trained again).
    use std::os::unix::fs::MetadataExt;
    let inode = || std::fs::metadata(&latest).map(|m| m.ino()).unwrap_or(0);
    let before = inode();
    let mut child = spawn(&["--resume", d]);
    let start = Instant::now();
    while inode() == before {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the continued run ended"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    check(&o);
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    for (i, l) in text.lines().enumerate() {
        let j: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(j["epoch"].as_u64(), Some(i as u64), "{l}");
    }
    assert_eq!(temporaries(), Vec::<String>::new(), "temporary files left");
    torch_epoch(&latest);
}

#[test]
fn resume_refusals_name_what_is_wrong() {
    let reference = reference();
    let r = reference.to_str().unwrap();
    // No latest.pt.
    let empty = scratch("empty");
    let o = train(&["--resume", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no latest.pt to continue from"), "{err}");
    // Another config: refused at step 1, the differing keys named, nothing written.
    let o = train(&[
        "--resume",
        r,
        "--config",
        "tests/fixtures/configs/train_v5_12_4_partial.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for k in [
        "frozen_checkpoint.path",
        "homeostasis.warmup_epochs",
        "homeostasis.hierarchy_plateau_threshold",
        "training.batch_size",
        "training.save_every",
    ] {
        assert!(err.contains(k), "{k}: {err}");
    }
    // training.epochs differs too (4 vs 5): not a refusal.
    let listed = err.lines().next().unwrap_or_default();
    assert!(!listed.contains("training.epochs"), "{err}");
    // Another seed.
    let o = train(&["--resume", r, "--seed", "6"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seed 5, not 6"), "{err}");
    // Resume and an output folder: a usage error.
    let o = train(&["--resume", r, "--out", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // A config that differs only in training.epochs extends the run (a copy of it).
    let dir = scratch("extend");
    copy_dir(reference, &dir);
    let longer = dir.join("longer.yaml");
    let text = config_text();
    let changed = text.replace("  epochs: 5\n", "  epochs: 6\n");
    assert_ne!(changed, text);
    std::fs::write(&longer, changed).unwrap();
    let out = check(&train(&[
        "--resume",
        dir.to_str().unwrap(),
        "--config",
        longer.to_str().unwrap(),
    ]));
    assert!(out.contains("continuing after epoch 5 of 6"), "{out}");
    assert_eq!(lines(&dir), EPOCHS + 2);
    for f in OUTPUTS {
        assert!(dir.join(f).exists(), "{f}");
    }
}

/// Two processes on one run folder: while a continued run trains, a second `--resume` of
/// the same folder (and a new run into it) is refused before it writes anything, naming
/// the process that holds the folder; the first run then ends with the files of the
/// uninterrupted run.
#[test]
fn a_second_run_on_a_folder_in_use_is_refused() {
    let reference = reference();
    let dir = scratch("locked");
    let d = dir.to_str().unwrap();
    let c = config().to_str().unwrap();
    // A run killed after epoch 1, so that three epochs are left to continue.
    let mut child = spawn(&["--config", c, "--seed", SEED, "--out", d]);
    wait_for_lines(&dir, 2, &mut child);
    while !dir.join("latest.pt").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let mut first = spawn(&["--resume", d]);
    // The lock holds the first run's process id once it is taken (step 6).
    let lock = dir.join(".tvck-train.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        if first.try_wait().unwrap().is_some() {
            let o = first.wait_with_output().unwrap();
            panic!(
                "the continued run ended early: {}{}",
                stdout(&o),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no lock taken");
        std::thread::sleep(Duration::from_millis(10));
    }
    let busy = format!(
        "{d}: another tvck train (process {}) is writing this run folder",
        first.id()
    );
    for args in [
        vec!["--resume", d],
        vec!["--config", c, "--seed", SEED, "--out", d],
    ] {
        let o = train(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&busy), "{args:?}: {err}");
        assert!(err.contains("hint: wait for that run to end"), "{err}");
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run must still hold the folder while the others are refused"
    );
    // The refused runs wrote nothing: the first one ends with the uninterrupted files.
    let o = first.wait_with_output().unwrap();
    check(&o);
    assert_same_outputs(reference, &dir);
    // Released at exit: the folder can be continued again (a finished run: nothing to do).
    let text = check(&train(&["--resume", d]));
    assert!(text.contains("nothing to do"), "{text}");
}

/// A full disk while the trainer writes: the run stops with an error that says so (exit
/// 1), no temporary file is left, and latest.pt is the last whole one: torch loads it.
#[test]
fn a_full_disk_stops_the_run_and_keeps_the_last_latest_pt() {
    let Some(fs) = common::Tmpfs::new(16 * 1024) else {
        return;
    };
    let out = fs.path().join("run");
    let (o, c) = (out.to_str().unwrap(), config().to_str().unwrap());
    let mut child = spawn(&["--config", c, "--seed", SEED, "--epochs", "40", "--out", o]);
    let latest = out.join("latest.pt");
    wait_for_lines(&out, 3, &mut child);
    while !latest.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs.fill();
    let o = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    let temporaries: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tvck-") && n.ends_with(".tmp"))
        .collect();
    assert_eq!(temporaries, Vec::<String>::new());
    // Whole and loadable (torch_epoch asserts it), and one of the epochs trained.
    let epoch = torch_epoch(&latest);
    assert!(
        epoch >= 0 && (epoch as usize) < lines(&out),
        "epoch {epoch}"
    );
}

/// The `epoch_N.pt` files of a run folder, in epoch order.
fn epoch_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<(u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            let k = n
                .strip_prefix("epoch_")?
                .strip_suffix(".pt")?
                .parse()
                .ok()?;
            Some((k, n))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// `--keep`: epoch_N.pt written every save_every epochs, the rules applied as they are
/// written (a config in the run folder naming one protects it; best.pt, best_Q.pt and
/// latest.pt are never touched), the rules stored in latest.pt, and a run stopped by
/// SIGTERM and continued without `--keep` going on applying them to the same files.
#[test]
fn keep_rules_prune_epoch_files_as_written_and_a_resumed_run_goes_on() {
    const RULES: &str = "latest:2,every:4";
    // 0-based epochs 0..=4: every:4 keeps 0 and 4, latest:2 keeps 3 and 4, the config
    // protects 1; epoch_2.pt goes when epoch_4.pt is written.
    const KEPT: [&str; 4] = ["epoch_0.pt", "epoch_1.pt", "epoch_3.pt", "epoch_4.pt"];
    let uses = "frozen_checkpoint:\n  path: epoch_1.pt\n";
    let c = config().to_str().unwrap();
    let whole = scratch("keep_whole");
    std::fs::write(whole.join("uses.yaml"), uses).unwrap();
    let w = whole.to_str().unwrap();
    let text = check(&train(&[
        "--config", c, "--seed", SEED, "--out", w, "--keep", RULES,
    ]));
    assert!(
        text.contains("keep: deleted epoch_2.pt (kept by none of latest:2,every:4)"),
        "{text}"
    );
    assert_eq!(text.matches("keep: deleted").count(), 1, "{text}");
    assert_eq!(epoch_files(&whole), KEPT);
    let latest = tvck::format::Checkpoint::open(whole.join("latest.pt")).unwrap();
    assert_eq!(
        latest.root.get_path("resume.keep").and_then(|v| v.as_str()),
        Some(RULES)
    );
    // Each epoch file holds its epoch, and training is the run without --keep's.
    for f in KEPT {
        let ck = tvck::format::Checkpoint::open(whole.join(f)).unwrap();
        let n: i64 = f[6..f.len() - 3].parse().unwrap();
        assert_eq!(
            ck.root.get("epoch").and_then(|e| e.as_i64()),
            Some(n),
            "{f}"
        );
        assert!(ck.root.get("metrics").is_some(), "{f} carries metrics");
    }
    for f in ["best.pt", "best_Q.pt", "metrics.jsonl"] {
        assert_eq!(
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(reference().join(f)).unwrap(),
            "{f} differs from the run without --keep"
        );
    }

    // The same run stopped by SIGTERM, then continued without --keep.
    let dir = scratch("keep_resumed");
    std::fs::write(dir.join("uses.yaml"), uses).unwrap();
    let d = dir.to_str().unwrap();
    let mut child = spawn(&["--config", c, "--seed", SEED, "--out", d, "--keep", RULES]);
    wait_for_lines(&dir, 2, &mut child);
    signal(&child, "-TERM");
    check(&child.wait_with_output().unwrap());
    let stopped = epoch_files(&dir);
    assert!(
        !stopped.is_empty() && stopped.len() < KEPT.len() + 1,
        "{stopped:?}"
    );
    // What a writer killed while writing an epoch file leaves: removed when the run goes on.
    let stale = dir.join(".epoch_4.pt.tvck-1-0.tmp");
    std::fs::write(&stale, b"cut short").unwrap();
    let text = check(&train(&["--resume", d]));
    assert!(!stale.exists(), "{text}");
    assert!(
        text.contains(&format!(
            "removed {} (left by the interrupted run)",
            stale.display()
        )),
        "{text}"
    );
    assert_eq!(epoch_files(&dir), KEPT);
    for f in KEPT.iter().chain(&["latest.pt", "best.pt", "best_Q.pt"]) {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f}: the continued run wrote other bytes"
        );
    }
}

/// A latest.pt whose weights turned NaN or infinite is not continued: `--resume` names the
/// file and the tensor, says why, and changes nothing in the folder.
#[test]
fn a_latest_pt_with_non_finite_weights_is_not_continued() {
    let reference = reference();
    let dir = scratch("non_finite");
    common::copy_dir(reference, &dir);
    common::write_with_non_finite(
        &reference.join("latest.pt"),
        &dir.join("latest.pt"),
        "encoder_A.encoder.0.weight",
    );
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let o = train(&["--resume", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} holds NaN or infinite weights: `encoder_A.encoder.0.weight` holds 1 NaN and 1 infinite of",
            dir.join("latest.pt").display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: the run diverged before this latest.pt was written"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
}
