//! The non-tensor tree of a checkpoint, as indented text and as JSON.

use crate::format::value::{key_text, scalar_text};
use crate::format::{TensorInfo, Value};

const MAX_INLINE_ITEMS: usize = 12;
const MAX_LIST_LINES: usize = 20;

fn is_leaf(v: &Value) -> bool {
    !matches!(
        v,
        Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Object { .. }
    )
}

/// Render the tree as indented `key: value` lines. Dicts holding only tensors (state
/// dicts) are collapsed to a count, since `inspect` lists tensors separately.
pub fn render(root: &Value, tensors: &[TensorInfo]) -> String {
    let mut out = String::new();
    render_into(&mut out, root, tensors, 0);
    out
}

fn render_into(out: &mut String, v: &Value, tensors: &[TensorInfo], depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Dict(items) => {
            for (k, val) in items {
                let key = key_text(k);
                line(out, &pad, &key, val, tensors, depth);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, val) in items.iter().enumerate().take(MAX_LIST_LINES) {
                line(out, &pad, &format!("[{i}]"), val, tensors, depth);
            }
            if items.len() > MAX_LIST_LINES {
                out.push_str(&format!("{pad}… {} more\n", items.len() - MAX_LIST_LINES));
            }
        }
        Value::Object { class, args, state } => {
            out.push_str(&format!("{pad}<{class}>\n"));
            if !args.is_empty() {
                render_into(out, &Value::Tuple(args.clone()), tensors, depth + 1);
            }
            if let Some(s) = state {
                render_into(out, s, tensors, depth + 1);
            }
        }
        leaf => {
            let text = scalar_text(leaf, tensors).unwrap_or_default();
            out.push_str(&format!("{pad}{text}\n"));
        }
    }
}

fn line(out: &mut String, pad: &str, key: &str, val: &Value, tensors: &[TensorInfo], depth: usize) {
    if let Some(text) = scalar_text(val, tensors) {
        out.push_str(&format!("{pad}{key}: {text}\n"));
        return;
    }
    match val {
        Value::Dict(items)
            if !items.is_empty() && items.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) =>
        {
            out.push_str(&format!("{pad}{key}: {} tensors\n", items.len()));
        }
        Value::Dict(items) if items.is_empty() => out.push_str(&format!("{pad}{key}: {{}}\n")),
        Value::List(items) | Value::Tuple(items)
            if items.iter().all(is_leaf) && items.len() <= MAX_INLINE_ITEMS =>
        {
            let texts: Vec<String> = items
                .iter()
                .map(|i| scalar_text(i, tensors).unwrap_or_default())
                .collect();
            let (open, close) = if matches!(val, Value::Tuple(_)) {
                ("(", ")")
            } else {
                ("[", "]")
            };
            out.push_str(&format!("{pad}{key}: {open}{}{close}\n", texts.join(", ")));
        }
        Value::List(items) | Value::Tuple(items) if items.iter().all(is_leaf) => {
            let texts: Vec<String> = items
                .iter()
                .take(MAX_INLINE_ITEMS)
                .map(|i| scalar_text(i, tensors).unwrap_or_default())
                .collect();
            out.push_str(&format!(
                "{pad}{key}: [{}, … {} items]\n",
                texts.join(", "),
                items.len()
            ));
        }
        other => {
            out.push_str(&format!("{pad}{key}:\n"));
            render_into(out, other, tensors, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::value::value_json;
    use crate::format::DType;
    use serde_json::json;

    fn s(k: &str) -> Value {
        Value::Str(k.into())
    }

    #[test]
    fn renders_and_collapses_state_dicts() {
        let t = TensorInfo {
            path: "model.w".into(),
            dtype: DType::F32,
            shape: vec![2, 3],
            strides: vec![3, 1],
            storage_offset: 0,
            storage: 0,
            requires_grad: false,
        };
        let root = Value::Dict(vec![
            (s("epoch"), Value::Int(3)),
            (s("model"), Value::Dict(vec![(s("w"), Value::Tensor(0))])),
            (
                s("metrics"),
                Value::Dict(vec![(
                    s("Q"),
                    Value::NumpyScalar {
                        dtype: "f8".into(),
                        value: Box::new(Value::Float(1.5)),
                    },
                )]),
            ),
            (
                s("hist"),
                Value::List(vec![Value::Float(0.5), Value::Int(1)]),
            ),
            (
                s("bad"),
                Value::Blocked {
                    global: "posix.system".into(),
                },
            ),
        ]);
        let text = render(&root, std::slice::from_ref(&t));
        assert_eq!(
            text,
            "epoch: 3\nmodel: 1 tensors\nmetrics:\n  Q: 1.5 (numpy f8)\nhist: [0.5, 1]\nbad: <BLOCKED call of posix.system>\n"
        );
        let j = value_json(&root, std::slice::from_ref(&t));
        assert_eq!(j["metrics"]["Q"], json!(1.5));
        assert_eq!(j["model"]["w"]["shape"], json!([2, 3]));
        assert_eq!(j["bad"]["blocked_call"], json!("posix.system"));
        assert_eq!(value_json(&Value::Float(f64::NAN), &[]), json!("NaN"));
    }
}
