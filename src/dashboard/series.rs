//! A run's curves as columns: one epoch axis and one column of numbers per value the lines
//! hold (metrics by their line name, `loss.TERM`, `lr`, `grad_norm`). Eight bytes a point:
//! 200 runs of 100 epochs with 25 values each take 4 MB, where the parsed lines would take
//! ten times that.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::monitor::line::{EpochLine, LineEvent};

/// An event the trainer logged (freeze, unfreeze, anneal, …), with its epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesEvent {
    pub epoch: u64,
    #[serde(flatten)]
    pub event: LineEvent,
}

/// The curves of one run. A missing value (no evaluation at that epoch, a value the line
/// does not hold) and a non-finite one are both stored as NaN and written as JSON `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub epochs: Vec<u64>,
    pub columns: BTreeMap<String, Vec<f64>>,
    pub events: Vec<SeriesEvent>,
}

/// The values of one line by their series name.
pub fn line_values(line: &EpochLine) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut put = |k: String, v: Option<f64>| {
        out.insert(k, v.unwrap_or(f64::NAN));
    };
    if line.lr.is_some() || line.epoch > 0 {
        put("lr".into(), line.lr);
    }
    if line.grad_norm.is_some() || line.epoch > 0 {
        put("grad_norm".into(), line.grad_norm);
    }
    for (k, v) in &line.loss {
        put(format!("loss.{k}"), *v);
    }
    for (k, v) in line.metrics.iter().flatten() {
        put(k.clone(), *v);
    }
    out
}

/// JSON for a value: `null` when not finite.
pub fn json_number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl Series {
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// Give back the room the columns grew into.
    pub fn shrink_to_fit(&mut self) {
        self.epochs.shrink_to_fit();
        self.columns.values_mut().for_each(Vec::shrink_to_fit);
        self.events.shrink_to_fit();
    }

    pub fn clear(&mut self) {
        *self = Series::default();
    }

    /// Append one line's values (a column first seen here is filled with NaN before).
    pub fn push(&mut self, line: &EpochLine) {
        let n = self.epochs.len();
        let values = line_values(line);
        for (k, v) in &values {
            if !self.columns.contains_key(k) {
                self.columns.insert(k.clone(), vec![f64::NAN; n]);
            }
            if let Some(c) = self.columns.get_mut(k) {
                c.push(*v);
            }
        }
        for (k, c) in self.columns.iter_mut() {
            if !values.contains_key(k) {
                c.push(f64::NAN);
            }
        }
        self.epochs.push(line.epoch);
        self.events.extend(line.events.iter().map(|e| SeriesEvent {
            epoch: line.epoch,
            event: e.clone(),
        }));
    }

    /// The last finite value of a column.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.columns
            .get(name)?
            .iter()
            .rev()
            .copied()
            .find(|v| v.is_finite())
    }

    /// The column named `name` or, failing that, one equal to it ignoring case
    /// (`hierarchy_B` is the line's `hierarchy_b`).
    pub fn column(&self, name: &str) -> Option<(&str, &[f64])> {
        self.columns
            .get_key_value(name)
            .or_else(|| {
                self.columns
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

struct Column<'a>(&'a [f64]);

impl Serialize for Column<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&json_number(*v))?;
        }
        seq.end()
    }
}

struct Columns<'a>(&'a BTreeMap<String, Vec<f64>>);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, &Column(v))?;
        }
        m.end()
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("epochs", &self.epochs)?;
        m.serialize_entry("series", &Columns(&self.columns))?;
        m.serialize_entry("events", &self.events)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_stay_aligned_when_values_come_and_go() {
        let mut s = Series::default();
        for l in [
            r#"{"epoch":0,"metrics":{"coverage":0.5,"covered":3}}"#,
            r#"{"epoch":1,"lr":0.1,"loss":{"total":2.0}}"#,
            r#"{"epoch":2,"lr":0.1,"loss":{"total":NaN},"metrics":{"coverage":0.9,"Q":1.0},"events":[{"kind":"freeze","component":"encoder_A","message":"m"}]}"#,
        ] {
            s.push(&EpochLine::parse(l).unwrap());
        }
        assert_eq!(s.epochs, [0, 1, 2]);
        for c in s.columns.values() {
            assert_eq!(c.len(), 3);
        }
        assert_eq!(s.last("coverage"), Some(0.9));
        assert_eq!(s.last("loss.total"), Some(2.0));
        assert_eq!(s.column("q").map(|c| c.0), Some("Q"));
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j["series"]["loss.total"],
            serde_json::json!([null, 2.0, null])
        );
        assert_eq!(j["series"]["covered"], serde_json::json!([3.0, null, null]));
        assert_eq!(j["events"][0]["epoch"], 2);
        assert_eq!(j["events"][0]["kind"], "freeze");
    }
}
