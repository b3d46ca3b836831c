//! A run folder as the monitors see it: metrics.jsonl followed incrementally, the rules
//! over its lines, `run.json` (the trainer's status file: process, epochs, epoch time) and
//! the run's state. Also [`TrainMonitor`], the hook the trainer calls once per epoch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::alert::{read_alerts, Alert, AlertLog};
use super::deliver::{Delivery, DeliveryError};
use super::line::EpochLine;
use super::reader::{Follower, METRICS_FILE};
use super::rules::{Engine, Liveness, Settings};
use super::MonitorError;

/// The trainer's status file in a run folder.
pub const RUN_FILE: &str = "run.json";
/// The plot the trainer writes when training ends (a finished run without run.json).
pub const PLOT_FILE: &str = "training.svg";

/// What a run is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Finished,
    /// Stopped by Ctrl-C after an epoch (latest.pt written).
    Interrupted,
    /// Training stopped on an error, or the process is gone.
    Failed,
    /// metrics.jsonl stopped growing and the run did not end.
    Stalled,
    /// No metrics.jsonl line yet.
    Waiting,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Interrupted => "interrupted",
            RunState::Failed => "failed",
            RunState::Stalled => "stalled",
            RunState::Waiting => "waiting",
        }
    }

    /// Whether the run ended on its own terms or by error.
    pub fn ended(self) -> bool {
        matches!(
            self,
            RunState::Finished | RunState::Interrupted | RunState::Failed
        )
    }
}

/// `run.json` (docs/json.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// 1.
    pub format: u32,
    pub pid: u32,
    pub host: String,
    /// Unix seconds.
    pub started: u64,
    pub updated: u64,
    /// running, finished, interrupted or failed.
    pub state: RunState,
    /// Trained epochs so far.
    pub epoch: u64,
    /// Epochs planned.
    pub epochs: u64,
    /// Mean wall seconds per trained epoch.
    #[serde(default)]
    pub epoch_seconds: Option<f64>,
    /// Of those, the mean wall seconds per trained epoch the trainer's monitoring took
    /// (the frozen parts' SHA-256, the rules, alerts.jsonl, run.json, the event file):
    /// measured by the trainer, so what monitoring costs is read off every run.
    #[serde(default)]
    pub monitor_seconds: Option<f64>,
    /// The training config, as given to the trainer.
    #[serde(default)]
    pub config: Option<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// This machine's name (for telling whether run.json's pid can be checked here).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether process `pid` exists on this machine (`None`: cannot tell).
pub fn process_alive(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(Path::new(&format!("/proc/{pid}")).exists())
    } else {
        None
    }
}

impl RunInfo {
    pub fn read(dir: &Path) -> Option<RunInfo> {
        let text = std::fs::read(dir.join(RUN_FILE)).ok()?;
        if text.len() > 1 << 16 {
            return None;
        }
        serde_json::from_slice(&text).ok()
    }

    /// Write atomically (temp file + rename; not synced: a status file, rewritten every
    /// epoch, where a lost update is harmless).
    pub fn write(&self, dir: &Path) -> Result<(), MonitorError> {
        let path = dir.join(RUN_FILE);
        let tmp = dir.join(format!(".{RUN_FILE}.tmp"));
        let io = |source| MonitorError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            // A full disk leaves no temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Whether this run.json names a process on this host that no longer exists while
    /// the run says it is running.
    pub fn process_gone(&self) -> bool {
        self.state == RunState::Running
            && self.host == hostname()
            && process_alive(self.pid) == Some(false)
    }
}

/// The trainer's monitoring: the rules on every line it writes, alerts.jsonl, the
/// delivery, run.json.
pub struct TrainMonitor {
    dir: PathBuf,
    engine: Engine,
    log: AlertLog,
    delivery: Delivery,
    info: RunInfo,
    start: Instant,
    /// The epoch this process started training after (a continued run's latest.pt).
    base_epoch: u64,
    /// Wall time the trainer's monitoring took so far ([`TrainMonitor::add_time`]).
    spent: Duration,
    /// Epochs this process trained, at the latest line.
    trained: u64,
}

/// An alert the trainer raised, and what went wrong delivering it.
pub struct Raised {
    pub alert: Alert,
    pub failures: Vec<DeliveryError>,
}

impl TrainMonitor {
    /// Start monitoring a run in `dir` (alerts.jsonl created empty, run.json written).
    pub fn start(
        dir: &Path,
        settings: Settings,
        delivery: Delivery,
        epochs: u64,
        config: Option<&Path>,
    ) -> Result<TrainMonitor, MonitorError> {
        let now = unix(SystemTime::now());
        let info = RunInfo {
            format: 1,
            pid: std::process::id(),
            host: hostname(),
            started: now,
            updated: now,
            state: RunState::Running,
            epoch: 0,
            epochs,
            epoch_seconds: None,
            monitor_seconds: None,
            config: config.map(|c| c.display().to_string()),
        };
        info.write(dir)?;
        Ok(TrainMonitor {
            dir: dir.to_path_buf(),
            engine: Engine::new(settings),
            log: AlertLog::create(dir)?,
            delivery,
            info,
            start: Instant::now(),
            base_epoch: 0,
            spent: Duration::ZERO,
            trained: 0,
        })
    }

    /// Go on monitoring a continued run in `dir`: the rules see `previous` (its
    /// metrics.jsonl lines up to latest.pt) without raising again, alerts.jsonl is added
    /// to, run.json keeps its start time.
    pub fn resume(
        dir: &Path,
        settings: Settings,
        delivery: Delivery,
        epochs: u64,
        config: Option<&Path>,
        previous: &[EpochLine],
    ) -> Result<TrainMonitor, MonitorError> {
        let now = unix(SystemTime::now());
        let started = RunInfo::read(dir).map_or(now, |i| i.started);
        let base_epoch = previous.last().map_or(0, |l| l.epoch);
        let info = RunInfo {
            format: 1,
            pid: std::process::id(),
            host: hostname(),
            started,
            updated: now,
            state: RunState::Running,
            epoch: base_epoch,
            epochs,
            epoch_seconds: None,
            monitor_seconds: None,
            config: config.map(|c| c.display().to_string()),
        };
        info.write(dir)?;
        let mut engine = Engine::new(settings);
        for l in previous {
            engine.observe(l);
        }
        Ok(TrainMonitor {
            dir: dir.to_path_buf(),
            engine,
            log: AlertLog::open_append(dir)?,
            delivery,
            info,
            start: Instant::now(),
            base_epoch,
            spent: Duration::ZERO,
            trained: 0,
        })
    }

    /// The rules on one metrics.jsonl line the trainer just wrote.
    pub fn epoch(&mut self, line: &serde_json::Value) -> Result<Vec<Raised>, MonitorError> {
        let parsed = EpochLine::parse(&line.to_string()).map_err(|e| MonitorError::Line {
            path: self.dir.join(METRICS_FILE),
            message: e.to_string(),
        })?;
        let now = SystemTime::now();
        let mut raised = Vec::new();
        for mut alert in self.engine.observe(&parsed) {
            alert.time = Some(unix(now));
            self.log.append(&alert)?;
            let mut delivered = alert.clone();
            delivered.run = self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let failures = if self.delivery.is_empty() {
                Vec::new()
            } else {
                self.delivery.send(&delivered)
            };
            raised.push(Raised { alert, failures });
        }
        self.info.epoch = parsed.epoch;
        self.info.updated = unix(now);
        self.trained = parsed.epoch.saturating_sub(self.base_epoch);
        if self.trained > 0 {
            self.info.epoch_seconds =
                Some(self.start.elapsed().as_secs_f64() / self.trained as f64);
        }
        self.update_monitor_seconds();
        self.info.write(&self.dir)?;
        Ok(raised)
    }

    /// Count `d` as time the monitoring took (run.json's `monitor_seconds`; what this
    /// monitor does itself is counted by its caller, who times it).
    pub fn add_time(&mut self, d: Duration) {
        self.spent += d;
    }

    fn update_monitor_seconds(&mut self) {
        if self.trained > 0 {
            self.info.monitor_seconds = Some(self.spent.as_secs_f64() / self.trained as f64);
        }
    }

    /// The alerts raised so far.
    pub fn alerts(&self) -> &[Alert] {
        &self.engine.alerts
    }

    /// Training ended (finished, interrupted or failed).
    pub fn finish(&mut self, state: RunState) -> Result<(), MonitorError> {
        self.info.state = state;
        self.update_monitor_seconds();
        self.info.updated = unix(SystemTime::now());
        self.info.write(&self.dir)
    }
}

/// A run folder followed by a monitor (`tvck watch`, `tvck serve`). Read-only.
pub struct RunView {
    pub dir: PathBuf,
    /// The folder's name (untrusted text).
    pub name: String,
    follower: Follower,
    pub engine: Engine,
    pub lines: Vec<EpochLine>,
    pub info: Option<RunInfo>,
    /// When this monitor saw the first and the latest new lines (epoch rate without
    /// run.json).
    seen: Option<(Instant, u64)>,
    rate: Option<f64>,
}

impl RunView {
    pub fn new(dir: &Path, settings: Settings) -> RunView {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        RunView {
            dir: dir.to_path_buf(),
            name,
            follower: Follower::new(dir.join(METRICS_FILE)),
            engine: Engine::new(settings),
            lines: Vec::new(),
            info: None,
            seen: None,
            rate: None,
        }
    }

    /// Read what is new; the lines added (all of them after a restart) and the new alerts.
    pub fn poll(&mut self) -> Result<(usize, Vec<Alert>), MonitorError> {
        let p = self.follower.poll()?;
        let mut alerts = Vec::new();
        if p.restarted {
            self.lines.clear();
            self.engine.reset();
            self.seen = None;
            self.rate = None;
        }
        let n = p.lines.len();
        for l in p.lines {
            alerts.extend(self.engine.observe(&l));
            self.lines.push(l);
        }
        if n > 0 {
            let epoch = self.lines.last().map_or(0, |l| l.epoch);
            match self.seen {
                None => self.seen = Some((Instant::now(), epoch)),
                Some((t0, e0)) if epoch > e0 => {
                    self.rate = Some(t0.elapsed().as_secs_f64() / (epoch - e0) as f64)
                }
                _ => {}
            }
        }
        self.info = RunInfo::read(&self.dir);
        let live = self.liveness();
        alerts.extend(self.engine.liveness(&live));
        for a in &mut alerts {
            a.run = Some(self.name.clone());
        }
        Ok((n, alerts))
    }

    fn liveness(&self) -> Liveness {
        let idle = self
            .follower
            .modified
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        Liveness {
            idle,
            epoch_seconds: self.epoch_seconds(),
            ended: self.ended_state().is_some(),
            process_gone: self.info.as_ref().is_some_and(RunInfo::process_gone),
        }
    }

    /// Seconds per epoch: run.json's, or what this monitor observed.
    pub fn epoch_seconds(&self) -> Option<f64> {
        self.info
            .as_ref()
            .and_then(|i| i.epoch_seconds)
            .or(self.rate)
    }

    /// Epochs planned (run.json), when known.
    pub fn epochs_planned(&self) -> Option<u64> {
        self.info.as_ref().map(|i| i.epochs).filter(|e| *e > 0)
    }

    /// Seconds left at the current rate.
    pub fn time_left(&self) -> Option<Duration> {
        let total = self.epochs_planned()?;
        let done = self.last_epoch()?;
        let s = self.epoch_seconds()?;
        if self.state() != RunState::Running {
            return None;
        }
        Some(Duration::from_secs_f64(
            (total.saturating_sub(done) as f64 * s).clamp(0.0, 1e9),
        ))
    }

    pub fn last_epoch(&self) -> Option<u64> {
        self.lines.last().map(|l| l.epoch)
    }

    /// metrics.jsonl lines that were not metrics lines.
    pub fn skipped(&self) -> usize {
        self.follower.skipped
    }

    fn ended_state(&self) -> Option<RunState> {
        match &self.info {
            Some(i) if i.state.ended() => Some(i.state),
            Some(_) => None,
            // Another tool's run, or a trainer without run.json: its plot marks the end.
            None => {
                let plot = std::fs::metadata(self.dir.join(PLOT_FILE)).and_then(|m| m.modified());
                match (plot, self.follower.modified) {
                    (Ok(p), Some(m)) if p >= m => Some(RunState::Finished),
                    _ => None,
                }
            }
        }
    }

    /// The run's state.
    pub fn state(&self) -> RunState {
        if let Some(s) = self.ended_state() {
            return s;
        }
        if self
            .engine
            .standing()
            .iter()
            .any(|a| a.rule == "process-gone")
        {
            return RunState::Failed;
        }
        if self.lines.is_empty() {
            return RunState::Waiting;
        }
        if self.engine.standing().iter().any(|a| a.rule == "stalled") {
            return RunState::Stalled;
        }
        RunState::Running
    }

    /// Whether any alert stands.
    pub fn alerting(&self) -> bool {
        !self.engine.standing().is_empty()
    }

    /// Alerts of the run: the rules' (recomputed from metrics.jsonl) and those of
    /// alerts.jsonl that the rules did not raise again (e.g. from a trainer with other
    /// settings), each with whether it stands.
    pub fn all_alerts(&self) -> Vec<(Alert, bool)> {
        let mut out: Vec<(Alert, bool)> = self
            .engine
            .alerts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut a = a.clone();
                a.run = Some(self.name.clone());
                (a, self.engine.stands(i))
            })
            .collect();
        for mut a in read_alerts(&self.dir) {
            if !out.iter().any(|(b, _)| b.same(&a)) {
                a.run = Some(self.name.clone());
                out.push((a, false));
            }
        }
        out
    }
}

/// Run folders under `root`: every folder (root included, up to 3 levels down) holding a
/// metrics.jsonl, sorted by path.
pub fn find_runs(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .max_depth(4)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() == METRICS_FILE)
        .filter_map(|e| e.path().parent().map(Path::to_path_buf))
        .collect();
    out.sort();
    out.dedup();
    out
}
