//! Rendering of `tvck eval` (feature `train`).

use crate::train::data::N_OPS;
use crate::train::EvalReport;

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
