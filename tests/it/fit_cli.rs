//! `tvck convert --fit` of the sample checkpoints to v5.12.4 (cargo feature `train`),
//! measured by the PyTorch reference (tests/python/check_fit.py, eval_reference.py's
//! modules and metrics), not by tvck: the fitted file reconstructs exactly the operations
//! its source reconstructs, and max / mean |Δ radius| of A and B and |Δ| of hierarchy_A/B,
//! richness_A/B, dist_corr_A/B and Q are within the fit's tolerances
//! (docs/migrations.md, "`--fit` and `--measure`"). The summary's three columns per metric
//! (source, structural, fitted) are a snapshot, numbers masked.
#![cfg(feature = "train")]

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{python, root, stdout, tvck};
use serde_json::Value as Json;
use tvck::train::fit::Tolerances;

/// Every sample v5.11-family and v5.5 checkpoint: each fit reaches every tolerance within
/// the default budget (docs/benchmarks.md, "convert --fit", times them with
/// scripts/bench-fit).
const IN_CI: [&str; 4] = [
    "checkpoints/v5_11/best.pt",
    "checkpoints/v5_11_homeostasis/best.pt",
    "checkpoints/v5_5/latest.pt",
    "checkpoints/v5_5_early/latest.pt",
];

fn eval_spec(ckpt: &str) -> Json {
    let o = tvck(&["eval", ckpt, "--json"], &root());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: Json = serde_json::from_str(&stdout(&o)).expect("eval JSON");
    j["spec"].clone()
}

/// check_fit.py's measurement of OUT against SRC.
fn check_fit(src: &str, out: &Path) -> Json {
    let out_s = out.to_str().unwrap();
    let o = Command::new(python())
        .arg(root().join("tests/python/check_fit.py"))
        .arg(root().join(src))
        .arg(eval_spec(src).to_string())
        .arg(out)
        .arg(eval_spec(out_s).to_string())
        .output()
        .expect("run check_fit.py");
    assert!(
        o.status.success(),
        "check_fit.py failed on {src}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("check_fit.py JSON")
}

/// The fit's summary (from "metrics:" on) with every number masked as `N` and runs of
/// spaces and of table rules collapsed, so that the snapshot holds its structure (the
/// three columns per metric), not machine-dependent values and widths.
fn masked_summary(text: &str) -> String {
    let from = text.find("\nmetrics: ").expect("a summary") + 1;
    let mut out = String::new();
    let mut prev: Option<char> = None;
    let mut chars = text[from..].chars().peekable();
    while let Some(c) = chars.next() {
        let digit_next = chars.peek().is_some_and(char::is_ascii_digit);
        let starts_number = (c.is_ascii_digit() || (c == '-' && digit_next))
            && !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_' || p == 'N');
        if starts_number {
            while chars
                .peek()
                .is_some_and(|&d| d.is_ascii_digit() || d == '.' || d == 'e' || d == '-')
            {
                chars.next();
            }
            out.push('N');
            prev = Some('N');
            continue;
        }
        if matches!(c, ' ' | '─' | '═') && prev == Some(c) {
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn fit_to_v5_12_4_reaches_the_tolerances_measured_by_pytorch() {
    let tol = Tolerances::default();
    let dir = tempfile::tempdir().unwrap();
    for src in IN_CI {
        let out = dir.path().join(format!("{}.pt", src.replace('/', "_")));
        let out_s = out.to_str().unwrap();
        let o = tvck(
            &["convert", src, "--to", "v5_12_4", "-o", out_s, "--fit"],
            &root(),
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{src}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = stdout(&o);
        assert!(text.contains("metrics: fitted"), "{src}: {text}");
        if src == IN_CI[0] {
            crate::snap!("fit_summary_v5_11_to_v5_12_4", masked_summary(&text));
        }
        let m = check_fit(src, &out);
        assert_eq!(m["covered"]["output"], m["covered"]["source"], "{src}: {m}");
        assert_eq!(m["same_set"], true, "{src}: {m}");
        let source_has_projection = !src.contains("v5_5");
        assert_eq!(m["radius"].is_object(), source_has_projection, "{src}: {m}");
        if source_has_projection {
            for side in ["A", "B"] {
                let r = &m["radius"][side];
                assert!(
                    r["max"].as_f64().unwrap() <= tol.max_radius,
                    "{src}: max |Δ radius_{side}| {m}"
                );
                assert!(
                    r["mean"].as_f64().unwrap() <= tol.mean_radius,
                    "{src}: mean |Δ radius_{side}| {m}"
                );
            }
            for (k, bound) in [
                ("hierarchy_a", tol.hierarchy),
                ("hierarchy_b", tol.hierarchy),
                ("richness_a", tol.richness),
                ("richness_b", tol.richness),
                ("dist_corr_a", tol.dist_corr),
                ("dist_corr_b", tol.dist_corr),
                ("Q", tol.q),
            ] {
                let d = m["delta"][k].as_f64().unwrap();
                assert!(d <= bound, "{src}: |Δ {k}| {d} > {bound}: {m}");
            }
        }
    }
}
