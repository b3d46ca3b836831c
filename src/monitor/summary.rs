//! A run's current state in one serialisable value (`tvck watch --once`, docs/json.md):
//! epoch, the latest evaluation and losses, freeze state, epoch rate, time left, the
//! events and every alert with whether it stands.

use std::collections::BTreeMap;

use serde::Serialize;

use super::alert::{Alert, Severity};
use super::line::Num;
use super::run::{RunState, RunView};

/// An event of the run, with the epoch of the line that logged it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    pub epoch: u64,
    pub kind: String,
    pub component: String,
    pub message: String,
}

/// An alert and whether it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    #[serde(flatten)]
    pub alert: Alert,
    pub standing: bool,
}

/// What `tvck watch --once` shows of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The folder's name (untrusted text: escape before a terminal).
    pub name: String,
    pub dir: String,
    pub state: RunState,
    /// The last metrics.jsonl epoch (0 = the initial state).
    pub epoch: Option<u64>,
    /// Epochs planned (run.json).
    pub epochs: Option<u64>,
    /// Mean wall seconds per epoch (run.json, else as observed).
    pub epoch_seconds: Option<f64>,
    /// At the current rate, while running.
    pub seconds_left: Option<f64>,
    /// The epoch of the latest evaluation.
    pub metrics_epoch: Option<u64>,
    /// The latest evaluation (the line's names; non-finite values are `null`).
    pub metrics: BTreeMap<String, Num>,
    /// The last trained epoch's loss terms.
    pub loss: BTreeMap<String, Num>,
    pub lr: Num,
    /// Freeze state by part (state_dict prefixes), from the last line.
    pub freeze: BTreeMap<String, bool>,
    pub events: Vec<RunEvent>,
    pub alerts: Vec<AlertState>,
    /// A CRITICAL alert stands.
    pub critical: bool,
    /// metrics.jsonl lines that were not metrics lines.
    pub skipped_lines: usize,
}

impl RunSummary {
    pub fn of(v: &RunView) -> RunSummary {
        let last = v.lines.last();
        let evaluated = v.lines.iter().rev().find(|l| l.metrics.is_some());
        let trained = v.lines.iter().rev().find(|l| !l.loss.is_empty());
        let alerts: Vec<AlertState> = v
            .all_alerts()
            .into_iter()
            .map(|(alert, standing)| AlertState { alert, standing })
            .collect();
        let critical = alerts
            .iter()
            .any(|a| a.standing && a.alert.severity == Severity::Critical);
        RunSummary {
            name: v.name.clone(),
            dir: v.dir.display().to_string(),
            state: v.state(),
            epoch: v.last_epoch(),
            epochs: v.epochs_planned(),
            epoch_seconds: v.epoch_seconds(),
            seconds_left: v.time_left().map(|d| d.as_secs_f64()),
            metrics_epoch: evaluated.map(|l| l.epoch),
            metrics: evaluated
                .and_then(|l| l.metrics.clone())
                .unwrap_or_default(),
            loss: trained.map(|l| l.loss.clone()).unwrap_or_default(),
            lr: trained.and_then(|l| l.lr),
            freeze: last.map(|l| l.freeze.clone()).unwrap_or_default(),
            events: v
                .lines
                .iter()
                .flat_map(|l| {
                    l.events.iter().map(|e| RunEvent {
                        epoch: l.epoch,
                        kind: e.kind.clone(),
                        component: e.component.clone(),
                        message: e.message.clone(),
                    })
                })
                .collect(),
            alerts,
            critical,
            skipped_lines: v.skipped(),
        }
    }

    /// The run is not finished: a state worth following.
    pub fn live(&self) -> bool {
        self.state == RunState::Running
    }
}
