//! Rendering of `tvck scan` results.

use crate::scan::ScanReport;

use super::{human_bytes, new_table, thousands};

/// The scan table, the duplicate groups and a summary line.
pub fn render(report: &ScanReport) -> String {
    let mut header = vec![
        "File",
        "Format",
        "Version",
        "Layout",
        "Tensors",
        "Params",
        "Size",
        "Epoch",
        "Metrics",
        "Metrics from",
        "Unsafe",
    ];
    if report.hashed {
        header.push("Fingerprint");
    }
    let mut table = new_table(&header);
    for f in &report.files {
        let mut row: Vec<String> = Vec::with_capacity(header.len());
        row.push(f.path.clone());
        if f.error.is_some() {
            row.push("-".into());
            row.push("UNREADABLE".into());
            row.extend(std::iter::repeat_n(String::new(), 3));
            row.push(human_bytes(f.size));
            row.extend(std::iter::repeat_n(String::new(), 4));
            if report.hashed {
                row.push(String::new());
            }
            table.add_row(row);
            continue;
        }
        row.push(f.format.map(|x| x.label().to_string()).unwrap_or_default());
        row.push(match &f.version {
            Some(v) if v.confidence >= 0.9999 => v.display.clone(),
            Some(v) => format!("{} ({:.0}%)", v.display, v.confidence * 100.0),
            None => "unknown".into(),
        });
        row.push(
            f.version
                .as_ref()
                .map(|v| v.layout.clone())
                .unwrap_or_default(),
        );
        row.push(f.tensors.to_string());
        row.push(thousands(f.parameters));
        row.push(human_bytes(f.size));
        row.push(f.epoch.map(|e| e.to_string()).unwrap_or_default());
        row.push(f.metrics.compact());
        row.push(
            f.metrics
                .provenance
                .map(|p| p.short_label().to_string())
                .unwrap_or_default(),
        );
        row.push(if f.unsafe_globals.is_empty() {
            String::new()
        } else {
            format!("UNSAFE: {}", f.unsafe_globals.join(", "))
        });
        if report.hashed {
            row.push(
                f.fingerprint
                    .as_deref()
                    .map(|h| h[..12].to_string())
                    .unwrap_or_default(),
            );
        }
        table.add_row(row);
    }
    let mut out = format!("{table}\n");
    let unreadable: Vec<_> = report.files.iter().filter(|f| f.error.is_some()).collect();
    if !unreadable.is_empty() {
        out.push_str("\nUnreadable:\n");
        for f in unreadable {
            out.push_str(&format!(
                "  {}: {}\n",
                f.path,
                f.error.as_deref().unwrap_or_default()
            ));
        }
    }
    let unsafe_files: Vec<_> = report
        .files
        .iter()
        .filter(|f| !f.unsafe_globals.is_empty())
        .collect();
    if !unsafe_files.is_empty() {
        out.push_str("\nUnsafe pickle globals (nothing was executed; torch.load(weights_only=False) would run them):\n");
        for f in unsafe_files {
            out.push_str(&format!("  {}: {}\n", f.path, f.unsafe_globals.join(", ")));
        }
    }
    if !report.skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        for k in &report.skipped {
            out.push_str(&format!("  {}: {}\n", k.path, k.reason));
        }
    }
    if !report.duplicates.is_empty() {
        out.push_str("\nDuplicate weights (same fingerprint):\n");
        for g in &report.duplicates {
            out.push_str(&format!(
                "  {}  {}\n",
                &g.fingerprint[..12],
                g.files.join(", ")
            ));
        }
    }
    let t = &report.totals;
    out.push_str(&format!(
        "\n{} checkpoint{} ({}), {} tensors, {} parameters; {} unreadable, {} with unsafe globals{}\n",
        t.files,
        if t.files == 1 { "" } else { "s" },
        human_bytes(t.bytes),
        thousands(t.tensors as u64),
        thousands(t.parameters),
        t.unreadable,
        t.unsafe_files,
        if report.hashed {
            format!(", {} duplicate group{}", t.duplicate_groups, if t.duplicate_groups == 1 { "" } else { "s" })
        } else {
            String::new()
        }
    ));
    out
}
