//! Rendering of `tvck eval` (feature `train`).

use crate::train::data::N_OPS;
use crate::train::{EvalReport, LossReport};

/// The checkpoint, its layout, coverage and every radius metric (`-` where the model has
/// no projection).
pub fn render(r: &EvalReport) -> String {
    let m = &r.metrics;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
    let mut t = format!(
        "{}: {} {} ({} tensors loaded)\n  coverage      {:.6} ({} of {N_OPS})\n",
        r.checkpoint.display(),
        r.version.display_name(),
        r.layout,
        r.loaded,
        m.coverage,
        m.covered
    );
    for (name, v) in [
        ("hierarchy_A", m.hierarchy_a),
        ("hierarchy_B", m.hierarchy_b),
        ("richness_A", m.richness_a),
        ("richness_B", m.richness_b),
        ("dist_corr_A", m.dist_corr_a),
        ("dist_corr_B", m.dist_corr_b),
        ("r_v0", m.r_v0),
        ("r_v9", m.r_v9),
        ("mean_radius", m.mean_radius),
        ("std_radius", m.std_radius),
        ("Q", m.q),
    ] {
        t.push_str(&format!("  {name:<13} {}\n", opt(v)));
    }
    t
}

/// `tvck eval --losses`: each term, its outer weight at the epoch and its weighted value.
pub fn render_losses(r: &LossReport) -> String {
    let l = &r.losses;
    let w = &r.weights;
    let rich = &l.rich_hierarchy;
    let mut t = format!(
        "{}: {} {} — losses at epoch {} (phase {}), seed {}, all {} operations, eval mode, z = mu\n",
        r.checkpoint.display(),
        r.version.display_name(),
        r.layout,
        r.epoch,
        w.phase,
        r.seed,
        r.batch
    );
    t.push_str(&format!(
        "  {:<26} {:>12} {:>8} {:>12}\n",
        "term", "value", "weight", "weighted"
    ));
    let mut row = |name: &str, v: f64, k: f64| {
        t.push_str(&format!(
            "  {name:<26} {v:>12.6} {k:>8.3} {:>12.6}\n",
            v * k
        ));
    };
    row(
        "rich_hierarchy.hierarchy",
        rich.hierarchy,
        r.settings.rich.as_ref().map_or(0.0, |s| s.hierarchy_weight),
    );
    row(
        "rich_hierarchy.coverage",
        rich.coverage,
        r.settings.rich.as_ref().map_or(0.0, |s| s.coverage_weight),
    );
    row(
        "rich_hierarchy.richness",
        rich.richness,
        r.settings.rich.as_ref().map_or(0.0, |s| s.richness_weight),
    );
    row(
        "rich_hierarchy.separation",
        rich.separation,
        r.settings
            .rich
            .as_ref()
            .map_or(0.0, |s| s.separation_weight),
    );
    row("radial (A+B)", l.radial, w.radial);
    row("rank (A+B)", l.rank, w.rank);
    row("zero_structure (A+B)", l.zero_structure, w.zero_structure);
    row("geodesic (A+B)", l.geodesic, w.geodesic);
    t.push_str(&format!(
        "  {:<26} {:>12} {:>8} {:>12.6}\n",
        "total", "", "", l.total
    ));
    t
}
