//! Metrics stored in a checkpoint (domain.md §5 / §6), read through their aliases.

use serde::{Deserialize, Serialize};

use crate::format::Value;

/// The coverage thresholds every command uses, named for what they decide (coverage is the
/// share of the 19,683 operations reconstructed exactly; docs/domain.md §5, training.md §5).
pub mod coverage {
    /// Below this, a model whose frozen parts are required starts from what is in effect a
    /// random encoder/decoder (0.01% is the known silent failure): `train` stops, CRITICAL.
    pub const CRITICAL_BELOW: f64 = 0.05;
    /// Below this, a frozen checkpoint is a weak start (frozen parts keep only what they
    /// reconstruct): `check` and `train` warn.
    pub const WEAK_BELOW: f64 = 0.95;
    /// best.pt is written only above this (training.md §5).
    pub const BEST_ABOVE: f64 = 0.99;
    /// From this on a checkpoint counts as fully reconstructing (upstream's default
    /// `coverage_freeze_threshold`): auto-fix ranks such candidates first.
    pub const FULL_FROM: f64 = 0.995;
}

/// The headline metrics a checkpoint may carry. Every field is optional: older runs
/// store fewer, and the aliases differ between versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredMetrics {
    /// Share of the 19,683 operations reconstructed exactly (1.0 = 100%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// hierarchy_B (Spearman of valuation vs radius; negative is good).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub richness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_v0: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_v9: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_radius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std_radius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dist_corr: Option<f64>,
    #[serde(rename = "Q", skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// Where `coverage` came from when it was not `metrics.coverage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_source: Option<String>,
    /// Where the values come from; `None` for a file with no metrics that was not converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// The field of a [`StoredMetrics`] a metric name names, borrowed as asked (`&` or
/// `&mut`): the one table of names [`StoredMetrics::by_name`] and
/// [`StoredMetrics::by_name_mut`] share.
macro_rules! metric_slot {
    ($m:expr, $name:expr, $($borrow:tt)+) => {
        match $name {
            "coverage" => Some($($borrow)+ $m.coverage),
            "Q" => Some($($borrow)+ $m.q),
            "hierarchy_B" => Some($($borrow)+ $m.hierarchy),
            "hierarchy_A" => Some($($borrow)+ $m.hierarchy_a),
            "richness" => Some($($borrow)+ $m.richness),
            "dist_corr" => Some($($borrow)+ $m.dist_corr),
            "r_v0" => Some($($borrow)+ $m.r_v0),
            "r_v9" => Some($($borrow)+ $m.r_v9),
            "mean_radius" => Some($($borrow)+ $m.mean_radius),
            "std_radius" => Some($($borrow)+ $m.std_radius),
            _ => None,
        }
    };
}

/// Where a file's metrics come from (docs/migrations.md, "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Written with the weights by a training run (the file has no migration record).
    Trained,
    /// Converted by tvck and evaluated on the converted weights.
    Measured,
    /// Converted by tvck, fitted to the source model, then evaluated.
    Fitted,
    /// Converted and never evaluated: whatever the file says of its metrics is not about its
    /// weights, so none are read.
    NotMeasured,
}

impl Provenance {
    /// The name stored in `migration.metrics.status` and shown in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Trained => "trained",
            Provenance::Measured => "measured",
            Provenance::Fitted => "fitted",
            Provenance::NotMeasured => "not_measured",
        }
    }

    pub fn parse(s: &str) -> Option<Provenance> {
        [
            Provenance::Trained,
            Provenance::Measured,
            Provenance::Fitted,
            Provenance::NotMeasured,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// How tables say it.
    pub fn label(self) -> &'static str {
        match self {
            Provenance::Trained => "written by training",
            Provenance::Measured => "measured after conversion",
            Provenance::Fitted => "fitted and measured after conversion",
            Provenance::NotMeasured => "converted, not measured",
        }
    }

    /// The table column's word.
    pub fn short_label(self) -> &'static str {
        match self {
            Provenance::Trained => "trained",
            Provenance::Measured => "measured",
            Provenance::Fitted => "fitted",
            Provenance::NotMeasured => "converted, not measured",
        }
    }

    /// Whether the values were measured on the file's current weights.
    pub fn is_measured(self) -> bool {
        !matches!(self, Provenance::NotMeasured)
    }
}

/// The top-level entries that describe the weights they were saved with: a converted file
/// moves them into its migration record under [`SOURCE_METRICS`].
pub const SOURCE_METRIC_ENTRIES: [&str; 4] =
    ["metrics", "best_Q", "composite_score", "richness_ratio"];
/// The migration record's entry that says whether (and how) the metrics were measured
/// (`status`: one of [`Provenance`]'s stored names, then the measurement's details).
pub const MIGRATION_METRICS: &str = "metrics";
/// The migration record's entry holding the source file's metric entries.
pub const SOURCE_METRICS: &str = "source_metrics";
/// The top-level key of the migration record.
pub const MIGRATION: &str = "migration";

/// The keys of a checkpoint's `metrics` dict that tvck's trainer writes (the upstream
/// names, domain.md §5), one table for the writer and for [`StoredMetrics::from_root`],
/// which also reads the older aliases next to them.
pub mod key {
    pub const COVERAGE: &str = "coverage";
    pub const HIERARCHY_A: &str = "hierarchy_A";
    pub const HIERARCHY_B: &str = "hierarchy_B";
    pub const RICHNESS_A: &str = "richness_A";
    pub const RICHNESS_B: &str = "richness_B";
    /// dist_corr of z_A: the upstream `distance_corr_A` (read as `dist_corr`).
    pub const DIST_CORR_A: &str = "distance_corr_A";
    /// dist_corr of z_B, named like z_A's.
    pub const DIST_CORR_B: &str = "distance_corr_B";
    pub const R_V0: &str = "r_v0";
    pub const R_V9: &str = "r_v9";
    pub const MEAN_RADIUS: &str = "mean_radius";
    pub const STD_RADIUS: &str = "std_radius";
    pub const Q: &str = "Q";
    // Upstream's stored-metric aliases (domain.md §5), read as the names above.
    pub const HIERARCHY: &str = "hierarchy";
    pub const RADIAL_CORR_A: &str = "radial_corr_A";
    pub const RADIAL_CORR_B: &str = "radial_corr_B";
    pub const RICHNESS: &str = "richness";
    pub const RADIUS_V0: &str = "radius_v0";
    pub const RADIUS_V9: &str = "radius_v9";
    pub const MEAN_RADIUS_A: &str = "mean_radius_A";
    pub const DIST_CORR: &str = "dist_corr";
}

fn first(metrics: Option<&Value>, keys: &[&str]) -> Option<f64> {
    let m = metrics?;
    keys.iter()
        .find_map(|k| m.get(k).and_then(Value::as_f64))
        .filter(|v| v.is_finite())
}

fn last_of(root: &Value, key: &str) -> Option<f64> {
    match root.get(key)? {
        Value::List(items) | Value::Tuple(items) => items.last()?.as_f64(),
        _ => None,
    }
}

impl StoredMetrics {
    /// Where a checkpoint's metrics come from: a tvck conversion says so in its migration
    /// record (a record without a measurement status is an older conversion that copied the
    /// source's metrics: not measured); otherwise stored metrics were written by training.
    pub fn provenance_of(root: &Value) -> Option<Provenance> {
        match root.get(MIGRATION) {
            Some(record @ Value::Dict(_)) => Some(
                record
                    .get_path(&format!("{MIGRATION_METRICS}.status"))
                    .and_then(Value::as_str)
                    .and_then(Provenance::parse)
                    .filter(|p| *p != Provenance::Trained)
                    .unwrap_or(Provenance::NotMeasured),
            ),
            _ => None,
        }
    }

    /// Read the metrics of a checkpoint's root value (none of a converted file whose metrics
    /// were not measured, see [`StoredMetrics::provenance_of`]).
    pub fn from_root(root: &Value) -> StoredMetrics {
        let provenance = StoredMetrics::provenance_of(root);
        if provenance == Some(Provenance::NotMeasured) {
            return StoredMetrics {
                provenance,
                ..StoredMetrics::default()
            };
        }
        let mut out = StoredMetrics::read(root);
        if !out.is_empty() {
            out.provenance = provenance.or(Some(Provenance::Trained));
        }
        out
    }

    fn read(root: &Value) -> StoredMetrics {
        let m = root.get("metrics");
        let mut out = StoredMetrics {
            coverage: first(m, &[key::COVERAGE, "coverage_A"]),
            hierarchy: first(m, &[key::HIERARCHY_B, key::HIERARCHY, key::RADIAL_CORR_B]),
            hierarchy_a: first(m, &[key::HIERARCHY_A, key::RADIAL_CORR_A]),
            richness: first(m, &[key::RICHNESS, key::RICHNESS_B]),
            r_v0: first(m, &[key::R_V0, key::RADIUS_V0]),
            r_v9: first(m, &[key::R_V9, key::RADIUS_V9]),
            mean_radius: first(m, &[key::MEAN_RADIUS, key::MEAN_RADIUS_A]),
            std_radius: first(m, &[key::STD_RADIUS]),
            dist_corr: first(m, &[key::DIST_CORR_A, key::DIST_CORR]),
            q: first(m, &[key::Q]).or_else(|| root.get("best_Q").and_then(Value::as_f64)),
            coverage_source: None,
            provenance: None,
        };
        if out.coverage.is_none() {
            for key in ["coverage_A_history", "coverage_history"] {
                if let Some(c) = last_of(root, key) {
                    out.coverage = Some(c);
                    out.coverage_source = Some(format!("last value of `{key}`"));
                    break;
                }
            }
        }
        out
    }

    /// The value named as queries and rankings name it (`coverage`, `Q`, `hierarchy_B`,
    /// `hierarchy_A`, `richness`, `dist_corr`, `r_v0`, `r_v9`, `mean_radius`,
    /// `std_radius`); `None` when absent or not a metric name.
    pub fn by_name(&self, name: &str) -> Option<f64> {
        metric_slot!(self, name, &).and_then(|v| *v)
    }

    /// The slot of the value [`StoredMetrics::by_name`] names (`None` for a name that is
    /// not a metric's), to fill it.
    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut Option<f64>> {
        metric_slot!(self, name, &mut)
    }

    /// Whether no value was read (whatever the provenance).
    pub fn is_empty(&self) -> bool {
        StoredMetrics {
            provenance: None,
            ..self.clone()
        } == StoredMetrics::default()
    }

    /// Whether the values were measured on the file's current weights (trained, or measured
    /// after conversion) and there are some.
    pub fn is_measured(&self) -> bool {
        !self.is_empty() && self.provenance.is_some_and(Provenance::is_measured)
    }

    /// Compact one-line form for tables: `cov 100.00% hier -0.817 Q 1.071` (empty for a
    /// converted file whose metrics were not measured: it has none).
    pub fn compact(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.coverage {
            parts.push(format!("cov {:.2}%", c * 100.0));
        }
        if let Some(h) = self.hierarchy {
            parts.push(format!("hier {h:.3}"));
        }
        if let Some(q) = self.q {
            parts.push(format!("Q {q:.3}"));
        }
        if let Some(r) = self.richness {
            parts.push(format!("rich {r:.4}"));
        }
        parts.join(" ")
    }
}

/// The epoch a checkpoint was saved at.
pub fn epoch(root: &Value) -> Option<i64> {
    root.get("epoch").and_then(Value::as_i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str) -> Value {
        Value::Str(k.into())
    }

    #[test]
    fn aliases_and_numpy_scalars() {
        let root = Value::Dict(vec![
            (s("epoch"), Value::Int(42)),
            (
                s("metrics"),
                Value::Dict(vec![
                    (
                        s("coverage"),
                        Value::NumpyScalar {
                            dtype: "f8".into(),
                            value: Box::new(Value::Float(1.0)),
                        },
                    ),
                    (s("radial_corr_B"), Value::Float(-0.8165)),
                    (s("radial_corr_A"), Value::Float(-0.52)),
                    (s("dist_corr"), Value::Float(0.77)),
                    (s("radius_v0"), Value::Float(0.91)),
                ]),
            ),
            (s("best_Q"), Value::Float(1.071)),
        ]);
        let m = StoredMetrics::from_root(&root);
        assert_eq!(m.coverage, Some(1.0));
        assert_eq!(m.hierarchy, Some(-0.8165));
        assert_eq!(m.hierarchy_a, Some(-0.52));
        assert_eq!(m.dist_corr, Some(0.77));
        assert_eq!(m.r_v0, Some(0.91));
        assert_eq!(m.q, Some(1.071));
        assert_eq!(epoch(&root), Some(42));
        assert_eq!(m.compact(), "cov 100.00% hier -0.817 Q 1.071");
    }

    #[test]
    fn coverage_from_history() {
        let root = Value::Dict(vec![(
            s("coverage_A_history"),
            Value::List(vec![Value::Float(0.4), Value::Float(0.93)]),
        )]);
        let m = StoredMetrics::from_root(&root);
        assert_eq!(m.coverage, Some(0.93));
        assert!(m.coverage_source.unwrap().contains("coverage_A_history"));
        assert!(StoredMetrics::from_root(&Value::None).is_empty());
    }
}
