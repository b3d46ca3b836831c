//! Rendering of `tvck diff`.

use crate::diff::{DiffReport, KeyStatus};

use super::{new_table, shape};

pub fn render(r: &DiffReport) -> String {
    let mut out = format!("A: {}\nB: {}\n", r.a, r.b);
    if let Some(p) = &r.only {
        out.push_str(&format!("Only keys under `{p}`\n"));
    }
    let mut table = new_table(&["Key", "A", "B", "Status"]);
    for k in &r.keys {
        let (a, b, status) = match &k.status {
            KeyStatus::OnlyInA { shape: s } => (shape(s), "-".into(), "only in A".into()),
            KeyStatus::OnlyInB { shape: s } => ("-".into(), shape(s), "only in B".into()),
            KeyStatus::ShapeMismatch { a, b } => (shape(a), shape(b), "SHAPE MISMATCH".into()),
            KeyStatus::DtypeMismatch { a, b, shape: s } => (
                format!("{a} {}", shape(s)),
                format!("{b} {}", shape(s)),
                "DTYPE MISMATCH".into(),
            ),
            KeyStatus::Identical { shape: s } => (shape(s), shape(s), "identical".into()),
            KeyStatus::Changed {
                shape: s,
                max_abs_diff,
            } => (
                shape(s),
                shape(s),
                match max_abs_diff {
                    Some(d) => format!("changed (max |a-b| = {d:.3e})"),
                    None => "changed".into(),
                },
            ),
            KeyStatus::ShapeMatch { shape: s } => (shape(s), shape(s), "shape fits".into()),
            KeyStatus::Unreadable { shape: s, error } => {
                (shape(s), shape(s), format!("UNREADABLE: {error}"))
            }
        };
        table.add_row(vec![k.key.clone(), a, b, status]);
    }
    if r.keys.is_empty() {
        out.push_str("\nNo keys to compare.\n");
    } else {
        out.push_str(&format!("\n{table}\n"));
    }
    let c = &r.counts;
    let mut parts = Vec::new();
    for (n, what) in [
        (c.identical, "identical"),
        (c.changed, "changed"),
        (c.shape_match, "shape fits"),
        (c.only_in_a, "only in A"),
        (c.only_in_b, "only in B"),
        (c.shape_mismatch, "shape mismatches"),
        (c.dtype_mismatch, "dtype mismatches"),
        (c.unreadable, "unreadable"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    out.push_str(&format!(
        "\n{}: {}\n",
        if r.has_differences() {
            "DIFFERENT"
        } else {
            "SAME"
        },
        if parts.is_empty() {
            "nothing compared".to_string()
        } else {
            parts.join(", ")
        }
    ));
    for (side, msgs) in [("A", &r.unsafe_a), ("B", &r.unsafe_b)] {
        if !msgs.is_empty() {
            out.push_str(&format!(
                "\nUNSAFE {side} (equal weights say nothing about what loading it runs):\n"
            ));
            for m in msgs {
                out.push_str(&format!("  {m}\n"));
            }
        }
    }
    out
}
