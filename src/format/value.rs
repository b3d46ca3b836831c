//! The value tree a checkpoint's pickle (or safetensors metadata) decodes to.
//!
//! Nothing in here can execute anything: every value is plain data. Tensors are
//! referenced by index into [`crate::format::Checkpoint::tensors`].

use serde::Serialize;
use serde_json::json;

use super::TensorInfo;

/// A decoded Python value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    #[default]
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit i64, as its decimal representation.
    BigInt(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A dict or OrderedDict, in insertion order. Keys are usually `Str`.
    Dict(Vec<(Value, Value)>),
    /// A tensor: an index into `Checkpoint::tensors`.
    Tensor(usize),
    /// A numpy scalar (`numpy.core.multiarray.scalar(dtype, bytes)`), decoded.
    NumpyScalar {
        /// numpy dtype string, e.g. "f8", "f4", "i8", "b1".
        dtype: String,
        value: Box<Value>,
    },
    /// An instance of a known-safe class that has no better representation
    /// (e.g. `argparse.Namespace`): its class path, constructor args and state.
    Object {
        class: String,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    /// A reference to a global that was *not* called: e.g. a class object,
    /// `torch.float32`, or an unsafe callable (recorded as a finding).
    Global(String),
    /// What an unsafe global call would have produced. Nothing was called.
    Blocked {
        global: String,
    },
}

impl Value {
    /// The value under `key` if this is a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                _ => None,
            }),
            Value::Object {
                state: Some(state), ..
            } => state.get(key),
            _ => None,
        }
    }

    /// Whether two values are the same decoded data: `==` except that floats compare by
    /// their bits, so a NaN is identical to the same NaN (and `0.0` is not `-0.0`). What
    /// "two readers decoded the same thing" means; `==` calls a file holding a NaN
    /// different from itself.
    pub fn identical(&self, other: &Value) -> bool {
        fn all(a: &[Value], b: &[Value]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.identical(y))
        }
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => all(a, b),
            (Value::Dict(a), Value::Dict(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka.identical(kb) && va.identical(vb))
            }
            (
                Value::NumpyScalar {
                    dtype: da,
                    value: va,
                },
                Value::NumpyScalar {
                    dtype: db,
                    value: vb,
                },
            ) => da == db && va.identical(vb),
            (
                Value::Object {
                    class: ca,
                    args: aa,
                    state: sa,
                },
                Value::Object {
                    class: cb,
                    args: ab,
                    state: sb,
                },
            ) => {
                ca == cb
                    && all(aa, ab)
                    && match (sa, sb) {
                        (Some(x), Some(y)) => x.identical(y),
                        (None, None) => true,
                        _ => false,
                    }
            }
            (a, b) => a == b,
        }
    }

    /// Follow a dotted path of dict keys (`"config.model.name"`).
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, k| v.get(k))
    }

    /// A number as f64 (ints, floats, bools and numpy scalars).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::NumpyScalar { value, .. } => value.as_f64(),
            _ => None,
        }
    }

    /// An integer (ints, integral numpy scalars).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::NumpyScalar { value, .. } => value.as_i64(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::NumpyScalar { value, .. } => value.as_bool(),
            _ => None,
        }
    }

    /// Short type name for display.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::NumpyScalar { .. } => "numpy scalar",
            Value::Object { .. } => "object",
            Value::Global(_) => "global",
            Value::Blocked { .. } => "blocked call",
        }
    }
}

impl Value {
    /// A YAML value as plain data (a training config, a migration spec's `set` value):
    /// tags are dropped (the tagged value is kept), mapping keys become strings (non-string
    /// keys as their YAML text).
    pub fn from_yaml(v: &serde_yaml::Value) -> Value {
        use serde_yaml::Value as Y;
        match v {
            Y::Null => Value::None,
            Y::Bool(b) => Value::Bool(*b),
            Y::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
            Y::String(s) => Value::Str(s.clone()),
            Y::Sequence(items) => Value::List(items.iter().map(Value::from_yaml).collect()),
            Y::Mapping(m) => Value::Dict(
                m.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Y::String(s) => s.clone(),
                            other => serde_yaml::to_string(other)
                                .unwrap_or_default()
                                .trim()
                                .to_string(),
                        };
                        (Value::Str(key), Value::from_yaml(v))
                    })
                    .collect(),
            ),
            Y::Tagged(t) => Value::from_yaml(&t.value),
        }
    }

    /// A JSON value as plain data (objects become string-keyed dicts, in order).
    pub fn from_json(v: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match v {
            J::Null => Value::None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Dict(
                o.iter()
                    .map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

// ---- One-line text of values (inspect's tree, plan and check messages). ----

/// Longest string shown whole in one-line value text.
const MAX_STR: usize = 120;

/// A dict key as text (strings bare).
pub fn key_text(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => scalar_text(other, &[]).unwrap_or_else(|| other.kind().to_string()),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > MAX_STR {
        let cut: String = s.chars().take(MAX_STR).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

fn float_text(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// One-line text for a leaf value (tensors described from `tensors`); `None` for
/// containers.
pub fn scalar_text(v: &Value, tensors: &[TensorInfo]) -> Option<String> {
    Some(match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(s) => s.clone(),
        Value::Float(f) => float_text(*f),
        Value::Str(s) => format!("{:?}", truncate(s)),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::Tensor(i) => match tensors.get(*i) {
            Some(t) => format!("tensor {} {}", t.dtype, super::shape_text(&t.shape)),
            None => format!("tensor #{i}"),
        },
        Value::NumpyScalar { dtype, value } => {
            format!(
                "{} (numpy {dtype})",
                scalar_text(value, tensors).unwrap_or_default()
            )
        }
        Value::Global(g) => format!("<global {g}>"),
        Value::Blocked { global } => format!("<BLOCKED call of {global}>"),
        _ => return None,
    })
}

/// One line of Python-like text for a plain value, containers inline
/// (`{"a": [1, True]}`); tensors as `tensor #i`.
pub fn value_text(v: &Value) -> String {
    let join = |items: &[Value]| items.iter().map(value_text).collect::<Vec<_>>().join(", ");
    match v {
        Value::List(items) => format!("[{}]", join(items)),
        Value::Tuple(items) => format!("({})", join(items)),
        Value::Dict(items) => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!("{}: {}", value_text(k), value_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => scalar_text(other, &[]).unwrap_or_else(|| format!("<{}>", other.kind())),
    }
}

/// The tree as plain JSON: dicts → objects, lists/tuples → arrays, numpy scalars →
/// numbers, tensors → `{"tensor": path, "dtype", "shape"}`, globals and blocked calls →
/// tagged objects. Non-finite floats become strings (`"NaN"`, `"inf"`).
pub fn value_json(v: &Value, tensors: &[TensorInfo]) -> serde_json::Value {
    match v {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::BigInt(s) => json!({ "bigint": s }),
        Value::Float(f) => {
            if f.is_finite() {
                json!(f)
            } else {
                json!(f.to_string())
            }
        }
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
        Value::List(items) | Value::Tuple(items) => {
            serde_json::Value::Array(items.iter().map(|i| value_json(i, tensors)).collect())
        }
        Value::Dict(items) => {
            let mut map = serde_json::Map::new();
            for (k, val) in items {
                map.insert(key_text(k), value_json(val, tensors));
            }
            serde_json::Value::Object(map)
        }
        Value::Tensor(i) => match tensors.get(*i) {
            Some(t) => json!({ "tensor": t.path, "dtype": t.dtype, "shape": t.shape }),
            None => json!({ "tensor": i }),
        },
        Value::NumpyScalar { value, .. } => value_json(value, tensors),
        Value::Object { class, args, state } => json!({
            "object": class,
            "args": args.iter().map(|a| value_json(a, tensors)).collect::<Vec<_>>(),
            "state": state.as_ref().map(|s| value_json(s, tensors)),
        }),
        Value::Global(g) => json!({ "global": g }),
        Value::Blocked { global } => json!({ "blocked_call": global }),
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::Value;

    #[test]
    fn yaml_and_json_become_plain_values() {
        let y: serde_yaml::Value =
            serde_yaml::from_str("a: 1\nb: [true, 0.5, x]\n2: !t null\n").unwrap();
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(
            Value::from_yaml(&y),
            Value::Dict(vec![
                (s("a"), Value::Int(1)),
                (
                    s("b"),
                    Value::List(vec![Value::Bool(true), Value::Float(0.5), s("x")])
                ),
                (s("2"), Value::None),
            ])
        );
        let j: serde_json::Value = serde_json::from_str(r#"{"q": 1.5, "n": null}"#).unwrap();
        assert_eq!(
            Value::from_json(&j),
            Value::Dict(vec![(s("q"), Value::Float(1.5)), (s("n"), Value::None)])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Value;

    #[test]
    fn identical_compares_float_bits_at_any_depth() {
        let nan = |bits: u64| Value::Float(f64::from_bits(bits));
        let quiet = 0x7ff8_0000_0000_0000;
        assert!(nan(quiet).identical(&nan(quiet)));
        assert_ne!(nan(quiet), nan(quiet));
        assert!(!nan(quiet).identical(&nan(0x7ff8_0000_0000_0001)));
        assert!(!Value::Float(0.0).identical(&Value::Float(-0.0)));
        let tree = |x: Value| {
            Value::Dict(vec![(
                Value::Str("metrics".into()),
                Value::List(vec![
                    Value::Int(1),
                    Value::Tuple(vec![x.clone()]),
                    Value::NumpyScalar {
                        dtype: "f8".into(),
                        value: Box::new(x.clone()),
                    },
                    Value::Object {
                        class: "argparse.Namespace".into(),
                        args: vec![x.clone()],
                        state: Some(Box::new(x)),
                    },
                ]),
            )])
        };
        assert!(tree(nan(quiet)).identical(&tree(nan(quiet))));
        assert!(!tree(nan(quiet)).identical(&tree(Value::Float(1.0))));
        assert!(!tree(Value::Int(1)).identical(&Value::List(vec![])));
    }
}
