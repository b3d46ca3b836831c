//! Applying specs to a checkpoint's keys and shapes: the plan a dry run prints and a real
//! run executes (the same value: [`super::convert::execute`] takes a [`Plan`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use super::ops::{self, Init};
use super::spec::{self, EntryAction, OpKind, ParamValue, Rule, Spec};
use super::{MigrateError, SpecSet};
use crate::arch::{self, KeyShape, LayoutParams, VersionId};
use crate::format::{Checkpoint, DType, Value};

/// What produces one target tensor (or drops a source one).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The source tensor's bytes unchanged (copy, rename, duplicate, reshape).
    Same,
    /// A new tensor.
    Init(Init),
    Slice(Vec<(u64, u64)>),
    Pad(Vec<(u64, u64)>, f64),
    Transpose(Vec<usize>),
    Drop,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The spec rule (1-based).
    pub rule: usize,
    /// copy, rename, duplicate, drop, init, slice, pad, reshape, transpose.
    pub op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<KeyShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<KeyShape>,
    /// The dtype written (new tensors) or carried.
    pub dtype: DType,
    /// How a new or transformed tensor is made (`ones`, `xavier_uniform(gain 1) seed 7`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip)]
    pub action: Action,
}

/// What happens to one non-model entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryPlan {
    pub key: String,
    /// keep, drop, set (the value set is in [`EntryAction::Set`]).
    pub action: EntryAction,
    /// Whether the entry (or, for `set`, its parent) is in the checkpoint.
    pub applies: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Counts for a plan's summary line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Target tensors with the source's values (copy, rename, duplicate, reshape).
    pub copied: usize,
    /// Of those, extra copies made by `duplicate`.
    pub duplicated: usize,
    pub initialised: usize,
    /// slice, pad, transpose.
    pub transformed: usize,
    pub dropped: usize,
}

/// One spec applied to one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepPlan {
    pub spec: String,
    pub spec_origin: String,
    pub spec_sha256: String,
    pub from_version: &'static str,
    pub from_layout: String,
    pub to_version: &'static str,
    pub to_layout: String,
    /// Target rows in target-layout order, then dropped source keys.
    pub rows: Vec<Row>,
    pub entries: Vec<EntryPlan>,
    pub summary: Summary,
    #[serde(skip)]
    pub to_params: LayoutParams,
    /// Warnings of the rules the step uses (also in [`Plan::warnings`]).
    #[serde(skip)]
    pub rule_warnings: Vec<String>,
}

/// The whole plan for one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub input: String,
    pub source_version: &'static str,
    pub source_layout: String,
    pub target_version: &'static str,
    pub target_layout: String,
    /// Where the model state sits (`model_state_dict`…; none for a bare state_dict).
    pub model_state_key: Option<String>,
    pub steps: Vec<StepPlan>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether nothing changes (the checkpoint already has the target layout).
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Everything wrong with a spec applied to a checkpoint, all listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Violation {
    pub spec: String,
    /// Source keys no rule matches.
    pub unmatched: Vec<KeyShape>,
    /// Source keys several rules match: (key, rule numbers).
    pub ambiguous: Vec<(String, Vec<usize>)>,
    /// Target keys produced more than once: (key, rule numbers).
    pub duplicates: Vec<(String, Vec<usize>)>,
    /// The target layout (expected) against the keys the rules produce: `missing` are
    /// target keys no rule produces, `unexpected` produced keys the layout does not have,
    /// `mismatched` keys produced with another shape (each also in `shapes`, with its rule).
    #[serde(flatten)]
    pub target: arch::KeyComparison,
    /// Shape assertions that fail, tensor operations that cannot apply, and keys produced
    /// with another shape than the target layout's.
    pub shapes: Vec<String>,
}

impl Violation {
    fn is_empty(&self) -> bool {
        self.unmatched.is_empty()
            && self.ambiguous.is_empty()
            && self.duplicates.is_empty()
            && self.target.is_exact()
            && self.shapes.is_empty()
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "spec {} does not fit this checkpoint; nothing was written:",
            self.spec
        )?;
        let keys = |f: &mut fmt::Formatter<'_>, title: &str, ks: &[KeyShape]| -> fmt::Result {
            if !ks.is_empty() {
                writeln!(f, "  {title} ({}):", ks.len())?;
                for (k, s) in ks {
                    writeln!(f, "    {k} {}", crate::format::shape_text(s))?;
                }
            }
            Ok(())
        };
        let multi =
            |f: &mut fmt::Formatter<'_>, title: &str, ks: &[(String, Vec<usize>)]| -> fmt::Result {
                if !ks.is_empty() {
                    writeln!(f, "  {title} ({}):", ks.len())?;
                    for (k, rules) in ks {
                        let r: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
                        writeln!(f, "    {k} (rules {})", r.join(", "))?;
                    }
                }
                Ok(())
            };
        keys(f, "source keys no rule matches", &self.unmatched)?;
        multi(f, "source keys matched by several rules", &self.ambiguous)?;
        multi(f, "target keys produced twice", &self.duplicates)?;
        keys(f, "target keys no rule produces", &self.target.missing)?;
        keys(
            f,
            "produced keys the target layout does not have",
            &self.target.unexpected,
        )?;
        if !self.shapes.is_empty() {
            writeln!(f, "  shape errors ({}):", self.shapes.len())?;
            for s in &self.shapes {
                writeln!(f, "    {s}")?;
            }
        }
        write!(f, "fix the spec's rules (see docs/migrations.md)")
    }
}

/// The target parameters of `spec` for a source with `src` parameters.
pub fn target_params(spec: &Spec, src: &LayoutParams) -> Result<LayoutParams, MigrateError> {
    let mut p = arch::default_params(spec.to);
    for (name, v) in &spec.params {
        let text = match v {
            ParamValue::Source => spec::param_text(src, name).unwrap_or_default(),
            ParamValue::Value(t) => t.clone(),
        };
        spec::set_param(&mut p, name, &text).map_err(|source| MigrateError::Spec {
            origin: spec.origin.clone(),
            source,
        })?;
    }
    arch::check_params(spec.to, &p).map_err(|e| MigrateError::Spec {
        origin: spec.origin.clone(),
        source: spec::SpecError::from(e).within("target parameters"),
    })?;
    Ok(p)
}

fn accepts(spec: &Spec, version: VersionId, src: &LayoutParams) -> Result<(), MigrateError> {
    let mismatches: Vec<String> = spec
        .accepts
        .iter()
        .filter_map(|(name, allowed)| {
            let have = spec::param_text(src, name)?;
            (!allowed.contains(&have)).then(|| {
                format!(
                    "{name} is {have}, the spec accepts {}",
                    allowed.join(" or ")
                )
            })
        })
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::NotAccepted {
            spec: spec.name.clone(),
            version: version.as_str().into(),
            mismatches,
        })
    }
}

/// A source tensor for planning.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub key: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

/// Apply one spec to a state. `root` is the checkpoint tree (for the entry rules).
pub fn plan_step(
    spec: &Spec,
    version: VersionId,
    src_params: &LayoutParams,
    state: &[SourceTensor],
    root: &Value,
) -> Result<StepPlan, MigrateError> {
    accepts(spec, version, src_params)?;
    let to_params = target_params(spec, src_params)?;
    let layout = arch::expected_layout(spec.to, &to_params);
    let layout_index: HashMap<&str, usize> = layout
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    let rules = spec
        .expand(src_params, &to_params)
        .map_err(|source| MigrateError::Spec {
            origin: spec.origin.clone(),
            source,
        })?;
    let env_src = spec::symbol_env(src_params);
    let env_dst = spec::symbol_env(&to_params);
    let mut v = Violation {
        spec: spec.name.clone(),
        ..Violation::default()
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut drops: Vec<Row> = Vec::new();

    for t in state {
        let mut hits: Vec<(&Rule, usize, BTreeMap<String, String>)> = Vec::new();
        for rule in rules.iter().filter(|r| r.from.is_some()) {
            for (ti, tr) in rule.tensors.iter().enumerate() {
                let pat = rule.from_pattern(tr).expect("from");
                if let Some(caps) = pat.matches(&t.key, &rule.allowed) {
                    hits.push((rule, ti, caps));
                }
            }
        }
        match hits.len() {
            0 => {
                v.unmatched.push((t.key.clone(), t.shape.clone()));
                continue;
            }
            1 => {}
            _ => {
                let mut nums: Vec<usize> = hits.iter().map(|h| h.0.number).collect();
                nums.dedup();
                v.ambiguous.push((t.key.clone(), nums));
                continue;
            }
        }
        let (rule, ti, caps) = hits.pop().expect("one hit");
        let tr = &rule.tensors[ti];
        if let Some(fs) = &tr.from_shape {
            match fs.eval(&env_src) {
                Ok(want) if want == t.shape => {}
                Ok(want) => v.shapes.push(format!(
                    "rule {}: `{}` is {} in the checkpoint, the rule asserts {} ({})",
                    rule.number,
                    t.key,
                    crate::format::shape_text(&t.shape),
                    crate::format::shape_text(&want),
                    fs.text()
                )),
                Err(e) => v.shapes.push(format!("rule {}: {e}", rule.number)),
            }
        }
        if matches!(rule.op, OpKind::Drop) {
            drops.push(Row {
                rule: rule.number,
                op: "drop",
                from: Some((t.key.clone(), t.shape.clone())),
                to: None,
                dtype: t.dtype,
                detail: rule.note.clone().unwrap_or_default(),
                action: Action::Drop,
            });
            continue;
        }
        // Range bounds in the source's symbols; a negative one is a spec error.
        let eval_ranges = |pairs: &[(spec::DimExpr, spec::DimExpr)]| {
            pairs
                .iter()
                .map(|(a, b)| {
                    let bound = |e: &spec::DimExpr| {
                        let v = e.eval(&env_src);
                        u64::try_from(v).map_err(|_| v)
                    };
                    Ok((bound(a)?, bound(b)?))
                })
                .collect::<Result<Vec<_>, i64>>()
        };
        // The shape rules are the executor's own (ops), so the plan refuses what it would.
        let (action, out_shape, detail) = match &rule.op {
            OpKind::Copy | OpKind::Rename | OpKind::Duplicate => {
                (Action::Same, Ok(t.shape.clone()), String::new())
            }
            OpKind::Reshape => {
                let to = tr
                    .to_shape
                    .as_ref()
                    .map(|s| s.eval(&env_dst))
                    .transpose()
                    .map_err(ops::OpError::from);
                let checked = to.and_then(|to| {
                    let to = to.unwrap_or_default();
                    ops::reshape(&t.shape, &to).map(|_| to)
                });
                (Action::Same, checked, String::new())
            }
            OpKind::Slice(pairs) => {
                let r = eval_ranges(pairs);
                let shape = r
                    .as_ref()
                    .map_err(|&v| ops::OpError::NegativeBound(v))
                    .and_then(|r| ops::slice_shape(&t.shape, r));
                let r = r.unwrap_or_default();
                let d = format!(
                    "[{}]",
                    r.iter()
                        .map(|(a, b)| format!("{a}:{b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                (Action::Slice(r), shape, d)
            }
            OpKind::Pad(pairs, value) => {
                let p = eval_ranges(pairs);
                let shape = p
                    .as_ref()
                    .map_err(|&v| ops::OpError::NegativeBound(v))
                    .and_then(|p| ops::pad_shape(&t.shape, p));
                let p = p.unwrap_or_default();
                let d = format!("{p:?} with {value}");
                (Action::Pad(p, *value), shape, d)
            }
            OpKind::Transpose(perm) => (
                Action::Transpose(perm.clone()),
                ops::transpose_shape(&t.shape, perm),
                format!("perm {perm:?}"),
            ),
            OpKind::Drop | OpKind::Init => unreachable!("handled above / no from"),
        };
        let out_shape = match out_shape {
            Ok(s) => s,
            Err(e) => {
                v.shapes
                    .push(format!("rule {}: `{}`: {e}", rule.number, t.key));
                continue;
            }
        };
        if let Some(ts) = &tr.to_shape {
            match ts.eval(&env_dst) {
                Ok(want) if want == out_shape => {}
                Ok(want) => v.shapes.push(format!(
                    "rule {}: `{}` becomes {}, the rule asserts {} ({})",
                    rule.number,
                    t.key,
                    crate::format::shape_text(&out_shape),
                    crate::format::shape_text(&want),
                    ts.text()
                )),
                Err(e) => v.shapes.push(format!("rule {}: {e}", rule.number)),
            }
        }
        for p in rule.to_patterns(tr) {
            let key = p.instantiate(&caps).expect("captures checked at load");
            rows.push(Row {
                rule: rule.number,
                op: rule.op.name(),
                from: Some((t.key.clone(), t.shape.clone())),
                to: Some((key, out_shape.clone())),
                dtype: t.dtype,
                detail: detail.clone(),
                action: action.clone(),
            });
        }
    }

    // New tensors; fallback ones only where nothing else produced the key.
    let produced: std::collections::HashSet<String> = rows
        .iter()
        .filter_map(|r| r.to.as_ref().map(|t| t.0.clone()))
        .collect();
    for rule in rules.iter().filter(|r| matches!(r.op, OpKind::Init)) {
        for caps in capture_product(rule) {
            for tr in &rule.tensors {
                let pat = &rule.to_patterns(tr)[0];
                let key = pat.instantiate(&caps).expect("where lists checked at load");
                if rule.fallback && produced.contains(&key) {
                    continue;
                }
                let shape = match tr.to_shape.as_ref().expect("init shape").eval(&env_dst) {
                    Ok(s) => s,
                    Err(e) => {
                        v.shapes.push(format!("rule {}: {e}", rule.number));
                        continue;
                    }
                };
                let init = tr
                    .init
                    .as_ref()
                    .expect("init checked at load")
                    .resolve(&env_dst);
                rows.push(Row {
                    rule: rule.number,
                    op: "init",
                    from: None,
                    to: Some((key, shape)),
                    dtype: tr.dtype,
                    detail: init.describe(),
                    action: Action::Init(init),
                });
            }
        }
    }

    // Whole-plan checks against the target layout.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in &rows {
        if let Some((k, _)) = &r.to {
            by_key.entry(k.as_str()).or_default().push(r.rule);
        }
    }
    for (k, rules) in &by_key {
        if rules.len() > 1 {
            v.duplicates.push((k.to_string(), rules.clone()));
        }
    }
    let mut produced: Vec<(&str, &[u64])> = Vec::new();
    for r in &rows {
        let (k, s) = r.to.as_ref().expect("target rows");
        produced.push((k.as_str(), s.as_slice()));
    }
    v.target = arch::compare_layout(&layout, &produced);
    for m in &v.target.mismatched {
        // The first rule producing the key with that shape.
        let rule = rows
            .iter()
            .find(|r| {
                r.to.as_ref()
                    .is_some_and(|(k, s)| *k == m.key && *s == m.found)
            })
            .map_or(0, |r| r.rule);
        v.shapes.push(format!(
            "rule {rule}: `{}` is produced as {}, the {} layout has {}",
            m.key,
            crate::format::shape_text(&m.found),
            spec.to.as_str(),
            crate::format::shape_text(&m.expected)
        ));
    }
    if !v.is_empty() {
        return Err(MigrateError::Violation(Box::new(v)));
    }
    rows.sort_by_key(|r| layout_index[r.to.as_ref().expect("target").0.as_str()]);
    let mut summary = Summary::default();
    for r in &rows {
        match r.action {
            Action::Same => summary.copied += 1,
            Action::Init(_) => summary.initialised += 1,
            _ => summary.transformed += 1,
        }
    }
    summary.duplicated = rows.iter().filter(|r| r.op == "duplicate").count()
        - rows
            .iter()
            .filter(|r| r.op == "duplicate")
            .map(|r| &r.from)
            .collect::<std::collections::HashSet<_>>()
            .len();
    summary.dropped = drops.len();
    rows.extend(drops);
    // The warnings of the rules this plan uses, once each, in rule order.
    let used: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.rule).collect();
    let rule_warnings = spec
        .rules
        .iter()
        .filter(|r| used.contains(&r.number))
        .filter_map(|r| {
            r.warn
                .as_ref()
                .map(|w| format!("{} rule {}: {w}", spec.name, r.number))
        })
        .collect();
    let entries = plan_entries(spec, root);
    Ok(StepPlan {
        spec: spec.name.clone(),
        spec_origin: spec.origin.clone(),
        spec_sha256: spec.sha256.clone(),
        from_version: version.as_str(),
        from_layout: src_params.summary(),
        to_version: spec.to.as_str(),
        to_layout: to_params.summary(),
        rows,
        entries,
        summary,
        to_params,
        rule_warnings,
    })
}

/// Every combination of an init rule's `where` values.
fn capture_product(rule: &Rule) -> Vec<BTreeMap<String, String>> {
    let names: Vec<&str> = rule.to.iter().flat_map(|p| p.captures()).collect();
    let mut out = vec![BTreeMap::new()];
    for n in names {
        let vals = &rule.allowed[n];
        out = out
            .into_iter()
            .flat_map(|m| {
                vals.iter().map(move |v| {
                    let mut m = m.clone();
                    m.insert(n.to_string(), v.clone());
                    m
                })
            })
            .collect();
    }
    out
}

fn plan_entries(spec: &Spec, root: &Value) -> Vec<EntryPlan> {
    spec.entries
        .iter()
        .map(|e| {
            let (parent, _) = e.key.rsplit_once('.').unwrap_or(("", &e.key));
            let present = root.get_path(&e.key).is_some();
            let parent_dict = if parent.is_empty() {
                matches!(root, Value::Dict(_))
            } else {
                matches!(root.get_path(parent), Some(Value::Dict(_)))
            };
            let (applies, value) = match &e.action {
                EntryAction::Keep | EntryAction::Drop => (present, None),
                EntryAction::Set(v) => (parent_dict, Some(crate::format::value::value_text(v))),
            };
            EntryPlan {
                key: e.key.clone(),
                action: e.action.clone(),
                applies,
                value,
                warning: if applies { e.warn.clone() } else { None },
            }
        })
        .collect()
}

/// The plan for converting `ckpt` to `to` with `specs`.
pub fn plan_checkpoint(
    ckpt: &Checkpoint,
    to: VersionId,
    specs: &SpecSet,
) -> Result<Plan, MigrateError> {
    if ckpt.has_unsafe_globals() {
        return Err(MigrateError::Unsafe {
            path: ckpt.path.clone(),
            globals: ckpt.unsafe_global_messages().join(", "),
        });
    }
    let ms = ckpt.model_state_ref();
    let inference = arch::infer_checkpoint(ckpt);
    let Some(best) = inference.best.clone() else {
        return Err(MigrateError::UnknownLayout {
            path: ckpt.path.clone(),
            detail: inference.note(),
        });
    };
    let state: Vec<SourceTensor> = ms
        .as_ref()
        .map(|ms| {
            ms.entries
                .iter()
                .map(|&(k, i)| SourceTensor {
                    key: k.to_string(),
                    shape: ckpt.tensors[i].shape.clone(),
                    dtype: ckpt.tensors[i].dtype,
                })
                .collect()
        })
        .unwrap_or_default();
    let chain = specs.path(best.version, to)?;
    let spec_warnings: Vec<String> = chain
        .iter()
        .flat_map(|s| s.warn.iter().map(move |w| format!("{}: {w}", s.name)))
        .collect();
    let mut steps = Vec::new();
    let mut version = best.version;
    let mut params = best.params;
    let mut current = state;
    // Each step's entry rules see the tree as the previous steps left it.
    let mut root = ckpt.root.clone();
    for spec in chain {
        let step = plan_step(spec, version, &params, &current, &root)?;
        super::tree::apply_entries(&mut root, &step.entries);
        current = step
            .rows
            .iter()
            .filter_map(|r| {
                r.to.as_ref().map(|(k, s)| SourceTensor {
                    key: k.clone(),
                    shape: s.clone(),
                    dtype: r.dtype,
                })
            })
            .collect();
        version = spec.to;
        params = step.to_params;
        steps.push(step);
    }
    let mut warnings = spec_warnings;
    if let Some(n) = inference.note() {
        warnings.push(n);
    }
    let model_state_key = ms.as_ref().and_then(|m| m.root_key.map(str::to_string));
    if !steps.is_empty() && model_state_key.is_none() {
        warnings.push(
            "a bare state_dict: the output is a bare state_dict too, with no `migration` record in it (it would break load_state_dict)".into(),
        );
    }
    for s in &steps {
        warnings.extend(s.rule_warnings.iter().cloned());
        for e in &s.entries {
            if let Some(w) = &e.warning {
                warnings.push(format!("{}: {w}", e.key));
            }
        }
    }
    let numpy = count_numpy(&ckpt.root);
    if numpy > 0 && !steps.is_empty() {
        warnings.push(format!(
            "{numpy} numpy scalar{} written as plain Python numbers (torch.load(weights_only=True) loads them)",
            if numpy == 1 { "" } else { "s" }
        ));
    }
    Ok(Plan {
        input: ckpt.path.display().to_string(),
        source_version: best.version.as_str(),
        source_layout: best.params.summary(),
        target_version: to.as_str(),
        target_layout: params.summary(),
        model_state_key,
        steps,
        warnings,
    })
}

fn count_numpy(v: &Value) -> usize {
    match v {
        Value::NumpyScalar { .. } => 1,
        Value::List(items) | Value::Tuple(items) => items.iter().map(count_numpy).sum(),
        Value::Dict(items) => items.iter().map(|(_, v)| count_numpy(v)).sum(),
        Value::Object { state: Some(s), .. } => count_numpy(s),
        _ => 0,
    }
}
