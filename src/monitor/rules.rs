//! The alert rules (docs/monitoring.md): typed units that read metrics.jsonl lines one by
//! one, plus the liveness rules that read the clock. Every rule raises an alert when its
//! condition starts and clears it when the condition ends; an alert that is raised and not
//! cleared *stands*. A condition that holds over many epochs raises one alert.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::{Monitoring, TrainingConfig};
use crate::metrics::coverage;

use super::alert::{Alert, Severity};
use super::line::{finite, known_value, EpochLine};

/// Loss divergence: the loss above this many times its best.
pub const DIVERGENCE_FACTOR: f64 = 10.0;
/// Plateau: the monitored metric has not improved for this many epochs.
pub const PLATEAU_EPOCHS: u64 = 20;
/// The monitored metric (`Q`, higher is better).
pub const PLATEAU_METRIC: &str = "Q";
/// A run is stalled when metrics.jsonl has not grown for this long, or for
/// [`STALL_EPOCHS`] epoch times when those are longer.
pub const STALL_SECONDS: u64 = 600;
pub const STALL_EPOCHS: f64 = 10.0;

/// Every rule's name, as alerts and `monitoring.disable` spell them.
pub const RULES: &[&str] = &[
    "initial-coverage",
    "coverage-drop",
    "non-finite",
    "loss-divergence",
    "plateau",
    "frozen-weights-changed",
    "lr-zero",
    "stalled",
    "process-gone",
];

/// Whether a metric improves downwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Min,
    Max,
}

impl Direction {
    /// hierarchy (negative is good) and losses fall; everything else rises.
    pub fn natural(metric: &str) -> Direction {
        let m = metric.to_ascii_lowercase();
        if m.starts_with("hierarchy") || m.starts_with("loss") {
            Direction::Min
        } else {
            Direction::Max
        }
    }

    fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Min => a < b,
            Direction::Max => a > b,
        }
    }
}

/// A `monitoring.rules` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub name: String,
    pub metric: String,
    pub below: Option<f64>,
    pub above: Option<f64>,
    pub severity: Severity,
    pub after_epoch: u64,
    pub cause: Option<String>,
    pub fix: Option<String>,
}

/// The rules' thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub initial_coverage_critical: f64,
    pub coverage_drop_below: f64,
    pub divergence_factor: f64,
    /// The loss term watched for divergence (`total`).
    pub divergence_loss: String,
    pub plateau_metric: String,
    pub plateau_direction: Direction,
    pub plateau_epochs: u64,
    /// `lr` at or below this is zero.
    pub lr_zero_below: f64,
    /// `None`: [`STALL_SECONDS`] or [`STALL_EPOCHS`] epoch times.
    pub stall_seconds: Option<u64>,
    pub disabled: BTreeSet<String>,
    pub thresholds: Vec<Threshold>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            initial_coverage_critical: coverage::CRITICAL_BELOW,
            // upstream's default homeostasis.coverage_freeze_threshold
            coverage_drop_below: coverage::FULL_FROM,
            divergence_factor: DIVERGENCE_FACTOR,
            divergence_loss: "total".into(),
            plateau_metric: PLATEAU_METRIC.into(),
            plateau_direction: Direction::Max,
            plateau_epochs: PLATEAU_EPOCHS,
            lr_zero_below: 0.0,
            stall_seconds: None,
            disabled: BTreeSet::new(),
            thresholds: Vec::new(),
        }
    }
}

/// A `monitoring:` value that is wrong (`tvck check` shows it as a finding).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// An error (the setting cannot work) rather than a warning.
    pub error: bool,
    /// Dotted key (`monitoring.divergence_factor`).
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl Settings {
    /// The settings of a run: the defaults, the config's homeostasis threshold, its
    /// `monitoring:` section, then `overrides` (an `--alerts FILE`'s section) key by key.
    /// Values that are wrong are reported and their default kept.
    pub fn from_config(
        cfg: Option<&TrainingConfig>,
        overrides: Option<&Monitoring>,
    ) -> (Settings, Vec<Problem>) {
        let mut s = Settings::default();
        let mut problems = Vec::new();
        if let Some(t) = cfg
            .and_then(|c| c.homeostasis.as_ref())
            .and_then(|h| h.coverage_freeze_threshold)
            .filter(|t| (0.0..=1.0).contains(t))
        {
            s.coverage_drop_below = t;
        }
        for m in [cfg.and_then(|c| c.monitoring.as_ref()), overrides]
            .into_iter()
            .flatten()
        {
            s.apply(m, &mut problems);
        }
        (s, problems)
    }

    fn apply(&mut self, m: &Monitoring, problems: &mut Vec<Problem>) {
        let mut warnings = Vec::new();
        let mut err = |key: &str, message: String, fix: &str| {
            problems.push(Problem {
                error: true,
                key: format!("monitoring.{key}"),
                message,
                fix: fix.into(),
            })
        };
        let fraction = |key: &str, v: Option<f64>, err: &mut dyn FnMut(&str, String, &str)| {
            v.filter(|v| {
                let ok = (0.0..=1.0).contains(v);
                if !ok {
                    err(
                        key,
                        format!("monitoring.{key} = {v} is outside 0..1 (coverage is a fraction)"),
                        "write it as a fraction, e.g. 0.05",
                    );
                }
                ok
            })
        };
        if let Some(v) = fraction(
            "initial_coverage_critical",
            m.initial_coverage_critical,
            &mut err,
        ) {
            self.initial_coverage_critical = v;
        }
        if let Some(v) = fraction("coverage_drop_below", m.coverage_drop_below, &mut err) {
            self.coverage_drop_below = v;
        }
        match m.divergence_factor {
            Some(k) if k > 1.0 => self.divergence_factor = k,
            Some(k) => err(
                "divergence_factor",
                format!("monitoring.divergence_factor = {k}: a loss above {k}× its best would alert on every epoch"),
                "use a factor above 1 (default 10)",
            ),
            None => {}
        }
        if let Some(l) = &m.divergence_loss {
            let term = l.strip_prefix("loss.").unwrap_or(l);
            self.divergence_loss = term.to_string();
        }
        if let Some(metric) = &m.plateau_metric {
            self.plateau_metric = metric.clone();
            self.plateau_direction = Direction::natural(metric);
        }
        match m.plateau_mode.as_deref() {
            Some("min") => self.plateau_direction = Direction::Min,
            Some("max") => self.plateau_direction = Direction::Max,
            Some(other) => err(
                "plateau_mode",
                format!("monitoring.plateau_mode `{other}` is neither min nor max"),
                "write min (lower is better, like hierarchy_B) or max (like Q)",
            ),
            None => {}
        }
        match m.plateau_epochs {
            Some(0) => err(
                "plateau_epochs",
                "monitoring.plateau_epochs = 0 would alert on every epoch".into(),
                "use at least 1 epoch (default 20)",
            ),
            Some(n) => self.plateau_epochs = n,
            None => {}
        }
        if let Some(v) = m.lr_zero_below {
            self.lr_zero_below = v;
        }
        if let Some(v) = m.stall_seconds {
            self.stall_seconds = Some(v.max(1));
        }
        for d in m.disable.iter().flatten() {
            if RULES.contains(&d.as_str()) {
                self.disabled.insert(d.clone());
            } else {
                err(
                    "disable",
                    format!("monitoring.disable: `{d}` is not an alert rule"),
                    &format!("use one of {}", RULES.join(", ")),
                );
            }
        }
        for (i, r) in m.rules.iter().flatten().enumerate() {
            let key = format!("rules[{i}]");
            let Some(metric) = r.metric.clone() else {
                err(
                    &key,
                    format!("monitoring.{key} has no metric"),
                    "name a metric (coverage, hierarchy_B, Q, …), loss.TERM, lr or grad_norm",
                );
                continue;
            };
            if r.below.is_none() && r.above.is_none() {
                err(
                    &key,
                    format!("monitoring.{key} ({metric}) has neither below nor above"),
                    "give the bound the value must not cross: below: X or above: X",
                );
                continue;
            }
            let severity = match r.severity.as_deref() {
                None => Severity::Warning,
                Some(s) => match Severity::parse(s) {
                    Some(s) => s,
                    None => {
                        err(
                            &key,
                            format!("monitoring.{key}.severity `{s}` is not a severity"),
                            "write info, warning or critical",
                        );
                        continue;
                    }
                },
            };
            if !known_value(&metric) {
                warnings.push(Problem {
                    error: false,
                    key: format!("monitoring.{key}.metric"),
                    message: format!("monitoring.{key}.metric `{metric}` is not a value tvck's trainer writes"),
                    fix: "fine for lines written by another tool; otherwise use coverage, hierarchy_A/B, richness_A/B, dist_corr_A/B, r_v0, r_v9, mean_radius, std_radius, Q, loss.TERM, lr or grad_norm".into(),
                });
            }
            self.thresholds.push(Threshold {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("threshold-{metric}")),
                metric,
                below: r.below,
                above: r.above,
                severity,
                after_epoch: r.after_epoch.unwrap_or(0),
                cause: r.cause.clone(),
                fix: r.fix.clone(),
            });
        }
        problems.extend(warnings);
    }

    /// How long metrics.jsonl may stay unchanged before the run counts as stalled.
    pub fn stall_after(&self, epoch_seconds: Option<f64>) -> Duration {
        if let Some(s) = self.stall_seconds {
            return Duration::from_secs(s);
        }
        let by_epochs = epoch_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(0.0, |s| s * STALL_EPOCHS);
        Duration::from_secs_f64(by_epochs.clamp(STALL_SECONDS as f64, 1e9))
    }
}

/// What a rule decided about one line.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The condition holds (a new alert unless `key` already stands).
    Raise { key: String, alert: Alert },
    /// The condition no longer holds.
    Clear { key: String },
}

/// A rule over metrics.jsonl lines.
pub trait Rule: Send {
    fn name(&self) -> &'static str;
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>);
}

fn raise(key: impl Into<String>, alert: Alert) -> Outcome {
    Outcome::Raise {
        key: key.into(),
        alert,
    }
}

fn clear(key: impl Into<String>) -> Outcome {
    Outcome::Clear { key: key.into() }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// Initial coverage below 5% with encoder_A frozen: the frozen parts cannot reach coverage.
#[derive(Default)]
pub struct InitialCoverage;

impl Rule for InitialCoverage {
    fn name(&self) -> &'static str {
        "initial-coverage"
    }
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        if line.epoch != 0 {
            return;
        }
        let Some(Some(cov)) = line.metric("coverage") else {
            return;
        };
        // NaN compares as not below: left to the non-finite rule.
        if cov.partial_cmp(&s.initial_coverage_critical) != Some(std::cmp::Ordering::Less) {
            return;
        }
        // A model trained from its initialisation starts near 0% by design.
        let severity = match line.freeze.get("encoder_A") {
            Some(true) => Severity::Critical,
            Some(false) => return,
            None => Severity::Warning,
        };
        let covered = line
            .metric("covered")
            .flatten()
            .map(|c| format!(" ({c:.0} of 19683)"))
            .unwrap_or_default();
        out.push(raise(
            self.name(),
            Alert::new(
                severity,
                0,
                self.name(),
                format!(
                    "initial coverage {}{covered} < {} with encoder_A frozen: the frozen parts would never reach coverage",
                    pct(cov),
                    pct(s.initial_coverage_critical)
                ),
                "the frozen checkpoint does not hold a trained encoder_A/decoder_A for this model: a wrong or partially trained checkpoint, a tvck conversion never measured, or Frozen-style v5.5 weights mapped into improved encoders",
                "stop the run; `tvck check CONFIG --auto-fix` ranks the checkpoints that fit by measured coverage, `tvck eval CKPT` measures one",
            ),
        ));
    }
}

/// Coverage below the freeze threshold after it was reached.
#[derive(Default)]
pub struct CoverageDrop {
    reached: bool,
}

impl Rule for CoverageDrop {
    fn name(&self) -> &'static str {
        "coverage-drop"
    }
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let Some(Some(cov)) = line.metric("coverage") else {
            return;
        };
        if cov >= s.coverage_drop_below {
            self.reached = true;
            out.push(clear(self.name()));
        } else if self.reached {
            out.push(raise(
                self.name(),
                Alert::new(
                    Severity::Warning,
                    line.epoch,
                    self.name(),
                    format!(
                        "coverage dropped to {} (< freeze threshold {})",
                        pct(cov),
                        pct(s.coverage_drop_below)
                    ),
                    "training moved z_A where the frozen decoder_A no longer reconstructs every operation (a trained encoder_A, projection or controller stepping too far)",
                    "lower training.lr or option_c.encoder_a_lr_scale, or raise loss.rich_hierarchy.coverage_weight; best.pt holds the last weights with coverage > 99%",
                ),
            ));
        }
    }
}

/// NaN or ±inf in a loss term, a metric, the learning rate or the gradient norm.
#[derive(Default)]
pub struct NonFinite;

impl Rule for NonFinite {
    fn name(&self) -> &'static str {
        "non-finite"
    }
    fn observe(&mut self, _: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let mut bad: Vec<String> = line
            .loss
            .iter()
            .filter(|(_, v)| !finite(**v))
            .map(|(k, _)| format!("loss.{k}"))
            .collect();
        if let Some(m) = &line.metrics {
            bad.extend(
                m.iter()
                    .filter(|(_, v)| !finite(**v))
                    .map(|(k, _)| k.clone()),
            );
        }
        if line.epoch > 0 {
            for (k, v) in [("lr", line.lr), ("grad_norm", line.grad_norm)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    bad.push(k.into());
                }
            }
        }
        for name in bad {
            out.push(raise(
                format!("{}:{name}", self.name()),
                Alert::new(
                    Severity::Critical,
                    line.epoch,
                    self.name(),
                    format!("{name} is NaN or infinite at epoch {}", line.epoch),
                    "a diverging step: learning rate too high, gradient clipping off (training.max_grad_norm), or a loss term taking the log of zero; once a weight is NaN every later epoch is wasted",
                    "stop the run and restart from the last checkpoint written before this epoch with a lower training.lr or training.max_grad_norm; `tvck inspect` flags non-finite weights",
                ),
            ));
        }
    }
}

/// The loss above `divergence_factor` × its best.
#[derive(Default)]
pub struct LossDivergence {
    best: Option<f64>,
}

impl Rule for LossDivergence {
    fn name(&self) -> &'static str {
        "loss-divergence"
    }
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let Some(Some(v)) = line.loss.get(&s.divergence_loss).copied() else {
            return;
        };
        if !v.is_finite() {
            return;
        }
        let Some(best) = self.best else {
            self.best = Some(v);
            return;
        };
        // `v > k × best` for a positive best; as far above a negative one.
        let scale = best.abs().max(1e-3);
        if v - best > (s.divergence_factor - 1.0) * scale {
            out.push(raise(
                self.name(),
                Alert::new(
                    Severity::Warning,
                    line.epoch,
                    self.name(),
                    format!(
                        "loss.{} = {v:.4} is more than {}× its best {best:.4}",
                        s.divergence_loss, s.divergence_factor
                    ),
                    "the optimisation is diverging: a learning rate too high for this phase (a warm restart, a new loss term switching on) or a homeostasis rebuild",
                    "lower training.lr (or the scheduler's restart peak), check training.max_grad_norm; best.pt and best_Q.pt keep the weights from before",
                ),
            ));
        } else {
            out.push(clear(self.name()));
        }
        if v < best {
            self.best = Some(v);
        }
    }
}

/// The monitored metric has not improved for `plateau_epochs` epochs.
#[derive(Default)]
pub struct Plateau {
    best: Option<(f64, u64)>,
}

impl Rule for Plateau {
    fn name(&self) -> &'static str {
        "plateau"
    }
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let Some(Some(v)) = line.value(&s.plateau_metric) else {
            return;
        };
        if !v.is_finite() {
            return;
        }
        match self.best {
            Some((b, _)) if !s.plateau_direction.better(v, b) => {}
            _ => {
                self.best = Some((v, line.epoch));
                out.push(clear(self.name()));
                return;
            }
        }
        let Some((b, at)) = self.best else { return };
        let since = line.epoch.saturating_sub(at);
        if since >= s.plateau_epochs {
            out.push(raise(
                self.name(),
                Alert::new(
                    Severity::Warning,
                    line.epoch,
                    self.name(),
                    format!(
                        "{} has not improved for {since} epochs (best {b:.4} at epoch {at})",
                        s.plateau_metric
                    ),
                    "the run has converged or is stuck: the learning rate has decayed, or the trained parts are frozen (homeostasis)",
                    "stop the run and keep best.pt / best_Q.pt, or change the schedule (training.scheduler) to continue; monitoring.plateau_epochs sets the patience",
                ),
            ));
        }
    }
}

/// A part frozen over an epoch whose tensor hash moved.
#[derive(Default)]
pub struct FrozenChanged {
    prev: Option<EpochLine>,
}

impl Rule for FrozenChanged {
    fn name(&self) -> &'static str {
        "frozen-weights-changed"
    }
    fn observe(&mut self, _: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        if let Some(prev) = &self.prev {
            for (part, hash) in &line.frozen_sha256 {
                let frozen_before = prev.freeze.get(part).copied().unwrap_or(true);
                let Some(before) = prev.frozen_sha256.get(part) else {
                    continue;
                };
                if frozen_before && before != hash {
                    out.push(raise(
                        format!("{}:{part}", self.name()),
                        Alert::new(
                            Severity::Critical,
                            line.epoch,
                            self.name(),
                            format!(
                                "{part} is frozen but its weights changed during epoch {} (SHA-256 {} → {})",
                                line.epoch,
                                &before[..before.len().min(12)],
                                &hash[..hash.len().min(12)]
                            ),
                            format!("{part} is still updated: it is in an optimizer group, receives weight decay, or has buffers that train mode updates"),
                            format!("stop the run; `tvck diff latest.pt FROZEN_CHECKPOINT --only {part}` lists the tensors that moved"),
                        ),
                    ));
                }
            }
        }
        self.prev = Some(line.clone());
    }
}

/// An epoch trained at a learning rate of zero.
#[derive(Default)]
pub struct LrZero;

impl Rule for LrZero {
    fn name(&self) -> &'static str {
        "lr-zero"
    }
    fn observe(&mut self, s: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let Some(lr) = line.lr.filter(|l| l.is_finite()) else {
            return;
        };
        if line.epoch == 0 {
            return;
        }
        if lr <= s.lr_zero_below {
            out.push(raise(
                self.name(),
                Alert::new(
                    Severity::Warning,
                    line.epoch,
                    self.name(),
                    format!("learning rate {lr:e} at epoch {}: training continues and changes nothing", line.epoch),
                    "the scheduler reached eta_min = 0 before the last epoch (T_max or a phase shorter than the run), or training.lr is 0",
                    "set training.scheduler.eta_min above 0 or T_max to the number of epochs; stop the run if it has nothing left to learn",
                ),
            ));
        } else {
            out.push(clear(self.name()));
        }
    }
}

/// A `monitoring.rules` threshold.
pub struct ThresholdRule(pub Threshold);

impl Rule for ThresholdRule {
    fn name(&self) -> &'static str {
        "threshold"
    }
    fn observe(&mut self, _: &Settings, line: &EpochLine, out: &mut Vec<Outcome>) {
        let t = &self.0;
        if line.epoch < t.after_epoch {
            return;
        }
        let Some(Some(v)) = line.value(&t.metric) else {
            return;
        };
        let crossed = match (t.below, t.above) {
            (Some(b), _) if v < b => Some(format!("{} = {v:.4} < {b}", t.metric)),
            (_, Some(a)) if v > a => Some(format!("{} = {v:.4} > {a}", t.metric)),
            _ => None,
        };
        match crossed {
            Some(what) => out.push(raise(
                &t.name,
                Alert::new(
                    t.severity,
                    line.epoch,
                    &t.name,
                    format!("{what} at epoch {}", line.epoch),
                    t.cause
                        .clone()
                        .unwrap_or_else(|| "a bound set in monitoring.rules was crossed".into()),
                    t.fix.clone().unwrap_or_else(|| {
                        "see the run's curves (`tvck watch RUN_DIR`); the bound is set in monitoring.rules".into()
                    }),
                ),
            )),
            None => out.push(clear(&t.name)),
        }
    }
}

/// What the monitors know about a run's process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Liveness {
    /// Time since metrics.jsonl last grew.
    pub idle: Option<Duration>,
    /// Mean seconds per epoch, when known.
    pub epoch_seconds: Option<f64>,
    /// The run ended (finished, interrupted or refused): it cannot stall.
    pub ended: bool,
    /// The training process is known to be gone (run.json names a pid on this host that
    /// no longer exists) while the run did not end.
    pub process_gone: bool,
}

/// All rules of a run, the alerts they raised and the ones standing.
pub struct Engine {
    pub settings: Settings,
    rules: Vec<Box<dyn Rule>>,
    /// Every alert raised, in order.
    pub alerts: Vec<Alert>,
    /// Standing alerts: key → index in `alerts`.
    standing: BTreeMap<String, usize>,
    last_epoch: u64,
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        let mut rules: Vec<Box<dyn Rule>> = vec![
            Box::new(InitialCoverage),
            Box::new(CoverageDrop::default()),
            Box::new(NonFinite),
            Box::new(LossDivergence::default()),
            Box::new(Plateau::default()),
            Box::new(FrozenChanged::default()),
            Box::new(LrZero),
        ];
        rules.retain(|r| !settings.disabled.contains(r.name()));
        rules.extend(
            settings
                .thresholds
                .iter()
                .map(|t| Box::new(ThresholdRule(t.clone())) as Box<dyn Rule>),
        );
        Engine {
            settings,
            rules,
            alerts: Vec::new(),
            standing: BTreeMap::new(),
            last_epoch: 0,
        }
    }

    /// Forget everything (metrics.jsonl was rewritten by a new run).
    pub fn reset(&mut self) {
        *self = Engine::new(self.settings.clone());
    }

    fn apply(&mut self, outcomes: Vec<Outcome>) -> Vec<Alert> {
        let mut new = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Raise { key, alert } => {
                    if !self.standing.contains_key(&key) {
                        self.standing.insert(key, self.alerts.len());
                        self.alerts.push(alert.clone());
                        new.push(alert);
                    }
                }
                Outcome::Clear { key } => {
                    self.standing.remove(&key);
                }
            }
        }
        new
    }

    /// Evaluate one line; the alerts it raised.
    pub fn observe(&mut self, line: &EpochLine) -> Vec<Alert> {
        self.last_epoch = line.epoch;
        let mut out = Vec::new();
        for r in &mut self.rules {
            r.observe(&self.settings, line, &mut out);
        }
        self.apply(out)
    }

    /// Evaluate the liveness rules (stalled, process gone).
    pub fn liveness(&mut self, l: &Liveness) -> Vec<Alert> {
        let mut out = Vec::new();
        let epoch = self.last_epoch;
        if !self.settings.disabled.contains("process-gone") {
            if l.process_gone && !l.ended {
                out.push(raise(
                    "process-gone",
                    Alert::new(
                        Severity::Critical,
                        epoch,
                        "process-gone",
                        format!("the training process is gone and the run did not finish (last epoch {epoch})"),
                        "the process was killed (out of memory, a job time limit, a second Ctrl-C) or crashed",
                        "look at the job's log and the kernel log (`dmesg` for the OOM killer); latest.pt holds the last saved epoch",
                    ),
                ));
            } else {
                out.push(clear("process-gone"));
            }
        }
        if !self.settings.disabled.contains("stalled") {
            let limit = self.settings.stall_after(l.epoch_seconds);
            match l.idle {
                Some(idle) if !l.ended && idle >= limit => out.push(raise(
                    "stalled",
                    Alert::new(
                        Severity::Warning,
                        epoch,
                        "stalled",
                        format!(
                            "metrics.jsonl has not grown for {} (limit {}; last epoch {epoch})",
                            human(idle),
                            human(limit)
                        ),
                        "the training process is stuck (a dead data loader, a full disk, a GPU hang) or was killed without a trace",
                        "check that the process is alive and progressing (`top`, `nvidia-smi`); monitoring.stall_seconds sets the limit",
                    ),
                )),
                _ => out.push(clear("stalled")),
            }
        }
        self.apply(out)
    }

    /// The alerts that stand.
    pub fn standing(&self) -> Vec<&Alert> {
        let mut idx: Vec<usize> = self.standing.values().copied().collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| &self.alerts[i]).collect()
    }

    /// Whether alert `i` (index in `alerts`) stands.
    pub fn stands(&self, i: usize) -> bool {
        self.standing.values().any(|&j| j == i)
    }

    /// Whether a CRITICAL alert stands.
    pub fn critical(&self) -> bool {
        self.standing()
            .iter()
            .any(|a| a.severity == Severity::Critical)
    }
}

/// `25 min`, `40 s`, `2 h 5 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}
