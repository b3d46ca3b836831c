//! Rendering of `tvck check`: the verdict first, then what was checked, then a table of
//! findings with cause and fix.

use crate::check::{CheckReport, Severity};

use super::new_table;

/// The JSON of `check --json` (docs/json.md): the report, plus the auto-fix and what
/// writing it did.
#[derive(serde::Serialize)]
pub struct CheckJson<'a> {
    #[serde(flatten)]
    pub report: &'a CheckReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_fix: Option<&'a crate::autofix::AutoFix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<&'a std::path::Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_write: Option<&'a CheckReport>,
}

pub fn render(r: &CheckReport) -> String {
    let mut out = format!("{}\n\n", r.verdict());
    let m = &r.model;
    out.push_str(&format!(
        "Model:             {} → {}{}\n",
        m.class.as_deref().unwrap_or("(model.name not set)"),
        m.version
            .map(|v| v.display_name())
            .unwrap_or("unknown layout"),
        m.layout
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    ));
    match &r.frozen_checkpoint {
        None => out.push_str("Frozen checkpoint: none\n"),
        Some(c) => {
            out.push_str(&format!(
                "Frozen checkpoint: {}{}\n",
                c.configured,
                match (&c.resolved, c.resolved_via) {
                    (Some(p), Some(via)) => format!(" → {} (via {via})", p.display()),
                    _ => " → not found".into(),
                }
            ));
            if let Some(v) = c.version {
                out.push_str(&format!(
                    "                   {}{}{}\n",
                    v.display_name(),
                    c.layout
                        .as_deref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default(),
                    match (c.stored_coverage, c.metrics) {
                        (_, Some(crate::metrics::Provenance::NotMeasured)) =>
                            format!(", {}", crate::metrics::Provenance::NotMeasured.label()),
                        (Some(cov), p) => format!(
                            ", stored coverage {:.2}%{}",
                            cov * 100.0,
                            p.filter(|p| *p != crate::metrics::Provenance::Trained)
                                .map(|p| format!(" ({})", p.label()))
                                .unwrap_or_default()
                        ),
                        (None, _) => String::new(),
                    }
                ));
            }
        }
    }
    if let Some(p) = &r.load {
        out.push_str(&format!(
            "Load plan:         {}: {} fit, {} mapped, {} size mismatches, {} missing, {} unexpected\n",
            p.mode,
            p.loaded.len(),
            p.mapped.len(),
            p.keys.mismatched.len(),
            p.keys.missing.len(),
            p.keys.unexpected.len()
        ));
    }
    if r.findings.is_empty() {
        out.push_str("\nNo findings.\n");
        return out;
    }
    let mut table = new_table(&["Severity", "Where", "Finding"]);
    // Long PyTorch lines wrap inside the cell instead of widening the table.
    table
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_width(150);
    for f in &r.findings {
        let mut text = f.message.clone();
        for d in &f.details {
            text.push_str(&format!("\n  {d}"));
        }
        if let Some(c) = &f.cause {
            text.push_str(&format!("\ncause: {c}"));
        }
        if let Some(x) = &f.fix {
            text.push_str(&format!("\nfix: {x}"));
        }
        let sev = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        table.add_row(vec![
            sev.to_string(),
            f.location.clone().unwrap_or_default(),
            text,
        ]);
    }
    out.push_str(&format!("\n{table}\n"));
    out
}

/// The auto-fix section: candidates, then the diff (or why there is none).
pub fn render_autofix(fix: &crate::autofix::AutoFix, written: Option<&std::path::Path>) -> String {
    let mut out = String::from("\nAuto-fix\n");
    out.push_str(&format!(
        "Searched: {}\n",
        if fix.roots.is_empty() {
            "(no folder exists)".to_string()
        } else {
            fix.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if fix.candidates.is_empty() {
        out.push_str("No compatible checkpoint found.\n");
    } else {
        let mut table = new_table(&["#", "Candidate", "Version", "Why"]);
        for (i, c) in fix.candidates.iter().take(5).enumerate() {
            table.add_row(vec![
                (i + 1).to_string(),
                c.path.clone(),
                format!("{} ({})", c.version.display_name(), c.layout),
                c.why.clone(),
            ]);
        }
        out.push_str(&format!("{table}\n"));
        if fix.candidates.len() > 5 {
            out.push_str(&format!("… and {} more\n", fix.candidates.len() - 5));
        }
    }
    if let Some(n) = &fix.note {
        out.push_str(&format!("{n}\n"));
    }
    if !fix.diff.is_empty() {
        out.push_str(&format!("\n{}", fix.diff));
        if !fix.diff.ends_with('\n') {
            out.push('\n');
        }
        match written {
            Some(bak) => out.push_str(&format!(
                "\nWritten. The original is kept as {}.\n",
                bak.display()
            )),
            None => out.push_str("\nRun again with --write to apply (a .bak copy is kept).\n"),
        }
    }
    out
}
