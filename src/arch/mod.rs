//! Architecture catalog and version inference.
//!
//! Every TernaryVAE layout is described *parametrically* in `src/arch/catalog.yaml`
//! (embedded, parsed once): components (encoders, decoders, hyperbolic projections whose
//! Sequential indices depend on n_layers and dropout, the controller, the v5.5 extras) and
//! versions composing them with parameter domains, plus the model classes and the
//! `frozen_checkpoint` compatibility matrix (docs/domain.md §2, §3, §7).
//!
//! * [`expected_layout`]: every state_dict key and shape of a version built with given
//!   [`LayoutParams`], in module order.
//! * [`infer`]: solve the parameters from a state_dict's shapes and rank the versions
//!   ([`Inference`], [`Candidate`] with missing / unexpected / mismatched keys).
//! * [`resolve_config`]: the version and parameters a training config builds.
//! * [`required_frozen`], [`compatible_sources`], [`accepts_source`]: the matrix.
//!
//! ```
//! use tvck::arch::{self, Hints, LayoutParams, VersionId};
//! let params = arch::default_params(VersionId::V5_12_4);
//! let keys = arch::expected_layout(VersionId::V5_12_4, &params);
//! let inf = arch::infer(&keys, &Hints::default());
//! let best = inf.best.unwrap();
//! assert_eq!(best.version, VersionId::V5_12_4);
//! assert_eq!(best.confidence, 1.0);
//! assert_eq!(best.summary(), "L16 H64 dual 2L drop ctrl improved");
//! ```

mod catalog;
mod checkpoint;
mod compare;
pub(crate) mod expr;
mod infer;
mod load_plan;

pub use checkpoint::{
    guess_checkpoint, guess_checkpoint_with, infer_checkpoint, state_shapes, VersionGuess,
};

pub use compare::{pytorch_error_title, KeyComparison, SizeMismatch};
pub use load_plan::{is_frozen_part, load_plan, LoadParts, LoadPlan};

pub use catalog::{
    catalog, Catalog, CatalogError, EncoderKind, LayoutParams, ModelClass, Param, ParamDomain,
    Version, VersionId, CATALOG_YAML,
};
pub use infer::{
    compare_layout, infer, resolve_config, Candidate, ConfigLayout, Hints, Inference,
    CLASS_MISMATCH_FACTOR, MIN_CONFIDENCE,
};

/// A state_dict key with its shape (`[]` for a scalar).
pub type KeyShape = (String, Vec<u64>);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The catalog is not valid YAML of the expected schema.
    #[error("architecture catalog: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The catalog parses but is inconsistent (unknown names, bad expressions, cycles, …).
    #[error("architecture catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// A version id or name that the catalog does not know.
    #[error("unknown model version `{0}`")]
    UnknownVersion(String),
    /// A parameter outside a version's domain.
    #[error("{version}: {param} = {value} is outside the version's domain ({domain})")]
    ParamOutOfDomain {
        version: &'static str,
        param: &'static str,
        value: String,
        domain: String,
    },
}

/// All versions of the embedded catalog, in catalog order.
pub fn versions() -> &'static [Version] {
    catalog().versions()
}

/// The version `id` of the embedded catalog.
pub fn version(id: VersionId) -> &'static Version {
    catalog().version(id)
}

/// The canonical parameters of a version (`v5_11`: `L16 H64 single 1L`).
pub fn default_params(id: VersionId) -> LayoutParams {
    version(id).defaults()
}

/// Every state_dict key of `version` built with `params`, with its shape, in module order.
///
/// Parameters the version does not use are ignored; used ones are taken as given, even
/// outside the version's domain (validate with [`check_params`] first if that matters).
pub fn expected_layout(version: VersionId, params: &LayoutParams) -> Vec<KeyShape> {
    catalog().expected_layout(version, params)
}

/// Check `params` against the domain of `version` (e.g. v5.12 needs `projection_layers = 2`).
pub fn check_params(version: VersionId, params: &LayoutParams) -> Result<(), ArchError> {
    self::version(version).check(params)
}

/// The model class `name` (from `config.model.name`), if the catalog knows it.
pub fn model_class(name: &str) -> Option<&'static ModelClass> {
    catalog().model_class(name)
}

/// Whether a config of `model_class` needs a `frozen_checkpoint` (false for an unknown class).
pub fn required_frozen(model_class: &str) -> bool {
    self::model_class(model_class).is_some_and(|c| c.requires_frozen)
}

/// The checkpoint versions (matrix ids) `model_class` may load as its `frozen_checkpoint`,
/// exactly as the compatibility matrix lists them (empty for an unknown class).
pub fn compatible_sources(model_class: &str) -> &'static [VersionId] {
    self::model_class(model_class).map_or(&[], |c| c.accepts.as_slice())
}

/// Whether `model_class` may load a checkpoint of `source` as its `frozen_checkpoint`:
/// `source` or its matrix family ([`Version::family`], e.g. v5.11 (PartialFreeze) counts
/// as v5_11) is in [`compatible_sources`].
pub fn accepts_source(model_class: &str, source: VersionId) -> bool {
    let sources = compatible_sources(model_class);
    sources.contains(&source) || sources.contains(&version(source).family)
}

#[cfg(test)]
mod tests;
