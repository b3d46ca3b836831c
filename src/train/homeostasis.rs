//! Homeostasis (training.md "Homeostasis"): which parts train, decided from the metrics
//! of each evaluation. A pure state machine; the trainer applies its freeze state.

use serde::Serialize;

use crate::config::Homeostasis as HomeostasisConfig;

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
    pub controller_grad_threshold: f64,
    pub controller_grad_patience: u64,
}

impl Settings {
    pub fn from_config(c: Option<&HomeostasisConfig>) -> Settings {
        let c = c.cloned().unwrap_or_default();
        Settings {
            enabled: c.enabled.unwrap_or(false),
            coverage_freeze_threshold: c.coverage_freeze_threshold.unwrap_or(0.995),
            coverage_unfreeze_threshold: c.coverage_unfreeze_threshold.unwrap_or(1.0),
            coverage_floor: c.coverage_floor.unwrap_or(0.95),
            warmup_epochs: c.warmup_epochs.unwrap_or(10),
            hysteresis_epochs: c.hysteresis_epochs.unwrap_or(5),
            enable_annealing: c.enable_annealing.unwrap_or(false),
            annealing_step: c.annealing_step.unwrap_or(0.003),
            hierarchy_plateau_threshold: c.hierarchy_plateau_threshold.unwrap_or(0.001),
            hierarchy_plateau_patience: c.hierarchy_plateau_patience.unwrap_or(15),
            hierarchy_patience_ceiling: c.hierarchy_patience_ceiling.unwrap_or(30),
            controller_grad_threshold: c.controller_grad_threshold.unwrap_or(0.01),
            controller_grad_patience: c.controller_grad_patience.unwrap_or(5),
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
    /// The current (annealed) coverage freeze threshold and plateau patience.
    pub coverage_freeze_threshold: f64,
    pub plateau_patience: u64,
    last_change: Option<u64>,
    best_hierarchy: Option<f64>,
    last_improvement: u64,
    b_frozen_at: Option<u64>,
    controller_small_since: Option<u64>,
    q_at_freeze_a: Option<f64>,
    q_at_freeze_b: Option<f64>,
}

impl Homeostasis {
    /// Start: encoder_A frozen, encoder_B and controller trainable (`freeze_b` from
    /// option_c.freeze_encoder_b).
    pub fn new(settings: Settings, freeze_b: bool) -> Homeostasis {
        Homeostasis {
            coverage_freeze_threshold: settings.coverage_freeze_threshold,
            plateau_patience: settings.hierarchy_plateau_patience,
            settings,
            state: FreezeState {
                encoder_a: true,
                encoder_b: freeze_b,
                controller: false,
            },
            last_change: None,
            best_hierarchy: None,
            last_improvement: 0,
            b_frozen_at: None,
            controller_small_since: None,
            q_at_freeze_a: None,
            q_at_freeze_b: None,
        }
    }

    fn anneal(
        &mut self,
        epoch: u64,
        component: &'static str,
        q_then: Option<f64>,
        q: f64,
        ev: &mut Vec<Event>,
    ) {
        let (Some(q0), true) = (q_then, self.settings.enable_annealing) else {
            return;
        };
        let step = self.settings.annealing_step;
        let (relax, tighten) = (q > q0, q0 - q > 0.05);
        if !(relax || tighten) {
            return;
        }
        let msg = if component == "encoder_A" {
            let t = if relax {
                (self.coverage_freeze_threshold - step).max(self.settings.coverage_floor)
            } else {
                (self.coverage_freeze_threshold + step)
                    .min(self.settings.coverage_unfreeze_threshold)
            };
            self.coverage_freeze_threshold = t;
            format!("coverage freeze threshold → {t:.4}")
        } else {
            let p = if relax {
                (self.plateau_patience + 1).min(self.settings.hierarchy_patience_ceiling)
            } else {
                self.plateau_patience.saturating_sub(1).max(1)
            };
            self.plateau_patience = p;
            format!("hierarchy plateau patience → {p}")
        };
        ev.push(Event {
            epoch,
            kind: "anneal",
            component,
            message: format!(
                "Q {} over the freeze cycle ({q0:.4} → {q:.4}): {msg}",
                if relax { "gained" } else { "lost" }
            ),
        });
    }

    /// Update from an evaluation at `epoch`. `controller_grad` is the controller's
    /// gradient norm (None without a controller). Returns the events; `state` holds the
    /// new freeze state.
    pub fn update(
        &mut self,
        epoch: u64,
        coverage: f64,
        hierarchy_b: f64,
        q: f64,
        controller_grad: Option<f64>,
    ) -> Vec<Event> {
        let mut ev = Vec::new();
        // Hierarchy tracking (always, warmup included).
        match self.best_hierarchy {
            Some(b) if b - hierarchy_b < self.settings.hierarchy_plateau_threshold => {}
            _ => {
                self.best_hierarchy = Some(hierarchy_b);
                self.last_improvement = epoch;
            }
        }
        if let Some(g) = controller_grad {
            if g < self.settings.controller_grad_threshold {
                self.controller_small_since.get_or_insert(epoch);
            } else {
                self.controller_small_since = None;
            }
        }
        if !self.settings.enabled || epoch < self.settings.warmup_epochs {
            return ev;
        }
        if self
            .last_change
            .is_some_and(|c| epoch < c + self.settings.hysteresis_epochs)
        {
            return ev;
        }
        let before = self.state;
        // encoder_A: coverage-gated.
        if !self.state.encoder_a && coverage < self.coverage_freeze_threshold {
            self.state.encoder_a = true;
            self.q_at_freeze_a = Some(q);
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
        } else if self.state.encoder_a && coverage >= self.settings.coverage_unfreeze_threshold {
            self.state.encoder_a = false;
            ev.push(Event {
                epoch,
                kind: "unfreeze",
                component: "encoder_A",
                message: format!(
                    "coverage {:.4}% ≥ {:.2}%: encoder_A unfrozen",
                    coverage * 100.0,
                    self.settings.coverage_unfreeze_threshold * 100.0
                ),
            });
            let q0 = self.q_at_freeze_a.take();
            self.anneal(epoch, "encoder_A", q0, q, &mut ev);
        }
        // encoder_B: hierarchy-gated.
        if !self.state.encoder_b && epoch - self.last_improvement >= self.plateau_patience {
            self.state.encoder_b = true;
            self.b_frozen_at = Some(epoch);
            self.q_at_freeze_b = Some(q);
            ev.push(Event {
                epoch,
                kind: "freeze",
                component: "encoder_B",
                message: format!(
                    "hierarchy_B plateau: improved < {} for {} epochs: encoder_B frozen",
                    self.settings.hierarchy_plateau_threshold, self.plateau_patience
                ),
            });
        } else if self.state.encoder_b
            && self
                .b_frozen_at
                .is_some_and(|f| epoch >= f + self.plateau_patience)
        {
            self.state.encoder_b = false;
            self.b_frozen_at = None;
            self.last_improvement = epoch;
            ev.push(Event {
                epoch,
                kind: "unfreeze",
                component: "encoder_B",
                message: format!(
                    "encoder_B unfrozen after {} frozen epochs",
                    self.plateau_patience
                ),
            });
            let q0 = self.q_at_freeze_b.take();
            self.anneal(epoch, "encoder_B", q0, q, &mut ev);
        }
        // controller: gradient-gated.
        if !self.state.controller
            && self
                .controller_small_since
                .is_some_and(|s| epoch - s >= self.settings.controller_grad_patience)
        {
            self.state.controller = true;
            ev.push(Event {
                epoch,
                kind: "freeze",
                component: "controller",
                message: format!(
                    "controller gradient norm < {} for {} epochs: controller frozen",
                    self.settings.controller_grad_threshold, self.settings.controller_grad_patience
                ),
            });
        }
        if self.state != before {
            self.last_change = Some(epoch);
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            enabled: true,
            warmup_epochs: 2,
            hysteresis_epochs: 2,
            hierarchy_plateau_patience: 3,
            enable_annealing: true,
            ..Settings::from_config(None)
        }
    }

    #[test]
    fn nothing_changes_during_warmup_or_when_disabled() {
        let mut h = Homeostasis::new(settings(), false);
        assert!(h.update(0, 1.0, -0.1, 0.5, None).is_empty());
        assert!(h.state.encoder_a);
        let mut off = Homeostasis::new(Settings::from_config(None), false);
        for e in 0..40 {
            assert!(off.update(e, 0.5, 0.0, 0.0, Some(0.0)).is_empty());
        }
    }

    #[test]
    fn encoder_a_is_coverage_gated_with_hysteresis() {
        let mut h = Homeostasis::new(settings(), false);
        let ev = h.update(2, 1.0, -0.1, 0.5, None);
        assert_eq!(ev[0].kind, "unfreeze");
        assert!(!h.state.encoder_a);
        // Within hysteresis: no change although coverage dropped.
        assert!(h.update(3, 0.9, -0.2, 0.5, None).is_empty());
        let ev = h.update(4, 0.9, -0.3, 0.6, None);
        assert_eq!((ev[0].kind, ev[0].component), ("freeze", "encoder_A"));
        // Recovered coverage unfreezes, with a Q gain annealing the threshold.
        let ev = h.update(6, 1.0, -0.4, 0.9, None);
        assert!(ev.iter().any(|e| e.kind == "anneal"));
        assert!(h.coverage_freeze_threshold < 0.995);
    }

    #[test]
    fn encoder_b_freezes_on_a_hierarchy_plateau() {
        let mut h = Homeostasis::new(settings(), false);
        h.update(0, 0.5, -0.5, 1.0, None);
        for e in 1..=3 {
            h.update(e, 0.5, -0.5, 1.0, None);
        }
        assert!(h.state.encoder_b, "{:?}", h.state);
    }

    #[test]
    fn controller_freezes_on_small_gradients() {
        let mut h = Homeostasis::new(settings(), false);
        let mut frozen = false;
        for e in 0..12 {
            frozen |= h
                .update(e, 0.5, -(e as f64), 1.0, Some(0.0))
                .iter()
                .any(|ev| ev.component == "controller");
        }
        assert!(frozen && h.state.controller);
    }
}
