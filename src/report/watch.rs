//! `tvck watch --once`: each run's state as text (escaped at the CLI's writer; run names
//! and event texts from files are escaped here too, inside their lines).

use std::fmt::Write;

use crate::monitor::rules::human;
use crate::monitor::RunSummary;

use super::safe::value;

/// `1.23 s`, `45 ms`.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.2} s")
    } else {
        human(std::time::Duration::from_secs_f64(s))
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v != 0.0 && v.abs() < 1e-3 {
                format!("{v:.3e}")
            } else {
                format!("{v:.4}")
            }
        }
        Some(v) => format!("{v}"),
        None => "null".into(),
    }
}

/// The metrics in the order of docs/json.md, then any others (another tool's), by name.
fn ordered(m: &std::collections::BTreeMap<String, Option<f64>>) -> Vec<(&str, Option<f64>)> {
    let mut out: Vec<(&str, Option<f64>)> = Vec::new();
    for name in crate::monitor::line::METRICS {
        if let Some((k, v)) = m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            out.push((k.as_str(), *v));
        }
    }
    for (k, v) in m {
        if !out.iter().any(|(o, _)| *o == k.as_str()) {
            out.push((k.as_str(), *v));
        }
    }
    out
}

/// One run.
pub fn run_text(s: &RunSummary) -> String {
    let mut t = String::new();
    let epoch = match (s.epoch, s.epochs) {
        (Some(e), Some(n)) => format!("epoch {e}/{n}"),
        (Some(e), None) => format!("epoch {e}"),
        (None, _) => "no epoch yet".into(),
    };
    let _ = writeln!(
        t,
        "{} ({}): {}, {epoch}",
        value(&s.name),
        value(&s.dir),
        s.state.as_str()
    );
    let rate = s
        .epoch_seconds
        .map_or("-".into(), |r| format!("{}/epoch", seconds(r)));
    let left = s.seconds_left.map_or("-".into(), seconds);
    let _ = writeln!(t, "  rate {rate}, time left {left}");
    if let Some(e) = s.metrics_epoch {
        let m: Vec<String> = ordered(&s.metrics)
            .into_iter()
            .filter(|(k, _)| *k != "covered")
            .map(|(k, v)| {
                if k == "coverage" {
                    match v {
                        Some(c) if c.is_finite() => format!("coverage {:.2}%", c * 100.0),
                        _ => format!("coverage {}", num(v)),
                    }
                } else {
                    format!("{} {}", value(k), num(v))
                }
            })
            .collect();
        let _ = writeln!(t, "  metrics (epoch {e}): {}", m.join(", "));
    }
    if !s.loss.is_empty() {
        let l: Vec<String> = s
            .loss
            .iter()
            .map(|(k, v)| format!("{} {}", value(k), num(*v)))
            .collect();
        let _ = writeln!(t, "  loss: {}; lr {}", l.join(", "), num(s.lr));
    }
    if !s.freeze.is_empty() {
        let f: Vec<String> = s
            .freeze
            .iter()
            .map(|(k, v)| format!("{} {}", value(k), if *v { "frozen" } else { "trainable" }))
            .collect();
        let _ = writeln!(t, "  freeze: {}", f.join(", "));
    }
    for e in &s.events {
        let _ = writeln!(
            t,
            "  event epoch {}: {} {}: {}",
            e.epoch,
            value(&e.kind),
            value(&e.component),
            value(&e.message)
        );
    }
    if s.skipped_lines > 0 {
        let _ = writeln!(
            t,
            "  {} line{} of metrics.jsonl not read (not metrics lines)",
            s.skipped_lines,
            if s.skipped_lines == 1 { "" } else { "s" }
        );
    }
    if s.alerts.is_empty() {
        let _ = writeln!(t, "  alerts: none");
    } else {
        let standing = s.alerts.iter().filter(|a| a.standing).count();
        let _ = writeln!(t, "  alerts: {} ({standing} standing)", s.alerts.len());
        for a in &s.alerts {
            let mut shown = a.alert.clone();
            shown.run = None;
            let mark = if a.standing { "*" } else { "-" };
            for (i, l) in shown.render().lines().enumerate() {
                let lead = if i == 0 {
                    format!("  {mark} ")
                } else {
                    "    ".into()
                };
                let _ = writeln!(t, "{lead}{l}");
            }
        }
    }
    t
}

/// Every run, a blank line between them, and the verdict.
pub fn text(runs: &[RunSummary]) -> String {
    let mut t = runs.iter().map(run_text).collect::<Vec<_>>().join("\n");
    let critical = runs.iter().filter(|r| r.critical).count();
    let _ = writeln!(
        t,
        "\n{} run{}, {critical} with a standing CRITICAL alert (* marks alerts that stand)",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    t
}
