//! Turning the arena into the owned [`Value`] tree at `STOP`, under a budget (values,
//! payload bytes, depth), with cycles found rather than followed.

use super::*;

/// Materialisation budget, shared by every materialisation of one run.
#[derive(Debug, Default)]
pub(super) struct Budget {
    pub(super) values: usize,
    pub(super) bytes: u64,
}

impl Vm<'_, '_> {
    // ----- materialisation --------------------------------------------------

    pub(super) fn materialise_root(&mut self, id: Id) -> Result<Value, FormatError> {
        self.materialise(id)
    }

    pub(super) fn materialise(&mut self, id: Id) -> Result<Value, FormatError> {
        // Containers on the current path, by node id: reused between materialisations
        // (a finished materialisation leaves it all false).
        let mut on_path = std::mem::take(&mut self.on_path);
        if on_path.len() < self.nodes.len() {
            on_path.resize(self.nodes.len(), false);
        }
        let mut budget = std::mem::take(&mut self.budget);
        let r = self.mat(id, &mut budget, &mut on_path);
        self.budget = budget;
        if r.is_ok() {
            self.on_path = on_path;
        }
        r
    }

    /// Values the whole run may materialise: sharing may expand the arena, but only
    /// by a bounded factor (a memo bomb fails here instead of exhausting memory).
    pub(super) fn value_cap(&self) -> usize {
        self.opts
            .max_values
            .min(self.created().saturating_mul(16).saturating_add(1 << 18))
    }

    #[cold]
    pub(super) fn values_limit(&self, found: usize) -> FormatError {
        FormatError::Limit {
            limit: Limit::SharedValues,
            max: self.value_cap() as u64,
            found: found as u64,
            at: self.opts.location.clone(),
        }
    }

    #[cold]
    pub(super) fn bytes_limit(&self, found: u64) -> FormatError {
        FormatError::Limit {
            limit: Limit::SharedBytes,
            max: self.byte_cap(),
            found,
            at: self.opts.location.clone(),
        }
    }

    pub(super) fn byte_cap(&self) -> u64 {
        self.input_len().saturating_mul(16).saturating_add(64 << 20)
    }

    /// Materialise node `root` without recursion (the nesting depth is bounded by
    /// `max_depth`, not by the thread's stack).
    pub(super) fn mat(
        &self,
        root: Id,
        b: &mut Budget,
        on_path: &mut [bool],
    ) -> Result<Value, FormatError> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut visit = root;
        loop {
            // Start `visit`: a finished value, or a new open frame.
            let mut done = match self.start(visit, frames.len(), b, on_path)? {
                Started::Done(v) => Some(v),
                Started::Open(f) => {
                    frames.push(f);
                    None
                }
            };
            // Hand finished values up until some frame has another child to visit.
            loop {
                let Some(top) = frames.last_mut() else {
                    // Only reachable with a finished root.
                    return done.ok_or_else(|| self.err("internal: empty materialisation"));
                };
                if let Some(v) = done.take() {
                    top.push(v);
                }
                match self.child(top.id, top.done) {
                    Some(c) => {
                        visit = c;
                        break;
                    }
                    None => {
                        let f = frames.pop().ok_or_else(|| self.err("internal"))?;
                        on_path[f.id] = false;
                        done = Some(self.finish(f));
                        if frames.is_empty() {
                            return done.ok_or_else(|| self.err("internal"));
                        }
                    }
                }
            }
        }
    }

    /// The `n`th child of container `id` (dicts: key, value, key, …; objects: args, state).
    pub(super) fn child(&self, id: Id, n: usize) -> Option<Id> {
        match &self.nodes[id] {
            Node::List(items) | Node::Set(items) => items.get(n).copied(),
            Node::Tuple(t) => self.tuples[t.range()].get(n).copied(),
            Node::Dict(d) => d
                .items
                .get(n / 2)
                .map(|(k, v)| if n.is_multiple_of(2) { *k } else { *v }),
            Node::Object { args, state, .. } => match n.cmp(&args.len()) {
                std::cmp::Ordering::Less => Some(args[n]),
                std::cmp::Ordering::Equal => *state,
                std::cmp::Ordering::Greater => None,
            },
            _ => None,
        }
    }

    pub(super) fn finish(&self, f: Frame) -> Value {
        let mut out = f.out;
        match &self.nodes[f.id] {
            Node::Tuple(_) => Value::Tuple(out),
            Node::Dict(_) => Value::Dict(f.pairs),
            Node::Object { class, args, .. } => {
                let state = if out.len() > args.len() {
                    out.pop().map(Box::new)
                } else {
                    None
                };
                Value::Object {
                    class: class.clone(),
                    args: out,
                    state,
                }
            }
            _ => Value::List(out),
        }
    }

    pub(super) fn start(
        &self,
        id: Id,
        depth: usize,
        b: &mut Budget,
        on_path: &mut [bool],
    ) -> Result<Started, FormatError> {
        if depth > self.opts.max_depth {
            return Err(FormatError::Limit {
                limit: Limit::Depth,
                max: self.opts.max_depth as u64,
                found: depth as u64,
                at: self.opts.location.clone(),
            });
        }
        b.values += 1;
        if b.values > self.value_cap() {
            return Err(self.values_limit(b.values));
        }
        let v = match &self.nodes[id] {
            Node::Leaf(v) => {
                let bytes = match v {
                    Value::Str(s) | Value::BigInt(s) => s.len(),
                    Value::Bytes(x) => x.len(),
                    Value::NumpyScalar { value, .. } => match &**value {
                        Value::Bytes(x) => x.len(),
                        _ => 0,
                    },
                    _ => 0,
                };
                b.bytes += bytes as u64;
                if b.bytes > self.byte_cap() {
                    return Err(self.bytes_limit(b.bytes));
                }
                v.clone()
            }
            Node::Text(s) => {
                b.bytes += s.len() as u64;
                if b.bytes > self.byte_cap() {
                    return Err(self.bytes_limit(b.bytes));
                }
                Value::Str(s.to_string())
            }
            Node::Global { name, .. } => Value::Global(name.to_string()),
            Node::Storage(i) => Value::Object {
                class: "torch.storage".into(),
                args: vec![Value::Int(*i as i64)],
                state: None,
            },
            Node::NumpyDtype { descr, order } => Value::Object {
                class: "numpy.dtype".into(),
                args: vec![Value::Str(descr.clone())],
                state: Some(Box::new(Value::Str(order.to_string()))),
            },
            Node::List(items) | Node::Set(items) => return self.open(id, items.len(), on_path),
            Node::Tuple(t) => return self.open(id, t.len, on_path),
            Node::Dict(d) => return self.open(id, d.items.len() * 2, on_path),
            Node::Object { args, state, .. } => {
                return self.open(id, args.len() + usize::from(state.is_some()), on_path)
            }
        };
        Ok(Started::Done(v))
    }

    pub(super) fn open(
        &self,
        id: Id,
        children: usize,
        on_path: &mut [bool],
    ) -> Result<Started, FormatError> {
        if std::mem::replace(&mut on_path[id], true) {
            return Err(
                self.err("the pickle contains a reference cycle (a container inside itself)")
            );
        }
        let dict = matches!(self.nodes[id], Node::Dict(_));
        Ok(Started::Open(Frame {
            id,
            done: 0,
            dict,
            out: if dict {
                Vec::new()
            } else {
                Vec::with_capacity(children)
            },
            pairs: if dict {
                Vec::with_capacity(children / 2)
            } else {
                Vec::new()
            },
            key: None,
        }))
    }
}

/// A container being materialised: its node and the children done so far.
pub(super) struct Frame {
    pub(super) id: Id,
    /// Children done.
    pub(super) done: usize,
    pub(super) dict: bool,
    /// Their values (dicts: in `pairs`, the key waiting for its value in `key`).
    pub(super) out: Vec<Value>,
    pub(super) pairs: Vec<(Value, Value)>,
    pub(super) key: Option<Value>,
}

impl Frame {
    pub(super) fn push(&mut self, v: Value) {
        if self.dict {
            match self.key.take() {
                None => self.key = Some(v),
                Some(k) => self.pairs.push((k, v)),
            }
        } else {
            self.out.push(v);
        }
        self.done += 1;
    }
}

pub(super) enum Started {
    Done(Value),
    Open(Frame),
}
