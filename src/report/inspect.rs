//! `tvck inspect`'s text: header lines, the tensor table, the tree, the findings (the
//! report itself is built by [`crate::inspect`]).

use crate::inspect::{InspectReport, NON_FINITE};

use super::{human_bytes, new_table, shape, thousands, tree};

/// Human form: header lines, the tensor table, the tree, the findings.
pub fn render(r: &InspectReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("File:        {}\n", r.path));
    out.push_str(&format!(
        "Format:      {} ({})\n",
        r.format.label(),
        human_bytes(r.size)
    ));
    match &r.version {
        Some(v) => {
            out.push_str(&format!(
                "Version:     {} (confidence {:.0}%)  {}\n",
                v.display,
                v.confidence * 100.0,
                v.layout
            ));
            if let Some(note) = &v.note {
                out.push_str(&format!("             {note}\n"));
            }
        }
        None => out.push_str("Version:     unknown (not a TernaryVAE layout)\n"),
    }
    if let Some(k) = &r.model_state_key {
        let where_ = if k.is_empty() {
            "(bare state_dict)".to_string()
        } else {
            format!("`{k}`")
        };
        out.push_str(&format!("Model state: {where_}\n"));
    }
    out.push_str(&format!(
        "Tensors:     {} ({} parameters in the model state)\n",
        r.tensors.len(),
        thousands(r.parameters)
    ));
    if let Some(e) = r.epoch {
        out.push_str(&format!("Epoch:       {e}\n"));
    }
    match r.metrics.provenance {
        Some(crate::metrics::Provenance::NotMeasured) => {
            out.push_str(&format!(
                "Metrics:     none ({}; the source's are kept under migration.source_metrics)\n",
                crate::metrics::Provenance::NotMeasured.label()
            ));
        }
        Some(p) if !r.metrics.is_empty() => {
            out.push_str(&format!(
                "Metrics:     {} ({})\n",
                r.metrics.compact(),
                p.label()
            ));
        }
        _ => {}
    }
    if let Some(fp) = &r.fingerprint {
        out.push_str(&format!("Fingerprint: {fp}\n"));
    }

    let hashed = r
        .tensors
        .iter()
        .any(|t| t.sha256.is_some() || t.error.is_some());
    let mut header = vec!["Tensor", "DType", "Shape", "Layout"];
    if hashed {
        header.push("SHA-256");
    }
    let mut table = new_table(&header);
    for t in &r.tensors {
        let mut layout = Vec::new();
        if let Some(s) = &t.strides {
            layout.push(format!("strides {}", shape(s)));
        }
        if let Some(o) = t.storage_offset {
            layout.push(format!("offset {o}"));
        }
        let mut row = vec![
            t.name.clone(),
            t.dtype.clone(),
            shape(&t.shape),
            layout.join(", "),
        ];
        if hashed {
            row.push(match (&t.sha256, &t.error) {
                (Some(h), _) => h[..16].to_string(),
                (None, Some(e)) => format!("ERROR: {e}"),
                _ => String::new(),
            });
        }
        table.add_row(row);
    }
    if !r.tensors.is_empty() {
        out.push_str(&format!("\n{table}\n"));
    }
    out.push_str("\nContents:\n");
    for line in tree::render(&r.tree.root, &r.tree.tensors).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("\nFindings:\n");
    if r.findings.is_empty() {
        out.push_str("  none\n");
    }
    for f in &r.findings {
        let tag = match f.kind {
            "note" => "note",
            NON_FINITE => "NON-FINITE",
            _ => "UNSAFE",
        };
        out.push_str(&format!("  {tag}: {}\n", f.message));
    }
    out
}
