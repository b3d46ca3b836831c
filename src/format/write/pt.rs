//! Writing `torch.save` zip checkpoints (PyTorch ≥ 1.6 default format).
//!
//! Layout, as `torch.save` writes it (all entries `Stored`, data 64-byte aligned, see
//! [`super::zip`]):
//!
//! ```text
//! archive/data.pkl                 pickle protocol 2 of the value tree
//! archive/.format_version          "1"
//! archive/.storage_alignment       "64"
//! archive/byteorder                "little"
//! archive/data/0 … archive/data/N  one storage per tensor, its logical bytes
//! archive/version                  "3\n"
//! archive/.data/serialization_id   40 decimal digits derived from the content
//! ```
//!
//! In `data.pkl` each tensor is
//! `torch._utils._rebuild_tensor_v2(<storage pid>, 0, size, stride, requires_grad, OrderedDict())`
//! with persistent id `('storage', torch.<Type>Storage, '<key>', 'cpu', numel)` — or, for
//! dtypes without a legacy storage class (uint16/32/64, float8), the form torch uses for
//! them: `_rebuild_tensor_v3(…, torch.<dtype>)` over a `torch.storage.UntypedStorage` of
//! `nbytes`. Storages are numbered in the order tensors first appear in the tree (as
//! torch numbers them), every tensor gets its own contiguous storage at offset 0 with
//! torch's contiguous strides, on `cpu`. A tensor referenced twice in the tree is
//! written once and referenced again through the pickle memo (as `torch.save` does for
//! the same tensor object). Tensors that the tree never references are not written.
//!
//! Values map to plain Python objects only, so the file loads with
//! `torch.load(weights_only=True)`:
//! `None`, bools, ints (any size), floats (bit-exact, NaN payloads included), `str`,
//! `bytes` (`_codecs.encode(text, 'latin1')`), lists, tuples, dicts (any hashable keys),
//! numpy scalars as the plain float/int/bool/complex they hold, `builtins.complex`
//! objects, and torch dtype globals (`torch.float32`). Other objects, other globals and
//! blocked calls are refused with [`WriteError::Value`].
//!
//! Which dicts become `collections.OrderedDict` (tvck's reader does not tell them
//! apart) is chosen by [`OrderedDicts`]; the default makes the model's state dict an
//! `OrderedDict` (what `Module.state_dict()` returns) and every other dict a plain
//! `dict`, which reproduces what `torch.save(checkpoint_dict)` wrote for the sample
//! checkpoints.

use std::io::Write;

use sha2::{Digest, Sha256};

use super::pickle::{op, Pickler, BATCH};
use super::zip::ZipWriter;
use super::{join_path, TensorData, WriteError, WriteLimit};
use crate::format::{limits, DType, Value, MODEL_STATE_KEYS};

/// Which dicts are pickled as `collections.OrderedDict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderedDicts {
    /// The model state dict only, found as [`crate::format::Checkpoint::model_state`]
    /// finds it: the dict under `model_state_dict` / `model_state` / `model` holding
    /// tensors, else the root when it holds tensors directly (a bare state dict).
    #[default]
    ModelState,
    /// Every non-empty dict whose keys are all strings and whose values are all
    /// tensors (model state dicts, but also e.g. an optimizer's per-parameter state).
    TensorDicts,
    /// Every dict is a plain `dict`.
    None,
    /// Every dict is an `OrderedDict`.
    All,
}

/// How [`write_pt`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtOptions {
    pub ordered_dicts: OrderedDicts,
    /// The archive's top folder (`torch.save` to a path uses the file's stem, to a
    /// buffer `archive`; `torch.load` accepts any).
    pub archive_name: String,
    /// Write ZIP64 records for every entry even when none are needed (testing aid).
    pub force_zip64: bool,
}

impl Default for PtOptions {
    fn default() -> Self {
        PtOptions {
            ordered_dicts: OrderedDicts::default(),
            archive_name: "archive".into(),
            force_zip64: false,
        }
    }
}

/// What [`pickle_tree`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickledTree {
    /// The `data.pkl` bytes.
    pub pickle: Vec<u8>,
    /// `storages[k]` is the index (into the `tensors` argument) of the tensor whose
    /// bytes go to `data/<k>`.
    pub storages: Vec<usize>,
}

/// Write `root` (with `Value::Tensor(i)` referring to `tensors[i]`) as a torch zip
/// checkpoint to `out`. Returns the number of bytes written.
pub fn write_pt<W: Write>(
    root: &Value,
    tensors: &[TensorData<'_>],
    opts: &PtOptions,
    out: W,
) -> Result<u64, WriteError> {
    check_archive_name(&opts.archive_name)?;
    let tree = pickle_tree(root, tensors, opts.ordered_dicts)?;
    let name = |n: &str| format!("{}/{n}", opts.archive_name);
    let mut z = ZipWriter::new(out).force_zip64(opts.force_zip64);
    z.add(&name("data.pkl"), &tree.pickle)?;
    z.add(&name(".format_version"), b"1")?;
    z.add(&name(".storage_alignment"), b"64")?;
    z.add(&name("byteorder"), b"little")?;
    let mut id = Sha256::new();
    id.update(&tree.pickle);
    for (key, &i) in tree.storages.iter().enumerate() {
        let rec = z.add(&name(&format!("data/{key}")), &tensors[i].bytes)?;
        id.update(rec.crc32.to_le_bytes());
        id.update(rec.size.to_le_bytes());
    }
    z.add(&name("version"), b"3\n")?;
    z.add(
        &name(".data/serialization_id"),
        serialization_id(id).as_bytes(),
    )?;
    let (_, size) = z.finish()?;
    Ok(size)
}

/// torch writes 40 decimal digits; ours come from a hash of the content
/// (reproducible: the same input gives the same file).
fn serialization_id(h: Sha256) -> String {
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    format!("{:040}", u128::from_le_bytes(first))
}

fn check_archive_name(name: &str) -> Result<(), WriteError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(WriteError::Invalid(format!(
            "archive name {name:?} (needs 1–255 bytes, no slashes or control characters)"
        )))
    }
}

/// Pickle the tree into `data.pkl` bytes (protocol 2, torch style) and list the storages.
pub fn pickle_tree(
    root: &Value,
    tensors: &[TensorData<'_>],
    ordered_dicts: OrderedDicts,
) -> Result<PickledTree, WriteError> {
    let mut w = TreeWriter {
        p: Pickler::new(),
        tensors,
        tensor_memo: vec![None; tensors.len()],
        storages: Vec::new(),
        ordered_dicts,
        model_state: match ordered_dicts {
            OrderedDicts::ModelState => model_state_dict(root),
            _ => None,
        },
        path: Vec::new(),
    };
    w.run(root)?;
    Ok(PickledTree {
        pickle: w.p.finish(),
        storages: w.storages,
    })
}

/// The dict `Checkpoint::model_state` would take as the model state.
fn model_state_dict(root: &Value) -> Option<&Value> {
    let holds_tensors = |v: &Value| match v {
        Value::Dict(items) => items
            .iter()
            .any(|(k, v)| matches!((k, v), (Value::Str(_), Value::Tensor(_)))),
        _ => false,
    };
    let Value::Dict(items) = root else {
        return None;
    };
    for key in MODEL_STATE_KEYS {
        let found = items.iter().find_map(|(k, v)| match k {
            Value::Str(s) if s == key => Some(v),
            _ => None,
        });
        if let Some(v) = found {
            if holds_tensors(v) {
                return Some(v);
            }
        }
    }
    holds_tensors(root).then_some(root)
}

/// torch's contiguous strides (a zero-sized dim counts as 1, as in `torch.empty`).
fn torch_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1].max(1));
    }
    strides
}

fn key_segment(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::None => "None".into(),
        Value::Float(f) => f.to_string(),
        other => format!("<{}>", other.kind()),
    }
}

/// Whether Python could use the value as a dict key.
fn hashable(v: &Value) -> bool {
    match v {
        Value::List(_) | Value::Dict(_) => false,
        Value::Tuple(items) => items.iter().all(hashable),
        _ => true,
    }
}

/// A path segment, formatted only when an error needs it.
#[derive(Clone, Copy)]
enum Seg<'t> {
    Index(usize),
    Key(&'t Value),
    KeyOf(&'t Value),
}

impl Seg<'_> {
    fn text(self) -> String {
        match self {
            Seg::Index(i) => i.to_string(),
            Seg::Key(k) => key_segment(k),
            Seg::KeyOf(k) => format!("{}<key>", key_segment(k)),
        }
    }
}

/// Work items of the (iterative: no recursion, so no stack overflow on deep trees) walk.
enum Task<'t> {
    Value(&'t Value, usize),
    Op(u8),
    TupleEnd(usize),
    Push(Seg<'t>),
    Pop,
}

struct TreeWriter<'t, 'd> {
    p: Pickler,
    tensors: &'t [TensorData<'d>],
    /// Memo index of each tensor already written.
    tensor_memo: Vec<Option<u32>>,
    storages: Vec<usize>,
    ordered_dicts: OrderedDicts,
    model_state: Option<&'t Value>,
    path: Vec<Seg<'t>>,
}

impl<'t> TreeWriter<'t, '_> {
    fn path_text(&self) -> String {
        let segs: Vec<String> = self.path.iter().map(|s| s.text()).collect();
        join_path(&segs)
    }

    fn err(&self, message: impl Into<String>) -> WriteError {
        WriteError::Value {
            path: self.path_text(),
            message: message.into(),
        }
    }

    fn run(&mut self, root: &'t Value) -> Result<(), WriteError> {
        let mut stack = vec![Task::Value(root, 0)];
        while let Some(task) = stack.pop() {
            match task {
                Task::Value(v, depth) => self.value(v, depth, &mut stack)?,
                Task::Op(code) => self.p.op(code),
                Task::TupleEnd(n) => self.p.tuple_end(n)?,
                Task::Push(seg) => self.path.push(seg),
                Task::Pop => {
                    self.path.pop();
                }
            }
        }
        Ok(())
    }

    /// Write `v`, or its opening and schedule its contents (pushed in reverse).
    fn value(
        &mut self,
        v: &'t Value,
        depth: usize,
        stack: &mut Vec<Task<'t>>,
    ) -> Result<(), WriteError> {
        if depth > limits::MAX_DEPTH {
            return Err(WriteError::Limit {
                limit: WriteLimit::Depth,
                max: limits::MAX_DEPTH as u64,
                found: depth as u64,
                at: self.path_text(),
            });
        }
        match v {
            Value::None => self.p.none(),
            Value::Bool(b) => self.p.bool(*b),
            Value::Int(i) => self.p.int(*i),
            Value::BigInt(s) => self.p.big_int(s).map_err(|m| self.err(m.to_string()))?,
            Value::Float(f) => self.p.float(*f),
            Value::Str(s) => self.p.str(s)?,
            Value::Bytes(b) => self.p.bytes(b)?,
            Value::List(items) => {
                self.p.op(op::EMPTY_LIST);
                self.p.memoize()?;
                let chunks: Vec<(usize, &'t [Value])> = items
                    .chunks(BATCH)
                    .enumerate()
                    .map(|(c, chunk)| (c * BATCH, chunk))
                    .collect();
                for (base, chunk) in chunks.into_iter().rev() {
                    stack.push(Task::Op(if chunk.len() == 1 {
                        op::APPEND
                    } else {
                        op::APPENDS
                    }));
                    for (j, item) in chunk.iter().enumerate().rev() {
                        stack.push(Task::Pop);
                        stack.push(Task::Value(item, depth + 1));
                        stack.push(Task::Push(Seg::Index(base + j)));
                    }
                    if chunk.len() > 1 {
                        stack.push(Task::Op(op::MARK));
                    }
                }
            }
            Value::Tuple(items) => {
                self.p.tuple_start(items.len());
                stack.push(Task::TupleEnd(items.len()));
                for (j, item) in items.iter().enumerate().rev() {
                    stack.push(Task::Pop);
                    stack.push(Task::Value(item, depth + 1));
                    stack.push(Task::Push(Seg::Index(j)));
                }
            }
            Value::Dict(items) => self.dict(v, items, depth, stack)?,
            Value::Tensor(i) => self.tensor(*i)?,
            Value::NumpyScalar { dtype, value } => match &**value {
                Value::Float(_) | Value::Int(_) | Value::BigInt(_) | Value::Bool(_) => {
                    stack.push(Task::Value(value, depth + 1))
                }
                inner if complex_parts(inner).is_some() => {
                    stack.push(Task::Value(inner, depth + 1))
                }
                inner => {
                    return Err(self.err(format!(
                        "a numpy scalar of dtype `{dtype}` holding {}, which has no plain Python equivalent",
                        inner.kind()
                    )))
                }
            },
            Value::Object { class, .. } => match complex_parts(v) {
                Some((re, im)) => {
                    self.p.global("__builtin__", "complex")?;
                    self.p.float(re);
                    self.p.float(im);
                    self.p.op(op::TUPLE2);
                    self.p.memoize()?;
                    self.p.op(op::REDUCE);
                    self.p.memoize()?;
                }
                None => {
                    return Err(self.err(format!(
                        "a `{class}` object; only plain data (and tensors) can be written, and torch.load(weights_only=True) would reject it"
                    )))
                }
            },
            Value::Global(name) => {
                let dtype = name
                    .strip_prefix("torch.")
                    .and_then(DType::from_torch_name);
                match dtype {
                    Some(d) => self.p.global("torch", d.torch_name())?,
                    None => {
                        return Err(self.err(format!(
                            "a reference to the global `{name}`; only torch dtypes can be written (torch.load(weights_only=True) rejects other globals)"
                        )))
                    }
                }
            }
            Value::Blocked { global } => {
                return Err(self.err(format!(
                    "the result of a call of `{global}`, which tvck refused to run when reading, so there is no value to write"
                )))
            }
        }
        Ok(())
    }

    fn dict(
        &mut self,
        v: &'t Value,
        items: &'t [(Value, Value)],
        depth: usize,
        stack: &mut Vec<Task<'t>>,
    ) -> Result<(), WriteError> {
        if let Some((k, _)) = items.iter().find(|(k, _)| !hashable(k)) {
            self.path.push(Seg::Key(k));
            return Err(self.err(format!("a {} used as a dict key (unhashable)", k.kind())));
        }
        let ordered = match self.ordered_dicts {
            OrderedDicts::All => true,
            OrderedDicts::None => false,
            OrderedDicts::TensorDicts => {
                !items.is_empty()
                    && items
                        .iter()
                        .all(|(k, v)| matches!((k, v), (Value::Str(_), Value::Tensor(_))))
            }
            OrderedDicts::ModelState => self.model_state.is_some_and(|m| std::ptr::eq(m, v)),
        };
        if ordered {
            self.p.global("collections", "OrderedDict")?;
            self.p.op(op::EMPTY_TUPLE);
            self.p.op(op::REDUCE);
        } else {
            self.p.op(op::EMPTY_DICT);
        }
        self.p.memoize()?;
        let chunks: Vec<&'t [(Value, Value)]> = items.chunks(BATCH).collect();
        for chunk in chunks.into_iter().rev() {
            stack.push(Task::Op(if chunk.len() == 1 {
                op::SETITEM
            } else {
                op::SETITEMS
            }));
            for (k, val) in chunk.iter().rev() {
                stack.push(Task::Pop);
                stack.push(Task::Value(val, depth + 1));
                stack.push(Task::Push(Seg::Key(k)));
                stack.push(Task::Pop);
                stack.push(Task::Value(k, depth + 1));
                stack.push(Task::Push(Seg::KeyOf(k)));
            }
            if chunk.len() > 1 {
                stack.push(Task::Op(op::MARK));
            }
        }
        Ok(())
    }

    fn tensor(&mut self, i: usize) -> Result<(), WriteError> {
        if let Some(Some(idx)) = self.tensor_memo.get(i) {
            self.p.get(*idx);
            return Ok(());
        }
        let Some(t) = self.tensors.get(i) else {
            return Err(self.err(format!(
                "refers to tensor #{i} but only {} tensors were given",
                self.tensors.len()
            )));
        };
        t.validate().map_err(|problem| WriteError::Tensor {
            tensor: self.path_text(),
            problem,
        })?;
        let key = self.storages.len().to_string();
        self.storages.push(i);
        let numel = t.numel().unwrap_or(0);
        let nbytes = t.bytes.len() as u64;
        // Dtypes without a legacy `torch.*Storage` class go through `_rebuild_tensor_v3`
        // over an untyped storage, as torch saves them.
        let storage_class = t.dtype.storage_name();
        let v3 = storage_class.is_none();
        let p = &mut self.p;
        p.global(
            "torch._utils",
            if v3 {
                "_rebuild_tensor_v3"
            } else {
                "_rebuild_tensor_v2"
            },
        )?;
        p.op(op::MARK);
        // persistent id ('storage', storage_type, key, location, numel)
        p.op(op::MARK);
        p.str("storage")?;
        match storage_class {
            None => p.global("torch.storage", "UntypedStorage")?,
            Some(class) => p.global("torch", class)?,
        }
        p.str(&key)?;
        p.str("cpu")?;
        // validate() bounds nbytes (and so numel) by i64::MAX
        p.int(if v3 { nbytes } else { numel } as i64);
        p.op(op::TUPLE);
        p.memoize()?;
        p.op(op::BINPERSID);
        p.int(0); // storage_offset
        p.int_tuple(&t.shape)?;
        p.int_tuple(&torch_strides(&t.shape))?;
        p.bool(t.requires_grad);
        // backward_hooks
        p.global("collections", "OrderedDict")?;
        p.op(op::EMPTY_TUPLE);
        p.op(op::REDUCE);
        p.memoize()?;
        if v3 {
            p.global("torch", t.dtype.torch_name())?;
        }
        p.op(op::TUPLE);
        p.memoize()?;
        p.op(op::REDUCE);
        let idx = p.memoize()?;
        self.tensor_memo[i] = Some(idx);
        Ok(())
    }
}

/// `(re, im)` of a `builtins.complex` object (as the reader decodes one).
fn complex_parts(v: &Value) -> Option<(f64, f64)> {
    match v {
        Value::Object {
            class,
            args,
            state: None,
        } if class == "builtins.complex" => match args.as_slice() {
            [re, im] => Some((num(re)?, num(im)?)),
            [re] => Some((num(re)?, 0.0)),
            _ => None,
        },
        _ => None,
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::zip::ZipArchive;
    use crate::format::{Checkpoint, Format};
    use std::borrow::Cow;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    fn dict(items: Vec<(&str, Value)>) -> Value {
        Value::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn write(root: &Value, tensors: &[TensorData<'_>], opts: &PtOptions) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_pt(root, tensors, opts, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, out.len() as u64);
        out
    }

    fn read(bytes: Vec<u8>) -> Checkpoint {
        let c = Checkpoint::from_bytes("w.pt", bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.format, Format::TorchZip);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        c
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn plain_values_pickle_exactly_like_cpython() {
        // pickle.dumps({...}, protocol=2) from CPython 3 (see the value below).
        const CPYTHON: &str = "80027d71002858010000006171015d7102284b014740040000000000004e88896558010000006271034b014b028671045801000000637105284b014b024b034b0474710658010000006471078a0900000000000000004058010000006571084afbffffff58010000006671094d2c01580100000067710a4a70110100580100000068710b7d710c580100000069710d5d710e58010000006a710f2958010000006b71107d71114b0158010000007871127358010000006c71135802000000c3bc711458010000006d7115635f636f646563730a656e636f64650a7116580300000000c3bf711758060000006c6174696e31711886711952711a58010000006e711b5d711c4b076158010000006f711d8a090000000000000000c0752e";
        let root = dict(vec![
            (
                "a",
                Value::List(vec![
                    Value::Int(1),
                    Value::Float(2.5),
                    Value::None,
                    Value::Bool(true),
                    Value::Bool(false),
                ]),
            ),
            ("b", Value::Tuple(vec![Value::Int(1), Value::Int(2)])),
            ("c", Value::Tuple((1..=4).map(Value::Int).collect())),
            ("d", Value::BigInt("1180591620717411303424".into())),
            ("e", Value::Int(-5)),
            ("f", Value::Int(300)),
            ("g", Value::Int(70000)),
            ("h", Value::Dict(vec![])),
            ("i", Value::List(vec![])),
            ("j", Value::Tuple(vec![])),
            ("k", Value::Dict(vec![(Value::Int(1), s("x"))])),
            ("l", s("ü")),
            ("m", Value::Bytes(vec![0, 0xff])),
            ("n", Value::List(vec![Value::Int(7)])),
            ("o", Value::BigInt("-1180591620717411303424".into())),
        ]);
        let t = pickle_tree(&root, &[], OrderedDicts::ModelState).unwrap();
        assert_eq!(hex::encode(&t.pickle), CPYTHON);
        assert!(t.storages.is_empty());
        // and tvck reads it back
        let back = crate::format::pickle::parse_plain(&t.pickle).unwrap();
        assert_eq!(back.value, root);
    }

    #[test]
    fn state_dict_pickle_matches_torch_save() {
        // The sample was written by torch.save(model.state_dict(), path).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/checkpoints/exports/v5_12_4_state_dict.pt"
        );
        let c = Checkpoint::open(path).unwrap();
        let tensors = super::super::tensors_from_checkpoint(&c).unwrap();
        let ours = pickle_tree(&c.root, &tensors, OrderedDicts::ModelState).unwrap();
        let zip = ZipArchive::parse(c.bytes()).unwrap();
        let entry = zip
            .entries()
            .iter()
            .find(|e| e.name.ends_with("/data.pkl"))
            .unwrap();
        let theirs = zip.read(entry, 1 << 30).unwrap();
        // torch then BUILDs the OrderedDict's `_metadata` attribute (module versions),
        // which tvck's reader does not keep: everything before it is identical.
        let body = &ours.pickle[..ours.pickle.len() - 1];
        assert!(ours.pickle.len() > 5_000, "{}", ours.pickle.len());
        assert!(theirs.len() > body.len());
        let same = body
            .iter()
            .zip(theirs.iter())
            .take_while(|(a, b)| a == b)
            .count();
        assert_eq!(
            same,
            body.len(),
            "data.pkl differs from torch's at byte {same}"
        );
        assert_eq!(*theirs.last().unwrap(), op::STOP);
        assert_eq!(theirs[theirs.len() - 2], b'b'); // BUILD
        assert_eq!(ours.storages, (0..c.tensors.len()).collect::<Vec<_>>());
    }

    #[test]
    fn layout_matches_torch() {
        let root = dict(vec![("w", Value::Tensor(0)), ("e", Value::Tensor(1))]);
        let tensors = [
            TensorData::new(DType::F32, vec![2], f32s(&[1.0, 2.0])),
            TensorData::new(DType::I64, vec![0, 3], vec![]),
        ];
        let bytes = write(&root, &tensors, &PtOptions::default());
        let zip = ZipArchive::parse(&bytes).unwrap();
        let names: Vec<&str> = zip.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "archive/data.pkl",
                "archive/.format_version",
                "archive/.storage_alignment",
                "archive/byteorder",
                "archive/data/0",
                "archive/data/1",
                "archive/version",
                "archive/.data/serialization_id"
            ]
        );
        for e in zip.entries() {
            let (off, _) = zip.stored_range(e).unwrap().unwrap();
            assert_eq!(off % 64, 0, "{}", e.name);
            zip.read(e, 1 << 20).unwrap(); // CRC checked
        }
        let text = |n: &str| zip.read(zip.find(n).unwrap(), 100).unwrap().to_vec();
        assert_eq!(text("archive/.format_version"), b"1");
        assert_eq!(text("archive/.storage_alignment"), b"64");
        assert_eq!(text("archive/byteorder"), b"little");
        assert_eq!(text("archive/version"), b"3\n");
        let id = text("archive/.data/serialization_id");
        assert_eq!(id.len(), 40);
        assert!(id.iter().all(u8::is_ascii_digit));
        // deterministic
        assert_eq!(write(&root, &tensors, &PtOptions::default()), bytes);
        let c = read(bytes);
        assert_eq!(c.root, root);
        assert_eq!(&*c.tensor_bytes(0).unwrap(), &f32s(&[1.0, 2.0])[..]);
        assert_eq!(c.tensors[1].shape, vec![0, 3]);
        assert_eq!(c.tensors[1].strides, vec![3, 1]);
    }

    #[test]
    fn every_dtype_round_trips() {
        let tensors: Vec<TensorData<'_>> = DType::ALL
            .iter()
            .filter(|d| !d.is_quantized())
            .enumerate()
            .map(|(i, d)| {
                let shape = vec![2, 3];
                let n = 6 * d.size();
                let bytes: Vec<u8> = (0..n).map(|b| (b * 31 + i) as u8).collect();
                TensorData::new(*d, shape, bytes)
            })
            .collect();
        let root = Value::List((0..tensors.len()).map(Value::Tensor).collect());
        for force_zip64 in [false, true] {
            let opts = PtOptions {
                force_zip64,
                archive_name: "every_dtype".into(),
                ..PtOptions::default()
            };
            let c = read(write(&root, &tensors, &opts));
            assert_eq!(c.root, root);
            for (i, t) in tensors.iter().enumerate() {
                assert_eq!(c.tensors[i].dtype, t.dtype);
                assert_eq!(c.tensors[i].shape, t.shape);
                assert_eq!(&*c.tensor_bytes(i).unwrap(), &*t.bytes, "{}", t.dtype);
            }
        }
    }

    #[test]
    fn v3_for_dtypes_without_storage_class() {
        let tensors = [TensorData::new(DType::U16, vec![2], vec![1, 2, 3, 4])];
        let t = pickle_tree(&Value::Tensor(0), &tensors, OrderedDicts::None).unwrap();
        let text = String::from_utf8_lossy(&t.pickle);
        assert!(text.contains("_rebuild_tensor_v3"));
        assert!(text.contains("torch.storage\nUntypedStorage"));
        assert!(text.contains("torch\nuint16"));
        let tensors = [TensorData::new(DType::BF16, vec![1], vec![1, 2])];
        let t = pickle_tree(&Value::Tensor(0), &tensors, OrderedDicts::None).unwrap();
        let text = String::from_utf8_lossy(&t.pickle);
        assert!(text.contains("_rebuild_tensor_v2") && text.contains("torch\nBFloat16Storage"));
    }

    #[test]
    fn tensor_opcodes() {
        let tensors = [TensorData::new(DType::F32, vec![2, 3], vec![0u8; 24])];
        let t = pickle_tree(&Value::Tensor(0), &tensors, OrderedDicts::None).unwrap();
        let mut want = vec![op::PROTO, 2, op::GLOBAL];
        want.extend_from_slice(b"torch._utils\n_rebuild_tensor_v2\n");
        want.extend_from_slice(&[op::BINPUT, 0, op::MARK, op::MARK]);
        want.extend_from_slice(&[op::BINUNICODE, 7, 0, 0, 0]);
        want.extend_from_slice(b"storage");
        want.extend_from_slice(&[op::BINPUT, 1, op::GLOBAL]);
        want.extend_from_slice(b"torch\nFloatStorage\n");
        want.extend_from_slice(&[
            op::BINPUT,
            2,
            op::BINUNICODE,
            1,
            0,
            0,
            0,
            b'0',
            op::BINPUT,
            3,
        ]);
        want.extend_from_slice(&[op::BINUNICODE, 3, 0, 0, 0, b'c', b'p', b'u', op::BINPUT, 4]);
        want.extend_from_slice(&[op::BININT1, 6, op::TUPLE, op::BINPUT, 5, op::BINPERSID]);
        want.extend_from_slice(&[op::BININT1, 0]);
        want.extend_from_slice(&[op::BININT1, 2, op::BININT1, 3, op::TUPLE2, op::BINPUT, 6]);
        want.extend_from_slice(&[op::BININT1, 3, op::BININT1, 1, op::TUPLE2, op::BINPUT, 7]);
        want.extend_from_slice(&[op::NEWFALSE, op::GLOBAL]);
        want.extend_from_slice(b"collections\nOrderedDict\n");
        want.extend_from_slice(&[op::BINPUT, 8, op::EMPTY_TUPLE, op::REDUCE, op::BINPUT, 9]);
        want.extend_from_slice(&[
            op::TUPLE,
            op::BINPUT,
            10,
            op::REDUCE,
            op::BINPUT,
            11,
            op::STOP,
        ]);
        assert_eq!(t.pickle, want);
    }

    #[test]
    fn shared_tensors_are_written_once() {
        let root = dict(vec![
            ("a", Value::Tensor(1)),
            ("b", Value::List(vec![Value::Tensor(1), Value::Tensor(0)])),
        ]);
        let tensors = [
            TensorData::new(DType::U8, vec![1], vec![7]),
            TensorData::new(DType::U8, vec![2], vec![8, 9]),
            TensorData::new(DType::U8, vec![1], vec![5]), // never referenced
        ];
        let t = pickle_tree(&root, &tensors, OrderedDicts::ModelState).unwrap();
        assert_eq!(t.storages, [1, 0]);
        let c = read(write(&root, &tensors, &PtOptions::default()));
        assert_eq!(c.tensors.len(), 2);
        assert_eq!(c.storages.len(), 2);
        // the reader numbers tensors in rebuild order: tensor 1 became 0
        assert_eq!(
            c.root,
            dict(vec![
                ("a", Value::Tensor(0)),
                ("b", Value::List(vec![Value::Tensor(0), Value::Tensor(1)])),
            ])
        );
        assert_eq!(&*c.tensor_bytes(0).unwrap(), &[8, 9]);
    }

    #[test]
    fn ordered_dict_rules() {
        let sd = dict(vec![("w", Value::Tensor(0))]);
        let opt = dict(vec![("state", dict(vec![("exp_avg", Value::Tensor(0))]))]);
        let root = dict(vec![
            ("epoch", Value::Int(1)),
            ("model_state_dict", sd.clone()),
            ("optimizer", opt),
        ]);
        let tensors = [TensorData::new(DType::U8, vec![], vec![1])];
        let count = |rule| {
            let t = pickle_tree(&root, &tensors, rule).unwrap();
            // the backward-hooks OrderedDict() of the tensor is one more REDUCE after it
            let needle = b"collections\nOrderedDict\n";
            let reduces = t
                .pickle
                .windows(3)
                .filter(|w| *w == [op::EMPTY_TUPLE, op::REDUCE, op::BINPUT])
                .count();
            assert!(t.pickle.windows(needle.len()).any(|w| w == needle));
            reduces - 1
        };
        assert_eq!(count(OrderedDicts::ModelState), 1);
        assert_eq!(count(OrderedDicts::TensorDicts), 2);
        assert_eq!(count(OrderedDicts::None), 0);
        assert_eq!(count(OrderedDicts::All), 4);
        // a bare state dict at the root
        assert_eq!(
            model_state_dict(&sd).map(|v| v as *const _),
            Some(&sd as *const _)
        );
        assert!(model_state_dict(&Value::Int(1)).is_none());
    }

    #[test]
    fn numpy_scalars_complex_and_dtypes_become_plain_values() {
        let np = |dtype: &str, v: Value| Value::NumpyScalar {
            dtype: dtype.into(),
            value: Box::new(v),
        };
        let complex = Value::Object {
            class: "builtins.complex".into(),
            args: vec![Value::Float(1.5), Value::Float(-2.0)],
            state: None,
        };
        let root = dict(vec![
            ("f8", np("f8", Value::Float(0.25))),
            ("i8", np("i8", Value::Int(-3))),
            ("u8", np("u8", Value::BigInt("18446744073709551615".into()))),
            ("b1", np("b1", Value::Bool(true))),
            ("c8", np("c8", complex.clone())),
            ("c", complex.clone()),
            ("dt", Value::Global("torch.bfloat16".into())),
            ("alias", Value::Global("torch.float".into())),
        ]);
        let c = read(write(&root, &[], &PtOptions::default()));
        assert_eq!(
            c.root,
            dict(vec![
                ("f8", Value::Float(0.25)),
                ("i8", Value::Int(-3)),
                ("u8", Value::BigInt("18446744073709551615".into())),
                ("b1", Value::Bool(true)),
                ("c8", complex.clone()),
                ("c", complex),
                ("dt", Value::Global("torch.bfloat16".into())),
                ("alias", Value::Global("torch.float32".into())),
            ])
        );
    }

    #[test]
    fn unwritable_values_are_clear_errors() {
        let t0 = [TensorData::new(DType::U8, vec![1], vec![1])];
        let cases: Vec<(Value, &str)> = vec![
            (
                dict(vec![(
                    "args",
                    Value::Object {
                        class: "argparse.Namespace".into(),
                        args: vec![],
                        state: None,
                    },
                )]),
                "`args`: a `argparse.Namespace` object",
            ),
            (
                dict(vec![("f", Value::Global("os.system".into()))]),
                "global `os.system`",
            ),
            (
                Value::List(vec![Value::Blocked {
                    global: "os.system".into(),
                }]),
                "`0`: the result of a call of `os.system`",
            ),
            (
                Value::NumpyScalar {
                    dtype: "S3".into(),
                    value: Box::new(Value::Bytes(b"abc".to_vec())),
                },
                "numpy scalar of dtype `S3`",
            ),
            (Value::Tensor(5), "tensor #5 but only 1"),
            (Value::BigInt("12x".into()), "not a decimal integer"),
            (
                Value::Dict(vec![(Value::List(vec![]), Value::None)]),
                "unhashable",
            ),
            (
                Value::Dict(vec![(Value::Tuple(vec![Value::Dict(vec![])]), Value::None)]),
                "unhashable",
            ),
        ];
        for (root, want) in cases {
            let e = pickle_tree(&root, &t0, OrderedDicts::ModelState).unwrap_err();
            assert!(matches!(e, WriteError::Value { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e} (want {want})");
        }
        // bad tensors
        let bad = [TensorData::new(DType::F32, vec![2], vec![0u8; 7])];
        let e = pickle_tree(
            &dict(vec![("w", Value::Tensor(0))]),
            &bad,
            OrderedDicts::None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, WriteError::Tensor { tensor, .. } if tensor == "w"),
            "{e}"
        );
        let mut grad = TensorData::new(DType::I8, vec![1], vec![1]);
        grad.requires_grad = true;
        assert!(pickle_tree(&Value::Tensor(0), &[grad], OrderedDicts::None).is_err());
        let huge = [TensorData::new(DType::U8, vec![0, u64::MAX], vec![])];
        assert!(matches!(
            pickle_tree(&Value::Tensor(0), &huge, OrderedDicts::None),
            Err(WriteError::Limit { .. })
        ));
        // too deep
        let mut deep = Value::None;
        for _ in 0..600 {
            deep = Value::List(vec![deep]);
        }
        assert!(matches!(
            pickle_tree(&deep, &[], OrderedDicts::None),
            Err(WriteError::Limit { .. })
        ));
        // bad archive names
        for name in ["", "a/b", "..", "x\ny"] {
            let opts = PtOptions {
                archive_name: name.into(),
                ..PtOptions::default()
            };
            let e = write_pt(&Value::None, &[], &opts, Vec::new()).unwrap_err();
            assert!(matches!(e, WriteError::Invalid(_)), "{e}");
        }
    }

    #[test]
    fn requires_grad_and_big_batches() {
        let mut t = TensorData::new(DType::F16, vec![1], vec![0, 0x3c]);
        t.requires_grad = true;
        let items: Vec<Value> = (0..2500).map(Value::Int).collect();
        let keys: Vec<(Value, Value)> = (0..2001)
            .map(|i| (Value::Int(i), Value::Str(format!("v{i}"))))
            .collect();
        let root = Value::Tuple(vec![
            Value::Tensor(0),
            Value::List(items),
            Value::Dict(keys),
            Value::List(vec![Value::None; 1001]),
        ]);
        let c = read(write(&root, &[t], &PtOptions::default()));
        assert!(c.tensors[0].requires_grad);
        assert_eq!(c.root, root);
    }

    #[test]
    fn non_contiguous_sources_are_written_contiguous() {
        // Read the reader's strided fixture archive (transposed view, storage offsets,
        // shared storages), re-write it and compare logical bytes.
        let src = crate::format::zip::build::zip(
            &[
                crate::format::zip::build::Spec {
                    name: "a/data.pkl",
                    data: include_bytes!("../../../tests/fixtures/pickles/torch_views_p2.pkl"),
                    deflate: false,
                },
                crate::format::zip::build::Spec {
                    name: "a/data/0",
                    data: &f32s(&[0., 1., 2., 3., 4., 5.]),
                    deflate: true,
                },
                crate::format::zip::build::Spec {
                    name: "a/data/1",
                    data: &f32s(&[10., 11., 12., 13., 14.]),
                    deflate: false,
                },
                crate::format::zip::build::Spec {
                    name: "a/data/2",
                    data: &7i64.to_le_bytes(),
                    deflate: false,
                },
            ],
            false,
        );
        let c = Checkpoint::from_bytes("views.pt", src).unwrap();
        assert!(c
            .tensors
            .iter()
            .any(|t| !t.is_contiguous() || t.storage_offset > 0));
        let tensors = super::super::tensors_from_checkpoint(&c).unwrap();
        assert!(tensors.iter().any(|t| matches!(t.bytes, Cow::Owned(_))));
        let back = read(write(&c.root, &tensors, &PtOptions::default()));
        assert_eq!(back.root, c.root);
        assert_eq!(back.tensors.len(), c.tensors.len());
        for (i, (a, b)) in c.tensors.iter().zip(&back.tensors).enumerate() {
            assert_eq!((&a.path, a.dtype, &a.shape), (&b.path, b.dtype, &b.shape));
            assert_eq!(a.requires_grad, b.requires_grad);
            assert!(b.is_contiguous() && b.storage_offset == 0);
            assert_eq!(c.tensor_bytes(i).unwrap(), back.tensor_bytes(i).unwrap());
        }
        // every tensor has its own storage now
        assert_eq!(back.storages.len(), back.tensors.len());
    }
}
