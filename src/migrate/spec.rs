//! Migration specs: the YAML schema (docs/migrations.md) and its compiled form.
//!
//! A spec is checked when it loads (every rule: op, patterns, captures, shapes, initialisers)
//! and again against each checkpoint it is applied to ([`super::plan`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ops::{Init, NegativeSize};
use super::pattern::{Pattern, PatternError};
use crate::arch::expr::{self, Expr, ExprError};
use crate::arch::{LayoutParams, Param, VersionId};
use crate::format::{DType, Value};

/// The symbol values of a layout. Shape expressions use the catalog's variables
/// (src/arch/catalog.yaml `derived`): L = latent_dim, H = hidden_dim, R = max(32, H / 2)
/// (the radius net width), and the parameters by name.
pub fn symbol_env(p: &LayoutParams) -> Vec<i64> {
    crate::arch::catalog().env(p)
}

fn symbol_slot(name: &str) -> Option<usize> {
    crate::arch::catalog().var_slot(name)
}

/// How many variables a layout's environment has ([`symbol_env`]).
fn n_vars() -> usize {
    symbol_env(&LayoutParams::default()).len()
}

/// Which layout plain variable names read in a rule's expressions.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// `from` patterns, `for` ranges, `when`.
    Source,
    /// `to` patterns.
    Target,
}

/// The slot of a variable in a rule's environment: the source layout's variables, then the
/// target's, then the rule's loop variables. `source.NAME` / `target.NAME` name one layout
/// explicitly; a plain name reads the side's layout.
fn scoped_slot(name: &str, side: Side, loops: &[String]) -> Option<usize> {
    let n = n_vars();
    if let Some(j) = loops.iter().position(|l| l == name) {
        return Some(2 * n + j);
    }
    if let Some(v) = name.strip_prefix("source.") {
        return symbol_slot(v);
    }
    if let Some(v) = name.strip_prefix("target.") {
        return symbol_slot(v).map(|s| n + s);
    }
    symbol_slot(name).map(|s| match side {
        Side::Source => s,
        Side::Target => n + s,
    })
}

/// The most rule instances one rule's `for` loops may expand into.
const MAX_INSTANCES: i64 = 4096;

/// Why a migration spec does not compile or expand. Messages name the place (`rule 3:
/// from: …`) through [`SpecError::In`].
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The error `source`, inside the part `at` of the spec.
    #[error("{at}: {source}")]
    In {
        at: String,
        #[source]
        source: Box<SpecError>,
    },
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    /// An expression that does not parse (the column is the expression's).
    #[error("{0}")]
    Expression(#[from] ExprError),
    #[error("shape `{shape}`: {source} (symbols: L, H, R; integers; + - * / max min)")]
    ShapeExpression {
        shape: String,
        #[source]
        source: ExprError,
    },
    #[error("{0}")]
    Pattern(#[from] PatternError),
    #[error("{0}")]
    NegativeSize(#[from] NegativeSize),
    #[error("unknown version `{0}`")]
    UnknownVersion(String),
    /// The spec file cannot be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The target parameters are outside the target version's domain.
    #[error("{0}")]
    Arch(#[from] crate::arch::ArchError),
    /// A rule of the spec format that the text breaks (the rule is the message).
    #[error("{0}")]
    Rule(&'static str),
    /// Anything else, described.
    #[error("{0}")]
    Invalid(String),
}

impl SpecError {
    /// This error, inside the part `at`.
    pub fn within(self, at: impl Into<String>) -> SpecError {
        SpecError::In {
            at: at.into(),
            source: Box::new(self),
        }
    }
}

/// A shape written with symbols (`[H, L]`).
#[derive(Debug, Clone)]
pub struct ShapeExpr {
    text: String,
    dims: Vec<Expr>,
}

impl ShapeExpr {
    fn parse(text: &str) -> Result<ShapeExpr, SpecError> {
        let t = text.trim();
        let inner = t
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| {
                SpecError::Invalid(format!(
                    "shape `{t}` must be written in brackets, e.g. `[H, L]`"
                ))
            })?;
        let dims = if inner.trim().is_empty() {
            Vec::new()
        } else {
            inner
                .split(',')
                .map(|d| {
                    expr::parse(d.trim(), &symbol_slot).map_err(|source| {
                        SpecError::ShapeExpression {
                            shape: t.to_string(),
                            source,
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(ShapeExpr {
            text: t.to_string(),
            dims,
        })
    }

    /// The shape for a layout's symbol values.
    pub fn eval(&self, env: &[i64]) -> Result<Vec<u64>, NegativeSize> {
        self.dims
            .iter()
            .map(|d| {
                let v = d.eval(env);
                u64::try_from(v).map_err(|_| NegativeSize {
                    shape: self.text.clone(),
                    size: v,
                })
            })
            .collect()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// One integer expression over the symbols (a slice bound, a fan-in).
#[derive(Debug, Clone)]
pub struct DimExpr(Expr);

impl DimExpr {
    pub fn eval(&self, env: &[i64]) -> i64 {
        self.0.eval(env)
    }
}

/// An initialiser whose parameters may use symbols (linear_default's fan_in).
#[derive(Debug, Clone)]
pub enum InitSpec {
    Fixed(Init),
    LinearDefault { fan_in: DimExpr, seed: u64 },
}

impl InitSpec {
    pub fn resolve(&self, env: &[i64]) -> Init {
        match self {
            InitSpec::Fixed(i) => i.clone(),
            InitSpec::LinearDefault { fan_in, seed } => Init::LinearDefault {
                fan_in: fan_in.eval(env).max(0) as u64,
                seed: *seed,
            },
        }
    }
}

/// What a rule does.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// Same values; `to` may name another key.
    Copy,
    /// Same values under another key.
    Rename,
    /// Same values under two or more keys.
    Duplicate,
    /// Not carried over.
    Drop,
    /// A new tensor (no source).
    Init,
    /// `source[a:b, …]`, one range per dimension (symbols allowed).
    Slice(Vec<(DimExpr, DimExpr)>),
    /// Pad each dimension with (before, after) elements of `value`.
    Pad(Vec<(DimExpr, DimExpr)>, f64),
    /// Same bytes, another shape.
    Reshape,
    /// Permute the dimensions.
    Transpose(Vec<usize>),
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Copy => "copy",
            OpKind::Rename => "rename",
            OpKind::Duplicate => "duplicate",
            OpKind::Drop => "drop",
            OpKind::Init => "init",
            OpKind::Slice(_) => "slice",
            OpKind::Pad(..) => "pad",
            OpKind::Reshape => "reshape",
            OpKind::Transpose(_) => "transpose",
        }
    }
}

/// One tensor of a rule: the rule's key itself, or `key.suffix` for each entry of `tensors:`.
#[derive(Debug, Clone)]
pub struct TensorRule {
    pub suffix: Option<String>,
    /// Asserted source shape (source layout symbols).
    pub from_shape: Option<ShapeExpr>,
    /// Asserted target shape (target layout symbols).
    pub to_shape: Option<ShapeExpr>,
    pub init: Option<InitSpec>,
    pub dtype: DType,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based position in the spec.
    pub number: usize,
    pub op: OpKind,
    pub from: Option<Pattern>,
    pub to: Vec<Pattern>,
    pub allowed: BTreeMap<String, Vec<String>>,
    pub tensors: Vec<TensorRule>,
    /// For `init`: only where no other rule produced the key.
    pub fallback: bool,
    pub note: Option<String>,
    /// `for:` loops: (variable, start, end), end exclusive, over the source layout.
    pub loops: Vec<(String, DimExpr, DimExpr)>,
    /// `when:`: the rule applies only where this is non-zero (source layout variables).
    pub when: Option<DimExpr>,
    /// Printed with a plan in which the rule matches or produces a tensor.
    pub warn: Option<String>,
}

impl Rule {
    /// The from pattern of one tensor rule.
    pub fn from_pattern(&self, t: &TensorRule) -> Option<Pattern> {
        let p = self.from.as_ref()?;
        Some(match &t.suffix {
            Some(s) => p.with_suffix(s),
            None => p.clone(),
        })
    }

    /// The to patterns of one tensor rule.
    pub fn to_patterns(&self, t: &TensorRule) -> Vec<Pattern> {
        self.to
            .iter()
            .map(|p| match &t.suffix {
                Some(s) => p.with_suffix(s),
                None => p.clone(),
            })
            .collect()
    }
}

/// What happens to a non-model entry of the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryAction {
    Keep,
    Drop,
    Set(Value),
}

impl EntryAction {
    /// The spec's word for it (`keep`, `drop`, `set`), as plans print it.
    pub fn name(&self) -> &'static str {
        match self {
            EntryAction::Keep => "keep",
            EntryAction::Drop => "drop",
            EntryAction::Set(_) => "set",
        }
    }
}

impl std::fmt::Display for EntryAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for EntryAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A rule for a non-model entry (`optimizer_state_dict`, `config.model.name`).
#[derive(Debug, Clone)]
pub struct EntryRule {
    /// Dotted path from the checkpoint's root.
    pub key: String,
    pub action: EntryAction,
    /// Printed when the rule applies.
    pub warn: Option<String>,
}

/// Target layout parameter: a fixed value or the source's.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Source,
    Value(String),
}

/// A compiled migration spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub description: String,
    /// Warnings printed with every plan that uses the spec.
    pub warn: Vec<String>,
    /// `embedded:v5_11_to_v5_12_4.yaml` or the file path.
    pub origin: String,
    /// SHA-256 (hex) of the spec file's bytes.
    pub sha256: String,
    pub from: VersionId,
    /// Source layout parameter → accepted values.
    pub accepts: BTreeMap<String, Vec<String>>,
    pub to: VersionId,
    pub params: BTreeMap<String, ParamValue>,
    pub rules: Vec<Rule>,
    pub entries: Vec<EntryRule>,
}

/// A layout parameter's value as text (`2`, `true`, `improved`); `None` for a name that is
/// not a layout parameter ([`Param::name`]).
pub fn param_text(p: &LayoutParams, name: &str) -> Option<String> {
    Param::from_name(name).map(|q| q.format_value(q.get(p)))
}

/// Set a layout parameter from its text form.
pub fn set_param(p: &mut LayoutParams, name: &str, value: &str) -> Result<(), SpecError> {
    let param = Param::from_name(name)
        .ok_or_else(|| SpecError::Invalid(format!("unknown layout parameter `{name}`")))?;
    let v = param
        .parse_value(value)
        .ok_or_else(|| SpecError::Invalid(format!("`{name}: {value}` is not a valid value")))?;
    param.set(p, v);
    Ok(())
}

/// Every layout parameter name, for messages.
fn param_names() -> String {
    Param::ALL.map(Param::name).join(", ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: String,
    /// Printed with every plan that uses the spec.
    #[serde(default)]
    warn: Vec<String>,
    from: RawFrom,
    to: RawTo,
    rules: Vec<RawRule>,
    #[serde(default)]
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrom {
    version: String,
    #[serde(default)]
    accepts: BTreeMap<String, Vec<serde_yaml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTo {
    version: String,
    #[serde(default)]
    params: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    op: String,
    from: Option<String>,
    to: Option<OneOrMany>,
    #[serde(default, rename = "where")]
    where_: BTreeMap<String, Vec<serde_yaml::Value>>,
    shape: Option<String>,
    init: Option<serde_yaml::Value>,
    dtype: Option<String>,
    tensors: Option<serde_yaml::Mapping>,
    #[serde(default)]
    fallback: bool,
    ranges: Option<Vec<[serde_yaml::Value; 2]>>,
    pad: Option<Vec<[serde_yaml::Value; 2]>>,
    value: Option<f64>,
    perm: Option<Vec<usize>>,
    note: Option<String>,
    #[serde(default, rename = "for")]
    for_: BTreeMap<String, String>,
    when: Option<serde_yaml::Value>,
    warn: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    shape: String,
    init: Option<serde_yaml::Value>,
    dtype: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    key: String,
    action: String,
    value: Option<serde_yaml::Value>,
    warn: Option<String>,
}

/// A YAML scalar as the text patterns and parameters compare against.
fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_dtype(s: Option<&str>) -> Result<DType, SpecError> {
    match s {
        None => Ok(DType::F32),
        Some(s) => DType::from_torch_name(s)
            .filter(|d| super::ops::numeric(*d))
            .ok_or_else(|| SpecError::Invalid(format!("unknown or unsupported dtype `{s}` (float32, float64, float16, bfloat16, int64, …)"))),
    }
}

fn parse_init(v: &serde_yaml::Value) -> Result<InitSpec, SpecError> {
    use serde_yaml::Value as Y;
    let fixed = |i| Ok(InitSpec::Fixed(i));
    match v {
        Y::String(s) => match s.as_str() {
            "ones" => fixed(Init::Fill(1.0)),
            "zeros" => fixed(Init::Fill(0.0)),
            "identity" => fixed(Init::Identity),
            other => Err(SpecError::Invalid(format!(
                "unknown initialiser `{other}` (ones, zeros, identity, {{fill: x}}, {{normal|uniform|xavier_uniform|xavier_normal|linear_default: …, seed: n}})"
            ))),
        },
        Y::Mapping(m) => {
            let get = |k: &str| m.get(Y::String(k.into()));
            for k in m.keys() {
                let k = scalar_text(k).unwrap_or_default();
                if ![
                    "fill",
                    "seed",
                    "normal",
                    "uniform",
                    "xavier_uniform",
                    "xavier_normal",
                    "linear_default",
                ]
                .contains(&k.as_str())
                {
                    return Err(SpecError::Invalid(format!("unknown initialiser field `{k}`")));
                }
            }
            if let Some(x) = get("fill") {
                return x
                    .as_f64()
                    .map(|x| InitSpec::Fixed(Init::Fill(x)))
                    .ok_or(SpecError::Rule("fill needs a number"));
            }
            let seed = get("seed").and_then(|s| s.as_u64()).ok_or(SpecError::Rule("a random initialiser must state its seed (`seed: 42`), so the conversion is reproducible"))?;
            let num = |args: Option<&Y>, k: &str, default: Option<f64>| -> Result<f64, SpecError> {
                match args.and_then(|a| a.get(k)) {
                    Some(x) => x.as_f64().ok_or_else(|| SpecError::Invalid(format!("`{k}` needs a number"))),
                    None => default.ok_or_else(|| SpecError::Invalid(format!("`{k}` is required"))),
                }
            };
            if let Some(a) = get("normal") {
                return fixed(Init::Normal {
                    mean: num(Some(a), "mean", Some(0.0))?,
                    std: num(Some(a), "std", None)?,
                    seed,
                });
            }
            if let Some(a) = get("uniform") {
                return fixed(Init::Uniform {
                    low: num(Some(a), "low", None)?,
                    high: num(Some(a), "high", None)?,
                    seed,
                });
            }
            if let Some(a) = get("xavier_uniform") {
                return fixed(Init::XavierUniform {
                    gain: num(Some(a), "gain", Some(1.0))?,
                    seed,
                });
            }
            if let Some(a) = get("xavier_normal") {
                return fixed(Init::XavierNormal {
                    gain: num(Some(a), "gain", Some(1.0))?,
                    seed,
                });
            }
            if let Some(a) = get("linear_default") {
                let f = a
                    .get("fan_in")
                    .and_then(scalar_text)
                    .ok_or(SpecError::Rule("linear_default needs `fan_in` (an expression such as `H`)"))?;
                let fan_in = expr::parse(&f, &symbol_slot)
                    .map(DimExpr)
                    .map_err(|e| SpecError::from(e).within("fan_in"))?;
                return Ok(InitSpec::LinearDefault { fan_in, seed });
            }
            Err(SpecError::Rule("an initialiser mapping needs one of fill, normal, uniform, xavier_uniform, xavier_normal, linear_default"))
        }
        _ => Err(SpecError::Rule("an initialiser is a name (ones, zeros, identity) or a mapping")),
    }
}

fn parse_pairs(
    v: &[[serde_yaml::Value; 2]],
    what: &str,
) -> Result<Vec<(DimExpr, DimExpr)>, SpecError> {
    v.iter()
        .map(|[a, b]| {
            let e = |x: &serde_yaml::Value| {
                let t = scalar_text(x).ok_or_else(|| {
                    SpecError::Invalid(format!("{what}: bounds are numbers or expressions"))
                })?;
                expr::parse(&t, &symbol_slot)
                    .map(DimExpr)
                    .map_err(|e| SpecError::from(e).within(what))
            };
            Ok((e(a)?, e(b)?))
        })
        .collect()
}

/// Split `"[a] -> [b]"`.
fn split_arrow(s: &str) -> Result<(Option<ShapeExpr>, Option<ShapeExpr>), SpecError> {
    match s.split_once("->") {
        Some((a, b)) => Ok((Some(ShapeExpr::parse(a)?), Some(ShapeExpr::parse(b)?))),
        None => Ok((Some(ShapeExpr::parse(s)?), None)),
    }
}

impl Spec {
    /// Parse and check a spec. `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Spec, SpecError> {
        let raw: RawSpec = serde_yaml::from_str(text)?;
        let version = |v: &str| {
            v.parse::<VersionId>()
                .map_err(|_| SpecError::UnknownVersion(v.to_string()))
        };
        let from = version(&raw.from.version)?;
        let to = version(&raw.to.version)?;
        let mut accepts = BTreeMap::new();
        for (k, vals) in raw.from.accepts {
            if Param::from_name(&k).is_none() {
                return Err(SpecError::Invalid(format!(
                    "from.accepts: unknown layout parameter `{k}` (one of {})",
                    param_names()
                )));
            }
            let vals = vals
                .iter()
                .map(|v| {
                    scalar_text(v).ok_or_else(|| {
                        SpecError::Invalid(format!("from.accepts.{k}: values are scalars"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            accepts.insert(k, vals);
        }
        let mut params = BTreeMap::new();
        for (k, v) in raw.to.params {
            let text = scalar_text(&v).ok_or_else(|| {
                SpecError::Invalid(format!("to.params.{k}: a scalar or `source`"))
            })?;
            let pv = if text == "source" {
                ParamValue::Source
            } else {
                set_param(&mut LayoutParams::default(), &k, &text)
                    .map_err(|e| e.within("to.params"))?;
                ParamValue::Value(text)
            };
            params.insert(k, pv);
        }
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile_rule(i + 1, r).map_err(|e| e.within(format!("rule {}", i + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        let entries = raw
            .entries
            .into_iter()
            .map(|e| {
                let action = match (e.action.as_str(), &e.value) {
                    ("keep", None) => EntryAction::Keep,
                    ("drop", None) => EntryAction::Drop,
                    ("set", Some(v)) => EntryAction::Set(Value::from_yaml(v)),
                    ("set", None) => {
                        return Err(SpecError::Invalid(format!(
                            "entry `{}`: `set` needs a `value`",
                            e.key
                        )))
                    }
                    (a @ ("keep" | "drop"), Some(_)) => {
                        return Err(SpecError::Invalid(format!(
                            "entry `{}`: `{a}` takes no `value`",
                            e.key
                        )))
                    }
                    (other, _) => {
                        return Err(SpecError::Invalid(format!(
                            "entry `{}`: unknown action `{other}` (keep, drop, set)",
                            e.key
                        )))
                    }
                };
                if e.key.is_empty() || e.key.split('.').any(str::is_empty) {
                    return Err(SpecError::Invalid(format!(
                        "entry key `{}` is not a dotted path",
                        e.key
                    )));
                }
                Ok(EntryRule {
                    key: e.key,
                    action,
                    warn: e.warn,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Spec {
            name: raw.name,
            description: raw.description.trim().to_string(),
            warn: raw.warn,
            origin: origin.to_string(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            from,
            accepts,
            to,
            params,
            rules,
            entries,
        })
    }
}

impl Spec {
    /// The rules as they apply to one source layout converted to one target layout: rules
    /// whose `when` is false left out, `for` loops unrolled (one instance per value, all
    /// with the rule's number), `{expr}` key segments replaced by their values.
    pub fn expand(&self, src: &LayoutParams, dst: &LayoutParams) -> Result<Vec<Rule>, SpecError> {
        let mut base = symbol_env(src);
        base.extend(symbol_env(dst));
        let mut out = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            if rule.when.as_ref().is_some_and(|w| w.eval(&base) == 0) {
                continue;
            }
            let mut combos: Vec<Vec<i64>> = vec![Vec::new()];
            for (name, a, b) in &rule.loops {
                let (a, b) = (a.eval(&base), b.eval(&base));
                let count = b.saturating_sub(a).max(0);
                if (combos.len() as i64).saturating_mul(count) > MAX_INSTANCES {
                    return Err(SpecError::Invalid(format!(
                        "rule {}: `for: {{{name}: {a}..{b}}}` gives more than {MAX_INSTANCES} instances",
                        rule.number
                    )));
                }
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        (a..b).map(move |v| {
                            let mut c = c.clone();
                            c.push(v);
                            c
                        })
                    })
                    .collect();
            }
            for values in combos {
                let mut env = base.clone();
                env.extend(values);
                let bind = |p: &Pattern| {
                    p.bind(&env)
                        .map_err(|e| SpecError::from(e).within(format!("rule {}", rule.number)))
                };
                let from = rule.from.as_ref().map(bind).transpose()?;
                let to: Vec<Pattern> = rule.to.iter().map(bind).collect::<Result<_, _>>()?;
                // A family-wide rename may leave a key in place for some layouts (the output
                // Linear of a 2-layer dropout projection): there it is a copy.
                let op = match rule.op {
                    OpKind::Rename
                        if from.as_ref().map(Pattern::text) == to.first().map(Pattern::text) =>
                    {
                        OpKind::Copy
                    }
                    ref op => op.clone(),
                };
                out.push(Rule {
                    op,
                    from,
                    to,
                    loops: Vec::new(),
                    when: None,
                    ..rule.clone()
                });
            }
        }
        Ok(out)
    }
}

fn compile_rule(number: usize, r: RawRule) -> Result<Rule, SpecError> {
    let op = match r.op.as_str() {
        "copy" => OpKind::Copy,
        "rename" => OpKind::Rename,
        "duplicate" => OpKind::Duplicate,
        "drop" => OpKind::Drop,
        "init" => OpKind::Init,
        "slice" => OpKind::Slice(parse_pairs(
            r.ranges.as_deref().ok_or(SpecError::Rule("`slice` needs `ranges: [[start, end], …]`"))?,
            "ranges",
        )?),
        "pad" => OpKind::Pad(
            parse_pairs(
                r.pad.as_deref().ok_or(SpecError::Rule("`pad` needs `pad: [[before, after], …]`"))?,
                "pad",
            )?,
            r.value.unwrap_or(0.0),
        ),
        "reshape" => OpKind::Reshape,
        "transpose" => OpKind::Transpose(r.perm.clone().ok_or(SpecError::Rule("`transpose` needs `perm: [1, 0]`"))?),
        other => {
            return Err(SpecError::Invalid(format!(
                "unknown op `{other}` (copy, rename, duplicate, drop, init, slice, pad, reshape, transpose)"
            )))
        }
    };
    let name = op.name();
    if r.ranges.is_some() && !matches!(op, OpKind::Slice(_)) {
        return Err(SpecError::Invalid(format!(
            "`ranges` belongs to slice, not {name}"
        )));
    }
    if (r.pad.is_some() || r.value.is_some()) && !matches!(op, OpKind::Pad(..)) {
        return Err(SpecError::Invalid(format!(
            "`pad`/`value` belong to pad, not {name}"
        )));
    }
    if r.perm.is_some() && !matches!(op, OpKind::Transpose(_)) {
        return Err(SpecError::Invalid(format!(
            "`perm` belongs to transpose, not {name}"
        )));
    }
    // Loops: `for: {k: "a..b"}`, bounds over the source layout (`target.NAME` for the
    // target's).
    let mut loop_names: Vec<String> = Vec::new();
    let mut loops = Vec::new();
    for (name, range) in &r.for_ {
        let plain = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain || symbol_slot(name).is_some() || name == "source" || name == "target" {
            return Err(SpecError::Invalid(format!(
                "for.{name}: a loop variable is a new plain name (not a layout variable)"
            )));
        }
        let (a, b) = range.split_once("..").ok_or_else(|| {
            SpecError::Invalid(format!(
                "for.{name}: a range is `start..end` (end excluded), e.g. `1..projection_layers`"
            ))
        })?;
        let bound = |t: &str| {
            expr::parse(t.trim(), &|v| scoped_slot(v, Side::Source, &[]))
                .map(DimExpr)
                .map_err(|e| {
                    SpecError::from(e)
                        .within(format!("`{range}`"))
                        .within(format!("for.{name}"))
                })
        };
        loops.push((name.clone(), bound(a)?, bound(b)?));
        loop_names.push(name.clone());
    }
    let when = r
        .when
        .as_ref()
        .map(|w| {
            let t = scalar_text(w).ok_or(SpecError::Rule(
                "`when` is an expression over the layout variables",
            ))?;
            expr::parse(&t, &|v| scoped_slot(v, Side::Source, &[]))
                .map(DimExpr)
                .map_err(|e| SpecError::from(e).within("when"))
        })
        .transpose()?;
    let src_vars = |v: &str| scoped_slot(v, Side::Source, &loop_names);
    let dst_vars = |v: &str| scoped_slot(v, Side::Target, &loop_names);
    let from = r
        .from
        .as_deref()
        .map(|p| Pattern::parse_with(p, Some(&src_vars)))
        .transpose()?;
    let to: Vec<Pattern> = match r.to {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![Pattern::parse_with(&s, Some(&dst_vars))?],
        Some(OneOrMany::Many(v)) => v
            .iter()
            .map(|s| Pattern::parse_with(s, Some(&dst_vars)))
            .collect::<Result<_, _>>()?,
    };

    match (&op, from.is_some(), to.len()) {
        (OpKind::Init, true, _) => {
            return Err(SpecError::Rule(
                "`init` creates a tensor: it has `to`, no `from`",
            ))
        }
        (OpKind::Init, false, 1) => {}
        (OpKind::Drop, true, 0) => {}
        (OpKind::Drop, _, _) => return Err(SpecError::Rule("`drop` has `from` and no `to`")),
        (OpKind::Duplicate, true, n) if n >= 2 => {}
        (OpKind::Duplicate, _, _) => {
            return Err(SpecError::Rule(
                "`duplicate` has `from` and a list of two or more `to` keys",
            ))
        }
        (_, true, 1) => {}
        (_, _, _) => {
            return Err(SpecError::Invalid(format!(
                "`{name}` needs `from` and one `to`"
            )))
        }
    }
    if r.fallback && !matches!(op, OpKind::Init) {
        return Err(SpecError::Rule("`fallback` applies to `init` rules only"));
    }
    // (With `{expr}` segments the two sides read different layouts: a rename whose key
    // comes out unchanged for a layout is a copy there, see `Spec::expand`.)
    if matches!(op, OpKind::Rename)
        && !from.as_ref().is_some_and(Pattern::has_exprs)
        && from.as_ref().map(Pattern::text) == to.first().map(Pattern::text)
    {
        return Err(SpecError::Rule(
            "`rename` needs a `to` different from `from` (use copy)",
        ));
    }
    // Captures: `to` may only use what `from` binds; `init` captures need a `where` list.
    let bound: Vec<String> = from
        .iter()
        .flat_map(|p| p.captures().map(str::to_string))
        .collect();
    let mut allowed = BTreeMap::new();
    for (k, vals) in &r.where_ {
        let vals = vals
            .iter()
            .map(|v| {
                scalar_text(v)
                    .ok_or_else(|| SpecError::Invalid(format!("where.{k}: values are scalars")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if vals.is_empty() {
            return Err(SpecError::Invalid(format!("where.{k} lists no values")));
        }
        allowed.insert(k.clone(), vals);
    }
    let used: Vec<String> = from
        .iter()
        .chain(&to)
        .flat_map(|p| p.captures().map(str::to_string))
        .collect();
    for k in allowed.keys() {
        if !used.contains(k) {
            return Err(SpecError::Invalid(format!(
                "where.{k}: no pattern of the rule has a capture `{{{k}}}`"
            )));
        }
    }
    for p in &to {
        for c in p.captures() {
            let ok = if from.is_some() {
                bound.iter().any(|b| b == c)
            } else {
                allowed.contains_key(c)
            };
            if !ok {
                return Err(if from.is_some() {
                    SpecError::Invalid(format!(
                        "`to: {p}` uses `{{{c}}}`, which `from` does not capture"
                    ))
                } else {
                    SpecError::Invalid(format!("`to: {p}` uses `{{{c}}}`: an init rule lists its values in `where: {{{c}: [...]}}`"))
                });
            }
        }
        if p.has_multi_segment_capture() && from.is_none() {
            return Err(SpecError::Rule(
                "init keys cannot use multi-segment captures",
            ));
        }
    }
    let rule_init = r.init.as_ref().map(parse_init).transpose()?;
    if rule_init.is_some() && !matches!(op, OpKind::Init) {
        return Err(SpecError::Invalid(format!(
            "`init` belongs to init rules, not {name}"
        )));
    }
    let rule_dtype = parse_dtype(r.dtype.as_deref())?;
    let make = |suffix: Option<String>,
                shape: Option<&str>,
                init: Option<InitSpec>,
                dtype: DType|
     -> Result<TensorRule, SpecError> {
        let what = suffix
            .as_deref()
            .map(|s| format!("tensors.{s}: "))
            .unwrap_or_default();
        let (a, b) = match shape {
            Some(s) => split_arrow(s).map_err(|e| SpecError::Invalid(format!("{what}{e}")))?,
            None => (None, None),
        };
        let (from_shape, to_shape) = match &op {
            OpKind::Drop => {
                if b.is_some() {
                    return Err(SpecError::Invalid(format!("{what}a dropped tensor has only a source shape (`[16, 64]`)")));
                }
                (a, None)
            }
            OpKind::Init => {
                if b.is_some() || a.is_none() {
                    return Err(SpecError::Invalid(format!("{what}a new tensor states its shape: `shape: \"[64]\"`")));
                }
                (None, a)
            }
            _ => match (a, b) {
                (Some(a), Some(b)) => (Some(a), Some(b)),
                _ => {
                    return Err(SpecError::Invalid(format!(
                        "{what}`{name}` asserts source and target shapes: `shape: \"[16, 64] -> [16, 64]\"`"
                    )))
                }
            },
        };
        let init = init.or_else(|| rule_init.clone());
        if matches!(op, OpKind::Init) && init.is_none() {
            return Err(SpecError::Invalid(format!(
                "{what}an init rule says how: `init: ones` (or zeros, identity, seeded …)"
            )));
        }
        Ok(TensorRule {
            suffix,
            from_shape,
            to_shape,
            init,
            dtype,
        })
    };
    let tensors = match &r.tensors {
        None => vec![make(None, r.shape.as_deref(), None, rule_dtype)?],
        Some(map) => {
            if r.shape.is_some() {
                return Err(SpecError::Rule(
                    "give either `shape` or `tensors`, not both",
                ));
            }
            if map.is_empty() {
                return Err(SpecError::Rule("`tensors` lists no tensors"));
            }
            map.iter()
                .map(|(k, v)| {
                    let suffix =
                        scalar_text(k).ok_or(SpecError::Rule("tensor names are strings"))?;
                    if suffix.is_empty() || suffix.contains(['{', '}']) {
                        return Err(SpecError::Invalid(format!(
                            "tensor name `{suffix}` is not a plain name"
                        )));
                    }
                    match v {
                        serde_yaml::Value::String(s) => {
                            make(Some(suffix), Some(s), None, rule_dtype)
                        }
                        serde_yaml::Value::Null if matches!(op, OpKind::Drop) => {
                            make(Some(suffix), None, None, rule_dtype)
                        }
                        other => {
                            let t: RawTensor =
                                serde_yaml::from_value(other.clone()).map_err(|e| {
                                    SpecError::from(e).within(format!("tensors.{suffix}"))
                                })?;
                            let init = t
                                .init
                                .as_ref()
                                .map(parse_init)
                                .transpose()
                                .map_err(|e| e.within(format!("tensors.{suffix}")))?;
                            if init.is_some() && !matches!(op, OpKind::Init) {
                                return Err(SpecError::Invalid(format!(
                                    "tensors.{suffix}: `init` belongs to init rules"
                                )));
                            }
                            let dtype = match t.dtype.as_deref() {
                                Some(d) => parse_dtype(Some(d))?,
                                None => rule_dtype,
                            };
                            make(Some(suffix), Some(&t.shape), init, dtype)
                        }
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if !matches!(op, OpKind::Drop)
        && tensors
            .iter()
            .any(|t| t.from_shape.is_none() && t.to_shape.is_none())
    {
        return Err(SpecError::Rule("every tensor states its shape"));
    }
    Ok(Rule {
        number,
        op,
        from,
        to,
        allowed,
        tensors,
        fallback: r.fallback,
        note: r.note,
        loops,
        when,
        warn: r.warn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rules: &str) -> Result<Spec, SpecError> {
        let text =
            format!("name: t\nfrom: {{version: v5_11}}\nto: {{version: v5_12_4}}\nrules:\n{rules}");
        Spec::parse(&text, "test")
    }

    #[test]
    fn spec_errors_say_where_and_carry_the_expression_column() {
        let e = spec("  - {op: drop, from: 'a.b', when: 'L > '}\n").unwrap_err();
        let SpecError::In { at, source } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(at, "rule 1");
        let SpecError::In { at, source } = &**source else {
            panic!("{source:?}");
        };
        assert_eq!(at, "when");
        let SpecError::Expression(x) = &**source else {
            panic!("{source:?}");
        };
        assert_eq!(x.column, 5, "just past `L > `");
        assert_eq!(e.to_string(), "rule 1: when: unexpected end of expression");
    }

    #[test]
    fn a_minimal_spec_compiles() {
        let s = spec(
            "  - {op: copy, from: 'encoder_{X}.fc_mu', to: 'encoder_{X}.fc_mu', tensors: {weight: '[L, 64] -> [L, 64]', bias: '[L] -> [L]'}}\n  - {op: init, to: 'encoder_{X}.encoder.1', where: {X: [A, B]}, init: ones, tensors: {weight: '[256]'}}\n  - {op: drop, from: 'decoder_B.{rest*}'}\n",
        )
        .unwrap();
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[0].tensors.len(), 2);
        // L = 16, H = 64 (so R = 32).
        let mut params = crate::arch::default_params(VersionId::V5_12_4);
        (params.latent_dim, params.hidden_dim) = (16, 64);
        let env = symbol_env(&params);
        assert_eq!(
            s.rules[0].tensors[0]
                .from_shape
                .as_ref()
                .unwrap()
                .eval(&env)
                .unwrap(),
            vec![16, 64]
        );
        assert_eq!(s.sha256.len(), 64);
    }

    #[test]
    fn rule_errors_are_specific() {
        let cases = [
            (
                "  - {op: move, from: a, to: b, shape: '[1] -> [1]'}",
                "unknown op",
            ),
            (
                "  - {op: copy, from: a, to: b}",
                "asserts source and target shapes",
            ),
            (
                "  - {op: copy, from: a, to: 'b.{X}', shape: '[1] -> [1]'}",
                "does not capture",
            ),
            (
                "  - {op: init, to: 'b.{X}', shape: '[1]', init: ones}",
                "where",
            ),
            (
                "  - {op: init, to: b, shape: '[1]', init: {normal: {std: 1}}}",
                "seed",
            ),
            ("  - {op: init, to: b, shape: '[1]'}", "says how"),
            (
                "  - {op: duplicate, from: a, to: b, shape: '[1] -> [1]'}",
                "two or more",
            ),
            (
                "  - {op: copy, from: a, to: b, shape: '[Q] -> [1]'}",
                "symbols",
            ),
            (
                "  - {op: rename, from: a, to: a, shape: '[1] -> [1]'}",
                "different",
            ),
            (
                "  - {op: copy, from: a, to: b, shape: '[1] -> [1]', fallback: true}",
                "fallback",
            ),
            (
                "  - {op: slice, from: a, to: b, shape: '[4] -> [2]'}",
                "ranges",
            ),
            (
                "  - {op: copy, from: a, to: b, shape: '[1] -> [1]', bogus: 1}",
                "bogus",
            ),
        ];
        for (rule, want) in cases {
            let err = spec(rule).unwrap_err().to_string();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }

    #[test]
    fn loops_when_and_index_expressions_expand_per_layout() {
        let s = spec(concat!(
            "  - op: rename\n",
            "    for: {k: '1..min(projection_layers, target.projection_layers)'}\n",
            "    when: dual_projection\n",
            "    from: 'projection.proj_{Y}.direction_net.{k * direction_stride}'\n",
            "    to: 'projection.proj_{Y}.direction_net.{k * direction_stride}'\n",
            "    warn: moved\n",
            "    tensors: {weight: '[H, H] -> [H, H]'}\n",
            "  - op: init\n",
            "    for: {k: 'projection_layers..target.projection_layers'}\n",
            "    to: 'projection.proj_{Y}.radius_net.{k * radius_stride}'\n",
            "    where: {Y: [A, B]}\n",
            "    tensors: {weight: {shape: '[R, R]', init: identity}}\n",
        ))
        .unwrap();
        assert_eq!(s.rules[0].warn.as_deref(), Some("moved"));
        let target = crate::arch::default_params(VersionId::V5_12_4);
        let mut src = crate::arch::default_params(VersionId::V5_11);
        // 1 layer, single: the rename's loop is empty and its `when` false; the init gives
        // the missing block 1 at 1 * 3 in the target.
        let r = s.expand(&src, &target).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].to[0].text(), "projection.proj_{Y}.radius_net.3");
        assert!(r.iter().all(|r| r.loops.is_empty() && r.when.is_none()));
        // 4 layers, dual, no dropout: block 1 moves from 3 to 4; nothing to init.
        (src.projection_layers, src.dual_projection) = (4, true);
        let r = s.expand(&src, &target).unwrap();
        assert_eq!(r.len(), 1);
        assert!(matches!(r[0].op, OpKind::Rename));
        assert_eq!(
            r[0].from.as_ref().unwrap().text(),
            "projection.proj_{Y}.direction_net.3"
        );
        assert_eq!(r[0].to[0].text(), "projection.proj_{Y}.direction_net.4");
        // With dropout the key stays: the rename is a copy there.
        src.projection_dropout = true;
        let r = s.expand(&src, &target).unwrap();
        assert!(matches!(r[0].op, OpKind::Copy));
    }

    #[test]
    fn loop_and_condition_errors_are_specific() {
        let cases = [
            (
                "  - {op: init, for: {k: '0 3'}, to: 'a.{k}', shape: '[1]', init: ones}",
                "start..end",
            ),
            (
                "  - {op: init, for: {L: '0..3'}, to: 'a.{L}', shape: '[1]', init: ones}",
                "loop variable",
            ),
            (
                "  - {op: init, for: {k: '0..nope'}, to: 'a.{k}', shape: '[1]', init: ones}",
                "for.k",
            ),
            (
                "  - {op: init, when: 'nope', to: a, shape: '[1]', init: ones}",
                "when",
            ),
            (
                "  - {op: copy, from: 'a.{k +}', to: b, shape: '[1] -> [1]'}",
                "neither a capture",
            ),
            (
                "  - {op: copy, from: 'a.{source.nope}', to: b, shape: '[1] -> [1]'}",
                "neither a capture",
            ),
        ];
        for (rule, want) in cases {
            let err = spec(rule).unwrap_err().to_string();
            assert!(err.contains(want), "{rule}: {err}");
        }
        // A loop that would unroll without bound is refused when applied.
        let s = spec("  - {op: init, for: {k: '0..2 * hidden_dim * hidden_dim'}, to: 'a.{k}', shape: '[1]', init: ones}").unwrap();
        let p = crate::arch::default_params(VersionId::V5_12_4);
        assert!(s
            .expand(&p, &p)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }

    #[test]
    fn layout_parameters_round_trip_through_text() {
        use crate::arch::{self, VersionId};
        let p = arch::default_params(VersionId::V5_12_4);
        let mut q = LayoutParams::default();
        for param in Param::ALL {
            let text = param_text(&p, param.name()).unwrap();
            set_param(&mut q, param.name(), &text).unwrap();
        }
        assert_eq!(q, p);
        assert_eq!(param_text(&p, "encoder").as_deref(), Some("improved"));
        assert!(set_param(&mut q, "encoder", "fancy")
            .unwrap_err()
            .to_string()
            .contains("not a valid value"));
        assert!(set_param(&mut q, "layers", "2")
            .unwrap_err()
            .to_string()
            .contains("unknown layout parameter"));
    }

    #[test]
    fn params_and_entries() {
        let text = "name: t\nfrom: {version: v5_11, accepts: {projection_layers: [1]}}\nto: {version: v5_12_4, params: {latent_dim: source, projection_layers: 2}}\nrules: []\nentries:\n  - {key: optimizer_state_dict, action: drop, warn: gone}\n  - {key: config.model.projection_layers, action: set, value: 2}\n";
        let s = Spec::parse(text, "t").unwrap();
        assert_eq!(s.params["latent_dim"], ParamValue::Source);
        assert_eq!(s.entries[1].action, EntryAction::Set(Value::Int(2)));
        assert!(
            Spec::parse(&text.replace("projection_layers: [1]", "layers: [1]"), "t")
                .unwrap_err()
                .to_string()
                .contains("unknown layout parameter")
        );
        assert!(
            Spec::parse(&text.replace("action: drop", "action: nuke"), "t")
                .unwrap_err()
                .to_string()
                .contains("unknown action")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Any text, and the shipped spec with any run of lines removed or any line
        /// duplicated, parses or errors: never a panic.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}", cut in 0usize..400, len in 0usize..12, dup in 0usize..400) {
            let _ = Spec::parse(&text, "prop");
            let lines: Vec<&str> = super::super::EMBEDDED_SPECS[1].1.lines().collect();
            let a = cut.min(lines.len());
            let b = (a + len).min(lines.len());
            let cut_text = [&lines[..a], &lines[b..]].concat().join("\n");
            let _ = Spec::parse(&cut_text, "prop");
            let mut d = lines.clone();
            let i = dup.min(d.len().saturating_sub(1));
            if !d.is_empty() {
                d.insert(i, d[i]);
            }
            let _ = Spec::parse(&d.join("\n"), "prop");
        }
    }
}
