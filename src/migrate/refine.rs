//! What happens to a converted model between the tensor operations and the file: its
//! metrics are measured on the converted weights (`--measure`), or the model is first fitted
//! to do what the source model does (`--fit`), or neither.
//!
//! The library only defines the interface ([`Refine`]); the implementations need libtorch and
//! live in the trainer (feature `train`, `crate::train::fit`). Whatever happens, a converted
//! file never carries the source's metrics as its own (docs/migrations.md, "Metrics"): they
//! move to `migration.source_metrics`, and `metrics` holds only values measured on the
//! written weights.

use super::{MigrateError, Plan};
use crate::format::write::TensorData;
use crate::format::Checkpoint;
use crate::metrics::Provenance;

/// Whether, and how, a converted file's metrics were measured on its weights (one of
/// [`Provenance`]'s values, written as `migration.metrics.status`).
pub type MetricsStatus = Provenance;

/// What a [`Refine`] gets: the source checkpoint, the plan, and the structurally converted
/// model state (plan order; keys, dtypes and shapes of the target layout).
pub struct RefineInput<'s, 'a> {
    pub source: &'a Checkpoint,
    pub plan: &'a Plan,
    pub state: &'s [(String, TensorData<'a>)],
}

/// What a [`Refine`] returns.
#[derive(Debug, Clone)]
pub struct Refined {
    /// New bytes for the model state (same keys, dtypes and shapes, in order) when the model
    /// was fitted; `None` keeps the structural conversion.
    pub state: Option<Vec<Vec<u8>>>,
    /// [`Provenance::Measured`] or [`Provenance::Fitted`].
    pub status: MetricsStatus,
    /// The metrics of the weights that are written, under the names the trainer stores
    /// (`crate::metrics::key`).
    pub metrics: Vec<(String, f64)>,
    /// How they were obtained (tool, device, seed, steps, tolerances, the source /
    /// structural / fitted values…): kept in the migration record under `metrics` and shown
    /// in the summary.
    pub report: serde_json::Value,
}

/// Measures (and may fit) a converted model before it is written.
pub trait Refine {
    /// What [`Refine::refine`] would do with this plan, for a dry run (the fitting targets,
    /// the parts only initialised…). Nothing is evaluated.
    fn describe(&self, source: &Checkpoint, plan: &Plan)
        -> Result<serde_json::Value, MigrateError>;

    /// Measure (and fit) the converted state.
    fn refine(&self, input: RefineInput<'_, '_>) -> Result<Refined, MigrateError>;
}
