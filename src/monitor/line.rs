//! One line of `metrics.jsonl` (docs/json.md): what the rules and the monitors read of
//! it. Lines written by other tools are read the same way; Python's `json.dumps` tokens
//! `NaN`, `Infinity` and `-Infinity` are accepted, and a `null` where the trainer writes a
//! number (serde_json writes NaN and ±inf as `null`) counts as non-finite.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A number of the line: `None` for `null` (non-finite when written by tvck).
pub type Num = Option<f64>;

/// Whether a value is a finite number.
pub fn finite(v: Num) -> bool {
    v.is_some_and(f64::is_finite)
}

/// An event the trainer logged in the line (`freeze`, `unfreeze`, `anneal`, `coverage_drop`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LineEvent {
    pub kind: String,
    pub component: String,
    pub message: String,
}

/// A parsed metrics.jsonl line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EpochLine {
    /// Trained epochs (0 = the state before training).
    pub epoch: u64,
    pub lr: Num,
    pub grad_norm: Num,
    /// Loss terms (`total`, `rich`, `radial`, …); empty at epoch 0.
    pub loss: BTreeMap<String, Num>,
    /// The evaluation, when this epoch had one.
    pub metrics: Option<BTreeMap<String, Num>>,
    /// Freeze state by part, named as state_dict prefixes (`encoder_A`, `encoder_B`,
    /// `controller`).
    pub freeze: BTreeMap<String, bool>,
    pub events: Vec<LineEvent>,
    /// SHA-256 of each frozen part's tensors (tvck's trainer writes it).
    pub frozen_sha256: BTreeMap<String, String>,
}

/// Why a line was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no `epoch` (a non-negative integer)")]
    NoEpoch,
}

/// Python's non-standard number tokens outside strings → strings serde_json accepts.
fn python_tokens(s: &str) -> std::borrow::Cow<'_, str> {
    if !(s.contains("NaN") || s.contains("Infinity")) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let tok = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = tok {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

fn num(v: &Json) -> Num {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn numbers(v: Option<&Json>) -> Option<BTreeMap<String, Num>> {
    let Some(Json::Object(m)) = v else {
        return None;
    };
    Some(
        m.iter()
            // Counts and settings are not measurements (`covered`, `curvature`).
            .filter(|(_, v)| !v.is_boolean())
            .map(|(k, v)| (k.clone(), num(v)))
            .collect(),
    )
}

/// `encoder_a` (the trainer's JSON field) → `encoder_A` (the state_dict prefix).
pub fn part_name(field: &str) -> String {
    match field {
        "encoder_a" => "encoder_A".into(),
        "encoder_b" => "encoder_B".into(),
        "decoder_a" => "decoder_A".into(),
        "decoder_b" => "decoder_B".into(),
        other => other.into(),
    }
}

fn text(v: Option<&Json>) -> String {
    v.and_then(Json::as_str).unwrap_or_default().to_string()
}

impl EpochLine {
    /// Parse one line (without its newline).
    pub fn parse(s: &str) -> Result<EpochLine, LineError> {
        let v: Json = serde_json::from_str(&python_tokens(s.trim()))
            .map_err(|e| LineError::Json(e.to_string()))?;
        let Json::Object(o) = &v else {
            return Err(LineError::NotObject);
        };
        let epoch = o
            .get("epoch")
            .and_then(|e| {
                e.as_u64().or_else(|| {
                    e.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(53))
                        .map(|f| f as u64)
                })
            })
            .ok_or(LineError::NoEpoch)?;
        let loss = match o.get("loss") {
            Some(Json::Object(_)) => numbers(o.get("loss")).unwrap_or_default(),
            // A bare number: the total.
            Some(n @ (Json::Number(_) | Json::String(_))) => {
                BTreeMap::from([("total".to_string(), num(n))])
            }
            _ => BTreeMap::new(),
        };
        let freeze = match o.get("freeze") {
            Some(Json::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_bool().map(|b| (part_name(k), b)))
                .collect(),
            _ => BTreeMap::new(),
        };
        let events = match o.get("events") {
            Some(Json::Array(a)) => a
                .iter()
                .map(|e| LineEvent {
                    kind: text(e.get("kind")),
                    component: text(e.get("component")),
                    message: text(e.get("message")),
                })
                .collect(),
            _ => Vec::new(),
        };
        let frozen_sha256 = match o.get("frozen_sha256") {
            Some(Json::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|h| (k.clone(), h.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(EpochLine {
            epoch,
            lr: o.get("lr").and_then(num),
            grad_norm: o.get("grad_norm").and_then(num),
            loss,
            metrics: numbers(o.get("metrics")),
            freeze,
            events,
            frozen_sha256,
        })
    }

    /// A metric of the evaluation by name, case-insensitively (`hierarchy_B` is the
    /// line's `hierarchy_b`): `None` when absent, `Some(None)` when `null`.
    pub fn metric(&self, name: &str) -> Option<Num> {
        let m = self.metrics.as_ref()?;
        m.get(name).copied().or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        })
    }

    /// A value by the name rules use: a metric, `loss` / `loss.TERM`, `lr`, `grad_norm`.
    pub fn value(&self, name: &str) -> Option<Num> {
        match name {
            "lr" => Some(self.lr),
            "grad_norm" => Some(self.grad_norm),
            "loss" => self.loss.get("total").copied(),
            _ => match name.strip_prefix("loss.") {
                Some(term) => self.loss.get(term).copied(),
                None => self.metric(name),
            },
        }
    }
}

/// The names rules accept for the trainer's lines: its metrics (the `metrics` object of
/// docs/json.md) and loss terms (`loss.TERM`), plus `lr` and `grad_norm`.
pub const METRICS: &[&str] = &[
    "coverage",
    "hierarchy_A",
    "hierarchy_B",
    "richness_A",
    "richness_B",
    "dist_corr_A",
    "dist_corr_B",
    "r_v0",
    "r_v9",
    "mean_radius",
    "std_radius",
    "Q",
];
pub const LOSS_TERMS: &[&str] = &[
    "total",
    "rich",
    "rich_hierarchy",
    "rich_coverage",
    "rich_richness",
    "rich_separation",
    "radial",
    "rank",
    "geodesic",
    "zero_structure",
];

/// Whether `name` is a value the trainer writes (other tools may write more).
pub fn known_value(name: &str) -> bool {
    matches!(name, "lr" | "grad_norm" | "loss")
        || METRICS.iter().any(|m| m.eq_ignore_ascii_case(name))
        || name
            .strip_prefix("loss.")
            .is_some_and(|t| LOSS_TERMS.contains(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TVCK: &str = r#"{"epoch":2,"lr":0.002,"loss":{"total":1.5,"rich":0.0,"radial":null},"grad_norm":0.3,"metrics":{"coverage":1.0,"covered":19683,"hierarchy_b":-0.7,"Q":0.4},"freeze":{"encoder_a":true,"encoder_b":false,"controller":false},"events":[{"epoch":2,"kind":"freeze","component":"encoder_B","message":"m"}],"frozen_sha256":{"encoder_A":"ab"}}"#;

    #[test]
    fn reads_a_trainer_line() {
        let l = EpochLine::parse(TVCK).unwrap();
        assert_eq!(l.epoch, 2);
        assert_eq!(l.lr, Some(0.002));
        assert_eq!(l.value("loss"), Some(Some(1.5)));
        assert_eq!(l.value("loss.radial"), Some(None));
        assert_eq!(l.value("hierarchy_B"), Some(Some(-0.7)));
        assert_eq!(l.value("Q"), Some(Some(0.4)));
        assert_eq!(l.value("r_v9"), None);
        assert_eq!(l.freeze.get("encoder_A"), Some(&true));
        assert_eq!(l.events[0].kind, "freeze");
        assert_eq!(l.frozen_sha256["encoder_A"], "ab");
    }

    #[test]
    fn python_tokens_outside_strings_only() {
        let l = EpochLine::parse(
            r#"{"epoch": 1, "loss": {"total": NaN, "x": -Infinity}, "metrics": {"coverage": Infinity}, "events": [{"kind": "NaN Infinity", "component": "", "message": "\"NaN\""}]}"#,
        )
        .unwrap();
        assert!(l.loss["total"].unwrap().is_nan());
        assert_eq!(l.loss["x"], Some(f64::NEG_INFINITY));
        assert_eq!(l.metric("coverage"), Some(Some(f64::INFINITY)));
        assert_eq!(l.events[0].kind, "NaN Infinity");
        assert_eq!(l.events[0].message, "\"NaN\"");
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for s in [
            "",
            "{",
            "[1]",
            r#"{"epoch":-1}"#,
            r#"{"epoch":"x"}"#,
            "\u{0}",
        ] {
            assert!(EpochLine::parse(s).is_err(), "{s:?}");
        }
        assert!(known_value("hierarchy_b") && known_value("loss.rank") && !known_value("loss.x"));
    }
}
