//! `tvck train`: the validated flow (each step a checklist line with its result), then
//! training with monitoring, homeostasis, checkpoints, metrics.jsonl and the plot.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::arch::{self, LayoutParams, VersionId};
use crate::check::{self, CheckOptions};
use crate::config::TrainingConfig;
use crate::format::Value;

use super::data::{Dataset, Stratified, N_OPS};
use super::homeostasis::{self, Event, FreezeState, Homeostasis};
use super::keep;
use super::lock::RunLock;
use super::losses::{self, LossInputs, LossSettings, LossValues};
use super::metrics::{evaluate, EvalMetrics};
use super::model::{FrozenA, Mode, Model, ModelSpec};
use super::optim::{self, AdamW, Group, Schedule};
use super::resume::{self, Finished, Resume, ResumeError};
use super::save::{self, dict, TreeBuilder};
use super::{load, plot, TrainError};

use crate::metrics::coverage;

/// The seed of a run when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// Options of `tvck train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The training config; a continued run (`resume`) defaults to its own.
    pub config: Option<PathBuf>,
    /// Overrides `training.epochs` (a continued run: extends or ends it).
    pub epochs: Option<u64>,
    /// Seed of every random choice ([`DEFAULT_SEED`] by default; a continued run keeps its
    /// own and refuses another).
    pub seed: Option<u64>,
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
    /// Continue the run in this folder from its latest.pt (see [`super::resume`]).
    pub resume: Option<PathBuf>,
    /// Keep-rules for the run's `epoch_N.pt` files (see [`super::keep`]); a continued run
    /// defaults to the ones its latest.pt stores.
    pub keep: Option<crate::manager::keep::Rules>,
    /// Alert settings and delivery, TensorBoard (see [`super::monitor`]).
    pub monitor: super::monitor::MonitorOptions,
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
    /// The last epoch trained (metrics.jsonl numbering), counted from the run's start.
    pub epochs_run: u64,
    /// The run's epoch count.
    pub epochs: u64,
    /// A continued run: the epoch latest.pt held (training went on after it).
    pub resumed_from: Option<u64>,
    /// A continued run that had already ended: why (nothing was trained).
    pub already_finished: Option<Finished>,
    pub interrupted: bool,
    pub initial: EvalMetrics,
    pub last: EvalMetrics,
    pub best_hierarchy: Option<f64>,
    pub best_q: Option<f64>,
    /// The events of this invocation (metrics.jsonl holds the run's).
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
        if self.q {
            f.push("best_Q.pt");
        }
        if self.hierarchy {
            f.push("best.pt");
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
    let mut list = Checklist { on_step };
    let start = Start::new(opts)?;
    let setup = match step1_config(&mut list, opts, &start)? {
        Configured::Ready(c) => *c,
        Configured::Finished(report) => return Ok(*report),
    };
    let source = step2_compatibility(&mut list, &setup)?;
    let model = step3_model(&mut list, opts, &start, &setup)?;
    let mapped = step4_frozen_parts(&mut list, &start, setup, &source, &model)?;
    let ds = Dataset::new(opts.device);
    let initial = step5_initial_coverage(&mut list, opts, &start, &mapped, &source, &model, &ds)?;
    step6_train(
        &mut list, opts, &start, &mapped, &model, &ds, initial, on_line,
    )
}

/// The checklist lines as they are decided: each step reports through it once (a
/// refusal reports the failed line, then returns the error).
struct Checklist<'a> {
    on_step: &'a mut dyn FnMut(&Step),
}

impl Checklist<'_> {
    fn report(&mut self, number: u8, name: &'static str, status: StepStatus, detail: String) {
        (self.on_step)(&Step {
            number,
            name,
            status,
            detail,
        });
    }

    /// Report step `number` failed with `message`, and the refusal to return.
    fn refuse(&mut self, number: u8, name: &'static str, message: String) -> TrainError {
        self.report(number, name, StepStatus::Failed, message.clone());
        refuse(number, name, message)
    }
}

/// What the options decide before step 1: a continued run (its latest.pt, seed, config),
/// the seed, the config and the folder its paths resolve from.
struct Start {
    resume: Option<Resume>,
    seed: u64,
    config_arg: PathBuf,
    cwd: PathBuf,
}

impl Start {
    fn new(opts: &TrainOptions) -> Result<Start, TrainError> {
        let resume = match &opts.resume {
            Some(dir) => Some(Resume::open(&opts.cwd.join(dir))?),
            None => None,
        };
        let seed = match (&resume, opts.seed) {
            (Some(r), Some(s)) if s != r.seed => {
                return Err(ResumeError::SeedChanged {
                    dir: r.dir.clone(),
                    run: r.seed,
                    asked: s,
                }
                .into())
            }
            (Some(r), _) => r.seed,
            (None, s) => s.unwrap_or(DEFAULT_SEED),
        };
        let (config_arg, cwd) = match (&resume, &opts.config) {
            (_, Some(c)) => (c.clone(), opts.cwd.clone()),
            (Some(r), None) => (
                r.config_path.clone(),
                if r.cwd.is_dir() {
                    r.cwd.clone()
                } else {
                    opts.cwd.clone()
                },
            ),
            (None, None) => return Err(TrainError::Usage("no training config given".into())),
        };
        Ok(Start {
            resume,
            seed,
            config_arg,
            cwd,
        })
    }
}

/// Step 1's result: the config checked as `tvck check` checks it, or a continued run that
/// had already ended.
enum Configured {
    Ready(Box<Setup1>),
    Finished(Box<TrainReport>),
}

/// What step 1 decided.
struct Setup1 {
    cfg: TrainingConfig,
    epochs: u64,
    report: check::CheckReport,
    /// The frozen checkpoint the check opened: the one step 4 loads from (read once).
    frozen_ckpt: Option<crate::format::Checkpoint>,
    version: VersionId,
    params: LayoutParams,
    plan: Plan,
}

/// Steps 4–6 need the config, the epoch count, the check and the plan, not the
/// checkpoint step 4 consumes.
struct Decided {
    cfg: TrainingConfig,
    epochs: u64,
    report: check::CheckReport,
    plan: Plan,
}

const S1: &str = "load and validate config";
const S2: &str = "checkpoint compatibility";
const S3: &str = "build model, verify layout";
const S4: &str = "load frozen parts";
const S5: &str = "initial coverage";
const S6: &str = "train";

/// Step 1: Load and validate the config (a continued run: only keys that may change between
/// runs may differ), check it as `tvck check` does.
fn step1_config(
    list: &mut Checklist<'_>,
    opts: &TrainOptions,
    start: &Start,
) -> Result<Configured, TrainError> {
    let (resume, config_arg, cwd) = (&start.resume, &start.config_arg, &start.cwd);
    let cfg = TrainingConfig::load(cwd.join(config_arg))
        .map_err(|e| list.refuse(1, S1, e.to_string()))?;
    let cfg_epochs = cfg.training.as_ref().and_then(|t| t.epochs);
    let epochs = match resume {
        None => opts.epochs.or(cfg_epochs).unwrap_or(DEFAULT_EPOCHS),
        Some(r) => {
            let keys = resume::config_differences(&r.config, &Value::from_yaml(&cfg.raw));
            let refused: Vec<String> = keys
                .iter()
                .filter(|k| !resume::MAY_CHANGE.contains(&k.as_str()))
                .cloned()
                .collect();
            if !refused.is_empty() {
                let e = ResumeError::ConfigChanged {
                    config: config_arg.clone(),
                    dir: r.dir.clone(),
                    keys: refused,
                };
                list.report(1, S1, StepStatus::Failed, e.to_string());
                return Err(e.into());
            }
            // The run's own count, unless the config's or the option's changes it.
            opts.epochs.unwrap_or(if keys.is_empty() {
                r.epochs
            } else {
                cfg_epochs.unwrap_or(DEFAULT_EPOCHS)
            })
        }
    };
    if let Some(r) = resume {
        let ended = match r.finished {
            Some(Finished::EarlyStop) => Some(Finished::EarlyStop),
            _ if r.done() >= epochs => Some(Finished::Completed),
            _ => None,
        };
        if let Some(f) = ended {
            return Ok(Configured::Finished(Box::new(TrainReport {
                out_dir: r.dir.clone(),
                epochs_run: r.done(),
                epochs: r.epochs,
                resumed_from: Some(r.done()),
                already_finished: Some(f),
                interrupted: false,
                initial: r.initial.clone(),
                last: r.last.clone(),
                best_hierarchy: (r.best_hierarchy < 0.0).then_some(r.best_hierarchy),
                best_q: (r.best_q > 0.0).then_some(r.best_q),
                events: Vec::new(),
            })));
        }
    }
    // Paths are resolved like `tvck check` run from the working directory.
    let mut rel_cfg = cfg.clone();
    rel_cfg.path = config_arg.clone();
    // The frozen checkpoint check opened is the one step 4 loads from: read once.
    let (report, frozen_ckpt) = check::check_keeping_checkpoint(
        &rel_cfg,
        &CheckOptions {
            cwd: cwd.clone(),
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
            config_arg.display()
        );
        return Err(list.refuse(1, S1, msg));
    }
    let (Some(version), Some(params)) = (report.model.version, report.model.params) else {
        return Err(list.refuse(1, S1, "the config builds no known model".to_string()));
    };
    let class = report.model.class.clone().unwrap_or_default();
    let plan = Plan {
        partial_freeze: is_partial_freeze(&class),
        requires_frozen: arch::required_frozen(&class),
        class,
    };
    list.report(
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
    Ok(Configured::Ready(Box::new(Setup1 {
        cfg,
        epochs,
        report,
        frozen_ckpt,
        version,
        params,
        plan,
    })))
}

/// Step 2: The frozen checkpoint is one the class accepts and its load plan fits; the path of
/// the checkpoint to load, if any.
fn step2_compatibility(
    list: &mut Checklist<'_>,
    setup: &Setup1,
) -> Result<Option<PathBuf>, TrainError> {
    let (report, plan) = (&setup.report, &setup.plan);
    let frozen = report.frozen_checkpoint.as_ref().and_then(|f| {
        f.resolved
            .clone()
            .map(|p| (p, f.version, f.layout.clone().unwrap_or_default()))
    });
    match &frozen {
        Some((p, Some(v), layout)) => {
            let fits = report.load.as_ref().is_some_and(|l| l.fits());
            if !arch::accepts_source(&plan.class, *v) || !fits {
                let msg = format!(
                    "{} ({} {layout}) cannot initialise {}",
                    p.display(),
                    arch::version(*v).display,
                    plan.class
                );
                return Err(list.refuse(2, S2, msg));
            }
            list.report(
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
            Ok(Some(p.clone()))
        }
        Some((p, None, _)) => {
            let msg = format!("{}: no TernaryVAE layout fits it", p.display());
            Err(list.refuse(2, S2, msg))
        }
        None if plan.requires_frozen => {
            let msg = format!(
                "{} requires a frozen checkpoint and none resolves",
                plan.class
            );
            Err(list.refuse(2, S2, msg))
        }
        None => {
            list.report(
                2,
                S2,
                StepStatus::Ok,
                format!(
                    "no frozen checkpoint: {} trains from its initialisation",
                    plan.class
                ),
            );
            Ok(None)
        }
    }
}

/// Step 3: Build the model (seeded) and verify its variables against the catalog layout.
fn step3_model(
    list: &mut Checklist<'_>,
    opts: &TrainOptions,
    start: &Start,
    setup: &Setup1,
) -> Result<Model, TrainError> {
    let (version, params) = (setup.version, setup.params);
    tch::manual_seed(start.seed as i64);
    let spec = ModelSpec::new(version, params, setup.cfg.model.as_ref());
    let model = Model::new(spec, opts.device).inspect_err(|e| {
        list.report(3, S3, StepStatus::Failed, e.to_string());
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
        return Err(list.refuse(3, S3, msg));
    }
    let n_params: i64 = named.values().map(|t| t.numel() as i64).sum();
    list.report(
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
    Ok(model)
}

/// Step 4's result: what steps 5 and 6 need, and how many tensors went through the v5.5 →
/// improved index map.
struct Loaded {
    decided: Decided,
    mapped: usize,
}

/// Step 4: Load the frozen parts (a continued run: the whole state of its latest.pt); the
/// checkpoint step 1 read is dropped once they are copied.
fn step4_frozen_parts(
    list: &mut Checklist<'_>,
    start: &Start,
    setup: Setup1,
    source: &Option<PathBuf>,
    model: &Model,
) -> Result<Loaded, TrainError> {
    let Setup1 {
        cfg,
        epochs,
        report,
        frozen_ckpt,
        plan,
        ..
    } = setup;
    let mut mapped = 0;
    if let Some(r) = &start.resume {
        // A continued run: the whole model state of its latest.pt (strict).
        let n = load::load_strict(model, &r.ckpt).map_err(|e| list.refuse(4, S4, e.to_string()))?;
        list.report(
            4,
            S4,
            StepStatus::Ok,
            format!(
                "continuing after epoch {} of {}: {n} tensors from {}",
                r.done(),
                epochs,
                r.path.display()
            ),
        );
    } else if let Some(path) = source {
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
                load::load_frozen(model, &ckpt, plan).map(|fl| (plan, fl))
            })
            .map_err(|e| list.refuse(4, S4, e.to_string()))?;
        mapped = load_plan.mapped.len();
        list.report(
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
        list.report(4, S4, StepStatus::Ok, "nothing to load".into());
    }
    Ok(Loaded {
        decided: Decided {
            cfg,
            epochs,
            report,
            plan,
        },
        mapped,
    })
}

/// Step 5: The initial coverage: CRITICAL below [`coverage::CRITICAL_BELOW`] with a frozen
/// checkpoint required (refused without `--force`), a warning below
/// [`coverage::WEAK_BELOW`], each with its likely cause. A continued run keeps the one its
/// start measured.
fn step5_initial_coverage(
    list: &mut Checklist<'_>,
    opts: &TrainOptions,
    start: &Start,
    loaded: &Loaded,
    source: &Option<PathBuf>,
    model: &Model,
    ds: &Dataset,
) -> Result<EvalMetrics, TrainError> {
    let (report, plan, mapped) = (&loaded.decided.report, &loaded.decided.plan, loaded.mapped);
    let initial = match &start.resume {
        Some(r) => r.initial.clone(),
        None => evaluate(model, ds),
    };
    let cov = initial.coverage;
    let cov_text = format!("{:.2}% ({} of {N_OPS})", cov * 100.0, initial.covered);
    let not_measured = report
        .frozen_checkpoint
        .as_ref()
        .is_some_and(|f| f.metrics == Some(crate::metrics::Provenance::NotMeasured));
    if let Some(r) = &start.resume {
        // Decided when the run started; the continued model's coverage for the record.
        let now = evaluate(model, ds);
        list.report(
            5,
            S5,
            StepStatus::Ok,
            format!(
                "{cov_text} at the start; {:.2}% ({} of {N_OPS}) after epoch {}",
                now.coverage * 100.0,
                now.covered,
                r.done()
            ),
        );
    } else if cov < coverage::CRITICAL_BELOW && plan.requires_frozen {
        let cause = match source {
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
            coverage::CRITICAL_BELOW * 100.0
        );
        if !opts.force {
            list.report(
                5,
                S5,
                StepStatus::Critical,
                format!("{msg}; refusing (use --force to train anyway)"),
            );
            return Err(refuse(5, S5, msg));
        }
        list.report(
            5,
            S5,
            StepStatus::Critical,
            format!("{msg}; continuing because of --force"),
        );
    } else if cov < coverage::WEAK_BELOW {
        let cause = if not_measured {
            " — likely cause: the frozen checkpoint is a tvck conversion that was never measured (the conversion changed the function): convert its source again with `tvck convert --fit`"
        } else if mapped > 0 {
            " — likely cause: Frozen-style v5.5 weights mapped into improved encoders/decoder (0→0, 2→4, 4→8) with LayerNorms inserted at weight 1, bias 0, which changes the function"
        } else {
            ""
        };
        list.report(
            5,
            S5,
            StepStatus::Warning,
            format!(
                "{cov_text}: below the healthy {:.0}%{cause}",
                coverage::WEAK_BELOW * 100.0
            ),
        );
    } else {
        list.report(5, S5, StepStatus::Ok, cov_text);
    }
    Ok(initial)
}

/// Step 6: The output folder, the training state (restored for a continued run), then the
/// epochs.
#[allow(clippy::too_many_arguments)]
fn step6_train(
    list: &mut Checklist<'_>,
    opts: &TrainOptions,
    start: &Start,
    loaded: &Loaded,
    model: &Model,
    ds: &Dataset,
    initial: EvalMetrics,
    on_line: &mut dyn FnMut(&str),
) -> Result<TrainReport, TrainError> {
    let (resume, config_arg, cwd, seed) =
        (&start.resume, &start.config_arg, &start.cwd, start.seed);
    let Decided {
        cfg, epochs, plan, ..
    } = &loaded.decided;
    let out_dir = match (resume, &opts.out) {
        (Some(r), _) => r.dir.clone(),
        (None, Some(o)) => opts.cwd.join(o),
        (None, None) => match cfg.checkpoints.as_ref().and_then(|c| c.save_dir.clone()) {
            Some(d) => cwd.join(d),
            None => cwd.join("runs").join(
                config_arg
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "run".into()),
            ),
        },
    };
    fs::create_dir_all(&out_dir).map_err(|source| {
        let e = TrainError::File {
            action: "create",
            path: out_dir.clone(),
            source,
        };
        list.report(6, S6, StepStatus::Failed, e.to_string());
        e
    })?;
    // One process per run folder, held until the run returns (see [`super::lock`]).
    let _lock = RunLock::acquire(&out_dir).map_err(|e| {
        list.report(6, S6, StepStatus::Failed, e.to_string());
        TrainError::from(e)
    })?;
    let absolute = |p: PathBuf| fs::canonicalize(&p).unwrap_or(p);
    let setup = Setup {
        out_dir: out_dir.clone(),
        initial,
        epochs: *epochs,
        seed,
        config_path: absolute(cwd.join(config_arg)),
        cwd: absolute(cwd.clone()),
        resumed: resume.is_some(),
    };
    let mut run = Run::new(cfg, model, ds, plan, opts, setup)?;
    if let Some(r) = resume {
        run.restore(r)?;
    }
    run.hook = Some(super::monitor::Hook::start(
        &out_dir,
        cfg,
        &opts.monitor,
        run.epochs,
        &run.config_path,
        resume.as_ref().map(Resume::done),
    )?);
    list.report(
        6,
        S6,
        StepStatus::Ok,
        format!(
            "{}, batch {}, lr {}, seed {}, output {}",
            match resume {
                Some(r) => format!("epochs {}–{} of {}", r.done() + 1, run.epochs, run.epochs),
                None => format!("{} epochs", run.epochs),
            },
            run.batch_size,
            run.base_lr,
            seed,
            out_dir.display()
        ),
    );
    let report = run.run(on_line);
    // run.json: how the run ended.
    if let Some(h) = &mut run.hook {
        let state = match &report {
            Ok(r) if r.interrupted => crate::monitor::RunState::Interrupted,
            Ok(_) => crate::monitor::RunState::Finished,
            Err(_) => crate::monitor::RunState::Failed,
        };
        let ended = h.finish(state);
        if report.is_ok() {
            ended?;
        }
    }
    report
}

/// Epochs when neither the config nor the options say.
const DEFAULT_EPOCHS: u64 = 100;

/// What [`train`] decided for the run before its state is built.
struct Setup {
    out_dir: PathBuf,
    /// Step 5's evaluation (a continued run: the one its start made).
    initial: EvalMetrics,
    epochs: u64,
    seed: u64,
    /// The config and the folder its relative paths resolve from (absolute), as the
    /// resume state stores them.
    config_path: PathBuf,
    cwd: PathBuf,
    /// A continued run: [`Run::restore`] follows (no richness baseline computed).
    resumed: bool,
}

/// Training state.
struct Run<'a> {
    model: &'a Model,
    ds: &'a Dataset,
    opts: &'a TrainOptions,
    out_dir: PathBuf,
    epochs: u64,
    batch_size: i64,
    high_v_budget_ratio: f64,
    sampler: Stratified,
    base_lr: f64,
    max_grad_norm: f64,
    eval_every: u64,
    save_every: u64,
    min_epochs: u64,
    patience: u64,
    schedule: Schedule,
    /// The 0-based epoch the schedule (re)started at (a rebuild restarts it).
    schedule_origin: u64,
    losses: LossSettings,
    targets: Tensor,
    /// The richness baseline: ‖z_B_hyp‖ of every operation at the start.
    orig: Tensor,
    opt: AdamW,
    groups: Vec<Group>,
    homeo: Option<Homeostasis>,
    freeze: FreezeState,
    partial_freeze: bool,
    lr_scales: (f64, f64),
    coverage_freeze_threshold: f64,
    initial: EvalMetrics,
    history: Vec<plot::Point>,
    best_hierarchy: f64,
    best_q: f64,
    epochs_without_improvement: u64,
    events: Vec<Event>,
    notes: Vec<String>,
    /// encoder_A's outputs for every operation while a Frozen-style encoder_A is frozen.
    frozen_a: Option<FrozenA>,
    /// Gradients of parameters in no group that PyTorch's clip_grad_norm_ sees: the
    /// accumulated decoder_A gradient and the stale gradients of frozen parts.
    passive: Vec<(String, Tensor)>,
    /// The last batch's gradients of the groups' parameters and its clip factor (they
    /// become stale gradients when homeostasis freezes their part).
    last_grads: Vec<(String, Tensor)>,
    last_coef: f64,
    /// The last epoch's mean losses (train_metrics of a checkpoint).
    last_losses: LossValues,
    /// Quick richness (richness_B) of the initial evaluation (richness_ratio).
    initial_richness: f64,
    /// The config, as every checkpoint stores it.
    config_value: Value,
    seed: u64,
    config_path: PathBuf,
    cwd: PathBuf,
    /// The first epoch to train (metrics.jsonl numbering): 1, or after a continued run's
    /// latest.pt.
    start_epoch: u64,
    /// A continued run's last evaluation.
    resumed_last: Option<EvalMetrics>,
    /// Why the run ended, once it has (latest.pt's `resume.finished`).
    finished: Option<Finished>,
    /// Keep-rules of the epoch files (`--keep`, or a continued run's `resume.keep`).
    keep: Option<crate::manager::keep::Rules>,
    /// The monitoring hook: each metrics.jsonl line's alert rules (set before `run`).
    hook: Option<super::monitor::Hook>,
}

/// latest.pt's `homeostasis`: the freeze state and the controller's whole state.
#[derive(Serialize, serde::Deserialize)]
struct HomeostasisState {
    freeze: FreezeState,
    controller: Option<Homeostasis>,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a TrainingConfig,
        model: &'a Model,
        ds: &'a Dataset,
        plan: &Plan,
        opts: &'a TrainOptions,
        setup: Setup,
    ) -> Result<Run<'a>, TrainError> {
        let Setup {
            out_dir,
            initial,
            epochs,
            seed,
            config_path,
            cwd,
            resumed,
        } = setup;
        let t = cfg.training.clone().unwrap_or_default();
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
        let homeo = (plan.partial_freeze && hs.enabled).then(|| Homeostasis::new(hs));
        // PartialFreeze starts with encoder_A frozen and encoder_B trainable
        // (option_c.freeze_encoder_b is not read, as upstream).
        let freeze = if plan.partial_freeze {
            FreezeState {
                encoder_a: true,
                encoder_b: false,
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
        if !model.spec.has_projection() {
            return Err(TrainError::Model(
                "a v5.5 model has no hyperbolic projection: tvck trains the v5.11 family".into(),
            ));
        }
        // A continued run reads its baseline from latest.pt (Run::restore).
        let orig = if resumed {
            Tensor::new()
        } else {
            original_radii(model, ds)
        };
        let riem = cfg.riemannian.clone().unwrap_or_default();
        let wd = t.weight_decay.unwrap_or(1e-4);
        let opt = if riem.enabled.unwrap_or(true) {
            match riem.optimizer.as_deref().unwrap_or("adam") {
                "adam" => AdamW::riemannian(wd),
                other => {
                    return Err(TrainError::Usage(format!(
                        "riemannian.optimizer `{other}`: tvck train implements RiemannianAdam (`adam`) only"
                    )))
                }
            }
        } else {
            AdamW::new(wd)
        };
        let initial_richness = initial.richness_b.unwrap_or(0.0);
        let mut run = Run {
            model,
            ds,
            opts,
            out_dir,
            epochs,
            batch_size: t.batch_size.unwrap_or(512).clamp(1, N_OPS as u64) as i64,
            high_v_budget_ratio: t.high_v_budget_ratio.unwrap_or(0.25).clamp(0.0, 1.0),
            sampler: Stratified::new(ds),
            base_lr: t.lr.unwrap_or(1e-3),
            max_grad_norm: t.max_grad_norm.unwrap_or(1.0),
            eval_every: t.eval_every.unwrap_or(5).max(1),
            save_every: t.save_every.unwrap_or(25).max(1),
            min_epochs: t.min_epochs.unwrap_or(40),
            patience: t.patience.unwrap_or(25),
            schedule,
            schedule_origin: 0,
            losses,
            targets,
            orig,
            opt,
            groups: Vec::new(),
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
            best_hierarchy: 0.0,
            best_q: 0.0,
            epochs_without_improvement: 0,
            events: Vec::new(),
            notes: note.into_iter().collect(),
            frozen_a: None,
            passive: Vec::new(),
            last_grads: Vec::new(),
            last_coef: 1.0,
            last_losses: LossValues::default(),
            initial_richness,
            config_value: Value::from_yaml(&cfg.raw),
            seed,
            config_path,
            cwd,
            start_epoch: 1,
            resumed_last: None,
            finished: None,
            keep: opts.keep.clone(),
            hook: None,
        };
        run.groups = run.build_groups();
        Ok(run)
    }

    /// The state_dict keys under `prefix.` in module order.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.model.part_keys(prefix)
    }

    /// The optimizer's parameter groups for the current freeze state (upstream's
    /// get_param_groups order: proj_A, proj_B, controller, encoder_A, encoder_B; frozen
    /// parts omitted, their parameters without gradient); decoder_A is in no group but
    /// keeps receiving the coverage gradient in a PartialFreeze model.
    fn build_groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let p = &self.model.spec.params;
        let projection: Vec<(&str, Vec<String>)> = if p.dual_projection {
            let mut b = self.keys_under("projection.proj_B");
            b.extend(self.keys_under("projection.proj_B_radius"));
            vec![
                ("proj_A", self.keys_under("projection.proj_A")),
                ("proj_B", b),
            ]
        } else {
            vec![("projection", self.keys_under("projection"))]
        };
        let mut add = |name: &str, keys: Vec<String>, trainable: bool, needs_grad: bool| {
            let params: Vec<(String, Tensor)> = keys
                .into_iter()
                .filter(|k| !k.ends_with("_ema"))
                .filter_map(|k| self.model.var(&k).map(|t| (k, t)))
                .collect();
            for (_, t) in &params {
                let _ = t.set_requires_grad(trainable || needs_grad);
            }
            if trainable && !params.is_empty() {
                groups.push(Group::new(name, self.lr_scale(name), params));
            }
        };
        for (name, keys) in projection {
            add(name, keys, true, false);
        }
        add(
            "controller",
            self.keys_under("controller"),
            !self.freeze.controller,
            false,
        );
        add(
            "encoder_A",
            self.keys_under("encoder_A"),
            !self.freeze.encoder_a,
            false,
        );
        add(
            "encoder_B",
            self.keys_under("encoder_B"),
            !self.freeze.encoder_b,
            false,
        );
        // decoder_A trains only in a model class without a frozen checkpoint; otherwise
        // it still gets the coverage loss's gradient (into .grad, never stepped).
        add(
            "decoder_A",
            self.keys_under("decoder_A"),
            !self.decoder_frozen(),
            self.losses.rich.is_some(),
        );
        groups
    }

    /// The learning-rate scale of a group (option_c: encoder_A and decoder_A at
    /// encoder_a_lr_scale, encoder_B at encoder_b_lr_scale, the rest at the base rate).
    fn lr_scale(&self, group: &str) -> f64 {
        match group {
            "encoder_A" | "decoder_A" => self.lr_scales.0,
            "encoder_B" => self.lr_scales.1,
            _ => 1.0,
        }
    }

    /// Whether decoder_A is in no group (see [`Run::build_groups`]).
    fn decoder_frozen(&self) -> bool {
        self.partial_freeze || self.freeze.encoder_a
    }

    /// A freeze change (homeostasis): the optimizer and the schedule are rebuilt from
    /// scratch (fresh moments, lr back to base from the next epoch); the parts that left
    /// the optimizer keep their last gradients (stale, still clipped each batch), the
    /// parts that joined it lose theirs.
    fn rebuild(&mut self, next_epoch0: u64) {
        let before: Vec<String> = self
            .groups
            .iter()
            .flat_map(|g| g.params().iter().map(|(k, _)| k.clone()))
            .collect();
        self.groups = self.build_groups();
        let after: std::collections::HashSet<String> = self
            .groups
            .iter()
            .flat_map(|g| g.params().iter().map(|(k, _)| k.clone()))
            .collect();
        self.passive.retain(|(k, _)| !after.contains(k));
        let coef = self.last_coef;
        for (k, g) in &self.last_grads {
            if before.contains(k) && !after.contains(k) && g.defined() {
                self.passive.push((k.clone(), g * coef));
            }
        }
        self.opt.reset();
        self.schedule_origin = next_epoch0;
    }

    /// Take a continued run's state from its latest.pt (see [`super::resume`]): freeze
    /// state and homeostasis, the groups they build with their moments and step counts,
    /// the schedule's origin, the bests and the patience counter, the passive gradients
    /// and the richness baseline. The model state was loaded at step 4.
    fn restore(&mut self, r: &Resume) -> Result<(), TrainError> {
        let device = self.opts.device;
        let h: HomeostasisState = r.decode("homeostasis")?;
        self.freeze = h.freeze;
        self.homeo = h.controller;
        self.schedule_origin = r.schedule_origin;
        self.best_q = r.best_q;
        self.best_hierarchy = r.best_hierarchy;
        self.epochs_without_improvement = r.epochs_without_improvement;
        self.groups = self.build_groups();
        self.restore_optimizer(r)?;
        let tensor = |i: usize| load::tensor_of(&r.ckpt, i).map(|t| t.to_device(device));
        self.passive = r
            .tensor_dict("resume.passive_grads")?
            .into_iter()
            .map(|(k, i)| Ok((k, tensor(i)?)))
            .collect::<Result<_, TrainError>>()?;
        self.orig = tensor(r.tensor("resume.orig_radii")?)?;
        if self.orig.size() != [N_OPS as i64] {
            return Err(ResumeError::NoState {
                path: r.path.clone(),
                key: "resume.orig_radii".into(),
            }
            .into());
        }
        self.frozen_a = None;
        self.start_epoch = r.done() + 1;
        self.resumed_last = Some(r.last.clone());
        if self.keep.is_none() {
            self.keep = r.keep.clone();
        }
        Ok(())
    }

    /// The moments of `optimizer_state` (torch's layout, [`Run::optimizer_state`]) into the
    /// groups the restored freeze state builds: the same group names and sizes, each
    /// parameter's moments by its index.
    fn restore_optimizer(&mut self, r: &Resume) -> Result<(), TrainError> {
        let bad = |message: String| ResumeError::Optimizer {
            path: r.path.clone(),
            message,
        };
        let root = &r.ckpt.root;
        let (Some(Value::List(saved)), Some(Value::Dict(state))) = (
            root.get_path("optimizer_state.param_groups"),
            root.get_path("optimizer_state.state"),
        ) else {
            return Err(bad("no optimizer_state.param_groups / state".into()).into());
        };
        let names = |gs: &mut dyn Iterator<Item = (String, usize)>| -> Vec<String> {
            gs.map(|(n, len)| format!("{n} ({len})")).collect()
        };
        let ids = |g: &Value| -> Vec<i64> {
            match g.get("params") {
                Some(Value::List(p)) => p.iter().filter_map(Value::as_i64).collect(),
                _ => Vec::new(),
            }
        };
        let saved_groups = names(&mut saved.iter().map(|g| {
            let name = g.get("name").and_then(Value::as_str).unwrap_or("?");
            (name.to_string(), ids(g).len())
        }));
        let built = names(
            &mut self
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.params().len())),
        );
        if saved_groups != built {
            return Err(bad(format!(
                "groups {} in the file, {} for its freeze state",
                saved_groups.join(", "),
                built.join(", ")
            ))
            .into());
        }
        let device = self.opts.device;
        self.opt.reset();
        for (g, sg) in self.groups.iter().zip(saved) {
            let mut moments = Vec::new();
            let mut step = None;
            for ((key, p), id) in g.params().iter().zip(ids(sg)) {
                let Some((_, st)) = state.iter().find(|(k, _)| k.as_i64() == Some(id)) else {
                    continue;
                };
                let tensor = |name: &str| -> Result<Tensor, TrainError> {
                    match st.get(name) {
                        Some(Value::Tensor(i)) => {
                            Ok(load::tensor_of(&r.ckpt, *i)?.to_device(device))
                        }
                        _ => Err(bad(format!("parameter {id} ({key}) has no {name}")).into()),
                    }
                };
                let (m, v) = (tensor("exp_avg")?, tensor("exp_avg_sq")?);
                if m.size() != p.size() || v.size() != p.size() {
                    return Err(bad(format!(
                        "the moments of {key} have shape {:?}, the parameter {:?}",
                        m.size(),
                        p.size()
                    ))
                    .into());
                }
                let s = st
                    .get("step")
                    .and_then(Value::as_i64)
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or_else(|| bad(format!("parameter {id} ({key}) has no step")))?;
                if step.is_some_and(|x| x != s) {
                    return Err(bad(format!("group {} mixes step counts", g.name)).into());
                }
                step = Some(s);
                moments.push((key.clone(), m, v));
            }
            self.opt.restore_group(&g.name, &moments, step.unwrap_or(0));
        }
        Ok(())
    }

    fn mode(&self) -> Mode {
        Mode::TRAIN
    }

    /// One epoch (0-based `epoch0`) over upstream's stratified batches: mean losses and
    /// the last batch's gradient norm.
    fn epoch(&mut self, epoch0: u64, lr: f64) -> (LossValues, f64) {
        let batches = self
            .sampler
            .epoch(self.batch_size, self.high_v_budget_ratio);
        let mut sum = LossValues::default();
        let mut n_batches = 0;
        let mut grad_norm = 0.0;
        let mode = self.mode();
        // A frozen Frozen-style encoder_A (no dropout, no gradient) is a constant
        // function: computed once while it stays frozen instead of per batch.
        let cache = self.freeze.encoder_a
            && self.model.spec.params.encoder == crate::arch::EncoderKind::Frozen;
        if cache {
            if self.frozen_a.is_none() {
                self.frozen_a = Some(self.model.frozen_a(&self.ds.x));
            }
        } else {
            self.frozen_a = None;
        }
        let inputs = LossInputs {
            settings: &self.losses,
            targets: &self.targets,
            orig: &self.orig,
            valuations: &self.ds.v,
            epoch: epoch0,
        };
        // decoder_A's gradient accumulates while it is in no group (training.md §4).
        let decoder_passive: Vec<(String, Tensor)> =
            if self.decoder_frozen() && self.losses.rich.is_some() {
                self.model
                    .part_keys("decoder_A")
                    .into_iter()
                    .filter_map(|k| self.model.var(&k).map(|t| (k, t)))
                    .collect()
            } else {
                Vec::new()
            };
        for idx in batches {
            let batch = self.ds.batch(&idx);
            let a = self.frozen_a.as_ref().map(|f| f.rows(&idx));
            // Frozen parts have requires_grad off: no graph through them (upstream runs
            // them under no_grad).
            let out = self.model.forward_with(&batch.x, mode, a);
            let (Some(za), Some(zb)) = (&out.z_a_hyp, &out.z_b_hyp) else {
                break;
            };
            let logits = self.model.coverage_logits(za, true);
            let (loss, vals) = losses::total_loss(&inputs, &batch, za, zb, &logits);
            // The groups' gradients and decoder_A's, in one backward pass.
            let mut all = std::mem::take(&mut self.groups);
            let dec_params = decoder_passive
                .iter()
                .map(|(k, t)| (k.clone(), t.shallow_clone()))
                .collect();
            let dec_group = Group::new("decoder_A(passive)", 0.0, dec_params);
            all.push(dec_group);
            let mut grads = optim::gradients(&loss, &all);
            let dec_grads = grads.pop().unwrap_or_default();
            let _ = all.pop();
            self.groups = all;
            for ((k, _), g) in decoder_passive.iter().zip(dec_grads) {
                if !g.defined() {
                    continue;
                }
                match self.passive.iter_mut().find(|(p, _)| p == k) {
                    Some((_, acc)) => {
                        let _ = acc.g_add_(&g);
                    }
                    None => self.passive.push((k.clone(), g)),
                }
            }
            let mut passive: Vec<Tensor> = self
                .passive
                .iter()
                .map(|(_, t)| t.shallow_clone())
                .collect();
            let (norm, coef) =
                self.opt
                    .step(&self.groups, &grads, lr, self.max_grad_norm, &mut passive);
            grad_norm = norm;
            self.last_coef = coef;
            self.last_grads = self
                .groups
                .iter()
                .zip(grads)
                .flat_map(|(g, gr)| g.params().iter().map(|(k, _)| k.clone()).zip(gr))
                .collect();
            sum.add(&vals);
            n_batches += 1;
        }
        if n_batches > 0 {
            sum.scale(1.0 / f64::from(n_batches));
        }
        (sum, grad_norm)
    }

    fn run(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<TrainReport, TrainError> {
        let metrics_path = self.out_dir.join("metrics.jsonl");
        for n in &self.notes {
            on_line(&format!("note: {n}"));
        }
        let initial = self.initial.clone();
        let resumed_from = (self.start_epoch > 1).then_some(self.start_epoch - 1);
        let mut jsonl = match resumed_from {
            Some(done) => {
                // The epochs after latest.pt are trained again: their lines go, and the
                // temporary files a kill left behind.
                let is_output =
                    |n: &str| OUTPUTS.contains(&n) || super::keep::epoch_of(n).is_some();
                for p in resume::remove_stale_temporaries(&self.out_dir, &is_output) {
                    on_line(&format!(
                        "removed {} (left by the interrupted run)",
                        p.display()
                    ));
                }
                let (file, points) = resume::continue_metrics(&metrics_path, done)?;
                self.history = points;
                BufWriter::new(file)
            }
            None => {
                let mut jsonl = BufWriter::new(File::create(&metrics_path).map_err(|source| {
                    TrainError::File {
                        action: "create",
                        path: metrics_path.clone(),
                        source,
                    }
                })?);
                // Line 0: the state training starts from (no checkpoint before training).
                self.record(&mut jsonl, 0, None, None, None, Some(&initial), &[])?;
                self.hook_output(on_line);
                jsonl
            }
        };
        let bar = (self.opts.progress && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(self.epochs);
            b.set_position(self.start_epoch - 1);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} epochs [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut last = self.resumed_last.take().unwrap_or_else(|| initial.clone());
        let mut epochs_run = self.start_epoch - 1;
        let mut interrupted = false;
        // `epoch` counts trained epochs (metrics.jsonl line); upstream's 0-based epoch is
        // epoch − 1.
        for epoch in self.start_epoch..=self.epochs {
            let e0 = epoch - 1;
            // Each epoch's random choices (batches, dropout, eps, pairs) from a generator
            // seeded for it: a continued run draws what the uninterrupted one drew.
            tch::manual_seed(resume::epoch_seed(self.seed, e0));
            let lr = self
                .schedule
                .lr(self.base_lr, e0.saturating_sub(self.schedule_origin));
            let (losses, grad_norm) = self.epoch(e0, lr);
            self.last_losses = losses.clone();
            epochs_run = epoch;
            let is_last = epoch == self.epochs;
            let eval_now = e0 % self.eval_every == 0 || is_last;
            let mut events = Vec::new();
            let mut best = Best::default();
            let mut stop = false;
            let metrics = if eval_now {
                let m = evaluate(self.model, self.ds);
                if m.coverage < self.coverage_freeze_threshold
                    && self.initial.coverage >= self.coverage_freeze_threshold
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
                        e0,
                        m.coverage,
                        m.hierarchy_a.unwrap_or(0.0),
                        m.hierarchy_b.unwrap_or(0.0),
                        m.dist_corr_b.unwrap_or(0.0),
                    );
                    let changed = h.state.encoder_a != self.freeze.encoder_a
                        || h.state.encoder_b != self.freeze.encoder_b;
                    self.freeze = h.state;
                    if changed {
                        self.rebuild(e0 + 1);
                    }
                    events.extend(ev.into_iter().map(|mut e| {
                        e.epoch = epoch;
                        e
                    }));
                }
                best = self.update_best(&m);
                if best.q || best.hierarchy {
                    self.epochs_without_improvement = 0;
                } else {
                    self.epochs_without_improvement += 1;
                }
                stop = e0 >= self.min_epochs && self.epochs_without_improvement >= self.patience;
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
            self.hook_output(on_line);
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
            let interrupt = self
                .opts
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst));
            // best_Q.pt first (carrying the previous best_hierarchy), then best.pt, then
            // latest.pt (every save_every epochs, at the last one, and on a stop).
            let latest = e0 % self.save_every == 0 || is_last || interrupt || stop;
            if stop {
                self.finished = Some(Finished::EarlyStop);
            } else if is_last {
                self.finished = Some(Finished::Completed);
            }
            // epoch_N.pt (with keep-rules) before latest.pt: a kill between the two leaves
            // an epoch file the continued run writes again, never a missing one.
            let epoch_file = self.keep.is_some() && (e0 % self.save_every == 0 || is_last);
            if epoch_file {
                let (root, tb) = self.checkpoint_tree(e0, &last, false);
                save::write_checkpoint(
                    &self.out_dir.join(keep::epoch_file(e0)),
                    &root,
                    &tb.tensors,
                )?;
            }
            self.save(&best.files(latest), e0, &last)?;
            if let (true, Some(rules)) = (epoch_file, &self.keep) {
                keep::apply_and_report(&self.out_dir, rules, on_line);
            }
            if stop {
                on_line(&format!(
                    "early stop: {} evaluations without a new best Q or hierarchy (patience {}, epoch ≥ min_epochs {})",
                    self.epochs_without_improvement, self.patience, self.min_epochs
                ));
                break;
            }
            if interrupt {
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
        jsonl.flush().map_err(|source| TrainError::Output {
            path: metrics_path.clone(),
            source,
        })?;
        plot::write_plot(&self.out_dir.join("training.svg"), &self.history)?;
        Ok(TrainReport {
            out_dir: self.out_dir.clone(),
            epochs_run,
            epochs: self.epochs,
            resumed_from,
            already_finished: None,
            interrupted,
            initial,
            last,
            best_hierarchy: (self.best_hierarchy < 0.0).then_some(self.best_hierarchy),
            best_q: (self.best_q > 0.0).then_some(self.best_q),
            events: self.events.clone(),
        })
    }

    /// The monitoring hook's lines for the terminal (alerts, delivery failures).
    fn hook_output(&mut self, on_line: &mut dyn FnMut(&str)) {
        for l in self
            .hook
            .as_mut()
            .map(|h| h.take_output())
            .unwrap_or_default()
        {
            on_line(&l);
        }
    }

    /// Take `m` into the bests (training.md §5): a new best Q when Q > best_Q (init 0),
    /// a new best hierarchy when hierarchy_B < best_hierarchy (init 0) and coverage > 0.99.
    fn update_best(&mut self, m: &EvalMetrics) -> Best {
        let mut best = Best::default();
        if let Some(q) = m.q {
            if q > self.best_q {
                self.best_q = q;
                best.q = true;
            }
        }
        if let Some(h) = m.hierarchy_b {
            if h < self.best_hierarchy && m.coverage > coverage::BEST_ABOVE {
                self.best_hierarchy = h;
                best.hierarchy = true;
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
        // Timed: run.json's `monitor_seconds` (what monitoring costs a run).
        let hashing = Instant::now();
        let frozen_sha256 =
            super::monitor::frozen_sha256(self.model, &self.freeze, self.decoder_frozen());
        let hashing = hashing.elapsed();
        let line = json!({
            "epoch": epoch,
            "lr": lr,
            "loss": losses,
            "grad_norm": grad_norm,
            "metrics": metrics,
            "freeze": self.freeze,
            "events": events,
            "frozen_sha256": frozen_sha256,
        });
        // Flushed per line: `tail -f metrics.jsonl` follows a run live.
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(TrainError::Io)?;
        if let Some(h) = &mut self.hook {
            h.line(&line, hashing)?;
        }
        self.history.push(plot::Point {
            epoch,
            loss: losses.map(|l| l.total),
            coverage: metrics.map(|m| m.coverage),
            hierarchy: metrics.and_then(|m| m.hierarchy_b),
            q: metrics.and_then(|m| m.q),
        });
        Ok(())
    }

    /// `optimizer_state`: torch's Optimizer.state_dict() of upstream's optimizer
    /// (training.md §6): `state` by parameter index for the parameters with moments,
    /// indices running over the groups in order; `param_groups` with every option.
    fn optimizer_state(&self, tb: &mut TreeBuilder, e0: u64) -> Value {
        let mut index = 0i64;
        let mut state = Vec::new();
        let mut param_groups = Vec::new();
        let lr_now = self
            .schedule
            .lr(self.base_lr, (e0 + 1).saturating_sub(self.schedule_origin));
        for g in &self.groups {
            let mut ids = Vec::new();
            for (k, _) in g.params() {
                if let Some((mo, v, st)) = self.opt.moments(k) {
                    state.push((
                        Value::Int(index),
                        dict(vec![
                            ("step", Value::Int(st.min(i64::MAX as u64) as i64)),
                            ("exp_avg", tb.tensor(&mo)),
                            ("exp_avg_sq", tb.tensor(&v)),
                        ]),
                    ));
                }
                ids.push(Value::Int(index));
                index += 1;
            }
            let f = Value::Bool(false);
            let mut entries = vec![
                ("lr", Value::Float(lr_now * g.lr_scale)),
                ("name", Value::Str(g.name.clone())),
            ];
            if self.opt.coupled {
                entries.push(("stabilize", Value::None));
            }
            entries.extend([
                (
                    "betas",
                    Value::Tuple(vec![
                        Value::Float(self.opt.beta1),
                        Value::Float(self.opt.beta2),
                    ]),
                ),
                ("eps", Value::Float(self.opt.eps)),
                ("weight_decay", Value::Float(self.opt.weight_decay)),
                ("amsgrad", f.clone()),
                ("maximize", f.clone()),
                ("foreach", Value::None),
                ("capturable", f.clone()),
                ("differentiable", f.clone()),
                ("fused", Value::None),
                ("decoupled_weight_decay", Value::Bool(!self.opt.coupled)),
                ("initial_lr", Value::Float(self.base_lr * g.lr_scale)),
                ("params", Value::List(ids)),
            ]);
            param_groups.push(dict(entries));
        }
        dict(vec![
            ("state", Value::Dict(state)),
            ("param_groups", Value::List(param_groups)),
        ])
    }

    /// The checkpoint dict of upstream's trainer (training.md §6) and tvck's additions
    /// (`seed`, `trainer`, `homeostasis`). `latest.pt` holds no metrics.
    fn checkpoint_tree(&self, e0: u64, m: &EvalMetrics, latest: bool) -> (Value, TreeBuilder) {
        let mut tb = TreeBuilder::default();
        let state_dict = tb.state_dict(self.model);
        let optimizer_state = self.optimizer_state(&mut tb, e0);
        let mut entries = vec![
            ("epoch", Value::Int(e0.min(i64::MAX as u64) as i64)),
            ("model_state_dict", state_dict),
            ("optimizer_state", optimizer_state),
        ];
        if latest {
            entries.extend([
                ("best_Q", Value::Float(self.best_q)),
                ("best_hierarchy", Value::Float(self.best_hierarchy)),
                (
                    "epochs_without_improvement",
                    Value::Int(self.epochs_without_improvement.min(i64::MAX as u64) as i64),
                ),
                ("config", self.config_value.clone()),
                ("resume", self.resume_state(&mut tb, m)),
            ]);
        } else {
            let l = &self.last_losses;
            let phase = i64::from(self.losses.weights(e0).phase);
            let train_metrics = dict(vec![
                ("loss", Value::Float(l.total)),
                ("rich_loss", Value::Float(l.rich)),
                ("radial_loss", Value::Float(l.radial)),
                ("rank_loss", Value::Float(l.rank)),
                ("zero_loss", Value::Float(l.zero_structure)),
                ("geodesic_loss", Value::Float(l.geodesic)),
                ("phase", Value::Int(phase)),
            ]);
            let richness = m.richness_b.unwrap_or(0.0) / (self.initial_richness + 1e-10);
            let q_h = self.homeo.as_ref().map_or(0.0, |h| h.q);
            let version = self
                .config_value
                .get("version")
                .cloned()
                .unwrap_or(Value::Dict(Vec::new()));
            entries.extend([
                ("metrics", Value::from_json(&checkpoint_metrics(m))),
                ("train_metrics", train_metrics),
                ("richness_ratio", Value::Float(richness)),
                ("best_Q", Value::Float(self.best_q)),
                ("best_hierarchy", Value::Float(self.best_hierarchy)),
                (
                    "homeostasis_state",
                    Value::Str(Homeostasis::summary(self.freeze, q_h)),
                ),
                ("config", self.config_value.clone()),
                ("version", version),
            ]);
        }
        let homeo = serde_json::to_value(json!({
            "freeze": self.freeze,
            "controller": self.homeo,
        }))
        .unwrap_or_default();
        entries.extend([
            ("homeostasis", Value::from_json(&homeo)),
            ("seed", Value::Int(self.seed.min(i64::MAX as u64) as i64)),
            (
                "trainer",
                Value::Str(format!("tvck {}", env!("CARGO_PKG_VERSION"))),
            ),
        ]);
        (dict(entries), tb)
    }

    /// latest.pt's `resume` dict (docs/training-differences.md, "Resume"); `last` is the
    /// last evaluation.
    fn resume_state(&self, tb: &mut TreeBuilder, last: &EvalMetrics) -> Value {
        let int = |n: u64| Value::Int(n.min(i64::MAX as u64) as i64);
        let text = |p: &std::path::Path| Value::Str(p.to_string_lossy().into_owned());
        let metrics =
            |m: &EvalMetrics| Value::from_json(&serde_json::to_value(m).unwrap_or_default());
        let passive = Value::Dict(
            self.passive
                .iter()
                .map(|(k, t)| (Value::Str(k.clone()), tb.tensor(t)))
                .collect(),
        );
        let mut state = dict(vec![
            ("format", Value::Int(resume::FORMAT)),
            ("rng", Value::Str(resume::RNG_SCHEME.into())),
            ("epochs", int(self.epochs)),
            (
                "finished",
                self.finished
                    .map_or(Value::None, |f| Value::Str(f.as_str().into())),
            ),
            ("config_path", text(&self.config_path)),
            ("cwd", text(&self.cwd)),
            ("schedule_origin", int(self.schedule_origin)),
            ("initial_metrics", metrics(&self.initial)),
            ("last_metrics", metrics(last)),
            ("orig_radii", tb.tensor(&self.orig)),
            ("passive_grads", passive),
        ]);
        if let (Value::Dict(items), Some(k)) = (&mut state, &self.keep) {
            items.push((Value::Str("keep".into()), Value::Str(k.label())));
        }
        state
    }

    /// Write the checkpoints of 0-based epoch `e0` to each of `names` (best_Q.pt, best.pt
    /// and latest.pt; the best files built once).
    fn save(&self, names: &[&str], e0: u64, m: &EvalMetrics) -> Result<(), TrainError> {
        let bests: Vec<&&str> = names.iter().filter(|n| **n != "latest.pt").collect();
        if !bests.is_empty() {
            let (root, tb) = self.checkpoint_tree(e0, m, false);
            for name in bests {
                save::write_checkpoint(&self.out_dir.join(name), &root, &tb.tensors)?;
            }
        }
        if names.contains(&"latest.pt") {
            let (root, tb) = self.checkpoint_tree(e0, m, true);
            save::write_checkpoint(&self.out_dir.join("latest.pt"), &root, &tb.tensors)?;
        }
        Ok(())
    }
}

/// The files a run writes to its folder.
const OUTPUTS: [&str; 5] = [
    "latest.pt",
    "best.pt",
    "best_Q.pt",
    "metrics.jsonl",
    "training.svg",
];

/// The richness baseline (training.md §2): the Euclidean norms ‖z_B_hyp‖ of the starting
/// model, eval mode with z sampled, all operations in chunks of 4096.
fn original_radii(model: &Model, ds: &Dataset) -> Tensor {
    tch::no_grad(|| {
        let n = N_OPS as i64;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = (n - start).min(4096);
            let out = model.forward(&ds.x.narrow(0, start, len), Mode::EVAL_SAMPLED);
            if let Some(zb) = out.z_b_hyp {
                parts.push(zb.norm_scalaropt_dim(2.0, [-1i64], false));
            }
            start += len;
        }
        if parts.is_empty() {
            Tensor::ones([n], (Kind::Float, ds.x.device()))
        } else {
            Tensor::cat(&parts, 0)
        }
    })
}

/// A checkpoint's `metrics` dict: tvck's names ([`crate::metrics::key`], the table
/// `tvck scan` / `inspect` read them through) and upstream's stored-metric aliases
/// (domain.md §5: hierarchy, radial_corr_A/B, richness, radius_v0/v9, mean_radius_A,
/// dist_corr); `null` for what the model lacks.
fn checkpoint_metrics(m: &EvalMetrics) -> serde_json::Value {
    use crate::metrics::key;
    let pairs = [
        (key::COVERAGE, Some(m.coverage)),
        (key::HIERARCHY_A, m.hierarchy_a),
        (key::HIERARCHY_B, m.hierarchy_b),
        (key::HIERARCHY, m.hierarchy_b),
        (key::RADIAL_CORR_A, m.hierarchy_a),
        (key::RADIAL_CORR_B, m.hierarchy_b),
        (key::RICHNESS_A, m.richness_a),
        (key::RICHNESS_B, m.richness_b),
        (key::RICHNESS, m.richness_b),
        (key::DIST_CORR_A, m.dist_corr_a),
        (key::DIST_CORR, m.dist_corr_a),
        (key::DIST_CORR_B, m.dist_corr_b),
        (key::R_V0, m.r_v0),
        (key::RADIUS_V0, m.r_v0),
        (key::R_V9, m.r_v9),
        (key::RADIUS_V9, m.r_v9),
        (key::MEAN_RADIUS, m.mean_radius),
        (key::MEAN_RADIUS_A, m.mean_radius),
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
