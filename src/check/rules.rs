//! The rules of `tvck check`, as typed units: a stable code (what `--json` and the
//! tables print), a severity and a one-line doc. docs/checks.md lists them; a test keeps
//! the two in step.

use serde::Serialize;

use super::Severity;

macro_rules! rules {
    ($( $(#[$m:meta])* $name:ident = $code:literal, $sev:ident, $optional:expr, $doc:literal; )*) => {
        /// One rule of `tvck check`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $( $(#[$m])* #[doc = $doc] $name, )*
        }

        impl Rule {
            /// Every rule, in the order docs/checks.md lists them.
            pub const ALL: &'static [Rule] = &[$(Rule::$name),*];

            /// The stable code (`frozen-checkpoint-missing`).
            pub fn code(self) -> &'static str {
                match self { $(Rule::$name => $code,)* }
            }

            /// The severity of its findings (for the frozen-checkpoint rules: when the
            /// model class requires a frozen checkpoint).
            pub fn severity(self) -> Severity {
                match self { $(Rule::$name => Severity::$sev,)* }
            }

            /// The severity when the model class can train without a frozen checkpoint,
            /// where that differs.
            pub fn severity_when_optional(self) -> Option<Severity> {
                match self { $(Rule::$name => $optional,)* }
            }

            /// What the rule checks, in one line.
            pub fn doc(self) -> &'static str {
                match self { $(Rule::$name => $doc,)* }
            }
        }
    };
}

rules! {
    ModelClassMissing = "model-class-missing", Warning, None,
        "model.name is not set, so the model the trainer builds is unknown.";
    ModelClassUnknown = "model-class-unknown", Warning, None,
        "model.name is not a model class tvck knows.";
    ModelParams = "model-params", Warning, None,
        "The model section's settings conflict with each other or with the layout the class builds.";
    FrozenCheckpointMissing = "frozen-checkpoint-missing", Error, None,
        "The model class requires a frozen checkpoint and frozen_checkpoint.path is null or not set (the random-encoder run at 0.01% coverage).";
    FromScratch = "from-scratch", Info, None,
        "No frozen checkpoint, and the model class trains from scratch by design.";
    FrozenCheckpointNotFound = "frozen-checkpoint-not-found", Error, Some(Severity::Warning),
        "frozen_checkpoint.path resolves to no file (working directory, config folder, checkpoint roots tried).";
    FrozenCheckpointResolved = "frozen-checkpoint-resolved", Info, None,
        "Where frozen_checkpoint.path was found, when not relative to the working directory.";
    FrozenCheckpointUnreadable = "frozen-checkpoint-unreadable", Error, Some(Severity::Warning),
        "The frozen checkpoint cannot be read as a checkpoint.";
    FrozenCheckpointUnsafe = "frozen-checkpoint-unsafe", Error, None,
        "The frozen checkpoint holds pickle globals torch.load would execute, or two readings.";
    FrozenCheckpointNonFinite = "frozen-checkpoint-non-finite", Error, None,
        "The frozen checkpoint holds NaN or infinite weights.";
    FrozenCheckpointNotMeasured = "frozen-checkpoint-not-measured", Warning, None,
        "The frozen checkpoint was converted by tvck and its metrics were never measured on the converted weights.";
    FrozenCheckpointNotTernaryVae = "frozen-checkpoint-not-ternaryvae", Error, Some(Severity::Warning),
        "The frozen checkpoint holds no TernaryVAE model state.";
    FrozenCheckpointIncompatible = "frozen-checkpoint-incompatible", Error, None,
        "The frozen checkpoint's version is not one the model class loads (the compatibility matrix).";
    FrozenCheckpointLowCoverage = "frozen-checkpoint-low-coverage", Warning, None,
        "The frozen checkpoint's stored coverage is below 95% (metrics::coverage::WEAK_BELOW): frozen parts cannot do better.";
    FrozenPartsMissing = "frozen-parts-missing", Error, None,
        "The checkpoint lacks tensors of the parts the trainer keeps frozen.";
    SizeMismatch = "size-mismatch", Error, None,
        "Tensors the trainer would load have other shapes than the model's (PyTorch's size mismatch), with the config field that differs.";
    KeysInitialised = "keys-initialised", Warning, None,
        "Model keys the checkpoint does not provide start from initialisation.";
    KeysIgnored = "keys-ignored", Warning, None,
        "Checkpoint keys the model does not have are ignored.";
    LoadPlan = "load-plan", Info, None,
        "What the trainer loads: the whole model state or named parts, and how many tensors fit.";
    UnknownKey = "unknown-key", Info, None,
        "A config key tvck does not model (listed in strict mode).";
    NumberNotFinite = "number-not-finite", Error, None,
        "A numeric setting is NaN or infinite.";
    TrainingRange = "training-range", Error, None,
        "A training setting is outside its range (lr > 0, weight_decay ≥ 0, max_grad_norm > 0).";
    HomeostasisRange = "homeostasis-range", Warning, None,
        "A homeostasis coverage threshold is outside 0..1.";
    HomeostasisOrder = "homeostasis-order", Warning, None,
        "Homeostasis thresholds in an order that makes the controller flip or never act.";
    EpochsBelowWarmup = "epochs-below-warmup", Warning, None,
        "training.epochs is below homeostasis.warmup_epochs: homeostasis never acts.";
    EncoderBLrScale = "encoder-b-lr-scale", Warning, None,
        "option_c.encoder_b_lr_scale ≥ 1: a pretrained encoder_B trains at the full rate and forgets.";
    GeodesicNeverStarts = "geodesic-never-starts", Info, None,
        "loss.geodesic.phase_start_epoch is at or after the last epoch: the geodesic loss never runs.";
    Monitoring = "monitoring", Error, None,
        "A setting of the monitoring: section (the alert rules of crate::monitor) is invalid or names no alert rule.";
}

impl Rule {
    /// Whether a finding of this rule is fixed by choosing another frozen checkpoint
    /// (what `check --auto-fix` looks for).
    pub fn fixed_by_another_checkpoint(self) -> bool {
        self.code().starts_with("frozen-") || self == Rule::SizeMismatch
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<&str> = Rule::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }

    #[test]
    fn docs_checks_lists_every_rule_with_its_severity() {
        let doc = include_str!("../../docs/checks.md");
        for r in Rule::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", r.code())))
                .unwrap_or_else(|| panic!("docs/checks.md has no row for `{}`", r.code()));
            assert!(
                row.contains(&format!("| {} |", r.severity().label())),
                "docs/checks.md: `{}` is {}: {row}",
                r.code(),
                r.severity().label()
            );
        }
        let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(
            rows,
            Rule::ALL.len(),
            "docs/checks.md lists a rule tvck does not have"
        );
    }
}
