//! `tvck watch` and `tvck export-tb` on the run folders of tests/fixtures/monitor/runs
//! (copied, so their files are fresh): `--once` text and JSON, exit codes, the dashboard in
//! a real terminal (tmux), and a TensorBoard event file read by TensorBoard's own reader.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{copy_dir, python, root, tvck};
use serde_json::Value as Json;

/// The fixture runs copied into a temporary folder.
fn runs() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    copy_dir(&root().join("tests/fixtures/monitor/runs"), &runs);
    (d, runs)
}

#[test]
fn once_shows_every_run_and_exits_1_on_a_critical_alert() {
    let (_d, runs) = runs();
    let r = runs.to_str().unwrap();
    let o = tvck(
        &["watch", "--once", "finished", "collapsed", "other-tool"],
        &runs,
    );
    snap_run!("watch_once_fixture_runs", o, &[(r, "[RUNS]")]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn once_exits_0_without_a_critical_alert() {
    let (_d, runs) = runs();
    let o = tvck(&["watch", "--once", "finished"], &runs);
    assert_eq!(o.status.code(), Some(0), "{}", common::stdout(&o));
}

#[test]
fn json_is_the_documented_shape() {
    let (_d, runs) = runs();
    let r = runs.to_str().unwrap();
    // A folder of runs: every run under it, sorted by path.
    let o = tvck(&["watch", "--json", r], &runs);
    assert_eq!(o.status.code(), Some(1));
    snap_run!("watch_json_fixture_runs", o, &[(r, "[RUNS]")]);
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["critical"], Json::Bool(true));
    let names: Vec<&str> = j["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["collapsed", "finished", "other-tool"]);
    let collapsed = &j["runs"][0];
    assert_eq!(collapsed["state"], "running");
    assert_eq!(collapsed["seconds_left"].as_f64(), Some(98.0 * 4.0));
    assert_eq!(collapsed["alerts"][0]["rule"], "initial-coverage");
    assert_eq!(collapsed["alerts"][0]["severity"], "critical");
    assert_eq!(collapsed["alerts"][0]["standing"], Json::Bool(true));
    let other = &j["runs"][2];
    assert_eq!(other["skipped_lines"], 1);
    assert_eq!(other["alerts"][0]["rule"], "non-finite");
}

#[test]
fn alerts_file_changes_the_rules() {
    let (d, runs) = runs();
    let alerts = d.path().join("alerts.yaml");
    std::fs::write(
        &alerts,
        "monitoring:\n  disable: [initial-coverage]\n  rules:\n    - {name: low-q, metric: Q, below: 0.05, severity: critical}\n",
    )
    .unwrap();
    let o = tvck(
        &[
            "watch",
            "--json",
            "collapsed",
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        &runs,
    );
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    let rules: Vec<&str> = j["runs"][0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["low-q"]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(&alerts, "monitoring:\n  divergence_factor: 0.5\n").unwrap();
    let o = tvck(
        &[
            "watch",
            "--once",
            "collapsed",
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        &runs,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("divergence_factor"));
}

#[test]
fn the_dashboard_needs_a_terminal() {
    let (_d, runs) = runs();
    let o = tvck(&["watch", "finished"], &runs);
    snap_run!("watch_dashboard_without_terminal", o);
}

/// tmux, or why not: with `CI` set a missing tmux fails the test.
fn have_tmux() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "tmux is not installed: the real-terminal test of `tvck watch` did not run (scripts/test installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
    }
    ok
}

fn tmux(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("run tmux")
}

fn capture(socket: &Path) -> String {
    String::from_utf8_lossy(&tmux(socket, &["capture-pane", "-p", "-t", "w"]).stdout).into_owned()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_in_a_real_terminal() {
    if !have_tmux() {
        return;
    }
    let (d, runs) = runs();
    let socket = d.path().join("tmux.sock");
    let done = d.path().join("exited");
    let cmd = format!(
        "cd '{}' && '{}' watch finished collapsed; echo $? > '{}'; sleep 30",
        runs.display(),
        env!("CARGO_BIN_EXE_tvck"),
        done.display()
    );
    let o = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "120",
            "-y",
            "40",
            &cmd,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for("the dashboard on screen", 20, || {
        capture(&socket).contains("tvck watch  1/2 finished")
    });
    let first = capture(&socket);
    assert!(first.contains("[finished]"), "{first}");
    assert!(first.contains("coverage %"), "{first}");
    assert!(first.contains("encoder_B"), "{first}");
    // Tab: the next run, with its CRITICAL alert.
    tmux(&socket, &["send-keys", "-t", "w", "Tab"]);
    wait_for("the second run", 10, || {
        capture(&socket).contains("tvck watch  2/2 collapsed")
    });
    let second = capture(&socket);
    assert!(second.contains("CRITICAL"), "{second}");
    assert!(second.contains("initial-coverage"), "{second}");
    // A line appended to metrics.jsonl shows up.
    let mut line: Json = serde_json::from_str(
        std::fs::read_to_string(runs.join("collapsed/metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    line["epoch"] = 3.into();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(runs.join("collapsed/metrics.jsonl"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
    wait_for("epoch 3 on screen", 10, || {
        capture(&socket).contains("epoch 3/100")
    });
    tmux(&socket, &["send-keys", "-t", "w", "q"]);
    wait_for("tvck watch exits on q", 10, || done.exists());
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    // The terminal is restored: the main screen is back, without the dashboard.
    let after = capture(&socket);
    assert!(!after.contains("tab/←→ run"), "{after}");
    tmux(&socket, &["kill-server"]);
}

#[test]
fn export_tb_writes_an_event_file() {
    let (_d, runs) = runs();
    let host = tvck::monitor::run::hostname();
    let o = tvck(&["export-tb", "finished"], &runs);
    let safe_host = tvck::monitor::tensorboard::file_name(0, &host);
    let safe_host = safe_host.trim_start_matches("events.out.tfevents.0.");
    snap_run!("export_tb_finished", o, &[(safe_host, "[HOST]")]);
    assert_eq!(o.status.code(), Some(0));
    let files: Vec<_> = std::fs::read_dir(runs.join("finished"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out.tfevents.1764000000."))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let o = tvck(&["export-tb", "nope"], &runs);
    assert_eq!(o.status.code(), Some(2));
}

/// Every scalar of an event file as TensorBoard's EventAccumulator reads it:
/// `{tag: [[step, value], …]}`.
pub fn tensorboard_scalars(dir: &Path) -> Json {
    let script = r#"
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
out = {}
for tag in acc.Tags()["scalars"]:
    out[tag] = [[e.step, None if math.isnan(e.value) else e.value] for e in acc.Scalars(tag)]
print(json.dumps(out))
"#;
    let o = Command::new(python())
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "EventAccumulator failed (is `tensorboard` in .venv? scripts/python-env installs it):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every value of metrics.jsonl as the event file must hold it: tag → [[step, value]].
pub fn expected_scalars(
    metrics: &Path,
) -> std::collections::BTreeMap<String, Vec<(u64, Option<f64>)>> {
    let mut f = tvck::monitor::Follower::new(metrics);
    let mut out: std::collections::BTreeMap<String, Vec<(u64, Option<f64>)>> = Default::default();
    for l in f.poll().unwrap().lines {
        for (tag, v) in tvck::monitor::tensorboard::scalars_of(&l) {
            out.entry(tag)
                .or_default()
                .push((l.epoch, (!v.is_nan()).then_some(f64::from(v))));
        }
    }
    out
}

/// The event file's scalars equal metrics.jsonl's values (as f32) at their epochs, and
/// every metric and loss term of the file is there.
pub fn assert_tensorboard_matches(events_dir: &Path, metrics: &Path) {
    let got = tensorboard_scalars(events_dir);
    let want = expected_scalars(metrics);
    let got_tags: Vec<&String> = got.as_object().unwrap().keys().collect();
    let want_tags: Vec<&String> = want.keys().collect();
    let mut g = got_tags.clone();
    g.sort();
    assert_eq!(g, want_tags, "tags");
    for (tag, points) in &want {
        let seen = got[tag].as_array().unwrap();
        assert_eq!(seen.len(), points.len(), "{tag}");
        for ((step, v), s) in points.iter().zip(seen) {
            assert_eq!(s[0].as_u64(), Some(*step), "{tag}");
            match v {
                None => assert!(s[1].is_null(), "{tag} at {step}: NaN"),
                Some(v) => {
                    let got = s[1].as_f64().unwrap();
                    assert_eq!(got as f32, *v as f32, "{tag} at {step}");
                }
            }
        }
    }
    // Every metric and loss term of the lines, by name.
    let mut f = tvck::monitor::Follower::new(metrics);
    for l in f.poll().unwrap().lines {
        for k in l.metrics.iter().flatten().map(|(k, _)| k) {
            assert!(got.get(format!("metrics/{k}")).is_some(), "metrics/{k}");
        }
        for k in l.loss.keys() {
            assert!(got.get(format!("loss/{k}")).is_some(), "loss/{k}");
        }
    }
}

#[test]
#[ignore = "needs the tensorboard package in the Python environment (scripts/test runs it)"]
fn tensorboard_reads_the_exported_file() {
    let (d, runs) = runs();
    for run in ["finished", "other-tool"] {
        let out = d.path().join(format!("tb-{run}"));
        let o = tvck(
            &["export-tb", run, "-o", out.to_str().unwrap(), "--json"],
            &runs,
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: Json = serde_json::from_slice(&o.stdout).unwrap();
        assert!(j["file"].as_str().unwrap().contains("events.out.tfevents."));
        assert_tensorboard_matches(&out, &runs.join(run).join("metrics.jsonl"));
    }
    // The trainer's metric names, spot-checked against the file by hand.
    let got = tensorboard_scalars(&d.path().join("tb-finished"));
    assert_eq!(
        got["metrics/hierarchy_b"][2][1].as_f64().map(|v| v as f32),
        Some(-0.66)
    );
    assert_eq!(got["loss/total"][0][0].as_u64(), Some(1));
    assert_eq!(
        got["train/lr"][2][1].as_f64().map(|v| v as f32),
        Some(0.001)
    );
    assert!(got["loss/total"].as_array().unwrap().len() == 3);
    let other = tensorboard_scalars(&d.path().join("tb-other-tool"));
    assert!(other["loss/total"][1][1].is_null(), "NaN kept");
    assert_eq!(other["metrics/val_acc"].as_array().unwrap().len(), 3);
}
