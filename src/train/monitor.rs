//! The trainer's monitoring hook (docs/monitoring.md): every metrics.jsonl line the trainer
//! writes goes through the alert rules of [`crate::monitor`] (the same rules `tvck watch`
//! runs on the file), alerts to alerts.jsonl, the terminal and the configured delivery;
//! run.json keeps the run's state; `--tensorboard` adds an event file. It also hashes the
//! frozen parts for the line's `frozen_sha256`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::config::{Monitoring, TrainingConfig};
use crate::monitor::tensorboard::EventWriter;
use crate::monitor::{Delivery, EpochLine, RunState, Settings, TrainMonitor, METRICS_FILE};

use super::homeostasis::FreezeState;
use super::model::Model;
use super::TrainError;

/// What `tvck train` monitors beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    /// An `--alerts FILE`'s `monitoring:` section, over the config's.
    pub alerts: Option<Monitoring>,
    /// A command and/or webhook the alerts are sent to.
    pub delivery: Delivery,
    /// Write a TensorBoard event file in the run folder.
    pub tensorboard: bool,
}

/// SHA-256 of a part's tensors: for each state_dict key under the part, in order, the key,
/// a zero byte, the shape as little-endian i64s and the values as little-endian f32.
pub fn part_sha256(model: &Model, part: &str) -> Option<String> {
    let keys = model.part_keys(part);
    if keys.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for k in keys {
        let Some(t) = model.var(&k) else { continue };
        h.update(k.as_bytes());
        h.update([0u8]);
        for d in t.size() {
            h.update(d.to_le_bytes());
        }
        let flat: Tensor = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous()
            .view([-1]);
        let n = flat.numel();
        let mut v = vec![0f32; n];
        flat.copy_data(&mut v, n);
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    Some(hex::encode(h.finalize()))
}

/// The frozen parts of a model with their hashes: encoder_A, encoder_B and the controller
/// when frozen, decoder_A when it is in no optimizer group.
pub fn frozen_sha256(
    model: &Model,
    freeze: &FreezeState,
    decoder_frozen: bool,
) -> BTreeMap<String, String> {
    [
        ("encoder_A", freeze.encoder_a),
        ("encoder_B", freeze.encoder_b),
        ("controller", freeze.controller),
        ("decoder_A", decoder_frozen),
    ]
    .into_iter()
    .filter(|(_, frozen)| *frozen)
    .filter_map(|(p, _)| part_sha256(model, p).map(|h| (p.to_string(), h)))
    .collect()
}

/// The hook a run calls with each metrics.jsonl line.
pub struct Hook {
    monitor: TrainMonitor,
    tensorboard: Option<EventWriter>,
    /// Lines for the terminal (alerts, delivery failures), taken by the trainer.
    pending: Vec<String>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The metrics.jsonl lines of a continued run up to epoch `done`.
fn previous_lines(dir: &Path, done: u64) -> Vec<EpochLine> {
    let mut f = crate::monitor::Follower::new(dir.join(METRICS_FILE));
    f.poll()
        .map(|p| p.lines.into_iter().filter(|l| l.epoch <= done).collect())
        .unwrap_or_default()
}

impl Hook {
    /// Start monitoring the run in `dir` (`resumed`: the epoch latest.pt holds).
    pub fn start(
        dir: &Path,
        cfg: &TrainingConfig,
        opts: &MonitorOptions,
        epochs: u64,
        config: &Path,
        resumed: Option<u64>,
    ) -> Result<Hook, TrainError> {
        let (settings, _) = Settings::from_config(Some(cfg), opts.alerts.as_ref());
        let delivery = opts.delivery.clone();
        let monitor = match resumed {
            None => TrainMonitor::start(dir, settings, delivery, epochs, Some(config)),
            Some(done) => TrainMonitor::resume(
                dir,
                settings,
                delivery,
                epochs,
                Some(config),
                &previous_lines(dir, done),
            ),
        }
        .map_err(monitor_error)?;
        let tensorboard = if opts.tensorboard {
            let mut w = EventWriter::create(dir, now()).map_err(monitor_error)?;
            // A continued run's event file starts with the epochs before it.
            if let Some(done) = resumed {
                for l in previous_lines(dir, done) {
                    w.line(&l, now()).map_err(monitor_error)?;
                }
            }
            Some(w)
        } else {
            None
        };
        Ok(Hook {
            monitor,
            tensorboard,
            pending: Vec::new(),
        })
    }

    /// The event file being written, if any.
    pub fn tensorboard_file(&self) -> Option<PathBuf> {
        self.tensorboard.as_ref().map(|w| w.path().to_path_buf())
    }

    /// One metrics.jsonl line the trainer just wrote; `before`: the time its monitoring
    /// part took to make (the frozen parts' SHA-256), counted with this call's own as
    /// run.json's `monitor_seconds`.
    pub fn line(&mut self, line: &serde_json::Value, before: Duration) -> Result<(), TrainError> {
        let t = Instant::now();
        self.monitor.add_time(before);
        let done = self.line_inner(line);
        self.monitor.add_time(t.elapsed());
        done
    }

    fn line_inner(&mut self, line: &serde_json::Value) -> Result<(), TrainError> {
        for r in self.monitor.epoch(line).map_err(monitor_error)? {
            self.pending.push(r.alert.render());
            for f in r.failures {
                self.pending
                    .push(format!("warning: alert not delivered: {f} ({})", f.hint()));
            }
        }
        if let Some(w) = &mut self.tensorboard {
            let parsed = EpochLine::parse(&line.to_string()).map_err(|e| {
                TrainError::Monitor(crate::monitor::MonitorError::Line {
                    path: w.path().to_path_buf(),
                    message: e.to_string(),
                })
            })?;
            w.line(&parsed, now()).map_err(monitor_error)?;
        }
        Ok(())
    }

    /// The terminal lines since the last call.
    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }

    /// How many alerts this run raised.
    pub fn alerts(&self) -> usize {
        self.monitor.alerts().len()
    }

    /// Training ended: run.json's state, the event file synced.
    pub fn finish(&mut self, state: RunState) -> Result<(), TrainError> {
        if let Some(w) = self.tensorboard.take() {
            w.finish().map_err(monitor_error)?;
        }
        self.monitor.finish(state).map_err(monitor_error)
    }
}

fn monitor_error(e: crate::monitor::MonitorError) -> TrainError {
    TrainError::Monitor(e)
}
