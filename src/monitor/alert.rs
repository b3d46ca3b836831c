//! An alert: what a rule saw, at which epoch, how bad it is, its likely cause and the fix
//! (worded like `tvck check`'s findings), and `alerts.jsonl`, the run folder's log of them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MonitorError;

/// How bad an alert is. `Critical` means the run is wasting its time (or already dead):
/// `tvck watch --once` exits 1 while one stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// `INFO`, `WARNING`, `CRITICAL` (the trainer's checklist labels).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }

    /// `info`, `warning`, `critical` (the JSON and config spelling).
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One alert (a line of `alerts.jsonl`; docs/json.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub severity: Severity,
    /// The metrics.jsonl epoch it was raised at (0 = the initial state).
    pub epoch: u64,
    /// The rule's stable name (`initial-coverage`, `coverage-drop`, …).
    pub rule: String,
    pub message: String,
    /// The likely cause.
    pub cause: String,
    /// What to do.
    pub fix: String,
    /// The run folder's name, set by the monitors and in delivered alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Unix seconds when it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
}

impl Alert {
    pub fn new(
        severity: Severity,
        epoch: u64,
        rule: impl Into<String>,
        message: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Alert {
        Alert {
            severity,
            epoch,
            rule: rule.into(),
            message: message.into(),
            cause: cause.into(),
            fix: fix.into(),
            run: None,
            time: None,
        }
    }

    /// The same alert (rule and epoch), whatever its wording or time.
    pub fn same(&self, other: &Alert) -> bool {
        self.rule == other.rule && self.epoch == other.epoch
    }

    /// Three lines for a terminal (untrusted text escaped).
    pub fn render(&self) -> String {
        use crate::report::safe::value;
        let run = self
            .run
            .as_deref()
            .map(|r| format!("{}: ", value(r)))
            .unwrap_or_default();
        format!(
            "{run}{} epoch {} {}: {}\n  cause: {}\n  fix: {}",
            self.severity.label(),
            self.epoch,
            value(&self.rule),
            value(&self.message),
            value(&self.cause),
            value(&self.fix)
        )
    }
}

/// The alert log file of a run folder.
pub const ALERTS_FILE: &str = "alerts.jsonl";

/// Appends alerts to `alerts.jsonl`, one JSON line each, flushed and synced per alert (a
/// log only grows; nothing in it is rewritten).
pub struct AlertLog {
    path: PathBuf,
    file: File,
}

impl AlertLog {
    /// Create (truncate) the run's alert log: a new run starts a new log.
    pub fn create(dir: &Path) -> Result<AlertLog, MonitorError> {
        Self::open(dir, OpenOptions::new().write(true).truncate(true))
    }

    /// Open a run's alert log to add to it (a continued run keeps its alerts).
    pub fn open_append(dir: &Path) -> Result<AlertLog, MonitorError> {
        Self::open(dir, OpenOptions::new().append(true))
    }

    /// The run's alert log in `dir`, created if missing, opened with `how`.
    fn open(dir: &Path, how: &mut OpenOptions) -> Result<AlertLog, MonitorError> {
        let path = dir.join(ALERTS_FILE);
        let file = how
            .create(true)
            .open(&path)
            .map_err(|source| MonitorError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(AlertLog { path, file })
    }

    pub fn append(&mut self, alert: &Alert) -> Result<(), MonitorError> {
        let line = serde_json::to_string(alert).unwrap_or_default();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .and_then(|_| self.file.sync_data())
            .map_err(|source| MonitorError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Read a run's `alerts.jsonl` (missing: none; lines that are not alerts are skipped).
pub fn read_alerts(dir: &Path) -> Vec<Alert> {
    let Ok(f) = File::open(dir.join(ALERTS_FILE)) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut log = AlertLog::create(d.path()).unwrap();
        let a = Alert::new(Severity::Critical, 3, "non-finite", "m", "c", "f");
        log.append(&a).unwrap();
        log.append(&a).unwrap();
        assert_eq!(read_alerts(d.path()), vec![a.clone(), a]);
    }

    #[test]
    fn render_escapes_untrusted_text() {
        let mut a = Alert::new(Severity::Warning, 1, "x", "\x1b[2Jboom", "c", "f");
        a.run = Some("run\u{202e}".into());
        let r = a.render();
        assert!(!r.contains('\x1b') && !r.contains('\u{202e}'), "{r}");
        assert!(r.starts_with("run\\u{202e}: WARNING epoch 1 x: \\x1b[2Jboom"));
    }
}
