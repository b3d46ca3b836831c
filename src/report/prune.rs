//! Rendering of `tvck prune`: the plan (every file, keep or delete, and why) and what
//! `--apply` did.

use serde::Serialize;

use crate::manager::prune::{Action, ApplyReport, PrunePlan};

use super::{human_bytes, new_table};

/// `tvck prune --json`: the plan's fields, and `applied` after a real run.
#[derive(Debug, Serialize)]
pub struct PruneJson<'a> {
    /// True when nothing was deleted (no `--apply`).
    pub dry_run: bool,
    #[serde(flatten)]
    pub plan: &'a PrunePlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<&'a ApplyReport>,
}

/// The plan table and its summary line.
pub fn render_plan(plan: &PrunePlan) -> String {
    let mut table = new_table(&["File", "Action", "Kept by", "Size"]);
    for r in &plan.rows {
        table.add_row(vec![
            r.file.clone(),
            match r.action {
                Action::Keep if r.protected => "keep (protected)".to_string(),
                Action::Keep => "keep".to_string(),
                Action::Delete => "DELETE".to_string(),
            },
            r.reasons.join("\n"),
            human_bytes(r.bytes),
        ]);
    }
    format!(
        "Prune plan for {} (rules: {})\n{table}\n{} file{}: {} kept, {} to delete, {} reclaimed\n",
        plan.root,
        plan.rules.label(),
        plan.rows.len(),
        if plan.rows.len() == 1 { "" } else { "s" },
        plan.keep,
        plan.delete,
        human_bytes(plan.reclaimed)
    )
}

/// What the deletions did, one line per planned deletion.
pub fn render_applied(done: &ApplyReport) -> String {
    if done.deletions.is_empty() {
        return "\nNothing to delete.\n".into();
    }
    let mut table = new_table(&["File", "Size", "Outcome"]);
    for d in &done.deletions {
        table.add_row(vec![
            d.file.clone(),
            human_bytes(d.bytes),
            d.outcome.clone(),
        ]);
    }
    format!(
        "\n{table}\n{} deleted ({} reclaimed), {} skipped; each one recorded in the index's prune audit\n",
        done.deleted,
        human_bytes(done.reclaimed),
        done.skipped
    )
}
