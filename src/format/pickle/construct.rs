//! Globals and calls: interpreting the allow-listed constructors into plain data,
//! blocking the rest, and `BUILD`.

use super::*;

impl<'a> Vm<'a, '_> {
    // ----- globals and calls ------------------------------------------------

    pub(super) fn global(&mut self, module: &str, name: &str) -> Result<(), FormatError> {
        let module = match module {
            "__builtin__" => "builtins",
            "copy_reg" => "copyreg",
            m => m,
        };
        let full = format!("{module}.{name}");
        let ctor = self.host.resolve_global(module, name);
        if ctor.is_none() {
            self.flag(&full);
        }
        self.push_node(Node::Global {
            name: full.into(),
            ctor,
        })
    }

    pub(super) fn blocked(&mut self, global: String) -> Result<Id, FormatError> {
        self.add(Node::Leaf(Value::Blocked { global }))
    }

    /// `callable(*args)` for REDUCE (and INST/OBJ).
    pub(super) fn call(
        &mut self,
        callable: Id,
        args: &[Id],
        kwargs: Option<Id>,
    ) -> Result<Id, FormatError> {
        self.charge(args.len());
        match &self.nodes[callable] {
            Node::Global { name, ctor } => match ctor {
                None => {
                    let name = name.to_string();
                    self.blocked(name)
                }
                Some(c) => {
                    let (c, name) = (*c, name.clone());
                    self.construct(c, &name, args, kwargs)
                }
            },
            Node::Leaf(Value::Blocked { global }) => {
                let g = global.clone();
                self.blocked(g)
            }
            _ => Err(self.err(format!(
                "calling a {}, which is not callable",
                self.kind(callable)
            ))),
        }
    }

    pub(super) fn uninterpreted(&mut self, name: &str, args: &[Id]) -> Result<Id, FormatError> {
        self.note(format!(
            "{}: call of `{name}` kept uninterpreted",
            self.opts.location
        ));
        self.add(Node::Object {
            class: name.to_string(),
            args: args.to_vec(),
            state: None,
        })
    }

    pub(super) fn construct(
        &mut self,
        ctor: Ctor,
        name: &str,
        args: &[Id],
        kwargs: Option<Id>,
    ) -> Result<Id, FormatError> {
        self.charge(args.len());
        let kw_items: Vec<Id> = match kwargs.map(|k| &self.nodes[k]) {
            Some(Node::Dict(d)) => d.items.iter().flat_map(|(k, v)| [*k, *v]).collect(),
            _ => Vec::new(),
        };
        match ctor {
            Ctor::OrderedDict => {
                let mut pairs = Vec::new();
                if let Some(&src) = args.first() {
                    match &self.nodes[src] {
                        Node::Dict(d) => {
                            pairs = d.items.iter().flat_map(|(k, v)| [*k, *v]).collect();
                        }
                        Node::List(_) | Node::Tuple(_) => {
                            for &it in self.seq(src).unwrap_or(&[]) {
                                match self.seq(it) {
                                    Some([k, v]) => pairs.extend([*k, *v]),
                                    _ => return self.uninterpreted(name, args),
                                }
                            }
                        }
                        _ => return self.uninterpreted(name, args),
                    }
                }
                pairs.extend(kw_items);
                self.new_dict(pairs)
            }
            Ctor::Set | Ctor::FrozenSet => {
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&src) => match &self.nodes[src] {
                        Node::List(_) | Node::Tuple(_) | Node::Set(_) => {
                            self.seq(src).unwrap_or(&[]).to_vec()
                        }
                        Node::Dict(d) => d.items.iter().map(|(k, _)| *k).collect(),
                        _ => return self.uninterpreted(name, args),
                    },
                };
                self.add(Node::Set(items))
            }
            Ctor::ByteArray => {
                let bytes = match args {
                    [] => Some(Vec::new()),
                    [b] => match &self.nodes[*b] {
                        Node::Leaf(Value::Bytes(b)) => Some(b.clone()),
                        _ => None,
                    },
                    [s, enc] => self.encode(*s, Some(*enc)),
                    _ => None,
                };
                match bytes {
                    Some(b) => self.add(Node::Leaf(Value::Bytes(b))),
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::CodecsEncode => {
                let enc = args.get(1).copied();
                match args.first().and_then(|s| self.encode(*s, enc)) {
                    Some(b) => self.add(Node::Leaf(Value::Bytes(b))),
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::Value | Ctor::Storage(_) => self.uninterpreted(name, args),
            Ctor::Complex | Ctor::Slice => self.add(Node::Object {
                class: name.to_string(),
                args: args.to_vec(),
                state: None,
            }),
            Ctor::Namespace => {
                let state = if kw_items.is_empty() {
                    None
                } else {
                    Some(self.new_dict(kw_items)?)
                };
                self.add(Node::Object {
                    class: "argparse.Namespace".into(),
                    args: Vec::new(),
                    state,
                })
            }
            Ctor::Reconstructor => {
                // copyreg._reconstructor(cls, base, state): object.__new__(cls) (+ base init)
                let (cls, base, state) = match args {
                    [c, b, s] => (*c, *b, *s),
                    _ => return self.uninterpreted(name, args),
                };
                let (cls_name, cls_ctor) = match &self.nodes[cls] {
                    Node::Global { name, ctor } => (name.clone(), *ctor),
                    _ => return Err(self.err("copyreg._reconstructor: class is not a global")),
                };
                let base_ok = matches!(&self.nodes[base], Node::Global { ctor: Some(_), .. });
                match cls_ctor {
                    Some(c) if base_ok && c != Ctor::Reconstructor => {
                        let init = if state == NONE_ID {
                            vec![]
                        } else {
                            vec![state]
                        };
                        self.construct(c, &cls_name, &init, None)
                    }
                    _ => {
                        self.flag(&cls_name);
                        self.blocked(cls_name.to_string())
                    }
                }
            }
            Ctor::NumpyDtype => {
                let descr = args
                    .first()
                    .and_then(|a| self.as_str(*a))
                    .map(str::to_string);
                match descr {
                    Some(descr) => {
                        let (order, descr) = split_order(&descr);
                        self.add(Node::NumpyDtype {
                            descr: descr.to_string(),
                            order,
                        })
                    }
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::NumpyScalar => self.numpy_scalar(name, args),
            Ctor::NumpyReconstruct => self.add(Node::Object {
                class: "numpy.ndarray".into(),
                args: Vec::new(),
                state: None,
            }),
            Ctor::TorchSize => match args.first() {
                None => self.tuple(&[]),
                Some(&a) => match self.seq(a) {
                    Some(items) => {
                        let items = items.to_vec();
                        self.tuple(&items)
                    }
                    None => self.uninterpreted(name, args),
                },
            },
            Ctor::TorchDevice => {
                let ty = args
                    .first()
                    .and_then(|a| self.as_str(*a))
                    .map(str::to_string);
                let index = args.get(1).and_then(|a| self.as_int(*a));
                match (ty, index) {
                    (Some(t), Some(i)) => self.add(Node::Leaf(Value::Str(format!("{t}:{i}")))),
                    (Some(t), None) => self.add(Node::Leaf(Value::Str(t))),
                    _ => self.uninterpreted(name, args),
                }
            }
            Ctor::RebuildTensor | Ctor::RebuildTensorV2 | Ctor::RebuildTensorV3 => {
                if args.len() < 4 {
                    return Err(self.err(format!(
                        "{name} needs at least 4 arguments, got {}",
                        args.len()
                    )));
                }
                let requires_grad = match ctor {
                    Ctor::RebuildTensor => false,
                    _ => args.get(4).and_then(|a| self.as_bool(*a)).unwrap_or(false),
                };
                let dtype = if ctor == Ctor::RebuildTensorV3 {
                    let d = args.get(6).and_then(|a| match &self.nodes[*a] {
                        Node::Global { name, .. } => {
                            name.strip_prefix("torch.").and_then(DType::from_torch_name)
                        }
                        _ => None,
                    });
                    if d.is_none() {
                        return Err(self.err(format!("{name}: missing or unknown dtype argument")));
                    }
                    d
                } else {
                    None
                };
                let spec = self.tensor_spec(&args[..4], requires_grad, dtype, name)?;
                let index = self
                    .host
                    .rebuild_tensor(spec)
                    .map_err(|m| self.err(format!("{name}: {m}")))?;
                self.add(Node::Leaf(Value::Tensor(index)))
            }
            Ctor::RebuildQTensor => {
                // (storage, offset, size, stride, quantizer, requires_grad, hooks): the
                // storage's class gives the quantized dtype.
                if args.len() < 4 {
                    return Err(self.err(format!(
                        "{name} needs at least 4 arguments, got {}",
                        args.len()
                    )));
                }
                let requires_grad = args.get(5).and_then(|a| self.as_bool(*a)).unwrap_or(false);
                let spec = self.tensor_spec(&args[..4], requires_grad, None, name)?;
                let index = self
                    .host
                    .rebuild_tensor(spec)
                    .map_err(|m| self.err(format!("{name}: {m}")))?;
                self.add(Node::Leaf(Value::Tensor(index)))
            }
            Ctor::RebuildParameter | Ctor::RebuildParameterWithState => {
                let Some(&data) = args.first() else {
                    return Err(self.err(format!("{name} needs arguments")));
                };
                let rg = args.get(1).and_then(|a| self.as_bool(*a)).unwrap_or(false);
                if let Node::Leaf(Value::Tensor(i)) = &self.nodes[data] {
                    self.host.set_requires_grad(*i, rg);
                }
                Ok(data)
            }
            Ctor::RebuildFromTypeV2 => {
                // (func, new_type, args, state): only an interpreted rebuild function.
                let (func, fargs) = match args {
                    [f, _t, a, ..] => (*f, *a),
                    _ => return self.uninterpreted(name, args),
                };
                let inner = self.seq(fargs).map(<[Id]>::to_vec);
                match (&self.nodes[func], inner) {
                    (
                        Node::Global {
                            ctor: Some(c),
                            name: fname,
                        },
                        Some(inner),
                    ) => {
                        let (c, fname) = (*c, fname.clone());
                        self.construct(c, &fname, &inner, None)
                    }
                    (
                        Node::Global {
                            ctor: None,
                            name: fname,
                        },
                        _,
                    ) => {
                        let fname = fname.to_string();
                        self.blocked(fname)
                    }
                    _ => self.uninterpreted(name, args),
                }
            }
            Ctor::Uninterpreted => self.uninterpreted(name, args),
        }
    }

    /// `str.encode(encoding)` for the encodings pickles use.
    pub(super) fn encode(&self, s: Id, enc: Option<Id>) -> Option<Vec<u8>> {
        let enc = match enc {
            Some(e) => self.as_str(e)?,
            None => "utf-8",
        };
        encode_str(self.as_str(s)?, enc)
    }

    pub(super) fn numpy_scalar(&mut self, name: &str, args: &[Id]) -> Result<Id, FormatError> {
        let (dt, data) = match args {
            [d, b] => (*d, *b),
            _ => return self.uninterpreted(name, args),
        };
        let (descr, order) = match &self.nodes[dt] {
            Node::NumpyDtype { descr, order } => (descr.clone(), *order),
            _ => return self.uninterpreted(name, args),
        };
        let raw: Vec<u8> = match &self.nodes[data] {
            Node::Leaf(Value::Bytes(b)) => b.clone(),
            // A Python 2 str (latin-1 characters).
            Node::Leaf(Value::Str(_)) | Node::Text(_) => {
                match self.as_str(data).and_then(|t| encode_str(t, "latin1")) {
                    Some(b) => b,
                    None => return self.uninterpreted(name, args),
                }
            }
            _ => return self.uninterpreted(name, args),
        };
        let value = decode_numpy(&descr, order, &raw).unwrap_or(Value::Bytes(raw));
        self.add(Node::Leaf(Value::NumpyScalar {
            dtype: descr,
            value: Box::new(value),
        }))
    }

    pub(super) fn tensor_spec(
        &self,
        args: &[Id],
        requires_grad: bool,
        dtype: Option<DType>,
        name: &str,
    ) -> Result<TensorSpec, FormatError> {
        let bad = |m: String| self.err(format!("{name}: {m}"));
        let storage = match &self.nodes[args[0]] {
            Node::Storage(i) => *i,
            _ => {
                return Err(bad(format!(
                    "first argument is a {}, expected a storage",
                    self.kind(args[0])
                )))
            }
        };
        let storage_offset = self.as_int(args[1]).ok_or_else(|| {
            bad(format!(
                "storage offset is a {}, expected an int",
                self.kind(args[1])
            ))
        })?;
        let storage_offset = u64::try_from(storage_offset)
            .map_err(|_| bad(format!("negative storage offset {storage_offset}")))?;
        let dims = |id: Id, what: &str| -> Result<Vec<u64>, FormatError> {
            let items = self
                .seq(id)
                .ok_or_else(|| bad(format!("{what} is a {}, expected a tuple", self.kind(id))))?;
            if items.len() > limits::MAX_DIMS {
                return Err(bad(format!(
                    "{what} has {} dimensions (limit {})",
                    items.len(),
                    limits::MAX_DIMS
                )));
            }
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                let v = self.as_int(*i).ok_or_else(|| {
                    bad(format!("{what} holds a {}, expected ints", self.kind(*i)))
                })?;
                out.push(u64::try_from(v).map_err(|_| bad(format!("negative {what} {v}")))?);
            }
            Ok(out)
        };
        let shape = dims(args[2], "size")?;
        let strides = dims(args[3], "stride")?;
        if shape.len() != strides.len() {
            return Err(bad(format!(
                "size {shape:?} and stride {strides:?} differ in length"
            )));
        }
        Ok(TensorSpec {
            storage,
            storage_offset,
            shape,
            strides,
            requires_grad,
            dtype,
        })
    }

    /// BUILD: apply `state` to `inst` (in place, so memo references see it).
    pub(super) fn build(&mut self, inst: Id, state: Id) -> Result<(), FormatError> {
        match &self.nodes[inst] {
            Node::Object { class, .. } if class == "numpy.ndarray" => {
                let Some(items) = self.seq(state).map(<[Id]>::to_vec) else {
                    return Ok(());
                };
                // (version, shape, dtype, is_fortran, rawdata) or without version
                let fields: &[&str] = match items.len() {
                    5 => &["version", "shape", "dtype", "fortran_order", "data"],
                    4 => &["shape", "dtype", "fortran_order", "data"],
                    _ => return Ok(()),
                };
                let mut pairs = Vec::with_capacity(10);
                for (f, v) in fields.iter().zip(items) {
                    if *f != "version" {
                        pairs.push(self.str_node(f)?);
                        pairs.push(v);
                    }
                }
                let d = self.new_dict(pairs)?;
                if let Node::Object { state, .. } = &mut self.nodes[inst] {
                    *state = Some(d);
                }
                Ok(())
            }
            Node::Object {
                state: existing, ..
            } => {
                // A (dict, slots) pair is merged; a dict is merged into the existing one.
                let mut parts = vec![state];
                if let Node::Tuple(t) = &self.nodes[state] {
                    if t.len == 2 {
                        parts = self.tuples[t.range()].to_vec();
                    }
                }
                let parts: Vec<Id> = parts.into_iter().filter(|p| *p != NONE_ID).collect();
                match *existing {
                    Some(ex) if matches!(self.nodes[ex], Node::Dict(_)) => {
                        for p in parts {
                            if let Node::Dict(d) = &self.nodes[p] {
                                let pairs: Vec<Id> =
                                    d.items.iter().flat_map(|(k, v)| [*k, *v]).collect();
                                self.dict_insert(ex, &pairs)?;
                            }
                        }
                    }
                    _ => {
                        let new_state = match parts.as_slice() {
                            [] => None,
                            [one] => Some(*one),
                            _ => {
                                let mut pairs = Vec::new();
                                for p in &parts {
                                    if let Node::Dict(d) = &self.nodes[*p] {
                                        pairs.extend(d.items.iter().flat_map(|(k, v)| [*k, *v]));
                                    }
                                }
                                Some(self.new_dict(pairs)?)
                            }
                        };
                        if let Node::Object { state, .. } = &mut self.nodes[inst] {
                            *state = new_state;
                        }
                    }
                }
                Ok(())
            }
            Node::NumpyDtype { .. } => {
                let order = self
                    .seq(state)
                    .and_then(|t| t.get(1).copied())
                    .and_then(|o| self.as_str(o))
                    .and_then(|s| s.chars().next());
                if let (Some(o), Node::NumpyDtype { order, .. }) = (order, &mut self.nodes[inst]) {
                    *order = o;
                }
                Ok(())
            }
            // OrderedDict attributes (`_metadata`), tensor state, blocked objects: nothing to keep.
            Node::Dict(_) | Node::Leaf(Value::Tensor(_) | Value::Blocked { .. }) => Ok(()),
            Node::Global { name, .. } => {
                // Setting attributes on a class or module: a known exploitation step.
                let name = name.clone();
                self.flag(&name);
                Ok(())
            }
            _ => Err(self.err(format!("BUILD on a {}", self.kind(inst)))),
        }
    }
}
