//! `tvck init --template`: a commented training config that `tvck check` passes.
//!
//! Three templates, each based on upstream's own configs (tests/fixtures/upstream-configs):
//!
//! * `production`: the v5.12.4 production run (TernaryVAEV5_11_PartialFreeze, improved
//!   encoders and decoder, dual projection, controller, homeostasis, every loss) as
//!   upstream's `v5_12_4.yaml` sets it up;
//! * `quick-test`: a TernaryVAEV5_11 run that trains only the projection for 2 epochs
//!   (upstream's `ternary_fast_test.yaml`, with the frozen checkpoint the class needs): a
//!   pipeline check that finishes in seconds on a CPU;
//! * `from-checkpoint`: continues from a given checkpoint; its inferred version and layout
//!   decide the model class and the `model:` section.
//!
//! The frozen checkpoint of `production` and `quick-test` is chosen by
//! [`select`](crate::manager::select) (the ranking `tvck select` and `check --auto-fix`
//! use: it must load, then metrics measured on its current weights rank it). Whatever the
//! template, the text written is checked first ([`crate::check::check`]); a config with an
//! error is never written.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::{self, EncoderKind, Hints, LayoutParams, VersionId};
use crate::check::{self, CheckOptions, CheckReport};
use crate::config::TrainingConfig;
use crate::format::write::{write_atomic, WriteError};
use crate::format::Checkpoint;
use crate::manager::select::{self, Candidate, RankBy};
use crate::manager::Index;

/// The templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    Production,
    QuickTest,
    FromCheckpoint,
}

impl Template {
    pub const ALL: [Template; 3] = [
        Template::Production,
        Template::QuickTest,
        Template::FromCheckpoint,
    ];

    /// The name as written on the command line (`quick-test`).
    pub fn name(self) -> &'static str {
        match self {
            Template::Production => "production",
            Template::QuickTest => "quick-test",
            Template::FromCheckpoint => "from-checkpoint",
        }
    }

    /// A template by name.
    pub fn parse(s: &str) -> Option<Template> {
        Template::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What [`init`] needs.
pub struct InitOptions<'a> {
    pub template: Template,
    /// The checkpoint of `from-checkpoint` (required there, refused otherwise).
    pub from: Option<PathBuf>,
    /// Where to look for the frozen checkpoint besides the default folders
    /// ([`crate::autofix::default_roots`]), and where `check` resolves it.
    pub checkpoint_roots: Vec<PathBuf>,
    /// The config file to write.
    pub out: PathBuf,
    /// Replace an existing `out`.
    pub force: bool,
    /// The working directory: relative paths are taken from it, and the frozen
    /// checkpoint's path is written relative to it when inside it (the trainer resolves
    /// a relative path against its working directory first).
    pub cwd: PathBuf,
    /// An index that answers for the checkpoints when it holds every one unchanged.
    pub index: Option<&'a Index>,
}

/// Errors of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// `from-checkpoint` without a checkpoint.
    #[error("the from-checkpoint template needs the checkpoint to start from")]
    FromMissing,
    /// A checkpoint given to a template that chooses its own.
    #[error("the {template} template chooses its frozen checkpoint itself; a checkpoint to start from is only for from-checkpoint")]
    FromNotUsed { template: &'static str },
    /// The checkpoint to start from cannot be used.
    #[error("{}: {why}", path.display())]
    FromUnusable { path: PathBuf, why: String },
    /// No checkpoint under the folders searched loads into the template's model.
    #[error("no checkpoint under {roots} loads into the {template} template's model ({class}, {layout}){}", conversion.as_ref().map(|c| format!("; {c} would after a conversion")).unwrap_or_default())]
    NoCheckpoint {
        template: &'static str,
        class: String,
        layout: String,
        /// The folders searched, joined.
        roots: String,
        /// The best candidate a conversion would make loadable, when there is one.
        conversion: Option<String>,
        /// The version the conversion goes to.
        target: Option<VersionId>,
    },
    /// The output exists (and no replacing was asked for).
    #[error("{}: already exists", path.display())]
    Exists { path: PathBuf },
    /// The output is the checkpoint the config starts from.
    #[error("{}: is the checkpoint the config starts from", path.display())]
    OutIsInput { path: PathBuf },
    /// The text made does not pass `check` (a bug of the template: never written).
    #[error("the {template} config does not pass the checks: {errors}")]
    Invalid {
        template: &'static str,
        errors: String,
    },
    /// Writing the config failed (the previous file, if any, is left as it was).
    #[error("{}: cannot write the config ({source}); left as it was", path.display())]
    Write { path: PathBuf, source: WriteError },
}

impl TemplateError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            TemplateError::FromMissing => Some("name the checkpoint to continue from".into()),
            TemplateError::FromNotUsed { .. } => {
                Some("drop the checkpoint, or use the from-checkpoint template".into())
            }
            TemplateError::FromUnusable { .. } => Some(
                "start from a readable, safe TernaryVAE v5.5 or v5.11-family checkpoint".into(),
            ),
            TemplateError::NoCheckpoint {
                target: Some(v),
                conversion: Some(c),
                ..
            } => Some(format!(
                "convert it first (tvck convert {c} --to {}), or point at a folder holding a fitting checkpoint",
                v.as_str()
            )),
            TemplateError::NoCheckpoint { .. } => Some(
                "point at a folder holding a fitting checkpoint, or start from one with the from-checkpoint template".into(),
            ),
            TemplateError::Exists { .. } => {
                Some("choose another output file, or replace it explicitly".into())
            }
            TemplateError::OutIsInput { .. } => Some("choose another output file".into()),
            TemplateError::Invalid { .. } => None,
            TemplateError::Write { source, .. } => {
                let io = match source {
                    WriteError::File { source, .. } | WriteError::Io(source) => Some(source),
                    _ => None,
                };
                io.and_then(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem => {
                        Some("write it to a writable folder".into())
                    }
                    std::io::ErrorKind::StorageFull => {
                        Some("free some space on that file system, then run it again".into())
                    }
                    std::io::ErrorKind::NotFound => Some("create the output's folder first".into()),
                    _ => None,
                })
            }
        }
    }
}

/// What [`init`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub template: Template,
    /// The config written.
    pub out: PathBuf,
    pub model_class: String,
    pub version: VersionId,
    pub layout: String,
    /// `frozen_checkpoint.path` as written.
    pub frozen_checkpoint: String,
    /// Why it was chosen (selection's reason; for from-checkpoint, the inference).
    pub why: String,
    /// Folders searched for the frozen checkpoint (empty for from-checkpoint).
    pub roots: Vec<PathBuf>,
    /// Candidates the selection ranked.
    pub candidates: usize,
    /// Whether the index answered the selection.
    pub from_index: bool,
    /// `tvck check` of the written config: errors (always 0) and warnings.
    pub errors: usize,
    pub warnings: usize,
}

/// The model of a template.
struct Model {
    class: &'static str,
    params: LayoutParams,
    /// Values that are not part of the layout: (key, YAML value).
    extra: Vec<(&'static str, String)>,
    /// The comment above `model:`.
    comment: String,
}

/// Make the config, check it, write it.
pub fn init(opts: &InitOptions<'_>) -> Result<InitReport, TemplateError> {
    let out = opts.cwd.join(&opts.out);
    let t = opts.template;
    let (model, from) = match (t, &opts.from) {
        (Template::FromCheckpoint, None) => return Err(TemplateError::FromMissing),
        (Template::FromCheckpoint, Some(f)) => {
            let f = opts.cwd.join(f);
            if same_file(&f, &out) {
                return Err(TemplateError::OutIsInput { path: out });
            }
            let (m, version) = from_checkpoint_model(&f)?;
            (m, Some((f, version)))
        }
        (_, Some(_)) => return Err(TemplateError::FromNotUsed { template: t.name() }),
        (Template::Production, None) => (production_model(), None),
        (Template::QuickTest, None) => (quick_test_model(), None),
    };
    if !opts.force && std::fs::symlink_metadata(&out).is_ok() {
        return Err(TemplateError::Exists { path: out });
    }
    let check_opts = CheckOptions {
        checkpoint_roots: opts.checkpoint_roots.clone(),
        cwd: opts.cwd.clone(),
        strict: false,
    };
    let (frozen, why, roots, candidates, from_index) = match from {
        Some((f, version)) => {
            let path = select::config_path_text(&f, &opts.cwd);
            let why = format!("the checkpoint to start from ({})", version.as_str());
            (path, why, Vec::new(), 0, false)
        }
        None => {
            // The model without a frozen checkpoint first: what the selection ranks for.
            let draft = render(t, &model, None);
            let cfg = parse(&draft, &out, t)?;
            let report = check::check(&cfg, &check_opts);
            let roots = crate::autofix::default_roots(&out, &opts.cwd, &opts.checkpoint_roots);
            let sel = select::select(
                &cfg,
                &report,
                &roots,
                opts.index,
                &opts.cwd,
                RankBy::default(),
                // Only the selection is used (and how many were ranked).
                Some(0),
                None,
            );
            match sel.selected.as_ref().filter(|_| sel.found()) {
                Some(c) => {
                    let why = chosen_why(c, sel.ranked);
                    (c.path.clone(), why, roots, sel.ranked, sel.from_index)
                }
                None => {
                    return Err(TemplateError::NoCheckpoint {
                        template: t.name(),
                        class: model.class.to_string(),
                        layout: model.params.summary(),
                        roots: if roots.is_empty() {
                            "the default folders (none exists)".into()
                        } else {
                            roots
                                .iter()
                                .map(|r| r.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        conversion: sel.selected.as_ref().map(|c| c.path.clone()),
                        target: sel.selected.as_ref().and(report.model.version),
                    })
                }
            }
        }
    };
    let text = render(t, &model, Some((&frozen, &why)));
    let cfg = parse(&text, &out, t)?;
    let report = check::check(&cfg, &check_opts);
    if !report.ok() {
        return Err(invalid(t, &report));
    }
    write_atomic(&out, opts.force, |w| {
        use std::io::Write;
        Ok(w.write_all(text.as_bytes())?)
    })
    .map_err(|source| match source {
        WriteError::Exists(path) => TemplateError::Exists { path },
        source => TemplateError::Write {
            path: out.clone(),
            source,
        },
    })?;
    Ok(InitReport {
        template: t,
        out: opts.out.clone(),
        model_class: model.class.to_string(),
        version: report.model.version.unwrap_or(VersionId::V5_11),
        layout: model.params.summary(),
        frozen_checkpoint: frozen,
        why,
        roots,
        candidates,
        from_index,
        errors: report.errors,
        warnings: report.warnings,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn parse(text: &str, out: &Path, t: Template) -> Result<TrainingConfig, TemplateError> {
    TrainingConfig::from_str(text, out).map_err(|e| TemplateError::Invalid {
        template: t.name(),
        errors: e.to_string(),
    })
}

fn invalid(t: Template, report: &CheckReport) -> TemplateError {
    TemplateError::Invalid {
        template: t.name(),
        errors: report
            .findings
            .iter()
            .filter(|f| f.severity == check::Severity::Error)
            .map(|f| format!("{}: {}", f.rule.code(), f.message))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The comment line of a selected checkpoint.
fn chosen_why(c: &Candidate, n: usize) -> String {
    format!(
        "the best of {n} candidate{} `tvck select` ranks ({}): {}",
        if n == 1 { "" } else { "s" },
        c.version.as_str(),
        c.why
    )
}

/// v5.12.4 production (upstream's configs/v5_12_4.yaml).
fn production_model() -> Model {
    let params = arch::default_params(VersionId::V5_12_4);
    Model {
        class: "TernaryVAEV5_11_PartialFreeze",
        params,
        extra: vec![("learnable_curvature", "true".into())],
        comment: "# The v5.12.4 production architecture (upstream's configs/v5_12_4.yaml): improved\n\
                  # encoders and decoder (LayerNorm, SiLU, dropout), a dual hyperbolic projection with 2\n\
                  # layers and dropout, learnable curvature and the DifferentiableController.\n"
            .into(),
    }
}

/// The smallest v5.11 run: frozen encoders and decoder, only the projection trains
/// (upstream's ternary_fast_test.yaml, at the v5.5 checkpoints' dimensions).
fn quick_test_model() -> Model {
    Model {
        class: "TernaryVAEV5_11",
        params: arch::default_params(VersionId::V5_11),
        extra: Vec::new(),
        comment: "# TernaryVAEV5_11 (upstream's configs/ternary_fast_test.yaml, at the production\n\
                  # dimensions L16 H64): frozen encoders and decoder_A, one single-layer hyperbolic\n\
                  # projection, no controller. Only the projection trains.\n"
            .into(),
    }
}

/// The model a checkpoint continues as: the first trainable class that builds the
/// checkpoint's version and accepts it as its frozen checkpoint (its layout kept), else
/// the first that accepts it (its own layout at the checkpoint's latent size).
fn from_checkpoint_model(path: &Path) -> Result<(Model, VersionId), TemplateError> {
    let unusable = |why: String| TemplateError::FromUnusable {
        path: path.to_path_buf(),
        why,
    };
    let ckpt = Checkpoint::open(path).map_err(|e| unusable(e.to_string()))?;
    if ckpt.has_unsafe_globals() {
        return Err(unusable(
            "holds unsafe pickle globals: not read as a frozen checkpoint".into(),
        ));
    }
    let Some(best) = arch::infer_checkpoint(&ckpt).best else {
        return Err(unusable("no TernaryVAE layout fits its tensors".into()));
    };
    let v = best.version;
    let classes = arch::catalog().model_classes();
    let trainable = |c: &&arch::ModelClass| c.name != "DualNeuralVAEV5";
    let builds = classes
        .iter()
        .filter(trainable)
        .find(|c| c.builds.contains(&v) && arch::accepts_source(&c.name, v));
    let accepts = || {
        classes
            .iter()
            .filter(trainable)
            .find(|c| arch::accepts_source(&c.name, v))
    };
    let (class, hints) = match builds {
        Some(c) => (c, hints_of(&c.name, &best.params)),
        None => match accepts() {
            Some(c) => (
                c,
                Hints {
                    latent_dim: Some(best.params.latent_dim),
                    ..Hints::class(&c.name)
                },
            ),
            None => {
                return Err(unusable(format!(
                    "a {} checkpoint: no model class tvck trains loads it",
                    arch::version(v).display
                )))
            }
        },
    };
    let Some(layout) = arch::resolve_config(&hints) else {
        return Err(unusable(format!("{} builds no layout", class.name)));
    };
    let class: &'static str = match class.name.as_str() {
        "TernaryVAEV5_11" => "TernaryVAEV5_11",
        "TernaryVAEV5_11_PartialFreeze" => "TernaryVAEV5_11_PartialFreeze",
        "TernaryVAEV5_12" => "TernaryVAEV5_12",
        other => {
            return Err(unusable(format!(
                "model class {other} is not trained by tvck"
            )))
        }
    };
    // Values that are not layout: as the checkpoint's own config had them.
    let stored = |k: &str| {
        ckpt.root
            .get("config")
            .and_then(|c| c.get("model"))
            .and_then(|m| m.get(k))
            .and_then(|v| match v {
                crate::format::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
    };
    let extra = stored("learnable_curvature")
        .map(|b| vec![("learnable_curvature", b)])
        .unwrap_or_default();
    let comment = format!(
        "# The model the checkpoint continues as: {} ({}), read from its tensors ({}).\n",
        class,
        arch::version(layout.version).display,
        if builds.is_some() {
            format!("a {} checkpoint, layout kept", arch::version(v).display)
        } else {
            format!(
                "a {} checkpoint: its encoders and decoder_A are loaded",
                arch::version(v).display
            )
        }
    );
    Ok((
        Model {
            class,
            params: layout.params,
            extra,
            comment,
        },
        v,
    ))
}

/// Hints that pin every layout parameter to `p`.
fn hints_of(class: &str, p: &LayoutParams) -> Hints {
    Hints {
        model_class: Some(class.to_string()),
        latent_dim: Some(p.latent_dim),
        hidden_dim: (p.hidden_dim > 0).then_some(p.hidden_dim),
        projection_layers: (p.projection_layers > 0).then_some(p.projection_layers),
        projection_dropout: Some(p.projection_dropout),
        dual_projection: Some(p.dual_projection),
        share_direction: Some(p.share_direction),
        controller: Some(p.controller),
        state_net: None,
        encoder: Some(p.encoder),
        decoder: Some(p.decoder),
    }
}

/// A YAML scalar for a path: plain when it is simple, else double-quoted (JSON's escapes
/// are YAML's).
fn yaml_path(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./+".contains(c));
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "null".into())
    }
}

/// A comment's text on one line (no line breaks from a file name).
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn kind(k: EncoderKind) -> &'static str {
    match k {
        EncoderKind::Frozen => "frozen",
        EncoderKind::Improved => "improved",
    }
}

/// The `model:` section.
fn model_section(m: &Model) -> String {
    let p = &m.params;
    let mut s = m.comment.clone();
    s.push_str("model:\n");
    s.push_str(&format!("  name: {}\n", m.class));
    s.push_str(&format!(
        "  latent_dim: {}          # rows of fc_mu\n",
        p.latent_dim
    ));
    s.push_str(&format!(
        "  hidden_dim: {}          # the projection's hidden width\n",
        p.hidden_dim
    ));
    s.push_str("  max_radius: 0.95\n  curvature: 1.0\n");
    for (k, v) in &m.extra {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s.push_str(&format!("  use_controller: {}\n", p.controller));
    s.push_str(&format!("  use_dual_projection: {}\n", p.dual_projection));
    if p.share_direction {
        s.push_str("  share_direction: true\n");
    }
    s.push_str(&format!("  projection_layers: {}\n", p.projection_layers));
    s.push_str(&format!(
        "  projection_dropout: {}\n",
        if p.projection_dropout { "0.1" } else { "0.0" }
    ));
    s.push_str(&format!("  encoder_type: {}\n", kind(p.encoder)));
    s.push_str(&format!("  decoder_type: {}\n", kind(p.decoder)));
    s
}

/// The whole config; `frozen` is (path, why it was chosen), `None` for the draft the
/// selection ranks for.
fn render(t: Template, m: &Model, frozen: Option<(&str, &str)>) -> String {
    let mut s = format!(
        "# Training config made by `tvck init --template {}` (tvck {}).\n\
         # `tvck check` passed on it when it was written; run it again after any edit.\n\
         # Section contents and their defaults: docs/domain.md (config schema) and\n\
         # docs/training.md (what upstream's trainer does with each key).\n\n",
        t.name(),
        env!("CARGO_PKG_VERSION")
    );
    s.push_str(&model_section(m));
    s.push('\n');
    s.push_str(
        "# The checkpoint the trainer initialises from: the class needs one (without it the\n\
         # encoder and decoder start random and coverage stays near 0%).\n",
    );
    match frozen {
        Some((path, why)) => {
            s.push_str(&format!(
                "# Chosen: {}.\n",
                comment_text(why).replacen(": ", ":\n#   ", 1)
            ));
            s.push_str(&format!(
                "frozen_checkpoint:\n  path: {}\n",
                yaml_path(path)
            ));
        }
        None => s.push_str("frozen_checkpoint:\n  path: null\n"),
    }
    s.push_str("  encoder_to_load: both          # encoder_A and encoder_B\n");
    s.push_str("  decoder_to_load: decoder_A\n\n");
    let partial_freeze = m.class == "TernaryVAEV5_11_PartialFreeze";
    match t {
        Template::QuickTest => s.push_str(QUICK_TEST_BODY),
        _ if partial_freeze => {
            s.push_str(PARTIAL_FREEZE_SECTIONS);
            s.push_str(PRODUCTION_BODY);
        }
        _ => s.push_str(PRODUCTION_BODY),
    }
    let save_dir = match t {
        Template::Production => "runs/production",
        Template::QuickTest => "runs/quick-test",
        Template::FromCheckpoint => "runs/from-checkpoint",
    };
    s.push_str(&format!(
        "\n# Where `tvck train` writes best.pt, best_Q.pt, latest.pt, epoch_N.pt, metrics.jsonl\n\
         # and training.svg (relative to the working directory; `--out` overrides it).\n\
         checkpoints:\n  save_dir: {save_dir}\n"
    ));
    s
}

/// Option C and homeostasis, for TernaryVAEV5_11_PartialFreeze (upstream's v5_12_4.yaml).
const PARTIAL_FREEZE_SECTIONS: &str = "\
# Option C (PartialFreeze): encoder_A and encoder_B train at these fractions of the
# learning rate when the homeostasis lets them (upstream's v5_12_4.yaml).
option_c:
  enabled: true
  encoder_a_lr_scale: 0.05
  encoder_b_lr_scale: 0.1

# Homeostasis: freezes encoder_A when coverage falls below the freeze threshold and
# unfreezes it at the unfreeze threshold; encoder_B freezes on a hierarchy plateau
# (upstream's v5_12_4.yaml; docs/training.md §5 says which keys upstream reads).
homeostasis:
  enabled: true
  coverage_freeze_threshold: 0.995
  coverage_unfreeze_threshold: 1.0
  coverage_floor: 0.95
  warmup_epochs: 10
  hysteresis_epochs: 5
  enable_annealing: true
  annealing_step: 0.003
  hierarchy_plateau_threshold: 0.001
  hierarchy_plateau_patience: 15
  hierarchy_patience_ceiling: 30

";

/// Losses, optimizer and schedule of a full run (upstream's v5_12_4.yaml, 100 epochs).
const PRODUCTION_BODY: &str = "\
# Losses (upstream's v5_12_4.yaml): the rich hierarchy loss is the primary objective;
# radial targets, the geodesic loss from phase_start_epoch, the global rank loss and the
# zero-structure loss are auxiliary.
loss:
  rich_hierarchy:
    enabled: true
    hierarchy_weight: 5.0
    coverage_weight: 1.0
    richness_weight: 2.5
    separation_weight: 3.0
    min_richness_ratio: 0.5
  radial:
    enabled: true
    inner_radius: 0.08
    outer_radius: 0.90
    radial_weight: 1.0
  geodesic:
    enabled: true
    phase_start_epoch: 50
    curvature: 1.0
    max_target_distance: 3.0
    n_pairs: 2000
    weight: 0.5
  rank:
    enabled: true
    weight: 0.5
    temperature: 0.1
  zero_structure:
    enabled: true
    valuation_weight: 0.5
    sparsity_weight: 0.3

# Riemannian Adam on the hyperbolic parameters (upstream's default).
riemannian:
  enabled: true
  optimizer: adam

# The run (upstream's v5_12_4.yaml, with its 50-epoch validation run made a full 100):
# stratified batches, early stop after `patience` evaluations without a new best from
# `min_epochs` on, cosine schedule over the whole run.
training:
  epochs: 100
  batch_size: 512
  lr: 8.0e-4
  weight_decay: 1.0e-4
  max_grad_norm: 1.0
  use_stratified: true
  high_v_budget_ratio: 0.25
  patience: 50
  min_epochs: 30
  scheduler:
    type: cosine_annealing
    T_max: 100
    eta_min: 1.0e-6
  eval_every: 2
  save_every: 10
";

/// A run of seconds: 2 epochs, large batches, few pairs (upstream's
/// ternary_fast_test.yaml, shortened).
const QUICK_TEST_BODY: &str = "\
# Losses (upstream's ternary_fast_test.yaml): radial targets and the geodesic loss with
# few pairs (from the second epoch on), the rank loss.
loss:
  radial:
    enabled: true
    inner_radius: 0.1
    outer_radius: 0.85
  geodesic:
    enabled: true
    phase_start_epoch: 1
    curvature: 1.0
    max_target_distance: 3.0
    n_pairs: 500
    weight: 0.3
  rank:
    enabled: true
    weight: 0.5
    temperature: 0.1
    n_pairs: 500

# A pipeline check, not a model: 2 epochs of large batches, evaluated and saved after
# each (docs/benchmarks.md has its time on a CPU).
training:
  epochs: 2
  batch_size: 2048
  lr: 1.0e-3
  weight_decay: 1.0e-4
  max_grad_norm: 1.0
  scheduler:
    type: cosine_annealing
    T_max: 2
    eta_min: 1.0e-4
  eval_every: 1
  save_every: 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Template::ALL {
            assert_eq!(Template::parse(t.name()), Some(t));
        }
        assert_eq!(Template::parse("prod"), None);
    }

    #[test]
    fn paths_are_plain_or_quoted() {
        assert_eq!(
            yaml_path("checkpoints/v5_5/latest.pt"),
            "checkpoints/v5_5/latest.pt"
        );
        assert_eq!(yaml_path("../ck/best.pt"), "../ck/best.pt");
        assert_eq!(yaml_path("a b: c.pt"), "\"a b: c.pt\"");
        assert_eq!(yaml_path("x\ny.pt"), "\"x\\ny.pt\"");
        assert_eq!(yaml_path("-x.pt"), "\"-x.pt\"");
        // Whatever the name, the YAML reads back the same string.
        for p in ["a b: c.pt", "x\ny.pt", "#h.pt", "'q'.pt", "-x.pt", "é/ü.pt"] {
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&format!("path: {}\n", yaml_path(p))).unwrap();
            assert_eq!(doc["path"].as_str(), Some(p));
        }
    }

    #[test]
    fn every_template_parses_and_resolves_its_model() {
        for (t, m) in [
            (Template::Production, production_model()),
            (Template::QuickTest, quick_test_model()),
        ] {
            let text = render(t, &m, Some(("ck/x.pt", "why")));
            let cfg = TrainingConfig::from_str(&text, "c.yaml").unwrap();
            assert!(
                cfg.unknown_keys().is_empty(),
                "{t:?}: {:?}",
                cfg.unknown_keys()
            );
            let l = arch::resolve_config(&cfg.hints()).unwrap();
            assert!(l.conflicts.is_empty(), "{:?}", l.conflicts);
            assert_eq!(l.params, m.params, "{t:?}");
        }
    }
}
