//! TernaryVAE training configs (docs/domain.md §7), typed.
//!
//! * [`TrainingConfig::load`] / [`TrainingConfig::from_str`] parse the YAML (serde_yaml)
//!   and read every section the tool knows into typed structs whose fields are all
//!   `Option` (configs differ a lot). Numbers are read leniently (ints where floats are
//!   expected, integral floats where ints are, numeric strings, `yes`/`no` booleans). A
//!   wrong type is a [`ConfigError::Type`] naming the key and its line.
//! * Keys the structs do not model are kept: [`TrainingConfig::unknown_keys`] lists them
//!   (dotted leaf paths), [`TrainingConfig::raw`] holds the whole document.
//! * [`TrainingConfig::line_of`] gives the 1-based line of a dotted key path
//!   (block-style YAML, see [`crate::yamledit::scan`]).
//! * [`resolve_checkpoint_path`] resolves `frozen_checkpoint.path` like the trainer, and
//!   [`nearest_candidates`] suggests existing checkpoints when it is missing.
//!
//! ```
//! use tvck::config::TrainingConfig;
//! let text = "model:\n  name: TernaryVAEV5_11_PartialFreeze\n  latent_dim: 16\nfrozen_checkpoint:\n  path: null\n";
//! let cfg = TrainingConfig::from_str(text, "x.yaml").unwrap();
//! assert_eq!(cfg.model.as_ref().unwrap().latent_dim, Some(16));
//! assert_eq!(cfg.checkpoint_path(), None);
//! assert_eq!(cfg.location("frozen_checkpoint.path"), "x.yaml:5");
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml::Value;

use crate::arch::{EncoderKind, Hints};
use crate::yamledit;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid YAML.
    #[error("{}: YAML syntax error: {message}", location(.path, *.line, *.column))]
    Syntax {
        path: PathBuf,
        /// 1-based.
        line: Option<usize>,
        /// 1-based.
        column: Option<usize>,
        message: String,
    },
    /// The file is larger than any training config (a FIFO, a device or a data file named
    /// as a config is refused the same way, before it is read).
    #[error("{}: {what}", .path.display())]
    NotAConfig { path: PathBuf, what: String },
    /// Flow collections (`[`, `{`) nested deeper than [`MAX_NESTING`]: refused before the
    /// YAML parser, whose time grows with the square of the depth.
    #[error("{}: YAML nested deeper than {limit} levels", location(.path, Some(*.line), Some(*.column)))]
    TooDeep {
        path: PathBuf,
        line: usize,
        column: usize,
        limit: usize,
    },
    /// A known key holds a value of the wrong type.
    #[error("{}: {key}: expected {expected}, found {found}", location(.path, *.line, None))]
    Type {
        path: PathBuf,
        /// 1-based line of the key, when known.
        line: Option<usize>,
        /// Dotted key path (`model.latent_dim`).
        key: String,
        expected: String,
        /// The value found, as YAML-ish text (`"sixteen"`, `a mapping`).
        found: String,
    },
}

impl ConfigError {
    /// The config file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::NotAConfig { path, .. }
            | ConfigError::TooDeep { path, .. }
            | ConfigError::Type { path, .. } => path,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ConfigError::Io { .. } => "check the path and its permissions",
            ConfigError::NotAConfig { .. } => "name the training config's YAML file",
            ConfigError::TooDeep { .. } => {
                "a training config nests a few levels at most: this file is not one"
            }
            ConfigError::Syntax { .. } | ConfigError::Type { .. } => {
                "fix the YAML at the position shown; `tvck check` reads the same file the trainer does"
            }
        }
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } | ConfigError::NotAConfig { .. } => None,
            ConfigError::TooDeep { line, .. } => Some(*line),
            ConfigError::Syntax { line, .. } | ConfigError::Type { line, .. } => *line,
        }
    }
}

fn location(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    let mut s = path.display().to_string();
    if let Some(l) = line {
        let _ = write!(s, ":{l}");
        if let Some(c) = column {
            let _ = write!(s, ":{c}");
        }
    }
    s
}

/// A type error before the file name and line are known.
#[derive(Debug)]
struct TypeErr {
    key: String,
    expected: String,
    found: String,
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")),
        Value::Sequence(_) => "a sequence".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("{} {}", t.tag, describe(&t.value)),
    }
}

fn type_err(key: &str, expected: &str, v: &Value) -> TypeErr {
    TypeErr {
        key: key.to_string(),
        expected: expected.to_string(),
        found: describe(v),
    }
}

// ---------------------------------------------------------------------------------------
// Reading values
// ---------------------------------------------------------------------------------------

/// Collects the key paths that no struct models.
#[derive(Default)]
struct Cx {
    unknown: Vec<String>,
}

impl Cx {
    /// Record `path` (and, for a mapping, its leaf paths) as unknown.
    fn unknown(&mut self, path: &str, v: &Value) {
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                for (k, v) in m {
                    self.unknown(&join(path, &key_string(k)), v);
                }
            }
            Value::Tagged(t) => self.unknown(path, &t.value),
            _ => self.unknown.push(path.to_string()),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        v => v,
    }
}

/// A value that a config field can hold.
trait FromYaml: Sized {
    fn from_yaml(v: &Value, path: &str, cx: &mut Cx) -> Result<Self, TypeErr>;
}

/// A present, non-null field; `None` for null.
fn field<T: FromYaml>(v: &Value, path: &str, cx: &mut Cx) -> Result<Option<T>, TypeErr> {
    match untag(v) {
        Value::Null => Ok(None),
        v => T::from_yaml(v, path, cx).map(Some),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

impl FromYaml for f64 {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        number(v).ok_or_else(|| type_err(path, "a number", v))
    }
}

impl FromYaml for u64 {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        let int = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(53))
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        int.ok_or_else(|| {
            let negative = number(v).is_some_and(|f| f < 0.0);
            let expected = if negative {
                "a non-negative integer"
            } else {
                "an integer"
            };
            type_err(path, expected, v)
        })
    }
}

impl FromYaml for i64 {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        let int = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 2f64.powi(53))
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        int.ok_or_else(|| type_err(path, "an integer", v))
    }
}

impl FromYaml for bool {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        let b = match v {
            Value::Bool(b) => Some(*b),
            // YAML 1.1 booleans, as PyYAML reads them.
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "on" | "true" | "y" => Some(true),
                "no" | "off" | "false" | "n" => Some(false),
                _ => None,
            },
            _ => None,
        };
        b.ok_or_else(|| type_err(path, "a boolean", v))
    }
}

impl FromYaml for String {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(type_err(path, "a string", v)),
        }
    }
}

impl FromYaml for Vec<String> {
    fn from_yaml(v: &Value, path: &str, cx: &mut Cx) -> Result<Self, TypeErr> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| String::from_yaml(untag(item), &format!("{path}[{i}]"), cx))
                .collect(),
            // A single string where a list is expected.
            Value::String(s) => Ok(vec![s.clone()]),
            _ => Err(type_err(path, "a list of strings", v)),
        }
    }
}

impl FromYaml for EncoderKind {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        match v.as_str() {
            Some("frozen") => Ok(EncoderKind::Frozen),
            Some("improved") => Ok(EncoderKind::Improved),
            _ => Err(type_err(path, "one of frozen, improved", v)),
        }
    }
}

/// `frozen_checkpoint.encoder_to_load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EncoderToLoad {
    #[serde(rename = "both")]
    Both,
    #[serde(rename = "encoder_A")]
    EncoderA,
    #[serde(rename = "encoder_B")]
    EncoderB,
    /// The string `none` (YAML `null` is `Option::None`).
    #[serde(rename = "none")]
    Nothing,
}

impl EncoderToLoad {
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderToLoad::Both => "both",
            EncoderToLoad::EncoderA => "encoder_A",
            EncoderToLoad::EncoderB => "encoder_B",
            EncoderToLoad::Nothing => "none",
        }
    }
}

impl FromYaml for EncoderToLoad {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        match v.as_str() {
            Some("both") => Ok(EncoderToLoad::Both),
            Some("encoder_A") => Ok(EncoderToLoad::EncoderA),
            Some("encoder_B") => Ok(EncoderToLoad::EncoderB),
            Some("none") => Ok(EncoderToLoad::Nothing),
            _ => Err(type_err(
                path,
                "one of both, encoder_A, encoder_B, none, null",
                v,
            )),
        }
    }
}

/// `frozen_checkpoint.decoder_to_load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DecoderToLoad {
    #[serde(rename = "decoder_A")]
    DecoderA,
    /// The string `none` (YAML `null` is `Option::None`).
    #[serde(rename = "none")]
    Nothing,
}

impl DecoderToLoad {
    pub fn as_str(self) -> &'static str {
        match self {
            DecoderToLoad::DecoderA => "decoder_A",
            DecoderToLoad::Nothing => "none",
        }
    }
}

impl FromYaml for DecoderToLoad {
    fn from_yaml(v: &Value, path: &str, _: &mut Cx) -> Result<Self, TypeErr> {
        match v.as_str() {
            Some("decoder_A") => Ok(DecoderToLoad::DecoderA),
            Some("none") => Ok(DecoderToLoad::Nothing),
            _ => Err(type_err(path, "one of decoder_A, none, null", v)),
        }
    }
}

/// Define a config section: a struct of `Option` fields read from a mapping, with the
/// YAML key of each field; other keys are recorded as unknown.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $key:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(rename = $key, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The YAML keys this section models.
            pub const KEYS: &'static [&'static str] = &[$($key),*];
        }

        impl FromYaml for $name {
            fn from_yaml(v: &Value, path: &str, cx: &mut Cx) -> Result<Self, TypeErr> {
                let Value::Mapping(map) = v else {
                    return Err(type_err(path, "a mapping", v));
                };
                let mut out = Self::default();
                for (k, val) in map {
                    let key = key_string(k);
                    let child = join(path, &key);
                    match key.as_str() {
                        $( $key => out.$field = field(val, &child, cx)?, )*
                        _ => cx.unknown(&child, val),
                    }
                }
                Ok(out)
            }
        }
    };
}

section! {
    /// `model:`: the architecture.
    pub struct ModelConfig {
        /// Model class (`TernaryVAEV5_11`, `TernaryVAEV5_11_PartialFreeze`, `TernaryVAEV5_12`).
        name: String = "name",
        latent_dim: u64 = "latent_dim",
        hidden_dim: u64 = "hidden_dim",
        /// Overrides `hidden_dim` for the projection when present.
        projection_hidden_dim: u64 = "projection_hidden_dim",
        max_radius: f64 = "max_radius",
        curvature: f64 = "curvature",
        use_controller: bool = "use_controller",
        use_dual_projection: bool = "use_dual_projection",
        learnable_curvature: bool = "learnable_curvature",
        manifold_aware: bool = "manifold_aware",
        share_direction: bool = "share_direction",
        use_statenet: bool = "use_statenet",
        projection_layers: u64 = "projection_layers",
        projection_dropout: f64 = "projection_dropout",
        encoder_type: EncoderKind = "encoder_type",
        decoder_type: EncoderKind = "decoder_type",
        encoder_dropout: f64 = "encoder_dropout",
        decoder_dropout: f64 = "decoder_dropout",
        logvar_min: f64 = "logvar_min",
        logvar_max: f64 = "logvar_max",
    }
}

section! {
    /// `frozen_checkpoint:`: the checkpoint the trainer initialises from.
    pub struct FrozenCheckpoint {
        /// `null` and a missing key are both `None`.
        path: String = "path",
        encoder_to_load: EncoderToLoad = "encoder_to_load",
        decoder_to_load: DecoderToLoad = "decoder_to_load",
    }
}

section! {
    /// `option_c:`: per-encoder learning-rate scales.
    pub struct OptionC {
        enabled: bool = "enabled",
        encoder_a_lr_scale: f64 = "encoder_a_lr_scale",
        encoder_b_lr_scale: f64 = "encoder_b_lr_scale",
        freeze_encoder_b: bool = "freeze_encoder_b",
    }
}

section! {
    /// `homeostasis:`: the freeze/unfreeze controller.
    pub struct Homeostasis {
        enabled: bool = "enabled",
        coverage_freeze_threshold: f64 = "coverage_freeze_threshold",
        coverage_unfreeze_threshold: f64 = "coverage_unfreeze_threshold",
        coverage_floor: f64 = "coverage_floor",
        warmup_epochs: u64 = "warmup_epochs",
        hysteresis_epochs: u64 = "hysteresis_epochs",
        enable_annealing: bool = "enable_annealing",
        annealing_step: f64 = "annealing_step",
        hierarchy_plateau_threshold: f64 = "hierarchy_plateau_threshold",
        hierarchy_plateau_patience: u64 = "hierarchy_plateau_patience",
        hierarchy_patience_ceiling: u64 = "hierarchy_patience_ceiling",
        controller_grad_threshold: f64 = "controller_grad_threshold",
        controller_grad_patience: u64 = "controller_grad_patience",
        controller_patience_ceiling: u64 = "controller_patience_ceiling",
    }
}

section! {
    /// `loss:`.
    pub struct LossConfig {
        rich_hierarchy: RichHierarchyLoss = "rich_hierarchy",
        radial: RadialLoss = "radial",
        geodesic: GeodesicLoss = "geodesic",
        rank: RankLoss = "rank",
        zero_structure: ZeroStructureLoss = "zero_structure",
    }
}

section! {
    /// `loss.rich_hierarchy:`.
    pub struct RichHierarchyLoss {
        enabled: bool = "enabled",
        hierarchy_weight: f64 = "hierarchy_weight",
        coverage_weight: f64 = "coverage_weight",
        richness_weight: f64 = "richness_weight",
        separation_weight: f64 = "separation_weight",
        min_richness_ratio: f64 = "min_richness_ratio",
    }
}

section! {
    /// `loss.radial:`.
    pub struct RadialLoss {
        enabled: bool = "enabled",
        inner_radius: f64 = "inner_radius",
        outer_radius: f64 = "outer_radius",
        radial_weight: f64 = "radial_weight",
        margin_weight: f64 = "margin_weight",
        max_valuation: u64 = "max_valuation",
        valuation_weighting: bool = "valuation_weighting",
    }
}

section! {
    /// `loss.geodesic:`.
    pub struct GeodesicLoss {
        enabled: bool = "enabled",
        phase_start_epoch: u64 = "phase_start_epoch",
        curvature: f64 = "curvature",
        max_target_distance: f64 = "max_target_distance",
        n_pairs: u64 = "n_pairs",
        weight: f64 = "weight",
        use_smooth_l1: bool = "use_smooth_l1",
        valuation_scale: f64 = "valuation_scale",
    }
}

section! {
    /// `loss.rank:`.
    pub struct RankLoss {
        enabled: bool = "enabled",
        weight: f64 = "weight",
        temperature: f64 = "temperature",
        n_pairs: u64 = "n_pairs",
    }
}

section! {
    /// `loss.zero_structure:`.
    pub struct ZeroStructureLoss {
        enabled: bool = "enabled",
        valuation_weight: f64 = "valuation_weight",
        sparsity_weight: f64 = "sparsity_weight",
    }
}

section! {
    /// `training:`.
    pub struct Training {
        epochs: u64 = "epochs",
        batch_size: u64 = "batch_size",
        lr: f64 = "lr",
        weight_decay: f64 = "weight_decay",
        max_grad_norm: f64 = "max_grad_norm",
        scheduler: Scheduler = "scheduler",
        eval_every: u64 = "eval_every",
        save_every: u64 = "save_every",
        print_every: u64 = "print_every",
        patience: u64 = "patience",
        min_epochs: u64 = "min_epochs",
        use_stratified: bool = "use_stratified",
        high_v_budget_ratio: f64 = "high_v_budget_ratio",
        use_adaptive: bool = "use_adaptive",
        hierarchy_threshold: f64 = "hierarchy_threshold",
    }
}

section! {
    /// `training.scheduler:`.
    pub struct Scheduler {
        /// `cosine_annealing`, `cosine_warmup_restart`, `multi_phase_cosine`, …
        kind: String = "type",
        t_max: u64 = "T_max",
        t_0: u64 = "T_0",
        t_mult: u64 = "T_mult",
        eta_min: f64 = "eta_min",
    }
}

section! {
    /// `checkpoints:`: where the trainer saves.
    pub struct Checkpoints {
        save_dir: String = "save_dir",
        save_best: bool = "save_best",
        best_metric: String = "best_metric",
        best_mode: String = "best_mode",
        checkpoint_name: String = "checkpoint_name",
    }
}

section! {
    /// `device:`.
    pub struct Device {
        name: String = "name",
        cuda_device: i64 = "cuda_device",
        use_amp: bool = "use_amp",
        pin_memory: bool = "pin_memory",
        num_workers: u64 = "num_workers",
        empty_cache_freq: u64 = "empty_cache_freq",
    }
}

section! {
    /// `data:`.
    pub struct DataConfig {
        use_full_dataset: bool = "use_full_dataset",
        n_operations: u64 = "n_operations",
    }
}

section! {
    /// `logging:`.
    pub struct Logging {
        tensorboard: bool = "tensorboard",
        log_dir: String = "log_dir",
        print_every: u64 = "print_every",
    }
}

section! {
    /// `riemannian:`.
    pub struct Riemannian {
        enabled: bool = "enabled",
        optimizer: String = "optimizer",
    }
}

section! {
    /// `targets:`: success criteria.
    pub struct Targets {
        coverage: f64 = "coverage",
        hierarchy_b: f64 = "hierarchy_B",
        richness: f64 = "richness",
        r_v9: f64 = "r_v9",
        q_target: f64 = "Q_target",
        distance_correlation: f64 = "distance_correlation",
        radial_hierarchy: f64 = "radial_hierarchy",
    }
}

section! {
    /// `version:`: provenance notes.
    pub struct VersionInfo {
        model: String = "model",
        config: String = "config",
        date: String = "date",
        changes: Vec<String> = "changes",
    }
}

section! {
    /// The typed sections of a config.
    pub struct Sections {
        model: ModelConfig = "model",
        frozen_checkpoint: FrozenCheckpoint = "frozen_checkpoint",
        option_c: OptionC = "option_c",
        homeostasis: Homeostasis = "homeostasis",
        loss: LossConfig = "loss",
        training: Training = "training",
        checkpoints: Checkpoints = "checkpoints",
        device: Device = "device",
        data: DataConfig = "data",
        logging: Logging = "logging",
        riemannian: Riemannian = "riemannian",
        targets: Targets = "targets",
        version: VersionInfo = "version",
        monitoring: Monitoring = "monitoring",
    }
}

section! {
    /// `monitoring:`: thresholds of the alert rules and extra threshold rules (tvck's own
    /// section; docs/monitoring.md lists every key and its default).
    pub struct Monitoring {
        initial_coverage_critical: f64 = "initial_coverage_critical",
        coverage_drop_below: f64 = "coverage_drop_below",
        divergence_factor: f64 = "divergence_factor",
        divergence_loss: String = "divergence_loss",
        plateau_metric: String = "plateau_metric",
        plateau_mode: String = "plateau_mode",
        plateau_epochs: u64 = "plateau_epochs",
        lr_zero_below: f64 = "lr_zero_below",
        stall_seconds: u64 = "stall_seconds",
        /// Rule names switched off.
        disable: Vec<String> = "disable",
        /// Extra threshold rules.
        rules: Vec<ThresholdRule> = "rules",
    }
}

section! {
    /// One `monitoring.rules` entry: an alert when a metric or loss term crosses a bound.
    pub struct ThresholdRule {
        name: String = "name",
        /// A metric (`coverage`, `hierarchy_B`, `Q`, …), `loss.TERM`, `lr` or `grad_norm`.
        metric: String = "metric",
        below: f64 = "below",
        above: f64 = "above",
        /// `info`, `warning` (default) or `critical`.
        severity: String = "severity",
        /// Only from this epoch on.
        after_epoch: u64 = "after_epoch",
        cause: String = "cause",
        fix: String = "fix",
    }
}

impl FromYaml for Vec<ThresholdRule> {
    fn from_yaml(v: &Value, path: &str, cx: &mut Cx) -> Result<Self, TypeErr> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| ThresholdRule::from_yaml(untag(item), &format!("{path}[{i}]"), cx))
                .collect(),
            _ => Err(type_err(path, "a list of rules", v)),
        }
    }
}

impl ModelConfig {
    /// Architecture hints for `arch::infer` / [`crate::arch::resolve_config`]: the
    /// same as [`Hints::from_model_config`] on this section.
    pub fn hints(&self) -> Hints {
        let pos = |v: Option<u64>| v.filter(|v| *v > 0);
        Hints {
            model_class: self.name.clone(),
            latent_dim: pos(self.latent_dim),
            hidden_dim: pos(self.projection_hidden_dim).or(pos(self.hidden_dim)),
            projection_layers: pos(self.projection_layers),
            projection_dropout: self.projection_dropout.map(|p| p != 0.0),
            dual_projection: self.use_dual_projection,
            share_direction: self.share_direction,
            controller: self.use_controller,
            state_net: self.use_statenet,
            encoder: self.encoder_type,
            decoder: self.decoder_type,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The config
// ---------------------------------------------------------------------------------------

/// A parsed training config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingConfig {
    /// The file it was read from (as given).
    pub path: PathBuf,
    /// The typed sections (also reachable through `Deref`: `cfg.model`).
    #[serde(flatten)]
    pub sections: Sections,
    /// Dotted paths of the keys the typed sections do not model, in document order.
    #[serde(rename = "unknown_keys")]
    unknown: Vec<String>,
    /// The whole document as parsed.
    #[serde(skip)]
    pub raw: Value,
    /// The source text.
    #[serde(skip)]
    pub text: String,
    /// Every key path the line scanner followed → 1-based line.
    #[serde(skip)]
    lines: BTreeMap<String, usize>,
}

impl std::ops::Deref for TrainingConfig {
    type Target = Sections;
    fn deref(&self) -> &Sections {
        &self.sections
    }
}

impl TrainingConfig {
    /// Read and parse a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<TrainingConfig, ConfigError> {
        let path = path.as_ref();
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Only a regular file of a config's size is read (a FIFO would block the open).
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(ConfigError::NotAConfig {
                path: path.to_path_buf(),
                what: "not a regular file".into(),
            });
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::NotAConfig {
                path: path.to_path_buf(),
                what: format!(
                    "{} bytes, more than a training config may have ({MAX_CONFIG_BYTES})",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        TrainingConfig::from_str(&text, path)
    }

    /// Parse a config's text; `path` names it in errors and [`TrainingConfig::location`].
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<TrainingConfig, ConfigError> {
        let path = path.as_ref().to_path_buf();
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::NotAConfig {
                path,
                what: format!(
                    "{} bytes, more than a training config may have ({MAX_CONFIG_BYTES})",
                    text.len()
                ),
            });
        }
        if let Some((line, column)) = too_deep(text, MAX_NESTING) {
            return Err(ConfigError::TooDeep {
                path,
                line,
                column,
                limit: MAX_NESTING,
            });
        }
        let raw: Value = serde_yaml::from_str(text).map_err(|e| syntax_error(&path, &e))?;
        let scan = yamledit::scan(text);
        let lines: BTreeMap<String, usize> = scan
            .entries
            .iter()
            .rev() // the first occurrence wins
            .map(|e| (e.dotted(), e.line + 1))
            .collect();
        let mut cx = Cx::default();
        let sections = match untag(&raw) {
            Value::Null => Sections::default(),
            v => Sections::from_yaml(v, "", &mut cx).map_err(|e| {
                // `version.changes[2]` → the line of `version.changes`.
                let key_path = e.key.split('[').next().unwrap_or_default();
                let line = lines.get(key_path).copied();
                ConfigError::Type {
                    path: path.clone(),
                    line,
                    key: if e.key.is_empty() {
                        "(top level)".into()
                    } else {
                        e.key
                    },
                    expected: e.expected,
                    found: shorten(e.found),
                }
            })?,
        };
        Ok(TrainingConfig {
            path,
            sections,
            unknown: cx.unknown,
            raw,
            text: text.to_string(),
            lines,
        })
    }

    /// Dotted paths of every key not modelled by the typed sections (leaf paths: for an
    /// unknown mapping its keys, recursively; sequences are not entered).
    pub fn unknown_keys(&self) -> Vec<String> {
        self.unknown.clone()
    }

    /// 1-based line where a dotted key path is defined; `None` when it is absent or the
    /// line scanner could not follow the text that far.
    pub fn line_of(&self, dotted: &str) -> Option<usize> {
        self.lines.get(dotted).copied()
    }

    /// `file.yaml:44` for a key path (`file.yaml` when its line is unknown), for findings.
    pub fn location(&self, dotted: &str) -> String {
        location(&self.path, self.line_of(dotted), None)
    }

    /// A raw value by dotted path (any key, modelled or not).
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        dotted
            .split('.')
            .try_fold(&self.raw, |v, k| match untag(v) {
                Value::Mapping(m) => m
                    .iter()
                    .find(|(key, _)| key_string(key) == k)
                    .map(|(_, v)| v),
                _ => None,
            })
    }

    /// `frozen_checkpoint.path` (`None` for null, missing, or no `frozen_checkpoint`).
    pub fn checkpoint_path(&self) -> Option<&str> {
        self.frozen_checkpoint.as_ref()?.path.as_deref()
    }

    /// `model.name`.
    pub fn model_name(&self) -> Option<&str> {
        self.model.as_ref()?.name.as_deref()
    }

    /// Architecture hints from the `model:` section (empty when there is none).
    pub fn hints(&self) -> Hints {
        self.model
            .as_ref()
            .map(ModelConfig::hints)
            .unwrap_or_default()
    }
}

impl From<&ModelConfig> for Hints {
    fn from(m: &ModelConfig) -> Hints {
        m.hints()
    }
}

impl From<&TrainingConfig> for Hints {
    fn from(c: &TrainingConfig) -> Hints {
        c.hints()
    }
}

/// A found value as an error shows it: at most 60 characters, with the full length said.
fn shorten(found: String) -> String {
    const SHOWN: usize = 60;
    let n = found.chars().count();
    if n <= SHOWN {
        return found;
    }
    let head: String = found.chars().take(SHOWN).collect();
    format!("{head}… ({n} characters)")
}

/// The largest config file read (upstream's are a few kB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The deepest nesting of flow collections (`[`, `{`) accepted (upstream's configs use 1).
pub const MAX_NESTING: usize = 32;

/// Where flow collections first nest deeper than `limit` (1-based line and column), in one
/// pass that skips quoted scalars and comments. Brackets inside plain scalars count too,
/// which only matters for text that no config holds.
fn too_deep(text: &str, limit: usize) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            prev = c;
            continue;
        }
        match quote {
            _ if comment => {}
            Some('\'') if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    col += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
                col += 1;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > limit {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

fn syntax_error(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    let loc = e.location();
    let mut message = e.to_string();
    if let Some(l) = &loc {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        message = message.replacen(&suffix, "", 1);
    }
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message,
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoint path resolution
// ---------------------------------------------------------------------------------------

/// Origin of a candidate: relative to the working directory.
pub const FROM_CWD: &str = "working directory";
/// Origin of a candidate: relative to the config's folder.
pub const FROM_CONFIG: &str = "config folder";
/// Origin of a candidate: relative to a `--checkpoint-root`.
pub const FROM_ROOT: &str = "--checkpoint-root";
/// Origin of a candidate: the path is absolute.
pub const FROM_ABSOLUTE: &str = "absolute path";

/// Where a checkpoint path was looked for, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Candidates in the order tried (up to and including the one found; duplicates
    /// dropped), each with its origin ([`FROM_CWD`], [`FROM_CONFIG`], [`FROM_ROOT`],
    /// [`FROM_ABSOLUTE`]).
    pub tried: Vec<(PathBuf, &'static str)>,
    /// The first candidate that exists.
    pub found: Option<(PathBuf, &'static str)>,
}

/// The folders a relative checkpoint path is resolved against, in order: the working
/// directory, the config's folder, each extra root (relative ones taken from `cwd`).
/// Duplicates are dropped (first origin kept).
pub fn search_roots(
    config_path: &Path,
    cwd: &Path,
    extra_roots: &[PathBuf],
) -> Vec<(PathBuf, &'static str)> {
    let config_dir = cwd.join(config_path.parent().unwrap_or(Path::new("")));
    let mut roots: Vec<(PathBuf, &'static str)> = Vec::new();
    let all = [(cwd.to_path_buf(), FROM_CWD), (config_dir, FROM_CONFIG)]
        .into_iter()
        .chain(extra_roots.iter().map(|r| (cwd.join(r), FROM_ROOT)));
    for (root, origin) in all {
        let root = normalize(&root);
        if !roots.iter().any(|(r, _)| *r == root) {
            roots.push((root, origin));
        }
    }
    roots
}

/// Resolve `frozen_checkpoint.path` like the trainer: an absolute path as-is; a relative
/// one against the working directory first, then the config's folder, then each
/// `--checkpoint-root` in order. Stops at the first that exists.
pub fn resolve_checkpoint_path(
    raw: &str,
    config_path: &Path,
    cwd: &Path,
    extra_roots: &[PathBuf],
) -> Resolution {
    let rel = Path::new(raw);
    let candidates: Vec<(PathBuf, &'static str)> = if rel.is_absolute() {
        vec![(rel.to_path_buf(), FROM_ABSOLUTE)]
    } else {
        search_roots(config_path, cwd, extra_roots)
            .into_iter()
            .map(|(root, origin)| (normalize(&root.join(rel)), origin))
            .collect()
    };
    let mut res = Resolution {
        tried: Vec::new(),
        found: None,
    };
    for (cand, origin) in candidates {
        if res.tried.iter().any(|(p, _)| *p == cand) {
            continue;
        }
        res.tried.push((cand.clone(), origin));
        if cand.exists() {
            res.found = Some((cand, origin));
            break;
        }
    }
    res
}

/// Drop `.` components (lexically; `..` is kept).
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// Existing checkpoint files ([`crate::discover::CHECKPOINT_EXTENSIONS`]) under `roots`
/// closest to the missing path `raw`, best first, at most `n`: those with the same file
/// name first, then by edit distance between `raw` and the file's path relative to its
/// root (its full path when `raw` is absolute). The walk is
/// [`crate::discover::Walk::suggestions`]: bounded, caches and hidden folders left out.
pub fn nearest_candidates(raw: &str, roots: &[PathBuf], n: usize) -> Vec<PathBuf> {
    let target = raw.replace('\\', "/");
    let target = target.trim_start_matches("./");
    let absolute = Path::new(raw).is_absolute();
    let name = target.rsplit('/').next().unwrap_or(target);
    let mut scored: Vec<(bool, usize, PathBuf)> = Vec::new();
    for root in roots {
        for path in crate::discover::discover(root, crate::discover::Walk::suggestions()).files {
            let path = path.as_path();
            let shown = if absolute {
                path.to_string_lossy().replace('\\', "/")
            } else {
                path.strip_prefix(root)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .replace('\\', "/")
            };
            let same_name = path.file_name().and_then(|n| n.to_str()) == Some(name);
            let path = normalize(path);
            if scored.iter().any(|(_, _, p)| *p == path) {
                continue;
            }
            scored.push((!same_name, levenshtein(&shown, target), path));
        }
    }
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, p)| p).collect()
}

/// Edit distance (insertions, deletions, substitutions) between two strings, by chars.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
