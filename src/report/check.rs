//! Rendering of `tvck check`: the verdict first, then what was checked, then a table of
//! findings with cause and fix.

use crate::check::{CheckReport, Severity};

use super::new_table;

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
                    c.stored_coverage
                        .map(|cov| format!(", stored coverage {:.2}%", cov * 100.0))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if let Some(p) = &r.load {
        out.push_str(&format!(
            "Load plan:         {}: {} fit, {} mapped, {} size mismatches, {} missing, {} unexpected\n",
            p.mode,
            p.loaded,
            p.mapped.len(),
            p.size_mismatch.len(),
            p.missing.len(),
            p.unexpected.len()
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
