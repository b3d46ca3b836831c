//! `tvck check`: validate a training config before a job starts — offline, with no
//! Python and no torch.
//!
//! The rules (each a [`Finding`] with a severity, a message, the likely cause and a fix):
//! the layout the config builds; whether its model class needs a `frozen_checkpoint` and
//! has one; where that path resolves (like the trainer: working directory, config folder,
//! each `--checkpoint-root`); whether the file reads safely; whether its version is one
//! the model class accepts; and whether every tensor the trainer would load fits the
//! model — all missing, unexpected and size-mismatched keys at once, in PyTorch's
//! wording, with the config field that differs read back from the checkpoint's shapes.
//! Plus sanity warnings on homeostasis, learning-rate scales and epochs.

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::arch::LoadPlan;
use crate::arch::{self, EncoderKind, KeyShape, LayoutParams, LoadParts, VersionId};
use crate::config::{self, DecoderToLoad, EncoderToLoad, TrainingConfig};
use crate::format::Checkpoint;

mod rules;
pub use rules::Rule;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One result of a rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The rule (JSON: its stable code, `frozen-checkpoint-missing`).
    pub rule: Rule,
    /// `file:line` of the config entry concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub message: String,
    /// Supporting lines (PyTorch's error text, paths tried, candidates…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// The likely cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// What to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(rule: Rule, message: impl Into<String>) -> Finding {
        Finding::with_severity(rule.severity(), rule, message)
    }
    /// A finding about the frozen checkpoint: milder when the model class can train
    /// without one.
    fn optional(rule: Rule, required: bool, message: impl Into<String>) -> Finding {
        let severity = match rule.severity_when_optional() {
            Some(s) if !required => s,
            _ => rule.severity(),
        };
        Finding::with_severity(severity, rule, message)
    }
    fn with_severity(severity: Severity, rule: Rule, message: impl Into<String>) -> Finding {
        Finding {
            severity,
            rule,
            location: None,
            message: message.into(),
            details: Vec::new(),
            cause: None,
            fix: None,
        }
    }
    fn at(mut self, location: Option<String>) -> Finding {
        self.location = location;
        self
    }
    fn details(mut self, details: Vec<String>) -> Finding {
        self.details = details;
        self
    }
    fn cause(mut self, cause: impl Into<String>) -> Finding {
        self.cause = Some(cause.into());
        self
    }
    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// Options of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Extra folders a relative `frozen_checkpoint.path` is resolved against.
    pub checkpoint_roots: Vec<PathBuf>,
    /// The working directory paths are resolved from (the trainer's cwd).
    pub cwd: PathBuf,
    /// List keys the config schema does not model.
    pub strict: bool,
}

/// The model the config builds.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub class: Option<String>,
    pub version: Option<VersionId>,
    pub layout: Option<String>,
    #[serde(skip)]
    pub params: Option<LayoutParams>,
}

/// The frozen checkpoint, as found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// `frozen_checkpoint.path` as written.
    pub configured: String,
    /// Where it was found and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_via: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_coverage: Option<f64>,
    /// Where the stored metrics come from (trained, measured after conversion, not
    /// measured since conversion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::Provenance>,
}

/// The result of `tvck check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub config: String,
    pub model: ModelSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_checkpoint: Option<CheckpointSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadPlan>,
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors == 0
    }

    /// The verdict line.
    pub fn verdict(&self) -> String {
        let counts = format!(
            "{} error{}, {} warning{}",
            self.errors,
            if self.errors == 1 { "" } else { "s" },
            self.warnings,
            if self.warnings == 1 { "" } else { "s" }
        );
        if self.ok() {
            format!("PASS {}: ready to train ({counts})", self.config)
        } else {
            let first = self
                .findings
                .iter()
                .find(|f| f.severity == Severity::Error)
                .map(|f| f.message.clone())
                .unwrap_or_default();
            format!("FAIL {}: do not train ({counts}) — {first}", self.config)
        }
    }
}

/// Coverage a random encoder/decoder reaches: about 2 of 19,683 operations.
const RANDOM_COVERAGE: &str = "about 0.01%";

/// Check a parsed config.
pub fn check(cfg: &TrainingConfig, opts: &CheckOptions) -> CheckReport {
    check_keeping_checkpoint(cfg, opts).0
}

/// [`check`], also handing back the frozen checkpoint it opened (when it resolved and was
/// readable), so that a caller loading from it (`tvck train`) does not read it again.
pub fn check_keeping_checkpoint(
    cfg: &TrainingConfig,
    opts: &CheckOptions,
) -> (CheckReport, Option<Checkpoint>) {
    let mut findings = Vec::new();
    let class = cfg.model_name().map(str::to_string);
    let loc = |key: &str| cfg.line_of(key).map(|_| cfg.location(key));

    // The layout the config asks for.
    let layout = arch::resolve_config(&cfg.hints());
    let mut model = ModelSummary {
        class: class.clone(),
        version: None,
        layout: None,
        params: None,
    };
    match (&class, &layout) {
        (None, _) => findings.push(
            Finding::new(Rule::ModelClassMissing, "model.name is not set: cannot tell which model the trainer builds")
                .at(loc("model"))
                .fix("set model.name (TernaryVAEV5_11, TernaryVAEV5_11_PartialFreeze or TernaryVAEV5_12)"),
        ),
        (Some(c), None) => findings.push(
            Finding::new(Rule::ModelClassUnknown, format!("model.name `{c}` is not a model class tvck knows"))
                .at(loc("model.name"))
                .fix("use TernaryVAEV5_11, TernaryVAEV5_11_PartialFreeze or TernaryVAEV5_12"),
        ),
        (Some(_), Some(l)) => {
            model.version = Some(l.version);
            model.layout = Some(l.params.summary());
            model.params = Some(l.params);
            for c in &l.conflicts {
                findings.push(
                    Finding::new(Rule::ModelParams, format!("model: {c}"))
                        .at(loc("model")),
                );
            }
        }
    }

    let requires = class.as_deref().is_some_and(arch::required_frozen);
    let frozen_loc = loc("frozen_checkpoint.path").or_else(|| loc("frozen_checkpoint"));
    let mut summary = None;
    let mut plan = None;
    let mut checkpoint = None;
    match cfg.checkpoint_path() {
        None if requires => {
            let c = class.as_deref().unwrap_or_default();
            let accepted = source_list(c);
            findings.push(
                Finding::new(
                    Rule::FrozenCheckpointMissing,
                    format!("{c} requires a frozen checkpoint, but frozen_checkpoint.path is {}", if cfg.line_of("frozen_checkpoint.path").is_some() { "null" } else { "not set" }),
                )
                .at(frozen_loc)
                .cause(format!(
                    "the encoder and decoder would start random: loss falls while coverage stays at {RANDOM_COVERAGE} for the whole run"
                ))
                .fix(format!(
                    "set frozen_checkpoint.path to a {accepted} checkpoint with 100% coverage (`tvck check {} --auto-fix` lists candidates)",
                    cfg.path.display()
                )),
            );
        }
        None => findings.push(
            Finding::new(
                Rule::FromScratch,
                format!(
                    "no frozen checkpoint: {} trains from scratch by design",
                    class.as_deref().unwrap_or("the model")
                ),
            )
            .at(frozen_loc),
        ),
        Some(raw) => {
            let (s, p, c) = check_checkpoint(cfg, raw, &model, requires, opts, &mut findings);
            summary = Some(s);
            plan = p;
            checkpoint = c;
        }
    }

    sanity(cfg, &mut findings);
    if opts.strict {
        for key in cfg.unknown_keys() {
            findings.push(
                Finding::new(
                    Rule::UnknownKey,
                    format!("`{key}` is not part of the config schema tvck knows"),
                )
                .at(loc(&key)),
            );
        }
    }

    findings.sort_by_key(|f| f.severity);
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let report = CheckReport {
        config: cfg.path.display().to_string(),
        model,
        frozen_checkpoint: summary,
        load: plan,
        findings,
        errors,
        warnings,
    };
    (report, checkpoint)
}

fn source_list(class: &str) -> String {
    let names: Vec<&str> = arch::compatible_sources(class)
        .iter()
        .map(|v| v.display_name())
        .collect();
    if names.is_empty() {
        "compatible".into()
    } else {
        names.join(" / ")
    }
}

fn check_checkpoint(
    cfg: &TrainingConfig,
    raw: &str,
    model: &ModelSummary,
    requires: bool,
    opts: &CheckOptions,
    findings: &mut Vec<Finding>,
) -> (CheckpointSummary, Option<LoadPlan>, Option<Checkpoint>) {
    let loc = cfg.location("frozen_checkpoint.path");
    let mut summary = CheckpointSummary {
        configured: raw.to_string(),
        resolved: None,
        resolved_via: None,
        version: None,
        layout: None,
        stored_coverage: None,
        metrics: None,
    };
    let res = config::resolve_checkpoint_path(raw, &cfg.path, &opts.cwd, &opts.checkpoint_roots);
    let Some((path, via)) = res.found else {
        let roots: Vec<PathBuf> =
            config::search_roots(&cfg.path, &opts.cwd, &opts.checkpoint_roots)
                .into_iter()
                .map(|(r, _)| r)
                .collect();
        let near = config::nearest_candidates(raw, &roots, 5);
        let mut details: Vec<String> = res
            .tried
            .iter()
            .map(|(p, o)| format!("tried {} (relative to the {o})", p.display()))
            .collect();
        if near.is_empty() {
            details.push("no checkpoint files found under those folders".into());
        } else {
            details.push("nearest existing checkpoints:".into());
            details.extend(near.iter().map(|p| format!("  {}", p.display())));
        }
        findings.push(
            Finding::optional(Rule::FrozenCheckpointNotFound, requires, format!("frozen_checkpoint.path `{raw}` does not exist"))
                .at(Some(loc))
                .details(details)
                .cause("the trainer would fail to start, or (if it catches the error) train from random weights")
                .fix("correct the path, run from the folder the path is relative to, or pass --checkpoint-root DIR"),
        );
        return (summary, None, None);
    };
    let path = path
        .strip_prefix(&opts.cwd)
        .map(Path::to_path_buf)
        .unwrap_or(path);
    summary.resolved = Some(path.clone());
    summary.resolved_via = Some(via);
    findings.push(
        Finding::new(
            Rule::FrozenCheckpointResolved,
            format!(
                "frozen_checkpoint.path resolved relative to the {via}: {}",
                path.display()
            ),
        )
        .at(Some(loc.clone())),
    );

    let ckpt = match Checkpoint::open(&path) {
        Ok(c) => c,
        Err(e) => {
            findings.push(
                Finding::optional(Rule::FrozenCheckpointUnreadable, requires, format!("cannot read the frozen checkpoint: {e}"))
                    .at(Some(loc))
                    .fix("point frozen_checkpoint.path at an intact checkpoint (`tvck scan DIR` lists readable ones)"),
            );
            return (summary, None, None);
        }
    };
    let unsafe_globals = ckpt.unsafe_global_messages();
    if !unsafe_globals.is_empty() {
        findings.push(
            Finding::new(
                Rule::FrozenCheckpointUnsafe,
                format!("{} contains unsafe pickle globals", path.display()),
            )
            .at(Some(loc.clone()))
            .details(unsafe_globals)
            .cause("torch.load(weights_only=False) in the trainer would execute them")
            .fix("do not load this file; use a checkpoint from a trusted run"),
        );
    }
    let non_finite = crate::format::finite::non_finite(&ckpt);
    if !non_finite.is_empty() {
        findings.push(
            Finding::new(
                Rule::FrozenCheckpointNonFinite,
                format!(
                    "{} holds NaN or infinite weights in {} tensor{}",
                    path.display(),
                    non_finite.len(),
                    if non_finite.len() == 1 { "" } else { "s" }
                ),
            )
            .at(Some(loc.clone()))
            .details(non_finite.iter().map(ToString::to_string).collect())
            .cause("the frozen parts would compute NaN for every operation: the run trains nothing (a diverged or damaged run)")
            .fix("use an earlier checkpoint of that run, or another one (`tvck check --auto-fix` ranks candidates)"),
        );
    }
    let stored = crate::metrics::StoredMetrics::from_root(&ckpt.root);
    summary.stored_coverage = stored.coverage;
    summary.metrics = stored.provenance;
    if stored.provenance == Some(crate::metrics::Provenance::NotMeasured) {
        findings.push(
            Finding::new(
                Rule::FrozenCheckpointNotMeasured,
                format!(
                    "{} was converted by tvck and its metrics were never measured on the converted weights",
                    path.display()
                ),
            )
            .at(Some(loc.clone()))
            .cause("a conversion that inserts LayerNorms or layers changes what the model does: its coverage may be far below the source's (the source's metrics are kept under migration.source_metrics)")
            .fix("measure it (`tvck eval FILE`), or convert again with fitting (`tvck convert SOURCE --to VERSION --fit`) or measuring (`--measure`)"),
        );
    }

    let inference = arch::infer_checkpoint(&ckpt);
    let Some(best) = inference.best else {
        findings.push(
            Finding::optional(
                Rule::FrozenCheckpointNotTernaryVae,
                requires,
                format!("{} holds no TernaryVAE model state", path.display()),
            )
            .at(Some(loc))
            .fix("point frozen_checkpoint.path at a TernaryVAE checkpoint"),
        );
        return (summary, None, Some(ckpt));
    };
    summary.version = Some(best.version);
    summary.layout = Some(best.params.summary());

    let class = model.class.as_deref().unwrap_or_default();
    if !class.is_empty()
        && arch::model_class(class).is_some()
        && !arch::accepts_source(class, best.version)
    {
        findings.push(
            Finding::new(
                Rule::FrozenCheckpointIncompatible,
                format!(
                    "{} is a {} checkpoint; {class} loads only {} checkpoints",
                    path.display(),
                    best.display,
                    source_list(class)
                ),
            )
            .at(Some(loc.clone()))
            .fix(format!(
                "use a {} checkpoint, or a model class that accepts {}",
                source_list(class),
                best.display
            )),
        );
    }
    if let Some(c) = summary
        .stored_coverage
        .filter(|c| *c < crate::metrics::coverage::WEAK_BELOW)
    {
        findings.push(
            Finding::new(
                Rule::FrozenCheckpointLowCoverage,
                format!("the frozen checkpoint's stored coverage is {:.2}%", c * 100.0),
            )
            .at(Some(loc.clone()))
            .cause("frozen parts only keep what they already reconstruct: coverage cannot rise above this while they stay frozen")
            .fix("use a checkpoint with coverage ≥ 99.5% (`tvck check --auto-fix` ranks candidates)"),
        );
    }

    let (Some(target_version), Some(target_params)) = (model.version, model.params.as_ref()) else {
        return (summary, None, Some(ckpt));
    };
    let plan = load_plan(
        cfg,
        &arch::state_shapes(&ckpt),
        best.version,
        target_version,
        target_params,
    );
    report_plan(
        cfg,
        &plan,
        &best.params,
        target_params,
        target_version,
        &path,
        class,
        findings,
    );
    (summary, Some(plan), Some(ckpt))
}

/// What the trainer would load from a checkpoint of `source_version` with the model state
/// `source` into the model `target_version` / `target_params`: named parts of a v5.5
/// checkpoint (encoder_to_load / decoder_to_load), the whole state of any other.
pub fn load_plan(
    cfg: &TrainingConfig,
    source: &[KeyShape],
    source_version: VersionId,
    target_version: VersionId,
    target_params: &LayoutParams,
) -> LoadPlan {
    let frozen = cfg.frozen_checkpoint.as_ref();
    let enc = frozen
        .and_then(|f| f.encoder_to_load)
        .unwrap_or(EncoderToLoad::Both);
    let dec = frozen
        .and_then(|f| f.decoder_to_load)
        .unwrap_or(DecoderToLoad::DecoderA);
    let parts = LoadParts {
        encoder_a: matches!(enc, EncoderToLoad::Both | EncoderToLoad::EncoderA),
        encoder_b: matches!(enc, EncoderToLoad::Both | EncoderToLoad::EncoderB),
        decoder_a: dec == DecoderToLoad::DecoderA,
    };
    arch::load_plan(source, source_version, target_version, target_params, parts)
}

/// Turn a load plan into findings: PyTorch's error text, the cause read from the shapes,
/// and the fix.
#[allow(clippy::too_many_arguments)]
fn report_plan(
    cfg: &TrainingConfig,
    plan: &LoadPlan,
    source: &LayoutParams,
    target: &LayoutParams,
    target_version: VersionId,
    path: &Path,
    class: &str,
    findings: &mut Vec<Finding>,
) {
    let loc = Some(cfg.location("frozen_checkpoint.path"));
    let model_name = if class.is_empty() { "the model" } else { class };
    // Missing keys in the frozen parts are as bad as a missing checkpoint; LayerNorms
    // inserted by the v5.5 → improved map are expected and not listed.
    let frozen_missing = plan.frozen_missing();
    let differences = param_differences(source, target);
    let cause = if differences.is_empty() {
        None
    } else {
        Some(format!(
            "the checkpoint was trained with {}",
            differences
                .iter()
                .map(|d| format!(
                    "{} = {} (the config asks {})",
                    d.field, d.checkpoint, d.config
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let fix = fix_text(cfg, &differences, target_version, path);

    if !plan.keys.mismatched.is_empty() || !frozen_missing.is_empty() {
        let mut details = vec![arch::pytorch_error_title(model_name)];
        details.extend(plan.keys.pytorch_error_lines());
        let mut what = Vec::new();
        if !plan.keys.mismatched.is_empty() {
            what.push(format!(
                "{} size mismatch{}",
                plan.keys.mismatched.len(),
                if plan.keys.mismatched.len() == 1 {
                    ""
                } else {
                    "es"
                }
            ));
        }
        if !frozen_missing.is_empty() {
            what.push(format!(
                "{} frozen-part key{} missing",
                frozen_missing.len(),
                if frozen_missing.len() == 1 { "" } else { "s" }
            ));
        }
        let mut f = Finding::new(
            if plan.keys.mismatched.is_empty() {
                Rule::FrozenPartsMissing
            } else {
                Rule::SizeMismatch
            },
            format!(
                "{} does not fit the model the config builds: {}",
                path.display(),
                what.join(", ")
            ),
        )
        .at(loc.clone())
        .details(details);
        f.cause = Some(match (&cause, plan.keys.mismatched.is_empty()) {
            (Some(c), _) => c.clone(),
            (None, false) => {
                "PyTorch's load_state_dict raises on a size mismatch even with strict=False".into()
            }
            (None, true) => format!("those parts would stay random: coverage at {RANDOM_COVERAGE}"),
        });
        f.fix = Some(fix.clone());
        findings.push(f);
    } else {
        let non_frozen_missing = plan.other_missing();
        if !non_frozen_missing.is_empty() {
            findings.push(
                Finding::new(
                    Rule::KeysInitialised,
                    format!(
                        "{} model key{} not in the checkpoint will start from initialisation",
                        non_frozen_missing.len(),
                        if non_frozen_missing.len() == 1 {
                            ""
                        } else {
                            "s"
                        }
                    ),
                )
                .at(loc.clone())
                .details(
                    non_frozen_missing
                        .iter()
                        .map(|(k, s)| format!("{k} {}", crate::format::shape_text(s)))
                        .collect(),
                )
                .cause(cause.clone().unwrap_or_else(|| {
                    "the checkpoint has no weights for these trainable parts".into()
                })),
            );
        }
        if !plan.keys.unexpected.is_empty() {
            findings.push(
                Finding::new(
                    Rule::KeysIgnored,
                    format!(
                        "{} checkpoint key{} the model does not have will be ignored",
                        plan.keys.unexpected.len(),
                        if plan.keys.unexpected.len() == 1 {
                            ""
                        } else {
                            "s"
                        }
                    ),
                )
                .at(loc.clone())
                .details(
                    plan.keys
                        .unexpected
                        .iter()
                        .map(|(k, s)| format!("{k} {}", crate::format::shape_text(s)))
                        .collect(),
                ),
            );
        }
        let mapped = if plan.mapped.is_empty() {
            String::new()
        } else {
            format!(
                ", {} mapped Frozen → improved (Linear 0→0, 2→4, 4→8; LayerNorms start at 1/0)",
                plan.mapped.len()
            )
        };
        findings.push(
            Finding::new(
                Rule::LoadPlan,
                format!(
                    "loads {}: {} tensors fit{mapped}",
                    plan.mode,
                    plan.loaded.len()
                ),
            )
            .at(loc),
        );
    }
}

/// A config field whose value differs from what the checkpoint's shapes say.
#[derive(Debug, Clone, PartialEq)]
struct ParamDifference {
    field: &'static str,
    checkpoint: String,
    config: String,
}

fn param_differences(source: &LayoutParams, target: &LayoutParams) -> Vec<ParamDifference> {
    let mut out = Vec::new();
    let mut push = |field, a: String, b: String| {
        if a != b {
            out.push(ParamDifference {
                field,
                checkpoint: a,
                config: b,
            })
        }
    };
    let kind = |k: EncoderKind| match k {
        EncoderKind::Frozen => "frozen".to_string(),
        EncoderKind::Improved => "improved".to_string(),
    };
    push(
        "model.latent_dim",
        source.latent_dim.to_string(),
        target.latent_dim.to_string(),
    );
    if source.hidden_dim > 0 && target.hidden_dim > 0 {
        push(
            "model.hidden_dim",
            source.hidden_dim.to_string(),
            target.hidden_dim.to_string(),
        );
    }
    if source.projection_layers > 0 && target.projection_layers > 0 {
        push(
            "model.projection_layers",
            source.projection_layers.to_string(),
            target.projection_layers.to_string(),
        );
        push(
            "model.projection_dropout",
            if source.projection_dropout {
                "> 0"
            } else {
                "0"
            }
            .into(),
            if target.projection_dropout {
                "> 0"
            } else {
                "0"
            }
            .into(),
        );
        push(
            "model.use_dual_projection",
            source.dual_projection.to_string(),
            target.dual_projection.to_string(),
        );
        push(
            "model.use_controller",
            source.controller.to_string(),
            target.controller.to_string(),
        );
    }
    push(
        "model.encoder_type",
        kind(source.encoder),
        kind(target.encoder),
    );
    push(
        "model.decoder_type",
        kind(source.decoder),
        kind(target.decoder),
    );
    out
}

fn fix_text(
    cfg: &TrainingConfig,
    diffs: &[ParamDifference],
    target: VersionId,
    path: &Path,
) -> String {
    let mut options = Vec::new();
    let settable: Vec<String> = diffs
        .iter()
        .filter(|d| !d.checkpoint.starts_with('>'))
        .map(|d| format!("{}: {}", d.field, d.checkpoint))
        .collect();
    if !settable.is_empty() && settable.len() == diffs.len() {
        options.push(format!(
            "set {} in {} to match the checkpoint",
            settable.join(", "),
            cfg.path.display()
        ));
    } else if !diffs.is_empty() {
        options.push(format!(
            "make the config match the checkpoint ({})",
            diffs
                .iter()
                .map(|d| format!("{} {}", d.field, d.checkpoint))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Migration specs exist for these targets (migrations-specs/).
    if matches!(target, VersionId::V5_12_4 | VersionId::V5_11) {
        options.push(format!(
            "migrate the checkpoint: `tvck convert {} --to {}`",
            path.display(),
            target.as_str()
        ));
    }
    options.push(format!(
        "or pick a fitting checkpoint: `tvck check {} --auto-fix`",
        cfg.path.display()
    ));
    options.join("; ")
}

/// Every number of the document that is NaN or infinite, by dotted path.
fn non_finite(v: &serde_yaml::Value, at: &str, out: &mut Vec<(String, f64)>) {
    use serde_yaml::Value as Y;
    match v {
        Y::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| !f.is_finite()) {
                out.push((at.to_string(), f));
            }
        }
        Y::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                non_finite(item, &format!("{at}[{i}]"), out);
            }
        }
        Y::Mapping(m) => {
            for (k, item) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                };
                let path = if at.is_empty() {
                    key
                } else {
                    format!("{at}.{key}")
                };
                non_finite(item, &path, out);
            }
        }
        Y::Tagged(t) => non_finite(&t.value, at, out),
        _ => {}
    }
}

/// Numbers a trainer cannot run with: NaN or infinite anywhere, a learning rate that is
/// not positive, negative weight decay, a clipping norm that is not positive.
/// The `monitoring:` section (the alert rules' settings, crate::monitor).
fn monitoring(cfg: &TrainingConfig, findings: &mut Vec<Finding>) {
    if cfg.monitoring.is_none() {
        return;
    }
    let (_, problems) = crate::monitor::Settings::from_config(Some(cfg), None);
    for p in problems {
        let line_key = p.key.split('[').next().unwrap_or_default();
        let loc = cfg.line_of(line_key).map(|_| cfg.location(line_key));
        findings.push(
            Finding::with_severity(
                if p.error {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                Rule::Monitoring,
                p.message,
            )
            .at(loc)
            .fix(p.fix),
        );
    }
}

fn numbers(cfg: &TrainingConfig, findings: &mut Vec<Finding>) {
    let loc = |key: &str| cfg.line_of(key).map(|_| cfg.location(key));
    let mut bad = Vec::new();
    non_finite(&cfg.raw, "", &mut bad);
    for (key, v) in bad {
        findings.push(
            Finding::new(
                Rule::NumberNotFinite,
                format!("{key} = {v}: not a finite number"),
            )
            .at(loc(key.split('[').next().unwrap_or_default()))
            .cause("a NaN or infinite setting turns every loss or weight it touches into NaN: the run trains nothing")
            .fix(format!("set {key} to a finite value")),
        );
    }
    let Some(t) = cfg.training.as_ref() else {
        return;
    };
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let mut range = |key: &str, v: Option<f64>, ok: fn(f64) -> bool, want: &str| {
        if let Some(v) = finite(v).filter(|v| !ok(*v)) {
            findings.push(
                Finding::new(
                    Rule::TrainingRange,
                    format!("training.{key} = {v}: must be {want}"),
                )
                .at(loc(&format!("training.{key}")))
                .fix(format!("set training.{key} to a value {want}")),
            );
        }
    };
    range("lr", t.lr, |v| v > 0.0, "greater than 0");
    range("weight_decay", t.weight_decay, |v| v >= 0.0, "0 or more");
    range(
        "max_grad_norm",
        t.max_grad_norm,
        |v| v > 0.0,
        "greater than 0",
    );
}

/// Sanity warnings that need no checkpoint.
fn sanity(cfg: &TrainingConfig, findings: &mut Vec<Finding>) {
    numbers(cfg, findings);
    monitoring(cfg, findings);
    let loc = |key: &str| cfg.line_of(key).map(|_| cfg.location(key));
    if let Some(h) = cfg
        .homeostasis
        .as_ref()
        .filter(|h| h.enabled != Some(false))
    {
        let unit = |key: &'static str, v: Option<f64>, findings: &mut Vec<Finding>| {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                findings.push(
                    Finding::new(
                        Rule::HomeostasisRange,
                        format!("homeostasis.{key} = {v} is outside 0..1 (coverage is a fraction)"),
                    )
                    .at(loc(&format!("homeostasis.{key}")))
                    .fix(format!("write it as a fraction, e.g. {key}: 0.995")),
                );
            }
        };
        unit(
            "coverage_freeze_threshold",
            h.coverage_freeze_threshold,
            findings,
        );
        unit(
            "coverage_unfreeze_threshold",
            h.coverage_unfreeze_threshold,
            findings,
        );
        unit("coverage_floor", h.coverage_floor, findings);
        if let (Some(f), Some(u)) = (h.coverage_freeze_threshold, h.coverage_unfreeze_threshold) {
            if u < f {
                findings.push(
                    Finding::new(
                        Rule::HomeostasisOrder,
                        format!("homeostasis.coverage_unfreeze_threshold ({u}) is below coverage_freeze_threshold ({f})"),
                    )
                    .at(loc("homeostasis.coverage_unfreeze_threshold"))
                    .cause("encoder_A would unfreeze at a coverage that immediately freezes it again")
                    .fix("set coverage_unfreeze_threshold ≥ coverage_freeze_threshold (upstream: 1.0 and 0.995)"),
                );
            }
        }
        if let (Some(floor), Some(f)) = (h.coverage_floor, h.coverage_freeze_threshold) {
            if floor > f {
                findings.push(
                    Finding::new(
                        Rule::HomeostasisOrder,
                        format!("homeostasis.coverage_floor ({floor}) is above coverage_freeze_threshold ({f})"),
                    )
                    .at(loc("homeostasis.coverage_floor")),
                );
            }
        }
        if let (Some(w), Some(e)) = (
            h.warmup_epochs,
            cfg.training.as_ref().and_then(|t| t.epochs),
        ) {
            if e < w {
                findings.push(
                    Finding::new(
                        Rule::EpochsBelowWarmup,
                        format!("training.epochs ({e}) < homeostasis.warmup_epochs ({w}): homeostasis never acts"),
                    )
                    .at(loc("training.epochs"))
                    .fix(format!("train for more than {w} epochs, or lower warmup_epochs")),
                );
            }
        }
        if let (Some(p), Some(c)) = (h.hierarchy_plateau_patience, h.hierarchy_patience_ceiling) {
            if p > c {
                findings.push(
                    Finding::new(
                        Rule::HomeostasisOrder,
                        format!("homeostasis.hierarchy_plateau_patience ({p}) exceeds hierarchy_patience_ceiling ({c})"),
                    )
                    .at(loc("homeostasis.hierarchy_plateau_patience")),
                );
            }
        }
    }
    if let Some(s) = cfg.option_c.as_ref().and_then(|o| o.encoder_b_lr_scale) {
        if s >= 1.0 {
            findings.push(
                Finding::new(
                    Rule::EncoderBLrScale,
                    format!("option_c.encoder_b_lr_scale = {s}: encoder_B trains at the full learning rate or more"),
                )
                .at(loc("option_c.encoder_b_lr_scale"))
                .cause("a pretrained encoder_B at full lr forgets its structure (upstream uses 0.1)")
                .fix("option_c.encoder_b_lr_scale: 0.1"),
            );
        }
    }
    let epochs = cfg.training.as_ref().and_then(|t| t.epochs);
    if let (Some(g), Some(e)) = (
        cfg.loss
            .as_ref()
            .and_then(|l| l.geodesic.as_ref())
            .filter(|g| g.enabled != Some(false))
            .and_then(|g| g.phase_start_epoch),
        epochs,
    ) {
        if g >= e {
            findings.push(
                Finding::new(
                    Rule::GeodesicNeverStarts,
                    format!("loss.geodesic.phase_start_epoch ({g}) ≥ training.epochs ({e}): the geodesic loss never runs"),
                )
                .at(loc("loss.geodesic.phase_start_epoch")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_section_is_checked() {
        let cfg = TrainingConfig::from_str(
            "model:\n  name: TernaryVAEV5_12\nmonitoring:\n  divergence_factor: 1\n  disable: [stalled, nope]\n",
            "c.yaml",
        )
        .unwrap();
        let mut f = Vec::new();
        monitoring(&cfg, &mut f);
        let got: Vec<(&str, Severity, Option<&str>)> = f
            .iter()
            .map(|f| (f.rule.code(), f.severity, f.location.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("monitoring", Severity::Error, Some("c.yaml:4")),
                ("monitoring", Severity::Error, Some("c.yaml:5")),
            ]
        );
        assert!(
            f[1].message.contains("`nope` is not an alert rule"),
            "{:?}",
            f[1]
        );
        assert!(f[1].fix.as_deref().unwrap().contains("process-gone"));
    }
}
