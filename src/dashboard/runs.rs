//! Every run under a folder, followed live: each run's metrics.jsonl through the monitor's
//! [`RunView`] (incremental, by byte offset), its curves kept as [`Series`], its alerts
//! (the rules' and alerts.jsonl's) and a summary of its state. Each poll returns what
//! changed, which the server turns into server-sent events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::monitor::alert::{Severity, ALERTS_FILE};
use crate::monitor::reader::METRICS_FILE;
use crate::monitor::rules::Settings;
use crate::monitor::run::{find_runs, RunState, RunView};
use crate::monitor::AlertState;

use super::detail::{read_detail, RunDetail};
use super::series::{json_number, line_values, Series};
use super::DashboardError;

/// Runs followed at most (more are listed in [`Runs::left_out`]).
pub const MAX_RUNS: usize = 2000;

/// The values a run's summary shows (its last finite value of each).
pub const SUMMARY_VALUES: &[&str] = &["coverage", "hierarchy_A", "hierarchy_B", "Q", "loss.total"];

/// Standing alerts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
}

/// One run as the list of runs shows it (docs/json.md, `/api/runs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's folder relative to the served folder, `/`-separated (untrusted text).
    pub name: String,
    pub state: RunState,
    /// Whether any alert stands.
    pub alerting: bool,
    pub standing: Standing,
    /// Alerts raised in all.
    pub alerts: usize,
    /// The last epoch of metrics.jsonl.
    pub epoch: Option<u64>,
    /// Epochs planned (run.json).
    pub epochs: Option<u64>,
    pub epoch_seconds: Option<f64>,
    pub time_left_seconds: Option<u64>,
    /// When metrics.jsonl last changed (Unix seconds).
    pub updated: Option<u64>,
    /// The last finite value of each of [`SUMMARY_VALUES`] the run has (`null` when none).
    pub last: BTreeMap<String, serde_json::Value>,
    /// Freeze state by part, as the last line gives it.
    pub freeze: BTreeMap<String, bool>,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A run appeared.
    Added(RunSummary),
    /// A new metrics.jsonl line: its epoch and values by series name.
    Epoch {
        run: String,
        epoch: u64,
        values: BTreeMap<String, f64>,
    },
    /// metrics.jsonl was truncated or replaced: the run's curves start over.
    Restarted(String),
    /// The run's alerts changed (a new one, or one that no longer stands): all of them.
    Alerts {
        run: String,
        alerts: Vec<AlertState>,
    },
    /// The run's summary changed.
    Summary(RunSummary),
}

struct Tracked {
    view: RunView,
    series: Series,
    alerts: Vec<AlertState>,
    /// alerts.jsonl's length and time when last read.
    alerts_file: Option<(u64, Option<SystemTime>)>,
    /// The rules' standing alerts (rule, epoch) when last compared.
    last_standing: Vec<(String, u64)>,
    summary: RunSummary,
}

/// The runs under one folder.
pub struct Runs {
    root: PathBuf,
    settings: Settings,
    runs: BTreeMap<String, Tracked>,
    dirs: BTreeMap<PathBuf, String>,
    /// Run folders found beyond [`MAX_RUNS`].
    pub left_out: usize,
}

/// The name of a folder that is itself the run (`.` and `..` become the folder's own
/// name: a URL path cannot hold them as a segment).
fn folder_name(dir: &Path) -> String {
    let own = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match own {
        Some(n) if !n.is_empty() => n,
        _ => "run".into(),
    }
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn file_state(p: &Path) -> Option<(u64, Option<SystemTime>)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()))
}

fn standing(alerts: &[AlertState]) -> Standing {
    let mut s = Standing::default();
    for a in alerts.iter().filter(|a| a.standing) {
        match a.alert.severity {
            Severity::Critical => s.critical += 1,
            Severity::Warning => s.warning += 1,
            Severity::Info => s.info += 1,
        }
    }
    s
}

impl Tracked {
    fn new(name: &str, dir: &Path, settings: &Settings) -> Tracked {
        let mut view = RunView::new(dir, settings.clone());
        view.name = name.to_string();
        let mut t = Tracked {
            view,
            series: Series::default(),
            alerts: Vec::new(),
            alerts_file: None,
            last_standing: Vec::new(),
            summary: RunSummary {
                name: name.to_string(),
                state: RunState::Waiting,
                alerting: false,
                standing: Standing::default(),
                alerts: 0,
                epoch: None,
                epochs: None,
                epoch_seconds: None,
                time_left_seconds: None,
                updated: None,
                last: BTreeMap::new(),
                freeze: BTreeMap::new(),
            },
        };
        t.summary = t.summarise();
        t
    }

    fn summarise(&self) -> RunSummary {
        let v = &self.view;
        let last = SUMMARY_VALUES
            .iter()
            .filter_map(|name| {
                let (_, col) = self.series.column(name)?;
                let last = col.iter().rev().copied().find(|x| x.is_finite());
                Some((
                    name.to_string(),
                    last.map_or(serde_json::Value::Null, json_number),
                ))
            })
            .collect();
        let standing = standing(&self.alerts);
        RunSummary {
            name: v.name.clone(),
            state: v.state(),
            alerting: standing != Standing::default(),
            standing,
            alerts: self.alerts.len(),
            epoch: v.last_epoch(),
            epochs: v.epochs_planned(),
            epoch_seconds: v.epoch_seconds().filter(|s| s.is_finite()),
            time_left_seconds: v.time_left().map(|d| d.as_secs()),
            updated: std::fs::metadata(v.dir.join(METRICS_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(unix),
            last,
            freeze: v.lines.last().map(|l| l.freeze.clone()).unwrap_or_default(),
        }
    }

    /// Read what is new; the changes, in order (the new lines' values only when
    /// `epochs`: a first load does not need them as events).
    fn poll(&mut self, out: &mut Vec<Change>, epochs: bool) -> Result<(), DashboardError> {
        let before = self.view.lines.len();
        let (n, raised) = self.view.poll()?;
        let after = self.view.lines.len();
        let name = self.view.name.clone();
        if after != before + n {
            self.series.clear();
            out.push(Change::Restarted(name.clone()));
        }
        for l in &self.view.lines[after - n..] {
            self.series.push(l);
            if epochs {
                out.push(Change::Epoch {
                    run: name.clone(),
                    epoch: l.epoch,
                    values: line_values(l),
                });
            }
        }
        // The series holds the curves: the view keeps only the last line (its freeze
        // state, its epoch), so 200 runs of parsed lines do not stay in memory.
        if after > 1 {
            self.view.lines.drain(..after - 1);
            self.view.lines.shrink_to_fit();
        }
        if !epochs {
            self.series.shrink_to_fit();
        }
        let file = file_state(&self.view.dir.join(ALERTS_FILE));
        let now_standing: Vec<(String, u64)> = self
            .view
            .engine
            .standing()
            .iter()
            .map(|a| (a.rule.clone(), a.epoch))
            .collect();
        if n > 0
            || !raised.is_empty()
            || file != self.alerts_file
            || now_standing != self.last_standing
        {
            self.alerts_file = file;
            self.last_standing = now_standing;
            let alerts: Vec<AlertState> = self
                .view
                .all_alerts()
                .into_iter()
                .map(|(alert, standing)| AlertState { alert, standing })
                .collect();
            if alerts != self.alerts {
                self.alerts = alerts;
                out.push(Change::Alerts {
                    run: name.clone(),
                    alerts: self.alerts.clone(),
                });
            }
        }
        let summary = self.summarise();
        if summary != self.summary {
            self.summary = summary;
            out.push(Change::Summary(self.summary.clone()));
        }
        Ok(())
    }
}

impl Runs {
    /// Follow the runs under `root` (the folder itself may be a run). Nothing is read
    /// until [`Runs::discover`] and [`Runs::poll`].
    pub fn new(root: &Path, settings: Settings) -> Result<Runs, DashboardError> {
        let meta = std::fs::metadata(root).map_err(|source| DashboardError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DashboardError::NotAFolder(root.to_path_buf()));
        }
        Ok(Runs {
            root: root.to_path_buf(),
            settings,
            runs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            left_out: 0,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A unique name for a run folder.
    fn name_for(&self, dir: &Path) -> String {
        let base = if dir == self.root {
            folder_name(dir)
        } else {
            crate::discover::relative(&self.root, dir)
        };
        if !self.runs.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|i| format!("{base}~{i}"))
            .find(|n| !self.runs.contains_key(n))
            .unwrap_or(base)
    }

    /// Look for new run folders; the runs added.
    pub fn discover(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        let found = find_runs(&self.root);
        let mut left_out = 0;
        for dir in found {
            if self.dirs.contains_key(&dir) {
                continue;
            }
            if self.runs.len() >= MAX_RUNS {
                left_out += 1;
                continue;
            }
            let name = self.name_for(&dir);
            let t = Tracked::new(&name, &dir, &self.settings);
            out.push(Change::Added(t.summary.clone()));
            self.dirs.insert(dir, name.clone());
            self.runs.insert(name, t);
        }
        self.left_out = left_out;
        out
    }

    /// Read what every run appended; the changes. A run whose files cannot be read is
    /// skipped this time (its error is returned with its name).
    pub fn poll(&mut self) -> (Vec<Change>, Vec<(String, DashboardError)>) {
        self.poll_all(true)
    }

    /// [`Runs::poll`] for a first load: the curves are read, and the changes say only
    /// which runs' summaries and alerts changed (not every line).
    pub fn load(&mut self) -> (Vec<Change>, Vec<(String, DashboardError)>) {
        self.poll_all(false)
    }

    fn poll_all(&mut self, epochs: bool) -> (Vec<Change>, Vec<(String, DashboardError)>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (name, t) in self.runs.iter_mut() {
            if let Err(e) = t.poll(&mut out, epochs) {
                errors.push((name.clone(), e));
            }
        }
        (out, errors)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.runs.keys().map(String::as_str)
    }

    pub fn summaries(&self) -> Vec<&RunSummary> {
        self.runs.values().map(|t| &t.summary).collect()
    }

    pub fn summary(&self, name: &str) -> Option<&RunSummary> {
        self.runs.get(name).map(|t| &t.summary)
    }

    pub fn series(&self, name: &str) -> Option<&Series> {
        self.runs.get(name).map(|t| &t.series)
    }

    /// The folder of the run named `name` (only a known name has one).
    pub fn dir(&self, name: &str) -> Option<&Path> {
        self.runs.get(name).map(|t| t.view.dir.as_path())
    }

    /// Every run's alerts, by run then as raised.
    pub fn alerts(&self) -> Vec<&AlertState> {
        self.runs.values().flat_map(|t| t.alerts.iter()).collect()
    }

    pub fn alerts_of(&self, name: &str) -> Option<&[AlertState]> {
        self.runs.get(name).map(|t| t.alerts.as_slice())
    }
}

/// Everything `tvck report` shows of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub summary: RunSummary,
    pub series: Series,
    pub alerts: Vec<AlertState>,
    pub detail: RunDetail,
}

/// Read one run folder whole (metrics.jsonl, alerts, run.json, configs, checkpoints).
pub fn run_report(dir: &Path, settings: Settings) -> Result<RunReport, DashboardError> {
    let meta = std::fs::metadata(dir).map_err(|source| DashboardError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DashboardError::NotAFolder(dir.to_path_buf()));
    }
    if !dir.join(METRICS_FILE).is_file() {
        return Err(DashboardError::NotARun(dir.to_path_buf()));
    }
    let name = folder_name(dir);
    let mut t = Tracked::new(&name, dir, &settings);
    t.poll(&mut Vec::new(), false)?;
    Ok(RunReport {
        summary: t.summary.clone(),
        series: t.series,
        alerts: t.alerts,
        detail: read_detail(dir, dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn follows_runs_and_reports_changes() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir(&a).unwrap();
        append(
            &a.join(METRICS_FILE),
            "{\"epoch\":0,\"metrics\":{\"coverage\":0.01}}\n",
        );
        let mut runs = Runs::new(d.path(), Settings::default()).unwrap();
        let added = runs.discover();
        assert!(matches!(&added[..], [Change::Added(s)] if s.name == "a"));
        assert!(runs.discover().is_empty(), "found once");
        let (ch, errs) = runs.poll();
        assert!(errs.is_empty());
        assert!(ch
            .iter()
            .any(|c| matches!(c, Change::Epoch { run, epoch: 0, .. } if run == "a")));
        assert!(ch.iter().any(
            |c| matches!(c, Change::Alerts { alerts, .. } if alerts[0].alert.rule == "initial-coverage" && alerts[0].standing)
        ));
        let s = runs.summary("a").unwrap();
        assert!(s.alerting && s.alerts == 1 && s.standing != Standing::default());
        assert_eq!(s.last["coverage"], serde_json::json!(0.01));
        assert!(runs.poll().0.is_empty(), "nothing new");
        append(
            &a.join(METRICS_FILE),
            "{\"epoch\":1,\"loss\":{\"total\":1.0},\"metrics\":{\"coverage\":1.0}}\n",
        );
        let (ch, _) = runs.poll();
        assert!(
            matches!(&ch[0], Change::Epoch { epoch: 1, values, .. } if values["loss.total"] == 1.0)
        );
        assert_eq!(runs.series("a").unwrap().epochs, [0, 1]);
        // A new run in the same folder: the curves start over.
        std::fs::write(a.join(METRICS_FILE), "{\"epoch\":0}\n").unwrap();
        let (ch, _) = runs.poll();
        assert_eq!(ch[0], Change::Restarted("a".into()));
        assert_eq!(runs.series("a").unwrap().epochs, [0]);
        assert!(runs.dir("../a").is_none());
    }

    #[test]
    fn a_folder_that_is_the_run_is_named_by_its_own_name() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("my run");
        std::fs::create_dir(&a).unwrap();
        append(&a.join(METRICS_FILE), "{\"epoch\":0}\n");
        let mut runs = Runs::new(&a.join("."), Settings::default()).unwrap();
        runs.discover();
        assert_eq!(runs.names().collect::<Vec<_>>(), ["my run"]);
        let r = run_report(&a.join("."), Settings::default()).unwrap();
        assert_eq!(r.summary.name, "my run");
    }
}
