//! The rules on the fixtures of tests/fixtures/monitor: each `RULE.trigger.jsonl` raises
//! RULE, each `RULE.quiet.jsonl` raises nothing; the liveness rules on built run folders;
//! the `monitoring:` section's thresholds and its problems.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::rules::{Engine, Settings, RULES};
use super::run::{RunInfo, RunState, RunView};
use super::{Alert, Follower, Severity};
use crate::config::TrainingConfig;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monitor")
}

fn alerts_of(file: &Path, settings: Settings) -> (Vec<Alert>, Engine) {
    let mut f = Follower::new(file);
    let mut e = Engine::new(settings);
    let mut out = Vec::new();
    for l in f.poll().unwrap().lines {
        out.extend(e.observe(&l));
    }
    assert_eq!(f.skipped, 0, "{}", file.display());
    (out, e)
}

const LINE_RULES: &[(&str, Severity)] = &[
    ("initial-coverage", Severity::Critical),
    ("coverage-drop", Severity::Warning),
    ("non-finite", Severity::Critical),
    ("loss-divergence", Severity::Warning),
    ("plateau", Severity::Warning),
    ("frozen-weights-changed", Severity::Critical),
    ("lr-zero", Severity::Warning),
];

#[test]
fn every_rule_has_a_triggering_and_a_quiet_fixture() {
    for (rule, severity) in LINE_RULES {
        assert!(RULES.contains(rule));
        let (alerts, engine) = alerts_of(
            &fixtures().join(format!("{rule}.trigger.jsonl")),
            Settings::default(),
        );
        let mine: Vec<&Alert> = alerts.iter().filter(|a| a.rule == *rule).collect();
        assert!(
            !mine.is_empty(),
            "{rule}: not raised by its trigger file: {alerts:?}"
        );
        assert!(
            mine.iter().all(|a| a.severity == *severity),
            "{rule}: {mine:?}"
        );
        assert!(
            mine.iter()
                .all(|a| !a.cause.is_empty() && !a.fix.is_empty()),
            "{rule}"
        );
        assert!(
            engine.standing().iter().any(|a| a.rule == *rule),
            "{rule} stands"
        );
        let (quiet, _) = alerts_of(
            &fixtures().join(format!("{rule}.quiet.jsonl")),
            Settings::default(),
        );
        assert!(quiet.is_empty(), "{rule}: the quiet file raised {quiet:?}");
    }
}

#[test]
fn the_alerts_say_what_and_when() {
    let one = |rule: &str| {
        let (a, _) = alerts_of(
            &fixtures().join(format!("{rule}.trigger.jsonl")),
            Settings::default(),
        );
        a.into_iter()
            .filter(|a| a.rule == rule)
            .map(|a| (a.epoch, a.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        one("initial-coverage"),
        [(0, "initial coverage 2.97% (584 of 19683) < 5.00% with encoder_A frozen: the frozen parts would never reach coverage".to_string())]
    );
    assert_eq!(
        one("coverage-drop"),
        [(
            2,
            "coverage dropped to 98.00% (< freeze threshold 99.50%)".to_string()
        )],
        "one alert for a drop that lasts two epochs"
    );
    assert_eq!(
        one("non-finite"),
        [(2, "loss.total is NaN or infinite at epoch 2".to_string()),],
        "the NaN of epoch 3 continues the standing alert"
    );
    assert_eq!(
        one("loss-divergence"),
        [(
            4,
            "loss.total = 6.0000 is more than 10× its best 0.5000".to_string()
        )]
    );
    assert_eq!(
        one("plateau"),
        [(
            21,
            "Q has not improved for 20 epochs (best 0.3000 at epoch 1)".to_string()
        )]
    );
    assert_eq!(one("frozen-weights-changed")[0].0, 2);
    assert_eq!(one("lr-zero")[0].0, 3);
}

#[test]
fn settings_from_a_monitoring_section() {
    let cfg = TrainingConfig::from_str(
        "homeostasis:\n  coverage_freeze_threshold: 0.97\nmonitoring:\n  divergence_factor: 3\n  plateau_metric: hierarchy_B\n  plateau_epochs: 5\n  disable: [lr-zero]\n  rules:\n    - {name: low-q, metric: Q, below: 0.35, severity: critical, after_epoch: 1}\n",
        "c.yaml",
    )
    .unwrap();
    let (s, problems) = Settings::from_config(Some(&cfg), None);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.coverage_drop_below, 0.97);
    assert_eq!(s.divergence_factor, 3.0);
    assert_eq!(s.plateau_direction, super::rules::Direction::Min);
    // 3×: the quiet divergence file (best 0.8, then 4.5) now alerts; lr-zero is off.
    let (a, _) = alerts_of(&fixtures().join("loss-divergence.quiet.jsonl"), s.clone());
    assert_eq!(
        a.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["low-q", "loss-divergence"]
    );
    assert_eq!(a[0].severity, Severity::Critical);
    assert_eq!(a[0].epoch, 1);
    let (a, _) = alerts_of(&fixtures().join("lr-zero.trigger.jsonl"), s.clone());
    assert!(a.iter().all(|a| a.rule != "lr-zero"), "{a:?}");
    // An --alerts file's section overrides the config's key by key.
    let over =
        TrainingConfig::from_str("monitoring:\n  divergence_factor: 20\n", "a.yaml").unwrap();
    let (s2, _) = Settings::from_config(Some(&cfg), over.monitoring.as_ref());
    assert_eq!((s2.divergence_factor, s2.plateau_epochs), (20.0, 5));
}

#[test]
fn wrong_monitoring_values_are_problems() {
    let cfg = TrainingConfig::from_str(
        "monitoring:\n  divergence_factor: 0.5\n  coverage_drop_below: 99.5\n  plateau_mode: up\n  plateau_epochs: 0\n  disable: [nope]\n  rules:\n    - {metric: Q}\n    - {below: 1}\n    - {metric: Q, below: 1, severity: loud}\n    - {metric: my_metric, above: 2}\n",
        "c.yaml",
    )
    .unwrap();
    let (s, problems) = Settings::from_config(Some(&cfg), None);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "monitoring.coverage_drop_below",
            "monitoring.divergence_factor",
            "monitoring.plateau_mode",
            "monitoring.plateau_epochs",
            "monitoring.disable",
            "monitoring.rules[0]",
            "monitoring.rules[1]",
            "monitoring.rules[2]",
            "monitoring.rules[3].metric",
        ]
    );
    assert!(
        !problems.last().unwrap().error,
        "another tool's metric is fine"
    );
    assert_eq!(s.divergence_factor, 10.0, "the default is kept");
    assert_eq!(s.thresholds.len(), 1);
}

fn set_mtime(p: &Path, ago: Duration) {
    let f = std::fs::File::options().append(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

#[test]
fn stalled_and_finished_runs() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("r");
    std::fs::create_dir(&run).unwrap();
    std::fs::copy(
        fixtures().join("lr-zero.quiet.jsonl"),
        run.join("metrics.jsonl"),
    )
    .unwrap();
    // Fresh: running.
    let mut v = RunView::new(&run, Settings::default());
    let (n, a) = v.poll().unwrap();
    assert_eq!((n, a.len()), (4, 0));
    assert_eq!(v.state(), RunState::Running);
    // An hour without growth: stalled.
    set_mtime(&run.join("metrics.jsonl"), Duration::from_secs(3600));
    let (_, a) = v.poll().unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].rule, "stalled");
    assert_eq!(a[0].epoch, 3);
    assert_eq!(a[0].run.as_deref(), Some("r"));
    assert!(
        a[0].message
            .starts_with("metrics.jsonl has not grown for 60 min (limit 10 min"),
        "{}",
        a[0].message
    );
    assert_eq!(v.state(), RunState::Stalled);
    // The plot written after the last line: finished, the stall clears.
    std::fs::write(run.join("training.svg"), "<svg/>").unwrap();
    let (_, a) = v.poll().unwrap();
    assert!(a.is_empty());
    assert_eq!(v.state(), RunState::Finished);
    assert!(!v.alerting());
    // Quiet: a long epoch time raises the limit (10 epoch times).
    let mut info = RunInfo {
        format: 1,
        pid: std::process::id(),
        host: super::run::hostname(),
        started: 0,
        updated: 0,
        state: RunState::Running,
        epoch: 3,
        epochs: 10,
        epoch_seconds: Some(600.0),
        monitor_seconds: None,
        config: None,
    };
    info.write(&run).unwrap();
    let mut v = RunView::new(&run, Settings::default());
    let (_, a) = v.poll().unwrap();
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(v.state(), RunState::Running);
    assert_eq!(v.time_left(), Some(Duration::from_secs(4200)));
    // The process gone while run.json says running: CRITICAL, failed.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    info.pid = dead;
    info.write(&run).unwrap();
    let (_, a) = v.poll().unwrap();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].rule.as_str(), a[0].severity),
        ("process-gone", Severity::Critical)
    );
    assert_eq!(v.state(), RunState::Failed);
    assert!(v.engine.critical());
}

#[test]
fn a_rewritten_metrics_file_starts_over() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("metrics.jsonl");
    std::fs::copy(fixtures().join("non-finite.trigger.jsonl"), &p).unwrap();
    let mut v = RunView::new(d.path(), Settings::default());
    let (_, a) = v.poll().unwrap();
    assert!(a.iter().any(|a| a.rule == "non-finite"));
    std::fs::copy(fixtures().join("non-finite.quiet.jsonl"), &p).unwrap();
    let (n, a) = v.poll().unwrap();
    assert_eq!(n, 4);
    assert!(a.is_empty());
    assert!(v.engine.alerts.is_empty());
}
