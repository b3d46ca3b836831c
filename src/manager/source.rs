//! What a selection knows of a checkpoint ([`Source`]): read from its file
//! ([`sources_from_files`](super::select::sources_from_files)) or from the index
//! ([`Index::candidates`](super::index::Index::candidates)), the same either way.

use std::path::PathBuf;
use std::sync::Arc;

use crate::arch::{KeyShape, VersionId};
use crate::metrics::StoredMetrics;

/// A checkpoint selection looks at: what the index (or a fresh read) says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Canonical (as the index holds it).
    pub path: PathBuf,
    pub version: VersionId,
    /// The layout's summary (shared by the sources of one layout).
    pub layout: Arc<str>,
    /// The model state's (key, shape) list (shared by the sources of one layout).
    pub shapes: Arc<[KeyShape]>,
    /// The stored metrics and their provenance (read from the index: without
    /// `coverage_source`, which it keeps in the file's summary only).
    pub metrics: StoredMetrics,
    pub epoch: Option<i64>,
    pub size: u64,
    /// Carries a tvck migration record.
    pub converted: bool,
    /// Seconds since the Unix epoch.
    pub modified: Option<u64>,
    pub aliases: Vec<String>,
}

impl super::query::Fields for Source {
    fn number(&self, field: &str) -> Option<f64> {
        let m = &self.metrics;
        match field {
            "epoch" => self.epoch.map(|e| e as f64),
            "size" => Some(self.size as f64),
            "tensors" => Some(self.shapes.len() as f64),
            "parameters" => Some(
                self.shapes
                    .iter()
                    .map(|(_, s)| s.iter().product::<u64>() as f64)
                    .sum(),
            ),
            "modified" => self.modified.map(|m| m as f64),
            metric => m.by_name(metric),
        }
    }

    fn text(&self, field: &str) -> Vec<String> {
        match field {
            "path" => vec![self.path.to_string_lossy().into_owned()],
            "version" => vec![self.version.as_str().to_string()],
            "layout" => vec![self.layout.to_string()],
            "provenance" => self
                .metrics
                .provenance
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            "alias" => self.aliases.clone(),
            _ => Vec::new(),
        }
    }

    fn flag(&self, field: &str) -> bool {
        match field {
            "converted" => self.converted,
            "measured" => self.metrics.is_measured(),
            _ => false,
        }
    }
}
