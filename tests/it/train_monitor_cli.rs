//! The trainer's monitoring hook (feature `train`): a short run whose config triggers an
//! alert writes it to alerts.jsonl, the terminal, an alert command and a webhook on a local
//! listener; a normal run raises none; both write run.json, `frozen_sha256` per frozen part
//! and, with `--tensorboard`, an event file TensorBoard's reader loads.
#![cfg(feature = "train")]

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{root, stdout, tvck};
use serde_json::Value as Json;

const SMOKE: &str = "tests/fixtures/configs/train_v5_11_smoke.yaml";

/// The smoke config with its frozen checkpoint made absolute and `extra` appended.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join(SMOKE)).unwrap();
    let ckpt = root().join("checkpoints/v5_5/latest.pt");
    let text = text.replace(
        "../../../checkpoints/v5_5/latest.pt",
        ckpt.to_str().unwrap(),
    );
    let p = dir.join("config.yaml");
    std::fs::write(&p, format!("{text}\n{extra}")).unwrap();
    p
}

/// Each request a receiver got: its head and its body.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver on 127.0.0.1: every POST it got.
fn listener() -> (String, Requests) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            g.lock()
                .unwrap()
                .push((head, String::from_utf8_lossy(&body).into_owned()));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn lines(p: &Path) -> Vec<Json> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn run_json(dir: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).expect("run.json")).unwrap()
}

/// The frozen parts' hashes: every line has encoder_A's and decoder_A's, and they never move.
fn assert_frozen_hashes(out: &Path) {
    let ls = lines(&out.join("metrics.jsonl"));
    assert_eq!(ls.len(), 4, "epoch 0 + 3 epochs");
    let first = &ls[0]["frozen_sha256"];
    for part in ["encoder_A", "decoder_A"] {
        assert_eq!(
            first[part].as_str().map(str::len),
            Some(64),
            "{part}: {first}"
        );
    }
    for l in &ls {
        assert_eq!(&l["frozen_sha256"], first, "frozen parts keep their hash");
    }
}

#[test]
#[ignore = "needs the PyTorch environment for the TensorBoard reader (scripts/test runs it)"]
fn an_alerting_run_logs_prints_and_delivers_and_a_normal_run_is_quiet() {
    let d = tempfile::tempdir().unwrap();
    let (url, got) = listener();
    // lr_zero_below above the schedule's rates: every trained epoch counts as lr zero.
    let cfg = config(d.path(), "monitoring:\n  lr_zero_below: 1.0\n");
    let out = d.path().join("alerting");
    let cmd_out = d.path().join("cmd.jsonl");
    let o = tvck(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--epochs",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--alert-webhook",
            &url,
            "--alert-cmd",
            &format!("cat >> '{}'", cmd_out.display()),
            "--tensorboard",
        ],
        &root(),
    );
    let text = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // alerts.jsonl: one lr-zero alert (it stands over the epochs), with cause and fix.
    let alerts = lines(&out.join("alerts.jsonl"));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["rule"], "lr-zero");
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["epoch"], 1);
    assert!(!a["cause"].as_str().unwrap().is_empty() && !a["fix"].as_str().unwrap().is_empty());
    assert!(a["time"].as_u64().is_some());
    // The terminal.
    assert!(
        text.contains("WARNING epoch 1 lr-zero: learning rate"),
        "{text}"
    );
    assert!(
        text.contains("  cause: the scheduler reached eta_min"),
        "{text}"
    );
    // The command and the webhook got the same alert, with the run's name.
    let by_cmd = lines(&cmd_out);
    assert_eq!(by_cmd.len(), 1);
    assert_eq!(by_cmd[0]["rule"], "lr-zero");
    assert_eq!(by_cmd[0]["run"], "alerting");
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].0.starts_with("POST /hook HTTP/1.1"),
        "{}",
        posts[0].0
    );
    assert!(posts[0]
        .0
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let posted: Json = serde_json::from_str(&posts[0].1).unwrap();
    assert_eq!(posted, by_cmd[0]);
    // run.json: finished, this process's config, 3 epochs.
    let r = run_json(&out);
    assert_eq!(r["state"], "finished");
    assert_eq!(
        (r["epoch"].as_u64(), r["epochs"].as_u64()),
        (Some(3), Some(3))
    );
    let epoch_s = r["epoch_seconds"].as_f64().unwrap();
    assert!(epoch_s > 0.0);
    // What the monitoring took of each epoch, measured by the trainer: some, and a part.
    let monitor_s = r["monitor_seconds"].as_f64().unwrap();
    assert!(monitor_s > 0.0 && monitor_s < epoch_s, "{r}");
    assert_eq!(r["config"].as_str(), cfg.canonicalize().unwrap().to_str());
    assert_frozen_hashes(&out);
    // TensorBoard's reader sees every metric and loss of metrics.jsonl.
    crate::watch_cli::assert_tensorboard_matches(&out, &out.join("metrics.jsonl"));
    // `tvck watch --once` reads the same alert from the files.
    let w = tvck(&["watch", "--json", out.to_str().unwrap()], &root());
    assert_eq!(w.status.code(), Some(0));
    let j: Json = serde_json::from_slice(&w.stdout).unwrap();
    assert_eq!(j["runs"][0]["state"], "finished");
    assert_eq!(j["runs"][0]["alerts"][0]["rule"], "lr-zero");

    // The same run without the monitoring section: no alert anywhere.
    let quiet_cfg = config(d.path(), "");
    let quiet = d.path().join("quiet");
    let o = tvck(
        &[
            "train",
            "--config",
            quiet_cfg.to_str().unwrap(),
            "--epochs",
            "3",
            "--out",
            quiet.to_str().unwrap(),
            "--alert-webhook",
            &url,
        ],
        &root(),
    );
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert_eq!(
        std::fs::read_to_string(quiet.join("alerts.jsonl")).unwrap(),
        ""
    );
    assert!(!text.contains("WARNING epoch"), "{text}");
    assert_eq!(got.lock().unwrap().len(), 1, "no new webhook call");
    assert_eq!(run_json(&quiet)["state"], "finished");
    assert_frozen_hashes(&quiet);
    assert!(
        !std::fs::read_dir(&quiet).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("events.out")),
        "no event file without --tensorboard"
    );
}

#[test]
fn bad_alert_options_are_usage_errors_before_training() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let out = d.path().join("never");
    let alerts = d.path().join("alerts.yaml");
    std::fs::write(&alerts, "monitoring:\n  plateau_epochs: 0\n").unwrap();
    for extra in [
        vec!["--alert-webhook", "https://example.org/x"],
        vec!["--alerts", alerts.to_str().unwrap()],
    ] {
        let mut args = vec![
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra.iter());
        let o = tvck(&args, &root());
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("hint:"));
        assert!(!out.exists(), "nothing trained");
    }
}
