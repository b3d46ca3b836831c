//! Keep-rules as data: `latest:2,best:Q:3,best:coverage:1,every:10` or a YAML file. The
//! union of what each rule keeps survives; each rule applies to each run folder (the
//! files of one folder) on its own.
//!
//! * `latest:N`: the N highest epochs (files without an epoch by modification time, after
//!   those with one);
//! * `best:METRIC:N`: the N best by a metric measured on the file's current weights
//!   (`Q`, `coverage`, `richness`, `dist_corr`: highest; `hierarchy_B`, `hierarchy_A`:
//!   lowest). A converted file whose metrics were never measured is never "best";
//! * `every:K`: every file whose epoch is a multiple of K.
//!
//! YAML: a list (or a list under `keep:`) of the same strings, or of maps
//! `{latest: 2}`, `{best: Q, count: 3}`, `{every: 10}`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::select::RankBy;
use super::ManagerError;
use crate::metrics::StoredMetrics;

/// One keep-rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Latest(usize),
    Best { metric: RankBy, count: usize },
    Every(u64),
}

impl Rule {
    /// The rule as written (`best:Q:3`).
    pub fn label(&self) -> String {
        match self {
            Rule::Latest(n) => format!("latest:{n}"),
            Rule::Best { metric, count } => format!("best:{}:{count}", metric.name()),
            Rule::Every(k) => format!("every:{k}"),
        }
    }

    /// One rule: `latest:N`, `best:METRIC:N` (`best:METRIC` keeps 1) or `every:K`.
    pub fn parse(text: &str) -> Result<Rule, ManagerError> {
        let bad = |message: String| ManagerError::BadRule {
            rule: text.to_string(),
            message,
        };
        let count = |s: &str, what: &str| -> Result<u64, ManagerError> {
            match s.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(format!("{what} must be a whole number ≥ 1, not `{s}`"))),
            }
        };
        let parts: Vec<&str> = text.trim().split(':').map(str::trim).collect();
        match parts.as_slice() {
            ["latest", n] => Ok(Rule::Latest(count(n, "N")? as usize)),
            ["every", k] => Ok(Rule::Every(count(k, "K")?)),
            ["best", m] | ["best", m, _] => {
                let metric = RankBy::parse(m).ok_or_else(|| {
                    let names: Vec<&str> = RankBy::ALL.iter().map(|r| r.name()).collect();
                    bad(format!(
                        "unknown metric `{m}` (one of {})",
                        names.join(", ")
                    ))
                })?;
                let n = match parts.get(2) {
                    Some(n) => count(n, "N")? as usize,
                    None => 1,
                };
                Ok(Rule::Best { metric, count: n })
            }
            [kind, ..] if matches!(*kind, "latest" | "every" | "best") => Err(bad(format!(
                "`{kind}` takes {}",
                match *kind {
                    "latest" => "a count: latest:N",
                    "every" => "an epoch step: every:K",
                    _ => "a metric and a count: best:METRIC:N",
                }
            ))),
            _ => Err(bad("a rule is latest:N, best:METRIC:N or every:K".into())),
        }
    }
}

/// A set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules(pub Vec<Rule>);

impl Serialize for Rules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Rule::label))
    }
}

impl<'de> serde::Deserialize<'de> for Rules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let labels = Vec::<String>::deserialize(d)?;
        Rules::parse(&labels.join(",")).map_err(serde::de::Error::custom)
    }
}

impl Rules {
    /// The rules as one `--keep`-style text: `latest:2,best:Q:3`.
    pub fn label(&self) -> String {
        self.0.iter().map(Rule::label).collect::<Vec<_>>().join(",")
    }

    /// `latest:2,best:Q:3,every:10`.
    pub fn parse(text: &str) -> Result<Rules, ManagerError> {
        let rules: Vec<Rule> = text
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(Rule::parse)
            .collect::<Result<_, _>>()?;
        if rules.is_empty() {
            return Err(ManagerError::BadRule {
                rule: text.to_string(),
                message: "no rule given".into(),
            });
        }
        Ok(Rules(rules))
    }

    /// A rules file (YAML).
    pub fn from_file(path: &Path) -> Result<Rules, ManagerError> {
        let err = |message: String| ManagerError::RulesFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| err(format!("not YAML: {e}")))?;
        let list = match &doc {
            serde_yaml::Value::Mapping(m) => m.get("keep").cloned().unwrap_or_default(),
            other => other.clone(),
        };
        let serde_yaml::Value::Sequence(items) = list else {
            return Err(err("expected a list of rules (under `keep:`)".into()));
        };
        let mut rules = Vec::new();
        for item in items {
            let text = match &item {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Mapping(m) => {
                    let get = |k: &str| m.get(k).map(yaml_scalar);
                    match (get("latest"), get("best"), get("every")) {
                        (Some(n), None, None) => format!("latest:{n}"),
                        (None, None, Some(k)) => format!("every:{k}"),
                        (None, Some(metric), None) => match get("count") {
                            Some(n) => format!("best:{metric}:{n}"),
                            None => format!("best:{metric}"),
                        },
                        _ => return Err(err(format!(
                            "a rule is one of {{latest: N}}, {{best: METRIC, count: N}}, {{every: K}}; got {}",
                            serde_yaml::to_string(&item).unwrap_or_default().trim()
                        ))),
                    }
                }
                other => yaml_scalar(other),
            };
            rules.push(Rule::parse(&text)?);
        }
        if rules.is_empty() {
            return Err(err("no rule given".into()));
        }
        Ok(Rules(rules))
    }

    /// A `--keep` value: a rules file when such a file exists, else the rules text.
    pub fn from_arg(arg: &str) -> Result<Rules, ManagerError> {
        let p = Path::new(arg);
        if (arg.ends_with(".yaml") || arg.ends_with(".yml")) || p.is_file() {
            Rules::from_file(p)
        } else {
            Rules::parse(arg)
        }
    }

    /// For each item, the labels of the rules that keep it (empty: not kept).
    pub fn apply(&self, items: &[Item<'_>]) -> Vec<Vec<String>> {
        let mut kept: Vec<Vec<String>> = vec![Vec::new(); items.len()];
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            groups.entry(it.group).or_default().push(i);
        }
        for rule in &self.0 {
            let label = rule.label();
            for members in groups.values() {
                let chosen: Vec<usize> = match *rule {
                    Rule::Latest(n) => {
                        let mut m = members.clone();
                        m.sort_by(|&a, &b| {
                            let (x, y) = (&items[a], &items[b]);
                            y.epoch
                                .is_some()
                                .cmp(&x.epoch.is_some())
                                .then(y.epoch.cmp(&x.epoch))
                                .then(y.modified.cmp(&x.modified))
                                .then(x.name.cmp(y.name))
                        });
                        m.into_iter().take(n).collect()
                    }
                    Rule::Best { metric, count } => {
                        let mut m: Vec<(usize, f64)> = members
                            .iter()
                            .filter(|&&i| items[i].metrics.is_measured())
                            .filter_map(|&i| metric.value(items[i].metrics).map(|v| (i, v)))
                            .collect();
                        m.sort_by(|(a, x), (b, y)| {
                            let o = if metric.higher_is_better() {
                                y.total_cmp(x)
                            } else {
                                x.total_cmp(y)
                            };
                            o.then(items[*b].epoch.cmp(&items[*a].epoch))
                                .then(items[*a].name.cmp(items[*b].name))
                        });
                        m.into_iter().take(count).map(|(i, _)| i).collect()
                    }
                    Rule::Every(k) => members
                        .iter()
                        .copied()
                        .filter(|&i| {
                            items[i]
                                .epoch
                                .is_some_and(|e| e >= 0 && (e as u64).is_multiple_of(k))
                        })
                        .collect(),
                };
                for i in chosen {
                    kept[i].push(label.clone());
                }
            }
        }
        kept
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// What a rule looks at in one file.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// The run: files of the same group are ranked together (their folder).
    pub group: &'a str,
    /// A tie-breaker (the file's name or path).
    pub name: &'a str,
    pub epoch: Option<i64>,
    /// Seconds since the Unix epoch.
    pub modified: u64,
    pub metrics: &'a StoredMetrics,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Provenance;

    #[test]
    fn parses_and_labels() {
        let r = Rules::parse("latest:2, best:Q:3,best:coverage:1,every:10").unwrap();
        let labels: Vec<String> = r.0.iter().map(Rule::label).collect();
        assert_eq!(
            labels,
            ["latest:2", "best:Q:3", "best:coverage:1", "every:10"]
        );
        assert_eq!(
            Rule::parse("best:hierarchy").unwrap().label(),
            "best:hierarchy_B:1"
        );
        for (bad, says) in [
            ("latest", "takes a count"),
            ("latest:0", "≥ 1"),
            ("best:speed:2", "unknown metric `speed`"),
            ("keep:3", "latest:N, best:METRIC:N or every:K"),
            ("every:x", "not `x`"),
        ] {
            let e = Rule::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Rules::parse(" , ").is_err());
    }

    #[test]
    fn yaml_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.yaml");
        std::fs::write(
            &p,
            "# retention\nkeep:\n  - latest: 2\n  - best: Q\n    count: 3\n  - every: 10\n  - best:coverage:1\n",
        )
        .unwrap();
        let r = Rules::from_arg(p.to_str().unwrap()).unwrap();
        assert_eq!(
            r,
            Rules::parse("latest:2,best:Q:3,every:10,best:coverage:1").unwrap()
        );
        std::fs::write(&p, "- {latest: 1}\n- {oldest: 2}\n").unwrap();
        let e = Rules::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("oldest"), "{e}");
        std::fs::write(&p, "keep: 3\n").unwrap();
        assert!(Rules::from_file(&p).is_err());
    }

    fn metrics(q: Option<f64>, p: Provenance) -> StoredMetrics {
        StoredMetrics {
            q,
            coverage: Some(1.0),
            provenance: Some(p),
            ..StoredMetrics::default()
        }
    }

    #[test]
    fn union_per_run_measured_only() {
        let m: Vec<StoredMetrics> = (0..12)
            .map(|e| metrics(Some(e as f64 / 10.0), Provenance::Trained))
            .collect();
        // A conversion claiming a great Q it never measured.
        let unmeasured = StoredMetrics {
            provenance: Some(Provenance::NotMeasured),
            ..StoredMetrics::default()
        };
        let names: Vec<String> = (0..12).map(|e| format!("epoch_{e}.pt")).collect();
        let mut items: Vec<Item<'_>> = (0..12)
            .map(|e| Item {
                group: "run_a",
                name: &names[e],
                epoch: Some(e as i64 * 5),
                modified: 100 + e as u64,
                metrics: &m[e],
            })
            .collect();
        // Q falls after epoch 30 (index 6): best Q is epochs 25 and 30.
        let mq: Vec<StoredMetrics> = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 1.0, 0.3, 0.2, 0.1, 0.1, 0.1]
            .iter()
            .map(|&q| metrics(Some(q), Provenance::Trained))
            .collect();
        for (it, mq) in items.iter_mut().zip(&mq) {
            it.metrics = mq;
        }
        items.push(Item {
            group: "run_a",
            name: "converted.pt",
            epoch: None,
            modified: 1,
            metrics: &unmeasured,
        });
        items.push(Item {
            group: "run_b",
            name: "only.pt",
            epoch: Some(3),
            modified: 1,
            metrics: &m[0],
        });
        let kept = Rules::parse("latest:2,best:Q:2,every:20")
            .unwrap()
            .apply(&items);
        let show: Vec<(String, Vec<String>)> = items
            .iter()
            .zip(&kept)
            .filter(|(_, k)| !k.is_empty())
            .map(|(i, k)| (format!("{}/{}", i.group, i.name), k.clone()))
            .collect();
        let expect: Vec<(String, Vec<String>)> = [
            ("run_a/epoch_0.pt", vec!["every:20"]),
            ("run_a/epoch_4.pt", vec!["every:20"]),
            ("run_a/epoch_5.pt", vec!["best:Q:2"]),
            ("run_a/epoch_6.pt", vec!["best:Q:2"]),
            ("run_a/epoch_8.pt", vec!["every:20"]),
            ("run_a/epoch_10.pt", vec!["latest:2"]),
            ("run_a/epoch_11.pt", vec!["latest:2"]),
            ("run_b/only.pt", vec!["latest:2", "best:Q:2"]),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(show, expect);
    }
}
