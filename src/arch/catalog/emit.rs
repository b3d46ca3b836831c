//! Generating a layout: walking a version's entries with an environment of parameter values.

use super::*;

impl Catalog {
    pub(super) fn emit(
        &self,
        entries: &[Entry],
        prefix: &mut String,
        env: &[i64],
        out: &mut Vec<KeyShape>,
        depth: usize,
    ) {
        for e in entries {
            if e.when.as_ref().is_some_and(|w| !w.truthy(env)) {
                continue;
            }
            match &e.kind {
                EntryKind::Tensor { name, shape } => {
                    out.push((
                        format!("{prefix}{name}"),
                        shape.iter().map(|d| dim(d, env)).collect(),
                    ));
                }
                EntryKind::Linear {
                    name,
                    out: o,
                    inp,
                    bias,
                } => {
                    linear(
                        out,
                        prefix,
                        name,
                        dim(o, env),
                        dim(inp, env),
                        bias.truthy(env),
                    );
                }
                EntryKind::LayerNorm { name, dim: d } => {
                    layernorm(out, prefix, name, dim(d, env));
                }
                EntryKind::Sequential { name, layers } => {
                    let mut index = 0u64;
                    let base = format!("{prefix}{name}.");
                    for l in layers {
                        if l.when.as_ref().is_some_and(|w| !w.truthy(env)) {
                            continue;
                        }
                        let repeat = l.repeat.eval(env).clamp(0, 4096);
                        for _ in 0..repeat {
                            let o = dim(&l.out, env);
                            linear(
                                out,
                                &base,
                                &index.to_string(),
                                o,
                                dim(&l.inp, env),
                                l.bias.truthy(env),
                            );
                            index += 1;
                            if l.norm.truthy(env) {
                                layernorm(out, &base, &index.to_string(), o);
                                index += 1;
                            }
                            if l.act.truthy(env) {
                                index += 1;
                            }
                            if l.dropout.truthy(env) {
                                index += 1;
                            }
                        }
                    }
                }
                EntryKind::Component { index, at } => {
                    if depth >= MAX_NESTING {
                        continue; // unreachable for a validated catalog
                    }
                    let len = prefix.len();
                    if let Some(at) = at {
                        prefix.push_str(at);
                        prefix.push('.');
                    }
                    self.emit(&self.components[*index].layout, prefix, env, out, depth + 1);
                    prefix.truncate(len);
                }
            }
        }
    }
}

pub(super) fn dim(e: &Expr, env: &[i64]) -> u64 {
    u64::try_from(e.eval(env)).unwrap_or(0)
}

pub(super) fn linear(
    out: &mut Vec<KeyShape>,
    prefix: &str,
    name: &str,
    o: u64,
    i: u64,
    bias: bool,
) {
    out.push((format!("{prefix}{name}.weight"), vec![o, i]));
    if bias {
        out.push((format!("{prefix}{name}.bias"), vec![o]));
    }
}

pub(super) fn layernorm(out: &mut Vec<KeyShape>, prefix: &str, name: &str, d: u64) {
    out.push((format!("{prefix}{name}.weight"), vec![d]));
    out.push((format!("{prefix}{name}.bias"), vec![d]));
}
