//! `tvck train`: the validated flow (each step a checklist line with its result), then
//! training with monitoring, homeostasis, checkpoints, metrics.jsonl and the plot.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::arch::{self, VersionId};
use crate::check::{self, CheckOptions};
use crate::config::TrainingConfig;
use crate::format::Value;

use super::data::{Dataset, N_LEVELS, N_OPS};
use super::homeostasis::{self, Event, FreezeState, Homeostasis};
use super::losses::{self, LossInputs, LossSettings, LossValues};
use super::metrics::{evaluate, evaluate_with_radii, EvalMetrics};
use super::model::{part_of, FrozenA, Mode, Model, ModelSpec};
use super::optim::{self, AdamW, Group, Schedule};
use super::save::{self, dict, TreeBuilder};
use super::{load, plot, TrainError};

/// Initial coverage below this with a frozen checkpoint required: CRITICAL.
pub const CRITICAL_COVERAGE: f64 = 0.05;
/// Initial coverage below this (and above the critical one): warning.
pub const HEALTHY_COVERAGE: f64 = 0.95;

/// Options of `tvck train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub config: PathBuf,
    /// Overrides `training.epochs`.
    pub epochs: Option<u64>,
    pub seed: u64,
    pub device: tch::Device,
    /// Overrides `checkpoints.save_dir`.
    pub out: Option<PathBuf>,
    /// Train although the initial coverage is critical.
    pub force: bool,
    /// The working directory relative paths are resolved from.
    pub cwd: PathBuf,
    /// Show a live progress bar (only drawn on a terminal).
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to end training after the current epoch.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// A checklist step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Ok,
    Warning,
    Failed,
    Critical,
}

impl StepStatus {
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Ok => "OK",
            StepStatus::Warning => "WARNING",
            StepStatus::Failed => "FAILED",
            StepStatus::Critical => "CRITICAL",
        }
    }
}

/// One checklist line.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub number: u8,
    pub name: &'static str,
    pub status: StepStatus,
    pub detail: String,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}/6] {:<28} {:<8} {}",
            self.number,
            self.name,
            self.status.label(),
            self.detail
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub out_dir: PathBuf,
    pub epochs_run: u64,
    pub interrupted: bool,
    pub initial: EvalMetrics,
    pub last: EvalMetrics,
    pub best_hierarchy: Option<f64>,
    pub best_q: Option<f64>,
    pub events: Vec<Event>,
}

/// Which bests an evaluation is.
#[derive(Debug, Clone, Copy, Default)]
struct Best {
    hierarchy: bool,
    q: bool,
}

impl Best {
    /// The checkpoints to write: best.pt / best_Q.pt for the bests, and latest.pt.
    fn files(self, latest: bool) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.hierarchy {
            f.push("best.pt");
        }
        if self.q {
            f.push("best_Q.pt");
        }
        if latest {
            f.push("latest.pt");
        }
        f
    }
}

/// Which parts a model class trains, besides the homeostasis.
struct Plan {
    class: String,
    partial_freeze: bool,
    requires_frozen: bool,
}

/// Whether `class` is TernaryVAEV5_11_PartialFreeze (homeostasis, encoder_B trainable):
/// in the catalog, the class that builds the v5.11 (PartialFreeze) version.
fn is_partial_freeze(class: &str) -> bool {
    arch::model_class(class).is_some_and(|c| c.builds.contains(&VersionId::V5_11PartialFreeze))
}

fn refuse(step: u8, name: &'static str, message: String) -> TrainError {
    TrainError::Refused {
        step,
        name,
        message,
    }
}

/// Run the validated flow and train. `on_step` receives each checklist line as it is
/// decided, `on_line` every other progress line (epoch summaries, events). The process
/// allocator is left to the caller (`tvck train` tunes it once step 5 is decided).
pub fn train(
    opts: &TrainOptions,
    on_step: &mut dyn FnMut(&Step),
    on_line: &mut dyn FnMut(&str),
) -> Result<TrainReport, TrainError> {
    let mut step = |n: u8, name: &'static str, status: StepStatus, detail: String| {
        let s = Step {
            number: n,
            name,
            status,
            detail,
        };
        on_step(&s);
        s
    };

    // 1. Config.
    const S1: &str = "load and validate config";
    let cfg = TrainingConfig::load(opts.cwd.join(&opts.config)).map_err(|e| {
        step(1, S1, StepStatus::Failed, e.to_string());
        refuse(1, S1, e.to_string())
    })?;
    // Paths are resolved like `tvck check` run from the working directory.
    let mut rel_cfg = cfg.clone();
    rel_cfg.path = opts.config.clone();
    // The frozen checkpoint check opened is the one step 4 loads from: read once.
    let (report, frozen_ckpt) = check::check_keeping_checkpoint(
        &rel_cfg,
        &CheckOptions {
            cwd: opts.cwd.clone(),
            ..CheckOptions::default()
        },
    );
    if !report.ok() {
        let errors: Vec<String> = report
            .findings
            .iter()
            .filter(|f| f.severity == check::Severity::Error)
            .map(|f| match &f.cause {
                Some(c) => format!("{} ({c})", f.message),
                None => f.message.clone(),
            })
            .collect();
        let msg = format!(
            "{} — no training started (run `tvck check {}` for details)",
            errors.join("; "),
            opts.config.display()
        );
        step(1, S1, StepStatus::Failed, msg.clone());
        return Err(refuse(1, S1, msg));
    }
    let (Some(version), Some(params)) = (report.model.version, report.model.params) else {
        let msg = "the config builds no known model".to_string();
        step(1, S1, StepStatus::Failed, msg.clone());
        return Err(refuse(1, S1, msg));
    };
    let class = report.model.class.clone().unwrap_or_default();
    let plan = Plan {
        partial_freeze: is_partial_freeze(&class),
        requires_frozen: arch::required_frozen(&class),
        class,
    };
    step(
        1,
        S1,
        if report.warnings > 0 {
            StepStatus::Warning
        } else {
            StepStatus::Ok
        },
        format!(
            "{} → {} {} ({} warning{})",
            plan.class,
            arch::version(version).display,
            params.summary(),
            report.warnings,
            if report.warnings == 1 { "" } else { "s" }
        ),
    );

    // 2. Checkpoint compatibility.
    const S2: &str = "checkpoint compatibility";
    let frozen = report.frozen_checkpoint.as_ref().and_then(|f| {
        f.resolved
            .clone()
            .map(|p| (p, f.version, f.layout.clone().unwrap_or_default()))
    });
    let source = match &frozen {
        Some((p, Some(v), layout)) => {
            let fits = report.load.as_ref().is_some_and(|l| l.fits());
            if !arch::accepts_source(&plan.class, *v) || !fits {
                let msg = format!(
                    "{} ({} {layout}) cannot initialise {}",
                    p.display(),
                    arch::version(*v).display,
                    plan.class
                );
                step(2, S2, StepStatus::Failed, msg.clone());
                return Err(refuse(2, S2, msg));
            }
            step(
                2,
                S2,
                StepStatus::Ok,
                format!(
                    "{} is {} {layout}, accepted by {}",
                    p.display(),
                    arch::version(*v).display,
                    plan.class
                ),
            );
            Some(p.clone())
        }
        Some((p, None, _)) => {
            let msg = format!("{}: no TernaryVAE layout fits it", p.display());
            step(2, S2, StepStatus::Failed, msg.clone());
            return Err(refuse(2, S2, msg));
        }
        None if plan.requires_frozen => {
            let msg = format!(
                "{} requires a frozen checkpoint and none resolves",
                plan.class
            );
            step(2, S2, StepStatus::Failed, msg.clone());
            return Err(refuse(2, S2, msg));
        }
        None => {
            step(
                2,
                S2,
                StepStatus::Ok,
                format!(
                    "no frozen checkpoint: {} trains from its initialisation",
                    plan.class
                ),
            );
            None
        }
    };

    // 3. Model.
    const S3: &str = "build model, verify layout";
    tch::manual_seed(opts.seed as i64);
    let spec = ModelSpec::new(version, params, cfg.model.as_ref());
    let model = Model::new(spec, opts.device).inspect_err(|e| {
        step(3, S3, StepStatus::Failed, e.to_string());
    })?;
    let expected = arch::expected_layout(version, &params);
    let named = model.vs.variables();
    let layout_ok = named.len() == expected.len()
        && expected.iter().all(|(k, s)| {
            named
                .get(k)
                .is_some_and(|t| t.size().iter().map(|&d| d as u64).eq(s.iter().copied()))
        });
    if !layout_ok {
        let msg = "the built model's variables differ from the catalog layout".to_string();
        step(3, S3, StepStatus::Failed, msg.clone());
        return Err(refuse(3, S3, msg));
    }
    let n_params: i64 = named.values().map(|t| t.numel() as i64).sum();
    step(
        3,
        S3,
        StepStatus::Ok,
        format!(
            "{} {}: {} tensors, {} parameters, layout verified",
            arch::version(version).display,
            params.summary(),
            expected.len(),
            n_params
        ),
    );

    // 4. Frozen parts.
    const S4: &str = "load frozen parts";
    let mut mapped = 0;
    if let Some(path) = &source {
        // The checkpoint and load plan step 1 (`tvck check`) read and made for this config;
        // the checkpoint is dropped once its frozen parts are copied.
        let (load_plan, fl) = frozen_ckpt
            .ok_or_else(|| {
                TrainError::Load(format!("{} was not read by the check", path.display()))
            })
            .and_then(|ckpt| {
                let plan = report.load.as_ref().ok_or_else(|| {
                    TrainError::Load("no load plan for the frozen checkpoint".into())
                })?;
                load::load_frozen(&model, &ckpt, plan).map(|fl| (plan, fl))
            })
            .map_err(|e| {
                step(4, S4, StepStatus::Failed, e.to_string());
                refuse(4, S4, e.to_string())
            })?;
        mapped = load_plan.mapped.len();
        step(
            4,
            S4,
            StepStatus::Ok,
            format!(
                "{}: {} tensors copied ({} through the v5.5 → improved index map 0→0, 2→4, 4→8)",
                load_plan.mode,
                fl.copied.len(),
                load_plan.mapped.len()
            ),
        );
    } else {
        step(4, S4, StepStatus::Ok, "nothing to load".into());
    }

    // 5. Initial coverage.
    const S5: &str = "initial coverage";
    let ds = Dataset::new(opts.device);
    let (initial, initial_radii) = evaluate_with_radii(&model, &ds);
    let cov = initial.coverage;
    let cov_text = format!("{:.2}% ({} of {N_OPS})", cov * 100.0, initial.covered);
    let not_measured = report
        .frozen_checkpoint
        .as_ref()
        .is_some_and(|f| f.metrics == Some(crate::metrics::Provenance::NotMeasured));
    if cov < CRITICAL_COVERAGE && plan.requires_frozen {
        let cause = match &source {
            Some(p) if not_measured => format!(
                "{} was converted by tvck and never measured: the conversion changed what the model does (inserted LayerNorms or layers); the coverage its source had is not this file's: convert the source again with `tvck convert --fit`",
                p.display()
            ),
            Some(p) if mapped > 0 => format!(
                "the Frozen-style v5.5 weights of {} were mapped into improved encoders/decoder (0→0, 2→4, 4→8) with LayerNorms inserted at weight 1, bias 0, which changes the function: use a checkpoint with improved encoders (v5.12.4) or encoder_type/decoder_type frozen",
                p.display()
            ),
            Some(p) => format!(
                "the frozen checkpoint {} does not hold a trained encoder_A/decoder_A (a partially trained or wrong checkpoint?)",
                p.display()
            ),
            None => "no frozen checkpoint was loaded: a random encoder/decoder".into(),
        };
        let msg = format!(
            "CRITICAL: initial coverage {cov_text} < {:.0}% with a frozen checkpoint required — likely cause: {cause}; frozen parts would never reach coverage",
            CRITICAL_COVERAGE * 100.0
        );
        if !opts.force {
            step(
                5,
                S5,
                StepStatus::Critical,
                format!("{msg}; refusing (use --force to train anyway)"),
            );
            return Err(refuse(5, S5, msg));
        }
        step(
            5,
            S5,
            StepStatus::Critical,
            format!("{msg}; continuing because of --force"),
        );
    } else if cov < HEALTHY_COVERAGE {
        let cause = if not_measured {
            " — likely cause: the frozen checkpoint is a tvck conversion that was never measured (the conversion changed the function): convert its source again with `tvck convert --fit`"
        } else if mapped > 0 {
            " — likely cause: Frozen-style v5.5 weights mapped into improved encoders/decoder (0→0, 2→4, 4→8) with LayerNorms inserted at weight 1, bias 0, which changes the function"
        } else {
            ""
        };
        step(
            5,
            S5,
            StepStatus::Warning,
            format!(
                "{cov_text}: below the healthy {:.0}%{cause}",
                HEALTHY_COVERAGE * 100.0
            ),
        );
    } else {
        step(5, S5, StepStatus::Ok, cov_text);
    }

    // 6. Train.
    const S6: &str = "train";
    let out_dir = match &opts.out {
        Some(o) => opts.cwd.join(o),
        None => match cfg.checkpoints.as_ref().and_then(|c| c.save_dir.clone()) {
            Some(d) => opts.cwd.join(d),
            None => opts.cwd.join("runs").join(
                opts.config
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "run".into()),
            ),
        },
    };
    fs::create_dir_all(&out_dir).map_err(|e| {
        let msg = format!("cannot create {}: {e}", out_dir.display());
        step(6, S6, StepStatus::Failed, msg.clone());
        TrainError::Io(msg)
    })?;
    let mut run = Run::new(
        &cfg,
        &model,
        &ds,
        &plan,
        opts,
        out_dir.clone(),
        (initial.clone(), initial_radii),
    )?;
    step(
        6,
        S6,
        StepStatus::Ok,
        format!(
            "{} epochs, batch {}, lr {}, seed {}, output {}",
            run.epochs,
            run.batch_size,
            run.base_lr,
            opts.seed,
            out_dir.display()
        ),
    );
    run.run(on_line)
}

/// Training state.
struct Run<'a> {
    model: &'a Model,
    ds: &'a Dataset,
    opts: &'a TrainOptions,
    out_dir: PathBuf,
    epochs: u64,
    batch_size: i64,
    base_lr: f64,
    max_grad_norm: f64,
    eval_every: u64,
    schedule: Schedule,
    losses: LossSettings,
    targets: Tensor,
    var_orig: Tensor,
    opt: AdamW,
    homeo: Option<Homeostasis>,
    freeze: FreezeState,
    partial_freeze: bool,
    lr_scales: (f64, f64),
    coverage_freeze_threshold: f64,
    initial: EvalMetrics,
    history: Vec<plot::Point>,
    best_hierarchy: Option<f64>,
    best_q: Option<f64>,
    events: Vec<Event>,
    notes: Vec<String>,
    /// encoder_A / decoder_A outputs for every operation while both are frozen.
    frozen_a: Option<FrozenA>,
    /// The config, as every checkpoint stores it.
    config_value: Value,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a TrainingConfig,
        model: &'a Model,
        ds: &'a Dataset,
        plan: &Plan,
        opts: &'a TrainOptions,
        out_dir: PathBuf,
        // Step 5's evaluation and z_B's radii.
        (initial, initial_radii): (EvalMetrics, Option<Tensor>),
    ) -> Result<Run<'a>, TrainError> {
        let t = cfg.training.clone().unwrap_or_default();
        let epochs = opts.epochs.or(t.epochs).unwrap_or(100);
        let (schedule, note) = Schedule::from_config(
            t.scheduler.as_ref(),
            cfg.get("training.scheduler.phases"),
            epochs,
        );
        let losses = LossSettings::from_config(cfg.loss.as_ref());
        let targets = losses.targets(opts.device);
        let oc = cfg.option_c.clone().unwrap_or_default();
        let hs = homeostasis::Settings::from_config(cfg.homeostasis.as_ref());
        let coverage_freeze_threshold = hs.coverage_freeze_threshold;
        let freeze_b = oc.freeze_encoder_b.unwrap_or(false);
        let homeo = (plan.partial_freeze && hs.enabled).then(|| Homeostasis::new(hs, freeze_b));
        let freeze = if plan.partial_freeze {
            FreezeState {
                encoder_a: true,
                encoder_b: freeze_b,
                controller: false,
            }
        } else if plan.requires_frozen {
            // TernaryVAEV5_11: the frozen encoders and decoder never train.
            FreezeState {
                encoder_a: true,
                encoder_b: true,
                controller: false,
            }
        } else {
            FreezeState {
                encoder_a: false,
                encoder_b: false,
                controller: false,
            }
        };
        // var_orig: per-level variance of z_B's radii at the start (all operations), from
        // the initial evaluation (step 5).
        let var_orig = tch::no_grad(|| match &initial_radii {
            Some(r) => {
                let onehot = ds.v.one_hot(N_LEVELS as i64).to_kind(Kind::Float);
                losses::level_variance(r, &onehot).0
            }
            None => Tensor::ones([N_LEVELS as i64], (Kind::Float, opts.device)),
        });
        if !model.spec.has_projection() {
            return Err(TrainError::Model(
                "a v5.5 model has no hyperbolic projection: tvck trains the v5.11 family".into(),
            ));
        }
        Ok(Run {
            model,
            ds,
            opts,
            out_dir,
            epochs,
            batch_size: t.batch_size.unwrap_or(512).max(1) as i64,
            base_lr: t.lr.unwrap_or(1e-3),
            max_grad_norm: t.max_grad_norm.unwrap_or(1.0),
            eval_every: t.eval_every.unwrap_or(1).max(1),
            schedule,
            losses,
            targets,
            var_orig,
            opt: AdamW::new(t.weight_decay.unwrap_or(1e-4)),
            homeo,
            freeze,
            partial_freeze: plan.partial_freeze,
            lr_scales: (
                oc.encoder_a_lr_scale.unwrap_or(0.05),
                oc.encoder_b_lr_scale.unwrap_or(0.1),
            ),
            coverage_freeze_threshold,
            initial,
            history: Vec::new(),
            best_hierarchy: None,
            best_q: None,
            events: Vec::new(),
            notes: note.into_iter().collect(),
            frozen_a: None,
            config_value: Value::from_yaml(&cfg.raw),
        })
    }

    /// The optimizer's parameter groups for the current freeze state; frozen parts get
    /// no gradient (requires_grad off).
    fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut add = |name: &str, trainable: bool| {
            let keys = self.model.part_keys(name);
            let params: Vec<(String, Tensor)> = keys
                .into_iter()
                .filter(|k| !k.ends_with("_ema"))
                .filter_map(|k| self.model.var(&k).map(|t| (k, t)))
                .collect();
            for (_, t) in &params {
                let _ = t.set_requires_grad(trainable);
            }
            if trainable && !params.is_empty() {
                groups.push(Group::new(name, self.lr_scale(name), params));
            }
        };
        add("projection", true);
        add("controller", !self.freeze.controller);
        add("encoder_A", !self.freeze.encoder_a);
        add("encoder_B", !self.freeze.encoder_b);
        // decoder_A trains only in a model class without a frozen checkpoint.
        add("decoder_A", !self.decoder_frozen());
        groups
    }

    /// The learning-rate scale of a part's group (option_c: encoder_A and decoder_A at
    /// encoder_a_lr_scale, encoder_B at encoder_b_lr_scale, the rest at the base rate).
    fn lr_scale(&self, part: &str) -> f64 {
        match part {
            "encoder_A" | "decoder_A" => self.lr_scales.0,
            "encoder_B" => self.lr_scales.1,
            _ => 1.0,
        }
    }

    /// Whether decoder_A gets no gradient (see [`Run::groups`]).
    fn decoder_frozen(&self) -> bool {
        self.partial_freeze || self.freeze.encoder_a
    }

    fn mode(&self) -> Mode {
        Mode {
            encoder_a: !self.freeze.encoder_a,
            encoder_b: !self.freeze.encoder_b,
            decoder_a: !self.decoder_frozen(),
            projection: true,
        }
    }

    /// One epoch over all operations in shuffled batches: mean losses, last grad norm,
    /// controller grad norm.
    fn epoch(&mut self, groups: &[Group], epoch0: u64, lr: f64) -> (LossValues, f64, Option<f64>) {
        let n = N_OPS as i64;
        let perm = Tensor::randperm(n, (Kind::Int64, self.opts.device));
        let mut sum = LossValues::default();
        let mut batches = 0;
        let mut grad_norm = 0.0;
        let mut ctrl = None;
        let mode = self.mode();
        // encoder_A and decoder_A frozen (eval mode, no gradient, not in the optimizer):
        // constant functions, computed once while they stay frozen instead of per batch.
        if !mode.encoder_a && !mode.decoder_a {
            if self.frozen_a.is_none() {
                self.frozen_a = Some(self.model.frozen_a(&self.ds.x));
            }
        } else {
            self.frozen_a = None;
        }
        let frozen_a = self.frozen_a.as_ref();
        let inputs = LossInputs {
            settings: &self.losses,
            targets: &self.targets,
            var_orig: &self.var_orig,
            valuations: &self.ds.v,
            epoch: epoch0,
        };
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let idx = perm.narrow(0, start, len);
            start += len;
            let batch = self.ds.batch(&idx);
            let a = frozen_a.map(|f| f.rows(&idx));
            let out = self.model.forward_with(&batch.x, mode, a);
            let (Some(za), Some(zb), Some(c)) = (&out.z_a_hyp, &out.z_b_hyp, &out.curvature) else {
                break;
            };
            let (loss, vals) = losses::total_loss(&inputs, &batch, za, zb, c, &out.logits_a);
            let grads = optim::gradients(&loss, groups);
            if ctrl.is_none() {
                ctrl = optim::grad_norm_of(groups, &grads, "controller.");
            }
            grad_norm = self.opt.step(groups, &grads, lr, self.max_grad_norm);
            sum.add(&vals);
            batches += 1;
        }
        if batches > 0 {
            sum.scale(1.0 / f64::from(batches));
        }
        (sum, grad_norm, ctrl)
    }

    fn run(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<TrainReport, TrainError> {
        let metrics_path = self.out_dir.join("metrics.jsonl");
        let mut jsonl = BufWriter::new(File::create(&metrics_path).map_err(|e| {
            TrainError::Io(format!("cannot create {}: {e}", metrics_path.display()))
        })?);
        for n in &self.notes {
            on_line(&format!("note: {n}"));
        }
        // Epoch 0: the state training starts from.
        let initial = self.initial.clone();
        self.record(&mut jsonl, 0, None, None, None, Some(&initial), &[])?;
        let best = self.update_best(&initial);
        self.save(&best.files(false), 0, &initial)?;
        let bar = (self.opts.progress && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(self.epochs);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} epochs [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut groups = self.groups();
        let mut last = initial.clone();
        let mut epochs_run = 0;
        let mut interrupted = false;
        for epoch in 1..=self.epochs {
            let mut best = Best::default();
            let lr = self.schedule.lr(self.base_lr, epoch - 1);
            let (losses, grad_norm, ctrl) = self.epoch(&groups, epoch - 1, lr);
            epochs_run = epoch;
            let eval_now = epoch % self.eval_every == 0 || epoch == self.epochs;
            let mut events = Vec::new();
            let metrics = if eval_now {
                let m = evaluate(self.model, self.ds);
                if m.coverage < self.coverage_freeze_threshold
                    && initial.coverage >= self.coverage_freeze_threshold
                {
                    events.push(Event {
                        epoch,
                        kind: "coverage_drop",
                        component: "encoder_A",
                        message: format!(
                            "WARNING: coverage dropped to {:.4}% (< freeze threshold {:.2}%)",
                            m.coverage * 100.0,
                            self.coverage_freeze_threshold * 100.0
                        ),
                    });
                }
                if let Some(h) = &mut self.homeo {
                    let ev = h.update(
                        epoch,
                        m.coverage,
                        m.hierarchy_b.unwrap_or(0.0),
                        m.q.unwrap_or(0.0),
                        ctrl,
                    );
                    if h.state != self.freeze {
                        self.freeze = h.state;
                        // A change of freeze state rebuilds the optimizer's groups.
                        groups = self.groups();
                        self.opt.reset();
                    }
                    events.extend(ev);
                }
                best = self.update_best(&m);
                last = m.clone();
                Some(m)
            } else {
                None
            };
            for e in &events {
                on_line(&format!(
                    "epoch {epoch}: {} {}: {}",
                    e.kind, e.component, e.message
                ));
            }
            self.record(
                &mut jsonl,
                epoch,
                Some(&losses),
                Some(lr),
                Some(grad_norm),
                metrics.as_ref(),
                &events,
            )?;
            self.events.extend(events);
            let summary = format!(
                "loss {:.4} cov {:.2}% hier_B {:+.4} Q {:.3}",
                losses.total,
                last.coverage * 100.0,
                last.hierarchy_b.unwrap_or(0.0),
                last.q.unwrap_or(0.0)
            );
            match &bar {
                Some(b) => {
                    b.set_position(epoch);
                    b.set_message(summary);
                }
                None if metrics.is_some() => {
                    on_line(&format!("epoch {epoch}/{}: {summary}", self.epochs))
                }
                None => {}
            }
            // latest.pt, and best.pt / best_Q.pt when this evaluation is a new best: one
            // checkpoint, built once.
            self.save(&best.files(true), epoch, &last)?;
            if self
                .opts
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                interrupted = true;
                on_line(&format!(
                    "interrupted: epoch {epoch} finished, latest.pt written"
                ));
                break;
            }
        }
        if let Some(b) = bar {
            b.finish();
        }
        jsonl
            .flush()
            .map_err(|e| TrainError::Io(format!("{}: {e}", metrics_path.display())))?;
        plot::write_plot(&self.out_dir.join("training.svg"), &self.history)?;
        Ok(TrainReport {
            out_dir: self.out_dir.clone(),
            epochs_run,
            interrupted,
            initial,
            last,
            best_hierarchy: self.best_hierarchy,
            best_q: self.best_q,
            events: self.events.clone(),
        })
    }

    /// Take `m` into the best hierarchy / best Q so far; which bests it is.
    fn update_best(&mut self, m: &EvalMetrics) -> Best {
        let mut best = Best::default();
        if let Some(h) = m.hierarchy_b {
            if self.best_hierarchy.is_none_or(|b| h < b) {
                self.best_hierarchy = Some(h);
                best.hierarchy = true;
            }
        }
        if let Some(q) = m.q {
            if self.best_q.is_none_or(|b| q > b) {
                self.best_q = Some(q);
                best.q = true;
            }
        }
        best
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        out: &mut impl Write,
        epoch: u64,
        losses: Option<&LossValues>,
        lr: Option<f64>,
        grad_norm: Option<f64>,
        metrics: Option<&EvalMetrics>,
        events: &[Event],
    ) -> Result<(), TrainError> {
        let line = json!({
            "epoch": epoch,
            "lr": lr,
            "loss": losses,
            "grad_norm": grad_norm,
            "metrics": metrics,
            "freeze": self.freeze,
            "events": events,
        });
        // Flushed per line: `tail -f metrics.jsonl` follows a run live.
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| TrainError::Io(e.to_string()))?;
        self.history.push(plot::Point {
            epoch,
            loss: losses.map(|l| l.total),
            coverage: metrics.map(|m| m.coverage),
            hierarchy: metrics.and_then(|m| m.hierarchy_b),
            q: metrics.and_then(|m| m.q),
        });
        Ok(())
    }

    /// The checkpoint dict of the upstream trainer.
    fn checkpoint_tree(&self, epoch: u64, m: &EvalMetrics) -> (Value, TreeBuilder) {
        let mut tb = TreeBuilder::default();
        let state_dict = tb.state_dict(self.model);
        // optimizer_state_dict: PyTorch's shape (state by parameter index, param_groups).
        let groups = self.groups_snapshot();
        let mut index = 0i64;
        let mut state = Vec::new();
        let mut param_groups = Vec::new();
        for (name, scale, keys) in &groups {
            let mut ids = Vec::new();
            for k in keys {
                if let Some((mo, v, st)) = self.opt.moments(k) {
                    state.push((
                        Value::Int(index),
                        dict(vec![
                            ("step", Value::Float(st as f64)),
                            ("exp_avg", tb.tensor(&mo)),
                            ("exp_avg_sq", tb.tensor(&v)),
                        ]),
                    ));
                }
                ids.push(Value::Int(index));
                index += 1;
            }
            param_groups.push(dict(vec![
                ("name", Value::Str(name.clone())),
                ("lr", Value::Float(self.base_lr * scale)),
                (
                    "betas",
                    Value::Tuple(vec![
                        Value::Float(self.opt.beta1),
                        Value::Float(self.opt.beta2),
                    ]),
                ),
                ("eps", Value::Float(self.opt.eps)),
                ("weight_decay", Value::Float(self.opt.weight_decay)),
                ("params", Value::List(ids)),
            ]));
        }
        let metrics_json = checkpoint_metrics(m);
        let homeo = serde_json::to_value(json!({
            "freeze": self.freeze,
            "controller": self.homeo,
        }))
        .unwrap_or_default();
        let root = dict(vec![
            ("epoch", Value::Int(epoch as i64)),
            ("model_state_dict", state_dict),
            (
                "optimizer_state_dict",
                dict(vec![
                    ("state", Value::Dict(state)),
                    ("param_groups", Value::List(param_groups)),
                ]),
            ),
            ("metrics", Value::from_json(&metrics_json)),
            ("config", self.config_value.clone()),
            ("homeostasis_state", Value::from_json(&homeo)),
            ("best_Q", self.best_q.map_or(Value::None, Value::Float)),
            ("seed", Value::Int(self.opts.seed as i64)),
            (
                "trainer",
                Value::Str(format!("tvck {}", env!("CARGO_PKG_VERSION"))),
            ),
        ]);
        (root, tb)
    }

    fn groups_snapshot(&self) -> Vec<(String, f64, Vec<String>)> {
        let mut keys: Vec<&String> = self
            .opt
            .state
            .values()
            .flat_map(|g| g.layout.iter().map(|l| &l.0))
            .collect();
        keys.sort_by_key(|k| {
            self.model
                .keys
                .iter()
                .position(|(m, _)| m == *k)
                .unwrap_or(usize::MAX)
        });
        let mut out: Vec<(String, f64, Vec<String>)> = Vec::new();
        for k in keys {
            let part = part_of(k).to_string();
            let scale = self.lr_scale(&part);
            match out.iter_mut().find(|(p, _, _)| *p == part) {
                Some(g) => g.2.push(k.clone()),
                None => out.push((part, scale, vec![k.clone()])),
            }
        }
        out
    }

    /// Write the checkpoint of `epoch` to each of `names` (built once).
    fn save(&self, names: &[&str], epoch: u64, m: &EvalMetrics) -> Result<(), TrainError> {
        if names.is_empty() {
            return Ok(());
        }
        let (root, tb) = self.checkpoint_tree(epoch, m);
        for name in names {
            save::write_checkpoint(&self.out_dir.join(name), &root, &tb.tensors)?;
        }
        Ok(())
    }
}

/// A checkpoint's `metrics` dict: the upstream key names ([`crate::metrics::key`], the
/// table `tvck scan` / `inspect` read them through); `null` for what the model lacks.
fn checkpoint_metrics(m: &EvalMetrics) -> serde_json::Value {
    use crate::metrics::key;
    let pairs = [
        (key::COVERAGE, Some(m.coverage)),
        (key::HIERARCHY_A, m.hierarchy_a),
        (key::HIERARCHY_B, m.hierarchy_b),
        (key::RICHNESS_A, m.richness_a),
        (key::RICHNESS_B, m.richness_b),
        (key::DIST_CORR_A, m.dist_corr_a),
        (key::DIST_CORR_B, m.dist_corr_b),
        (key::R_V0, m.r_v0),
        (key::R_V9, m.r_v9),
        (key::MEAN_RADIUS, m.mean_radius),
        (key::STD_RADIUS, m.std_radius),
        (key::Q, m.q),
    ];
    serde_json::Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StoredMetrics;

    #[test]
    fn partial_freeze_class_from_the_catalog() {
        assert!(is_partial_freeze("TernaryVAEV5_11_PartialFreeze"));
        assert!(is_partial_freeze("models.TernaryVAEV5_11_PartialFreeze"));
        for other in [
            "TernaryVAEV5_11",
            "TernaryVAEV5_12",
            "DualNeuralVAEV5",
            "",
            "X",
        ] {
            assert!(!is_partial_freeze(other), "{other}");
        }
    }

    #[test]
    fn checkpoint_metrics_read_back_by_scan() {
        let m = EvalMetrics {
            coverage: 0.99,
            covered: 19_486,
            hierarchy_a: Some(-0.5),
            hierarchy_b: Some(-0.8),
            richness_a: Some(0.001),
            richness_b: Some(0.002),
            dist_corr_a: Some(0.31),
            dist_corr_b: Some(0.32),
            r_v0: Some(0.9),
            r_v9: Some(0.1),
            mean_radius: Some(0.6),
            std_radius: Some(0.2),
            q: Some(1.52),
            curvature: Some(1.0),
        };
        let root = Value::Dict(vec![(
            Value::Str("metrics".into()),
            Value::from_json(&checkpoint_metrics(&m)),
        )]);
        let s = StoredMetrics::from_root(&root);
        assert_eq!(s.coverage, Some(0.99));
        assert_eq!(s.hierarchy, Some(-0.8));
        assert_eq!(s.hierarchy_a, Some(-0.5));
        assert_eq!(s.richness, Some(0.002));
        assert_eq!(s.dist_corr, Some(0.31));
        assert_eq!(s.r_v0, Some(0.9));
        assert_eq!(s.r_v9, Some(0.1));
        assert_eq!(s.mean_radius, Some(0.6));
        assert_eq!(s.std_radius, Some(0.2));
        assert_eq!(s.q, Some(1.52));
        assert_eq!(s.coverage_source, None);
        // z_B's dist_corr under the name next to z_A's.
        let dict = checkpoint_metrics(&m);
        assert_eq!(dict[crate::metrics::key::DIST_CORR_B].as_f64(), Some(0.32));
    }
}
