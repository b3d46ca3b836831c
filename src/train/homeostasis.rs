//! Homeostasis (training.md §5): which of encoder_A and encoder_B train, decided from the
//! metrics of each evaluation. A pure state machine; the trainer applies its freeze state.
//!
//! Upstream's loop builds its controller from only a few keys and ignores
//! `homeostasis.enabled`, `hierarchy_plateau_threshold`, `hierarchy_plateau_patience` and
//! `hierarchy_patience_ceiling` (constants 0.001, 5 and 15 apply there); tvck reads them,
//! with those constants as the defaults (docs/training-differences.md).

use std::collections::VecDeque;

use serde::Serialize;

use crate::config::Homeostasis as HomeostasisConfig;

/// Evaluations kept in the coverage / hierarchy windows.
pub const WINDOW: usize = 5;
/// Consecutive stalled evaluations of hierarchy_A (with full coverage) that unfreeze
/// encoder_A.
pub const STALL_A: u64 = 5;
/// Required fall of |hierarchy_B| between the last two evaluations to unfreeze encoder_B.
pub const B_RECOVERY: f64 = 0.01;
/// Q loss over a freeze cycle beyond which the thresholds tighten.
pub const TIGHTEN_BELOW: f64 = -0.05;
/// The smallest plateau patience of encoder_B after tightening.
pub const MIN_PATIENCE: u64 = 5;

/// The resolved settings (upstream defaults where the config is silent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub enabled: bool,
    pub coverage_freeze_threshold: f64,
    pub coverage_unfreeze_threshold: f64,
    pub coverage_floor: f64,
    pub warmup_epochs: u64,
    pub hysteresis_epochs: u64,
    pub enable_annealing: bool,
    pub annealing_step: f64,
    pub hierarchy_plateau_threshold: f64,
    pub hierarchy_plateau_patience: u64,
    pub hierarchy_patience_ceiling: u64,
}

impl Settings {
    pub fn from_config(c: Option<&HomeostasisConfig>) -> Settings {
        let c = c.cloned().unwrap_or_default();
        Settings {
            enabled: c.enabled.unwrap_or(true),
            coverage_freeze_threshold: c
                .coverage_freeze_threshold
                .unwrap_or(crate::metrics::coverage::FULL_FROM),
            coverage_unfreeze_threshold: c.coverage_unfreeze_threshold.unwrap_or(1.0),
            coverage_floor: c.coverage_floor.unwrap_or(0.95),
            warmup_epochs: c.warmup_epochs.unwrap_or(5),
            hysteresis_epochs: c.hysteresis_epochs.unwrap_or(3),
            enable_annealing: c.enable_annealing.unwrap_or(true),
            annealing_step: c.annealing_step.unwrap_or(0.003),
            hierarchy_plateau_threshold: c.hierarchy_plateau_threshold.unwrap_or(0.001),
            hierarchy_plateau_patience: c.hierarchy_plateau_patience.unwrap_or(5),
            hierarchy_patience_ceiling: c.hierarchy_patience_ceiling.unwrap_or(15),
        }
    }
}

/// Which parts are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FreezeState {
    pub encoder_a: bool,
    pub encoder_b: bool,
    pub controller: bool,
}

/// A logged decision or observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub epoch: u64,
    /// `freeze`, `unfreeze`, `anneal`, `coverage_drop`.
    pub kind: &'static str,
    pub component: &'static str,
    pub message: String,
}

/// The controller's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Homeostasis {
    pub settings: Settings,
    pub state: FreezeState,
    /// The current (annealed) thresholds and encoder_B's plateau patience.
    pub coverage_freeze_threshold: f64,
    pub coverage_unfreeze_threshold: f64,
    pub plateau_patience: u64,
    coverage: VecDeque<f64>,
    hierarchy_a: VecDeque<f64>,
    hierarchy_b: VecDeque<f64>,
    /// Epoch of the last change of encoder_A / encoder_B (−hysteresis at the start).
    last_a: i64,
    last_b: i64,
    stall_a: u64,
    plateau_b: u64,
    /// Q_h when the part was last unfrozen (encoder_B's starts at 0.0).
    q_start_a: Option<f64>,
    q_start_b: Option<f64>,
    /// The last Q_h = dist_corr + 1.5·|hierarchy_A|.
    pub q: f64,
}

impl Homeostasis {
    /// Start: encoder_A frozen, encoder_B and the controller trainable.
    pub fn new(settings: Settings) -> Homeostasis {
        let h = settings.hysteresis_epochs.min(i64::MAX as u64) as i64;
        Homeostasis {
            coverage_freeze_threshold: settings.coverage_freeze_threshold,
            coverage_unfreeze_threshold: settings.coverage_unfreeze_threshold,
            plateau_patience: settings.hierarchy_plateau_patience,
            settings,
            state: FreezeState {
                encoder_a: true,
                encoder_b: false,
                controller: false,
            },
            coverage: VecDeque::new(),
            hierarchy_a: VecDeque::new(),
            hierarchy_b: VecDeque::new(),
            last_a: -h,
            last_b: -h,
            stall_a: 0,
            plateau_b: 0,
            q_start_a: None,
            q_start_b: Some(0.0),
            q: 0.0,
        }
    }

    /// The string upstream stores as `homeostasis_state`: "enc_A:F enc_B:T ctrl:T Q:1.13"
    /// (T = trainable, F = frozen; Q the last Q_h).
    pub fn summary(state: FreezeState, q: f64) -> String {
        let t = |frozen: bool| if frozen { 'F' } else { 'T' };
        format!(
            "enc_A:{} enc_B:{} ctrl:{} Q:{q:.2}",
            t(state.encoder_a),
            t(state.encoder_b),
            t(state.controller)
        )
    }

    fn push(w: &mut VecDeque<f64>, x: f64) {
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(x);
    }

    /// ΔQ over the cycle that ends with a freeze, and whether it relaxes (ΔQ > 0) or
    /// tightens (ΔQ < −0.05) the part's thresholds; `None` for neither.
    fn cycle(q_start: Option<f64>, q: f64) -> (f64, Option<bool>) {
        let dq = q_start.map_or(0.0, |s| q - s);
        let verdict = if dq > 0.0 {
            Some(true)
        } else if dq < TIGHTEN_BELOW {
            Some(false)
        } else {
            None
        };
        (dq, verdict)
    }

    fn anneal_a(&mut self, epoch: u64, dq: f64, relax: bool, ev: &mut Vec<Event>) {
        let step = self.settings.annealing_step;
        let d = if relax { -step } else { step };
        let freeze = self.coverage_freeze_threshold + d;
        if freeze < self.settings.coverage_floor {
            return;
        }
        self.coverage_freeze_threshold = freeze;
        self.coverage_unfreeze_threshold =
            (self.coverage_unfreeze_threshold + d).max(freeze + 0.005);
        ev.push(Event {
            epoch,
            kind: "anneal",
            component: "encoder_A",
            message: format!(
                "ΔQ {dq:+.4} over the freeze cycle: coverage thresholds {} to freeze {:.4}, unfreeze {:.4}",
                if relax { "relaxed" } else { "tightened" },
                self.coverage_freeze_threshold,
                self.coverage_unfreeze_threshold
            ),
        });
    }

    fn anneal_b(&mut self, epoch: u64, dq: f64, relax: bool, ev: &mut Vec<Event>) {
        let p = self.plateau_patience;
        let new = if relax {
            p.checked_add(1)
                .filter(|&n| n <= self.settings.hierarchy_patience_ceiling)
        } else {
            p.checked_sub(1).filter(|&n| n >= MIN_PATIENCE)
        };
        let Some(new) = new else { return };
        self.plateau_patience = new;
        ev.push(Event {
            epoch,
            kind: "anneal",
            component: "encoder_B",
            message: format!(
                "ΔQ {dq:+.4} over the freeze cycle: hierarchy plateau patience {} to {new}",
                if relax { "relaxed" } else { "tightened" }
            ),
        });
    }

    /// Update from an evaluation at 0-based `epoch` (training.md §5). Returns the events;
    /// `state` holds the new freeze state.
    pub fn update(
        &mut self,
        epoch: u64,
        coverage: f64,
        hierarchy_a: f64,
        hierarchy_b: f64,
        dist_corr: f64,
    ) -> Vec<Event> {
        let mut ev = Vec::new();
        let q = dist_corr + 1.5 * hierarchy_a.abs();
        self.q = q;
        Self::push(&mut self.coverage, coverage);
        Self::push(&mut self.hierarchy_a, hierarchy_a);
        Self::push(&mut self.hierarchy_b, hierarchy_b);
        if !self.settings.enabled || epoch < self.settings.warmup_epochs {
            return ev;
        }
        let e = epoch.min(i64::MAX as u64) as i64;
        let hyst = self.settings.hysteresis_epochs.min(i64::MAX as u64) as i64;
        let thr = self.settings.hierarchy_plateau_threshold;
        let annealing = self.settings.enable_annealing;
        // encoder_A: coverage-gated.
        if e - self.last_a >= hyst {
            if !self.state.encoder_a && coverage < self.coverage_freeze_threshold {
                self.state.encoder_a = true;
                self.last_a = e;
                ev.push(Event {
                    epoch,
                    kind: "freeze",
                    component: "encoder_A",
                    message: format!(
                        "coverage {:.4}% < {:.2}%: encoder_A frozen",
                        coverage * 100.0,
                        self.coverage_freeze_threshold * 100.0
                    ),
                });
                let (dq, verdict) = Self::cycle(self.q_start_a, q);
                if let (true, Some(relax)) = (annealing, verdict) {
                    self.anneal_a(epoch, dq, relax, &mut ev);
                }
            } else if self.state.encoder_a
                && coverage >= self.coverage_unfreeze_threshold
                && self.hierarchy_a.len() == WINDOW
            {
                let (first, last) = (self.hierarchy_a[0], self.hierarchy_a[WINDOW - 1]);
                if last.abs() - first.abs() < thr {
                    self.stall_a += 1;
                } else {
                    self.stall_a = 0;
                }
                if self.stall_a >= STALL_A {
                    self.state.encoder_a = false;
                    self.last_a = e;
                    self.q_start_a = Some(q);
                    ev.push(Event {
                        epoch,
                        kind: "unfreeze",
                        component: "encoder_A",
                        message: format!(
                            "coverage {:.4}% ≥ {:.2}% and hierarchy_A stalled for {} evaluations: encoder_A unfrozen",
                            coverage * 100.0,
                            self.coverage_unfreeze_threshold * 100.0,
                            self.stall_a
                        ),
                    });
                }
            }
        }
        // encoder_B: hierarchy-gated.
        let n = self.hierarchy_b.len();
        if e - self.last_b >= hyst && n >= 2 {
            let (first, prev, last) = (
                self.hierarchy_b[0],
                self.hierarchy_b[n - 2],
                self.hierarchy_b[n - 1],
            );
            if !self.state.encoder_b {
                if last.abs() - first.abs() < thr {
                    self.plateau_b += 1;
                } else {
                    self.plateau_b = 0;
                }
                if self.plateau_b >= self.plateau_patience {
                    self.state.encoder_b = true;
                    self.last_b = e;
                    ev.push(Event {
                        epoch,
                        kind: "freeze",
                        component: "encoder_B",
                        message: format!(
                            "|hierarchy_B| gained < {thr} over the window for {} evaluations: encoder_B frozen",
                            self.plateau_b
                        ),
                    });
                    let (dq, verdict) = Self::cycle(self.q_start_b, q);
                    if let (true, Some(relax)) = (annealing, verdict) {
                        self.anneal_b(epoch, dq, relax, &mut ev);
                    }
                }
            } else if last.abs() < prev.abs() - B_RECOVERY {
                self.state.encoder_b = false;
                self.plateau_b = 0;
                self.last_b = e;
                self.q_start_b = Some(q);
                ev.push(Event {
                    epoch,
                    kind: "unfreeze",
                    component: "encoder_B",
                    message: format!(
                        "|hierarchy_B| fell from {:.4} to {:.4}: encoder_B unfrozen",
                        prev.abs(),
                        last.abs()
                    ),
                });
            }
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            warmup_epochs: 2,
            hysteresis_epochs: 2,
            ..Settings::from_config(None)
        }
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = Settings::from_config(None);
        assert!(s.enabled && s.enable_annealing);
        assert_eq!((s.warmup_epochs, s.hysteresis_epochs), (5, 3));
        assert_eq!(
            (s.hierarchy_plateau_patience, s.hierarchy_patience_ceiling),
            (5, 15)
        );
        assert_eq!(s.hierarchy_plateau_threshold, 0.001);
        assert_eq!(
            Homeostasis::summary(
                FreezeState {
                    encoder_a: true,
                    encoder_b: false,
                    controller: false
                },
                1.134
            ),
            "enc_A:F enc_B:T ctrl:T Q:1.13"
        );
    }

    #[test]
    fn nothing_changes_during_warmup_or_when_disabled() {
        let mut h = Homeostasis::new(settings());
        assert!(h.update(0, 1.0, -0.1, -0.1, 0.5).is_empty());
        assert!(h.update(1, 0.5, -0.1, -0.1, 0.5).is_empty());
        assert!(h.state.encoder_a && !h.state.encoder_b);
        let mut off = Homeostasis::new(Settings {
            enabled: false,
            ..settings()
        });
        for e in 0..40 {
            assert!(off.update(e, 0.5, 0.0, 0.0, 0.0).is_empty());
        }
    }

    /// encoder_A unfreezes only with full coverage, a full window and hierarchy_A
    /// stalled for 5 evaluations; it freezes when coverage falls below the threshold,
    /// after the hysteresis; a Q gain over the cycle relaxes both thresholds.
    #[test]
    fn encoder_a_is_coverage_and_stall_gated() {
        let mut h = Homeostasis::new(settings());
        let mut unfrozen_at = None;
        for e in 0..20 {
            let ev = h.update(e, 1.0, -0.5, -0.5 - e as f64 * 0.1, 0.2);
            if ev
                .iter()
                .any(|x| x.kind == "unfreeze" && x.component == "encoder_A")
            {
                unfrozen_at = Some(e);
                break;
            }
        }
        // window full at the 5th evaluation (epoch 4), stall counted from there: 4..=8.
        assert_eq!(unfrozen_at, Some(8));
        assert!(!h.state.encoder_a);
        // Within the hysteresis (2): no freeze although coverage fell.
        assert!(h.update(9, 0.9, -0.5, -2.0, 0.2).is_empty());
        // Q_h rose (|h_A| 0.5 → 0.7): freeze, thresholds relaxed by the step.
        let ev = h.update(10, 0.9, -0.7, -2.1, 0.2);
        assert_eq!((ev[0].kind, ev[0].component), ("freeze", "encoder_A"));
        assert_eq!(ev[1].kind, "anneal");
        assert!((h.coverage_freeze_threshold - 0.992).abs() < 1e-12);
        assert!((h.coverage_unfreeze_threshold - 0.997).abs() < 1e-12);
    }

    /// encoder_B freezes after `patience` evaluations without |hierarchy_B| gaining over
    /// the window, unfreezes when |hierarchy_B| falls by more than 0.01; ΔQ against the
    /// initial 0.0 relaxes the patience.
    #[test]
    fn encoder_b_plateau_and_recovery() {
        let mut h = Homeostasis::new(Settings {
            warmup_epochs: 0,
            hysteresis_epochs: 0,
            ..settings()
        });
        let mut frozen_at = None;
        for e in 0..10 {
            let ev = h.update(e, 0.5, -0.3, -0.8, 0.4);
            if ev
                .iter()
                .any(|x| x.kind == "freeze" && x.component == "encoder_B")
            {
                frozen_at = Some(e);
                assert!(ev.iter().any(|x| x.kind == "anneal"));
                break;
            }
        }
        // from the 2nd evaluation on (epoch 1), 5 plateaus: epoch 5.
        assert_eq!(frozen_at, Some(5));
        assert_eq!(h.plateau_patience, 6);
        // a tiny fall does not unfreeze; a fall > 0.01 does.
        assert!(h
            .update(6, 0.5, -0.3, -0.795, 0.4)
            .iter()
            .all(|x| x.component != "encoder_B"));
        let ev = h.update(7, 0.5, -0.3, -0.7, 0.4);
        assert_eq!((ev[0].kind, ev[0].component), ("unfreeze", "encoder_B"));
        assert!(!h.state.encoder_b);
    }
}
