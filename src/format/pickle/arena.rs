//! The arena the VM builds (nodes, tuples), the memo, and dicts with Python's key
//! equalities (`True == 1 == 1.0`), hashed with a random key.

use super::*;

pub(super) type Id = usize;

#[derive(Debug)]
pub(super) enum Node<'a> {
    /// An immutable value (scalars, strings, tensors, blocked calls, numpy scalars).
    Leaf(Value),
    /// A string borrowed from the pickle (reads as `Leaf(Value::Str)`).
    Text(&'a str),
    List(Vec<Id>),
    /// Items in `Vm::tuples` (tuples never change, so they share one arena).
    Tuple(Span),
    Dict(DictNode),
    Set(Vec<Id>),
    Global {
        /// Shared: calls and references copy it often.
        name: Rc<str>,
        ctor: Option<Ctor>,
    },
    Storage(usize),
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
    },
    NumpyDtype {
        descr: String,
        order: char,
    },
}

/// Call arguments copied out of the arena (inline when there are few).
pub(super) enum Args {
    Inline([Id; 8], usize),
    Heap(Vec<Id>),
}

impl Args {
    pub(super) fn new(items: &[Id]) -> Args {
        if items.len() <= 8 {
            let mut a = [0; 8];
            a[..items.len()].copy_from_slice(items);
            Args::Inline(a, items.len())
        } else {
            Args::Heap(items.to_vec())
        }
    }
}

impl std::ops::Deref for Args {
    type Target = [Id];
    fn deref(&self) -> &[Id] {
        match self {
            Args::Inline(a, n) => &a[..*n],
            Args::Heap(v) => v,
        }
    }
}

/// A range of `Vm::tuples`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) len: usize,
}

impl Span {
    pub(super) fn range(self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

#[derive(Debug, Default)]
pub(super) struct DictNode {
    pub(super) items: Vec<(Id, Id)>,
    /// Key hash → position in `items` of the first key with that hash. Small dicts are
    /// searched linearly and get an index once they outgrow [`DICT_SCAN`] items.
    pub(super) index: Option<HashMap<u64, usize, BuildHasherDefault<PassThrough>>>,
}

/// Dicts up to this many items are searched linearly (no hashing at all).
pub(super) const DICT_SCAN: usize = 8;

/// A dict key as compared, with Python's equalities (True == 1 == 1.0), borrowed from
/// the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum KeyRef<'n> {
    None,
    Int(i64),
    Big(&'n str),
    Float(u64),
    Str(&'n str),
    Bytes(&'n [u8]),
    Global(&'n str),
    /// Compared item by item.
    Tuple(&'n [Id]),
    /// Compared by identity (objects, tensors).
    Ident(Id),
}

/// The memo: a dense table for the small keys pickles use (0, 1, 2, … in order), a map
/// for the rest. The table grows only to about twice the number of distinct keys, so
/// its size stays proportional to the input whatever keys a pickle claims.
#[derive(Debug, Default)]
pub(super) struct Memo {
    pub(super) dense: Vec<Id>,
    pub(super) sparse: HashMap<u64, Id>,
    /// Distinct keys (`MEMOIZE` uses this as its key).
    pub(super) len: usize,
}

/// A free slot of `Memo::dense`.
pub(super) const NO_ID: Id = Id::MAX;

impl Memo {
    #[inline(always)]
    pub(super) fn get(&self, key: u64) -> Option<Id> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(&id) if id != NO_ID => Some(id),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&key).copied(),
        }
    }

    #[inline(always)]
    pub(super) fn insert(&mut self, key: u64, id: Id) {
        // The usual case: the next key in order.
        let next = self.dense.len();
        if key == next as u64
            && self.sparse.is_empty()
            && next < self.len.saturating_mul(2).saturating_add(1024)
        {
            self.dense.push(id);
            self.len += 1;
            return;
        }
        self.insert_any(key, id);
    }

    #[inline(never)]
    pub(super) fn insert_any(&mut self, key: u64, id: Id) {
        let limit = self.len.saturating_mul(2).saturating_add(1024);
        match usize::try_from(key) {
            Ok(k) if k < self.dense.len() || k < limit => {
                if k >= self.dense.len() {
                    self.dense.resize(k + 1, NO_ID);
                }
                if self.dense[k] == NO_ID {
                    // A key stored while the table was shorter moves here.
                    if self.sparse.is_empty() || self.sparse.remove(&key).is_none() {
                        self.len += 1;
                    }
                }
                self.dense[k] = id;
            }
            _ => {
                if self.sparse.insert(key, id).is_none() {
                    self.len += 1;
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

pub(super) const NONE_ID: Id = 0;
pub(super) const TRUE_ID: Id = 1;
pub(super) const FALSE_ID: Id = 2;

/// What creating `node` costs in the work budget: its items or bytes.
pub(super) fn node_weight(node: &Node<'_>) -> usize {
    1 + match node {
        Node::Text(s) => s.len(),
        Node::Leaf(v) => match v {
            Value::Str(s) | Value::BigInt(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Blocked { global } => global.len(),
            Value::NumpyScalar { dtype, value } => {
                dtype.len()
                    + match &**value {
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    }
            }
            _ => 0,
        },
        Node::List(v) | Node::Set(v) => v.len(),
        Node::Tuple(t) => t.len,
        Node::Dict(_) | Node::Storage(_) => 0,
        Node::Global { name, .. } => name.len(),
        Node::Object { class, args, .. } => class.len() + args.len(),
        Node::NumpyDtype { descr, .. } => descr.len(),
    }
}

impl<'a> Vm<'a, '_> {
    // ----- stack ------------------------------------------------------------

    pub(super) fn add(&mut self, node: Node<'a>) -> Result<Id, FormatError> {
        self.charge(node_weight(&node));
        if !self.has_room() {
            return Err(self.arena_limit());
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Whether another node may be created.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.created() < self.opts.max_values
    }

    /// `add` after `has_room` said yes.
    #[inline]
    pub(super) fn add_in_room(&mut self, node: Node<'a>) -> Id {
        self.charge(node_weight(&node));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Nodes created, counting each use of a shared small int as a creation (so every
    /// limit reads as if each had its own node).
    pub(super) fn created(&self) -> usize {
        self.nodes.len() + self.shared
    }

    #[cold]
    pub(super) fn arena_limit(&self) -> FormatError {
        FormatError::Limit {
            limit: Limit::PickleValues,
            max: self.opts.max_values as u64,
            found: self.created() as u64 + 1,
            at: self.opts.location.clone(),
        }
    }

    /// Push the int `v` (0..256): one shared node per value, charged like a new one.
    pub(super) fn push_small_int(&mut self, v: u8) -> Result<(), FormatError> {
        let slot = usize::from(v);
        match self.small_ints[slot] {
            NO_ID => {
                let id = self.add(Node::Leaf(Value::Int(i64::from(v))))?;
                self.small_ints[slot] = id;
                self.stack.push(id);
            }
            id => {
                self.charge(1);
                if self.created() >= self.opts.max_values {
                    return Err(self.arena_limit());
                }
                self.shared += 1;
                self.stack.push(id);
            }
        }
        Ok(())
    }

    /// A new tuple of `items`.
    pub(super) fn tuple(&mut self, items: &[Id]) -> Result<Id, FormatError> {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(items);
        self.add(Node::Tuple(Span {
            start,
            len: items.len(),
        }))
    }

    /// A new tuple of the stack items from `from` on (which leave the stack).
    pub(super) fn tuple_from_stack(&mut self, from: usize) -> Result<Id, FormatError> {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(&self.stack[from..]);
        self.stack.truncate(from);
        self.add(Node::Tuple(Span {
            start,
            len: self.tuples.len() - start,
        }))
    }

    /// `tuple_from_stack` after `has_room` said yes; the tuple is pushed.
    pub(super) fn push_tuple_in_room(&mut self, from: usize) {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(&self.stack[from..]);
        self.stack.truncate(from);
        let id = self.add_in_room(Node::Tuple(Span {
            start,
            len: self.tuples.len() - start,
        }));
        self.stack.push(id);
    }

    pub(super) fn push_node(&mut self, node: Node<'a>) -> Result<(), FormatError> {
        let id = self.add(node)?;
        self.stack.push(id);
        Ok(())
    }

    pub(super) fn push_value(&mut self, v: Value) -> Result<(), FormatError> {
        match v {
            Value::None => self.stack.push(NONE_ID),
            Value::Bool(true) => self.stack.push(TRUE_ID),
            Value::Bool(false) => self.stack.push(FALSE_ID),
            Value::Int(i @ 0..=255) => self.push_small_int(i as u8)?,
            v => self.push_node(Node::Leaf(v))?,
        }
        Ok(())
    }

    /// A UTF-8 string from the pickle (borrowed when it is valid UTF-8).
    pub(super) fn push_text(&mut self, b: &'a [u8]) -> Result<(), FormatError> {
        match std::str::from_utf8(b) {
            Ok(s) => self.push_node(Node::Text(s)),
            Err(_) => self.push_value(Value::Str(utf8(b))),
        }
    }

    pub(super) fn charge(&self, n: usize) {
        self.work.set(self.work.get().saturating_add(n as u64));
    }

    pub(super) fn work_cap(&self) -> u64 {
        // Real checkpoints use about one unit per input byte.
        self.input_len().saturating_mul(8).saturating_add(1 << 18)
    }

    pub(super) fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn pop(&mut self) -> Result<Id, FormatError> {
        if self.stack.len() <= self.fence() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    pub(super) fn top(&self) -> Result<Id, FormatError> {
        if self.stack.len() <= self.fence() {
            return Err(self.err("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    pub(super) fn pop_mark(&mut self) -> Result<Vec<Id>, FormatError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    pub(super) fn memo_get(&self, key: u64) -> Result<Id, FormatError> {
        self.memo
            .get(key)
            .ok_or_else(|| self.err(format!("memo key {key} not found")))
    }

    pub(super) fn memo_put(&mut self, key: u64) -> Result<(), FormatError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    // ----- node helpers -----------------------------------------------------

    pub(super) fn kind(&self, id: Id) -> &'static str {
        match &self.nodes[id] {
            Node::Leaf(v) => v.kind(),
            Node::Text(_) => "str",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::Global { .. } => "global",
            Node::Storage(_) => "storage",
            Node::Object { .. } => "object",
            Node::NumpyDtype { .. } => "numpy dtype",
        }
    }

    pub(super) fn as_str(&self, id: Id) -> Option<&str> {
        match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => Some(s),
            Node::Text(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn as_int(&self, id: Id) -> Option<i64> {
        match &self.nodes[id] {
            Node::Leaf(Value::Int(i)) => Some(*i),
            Node::Leaf(Value::Bool(b)) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub(super) fn as_bool(&self, id: Id) -> Option<bool> {
        match &self.nodes[id] {
            Node::Leaf(Value::Bool(b)) => Some(*b),
            Node::Leaf(Value::Int(i)) => Some(*i != 0),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub(super) fn seq(&self, id: Id) -> Option<&[Id]> {
        match &self.nodes[id] {
            Node::Tuple(t) => Some(&self.tuples[t.range()]),
            Node::List(v) | Node::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Check that `id` can be a dict key (hashable, not nested too deeply) and charge
    /// the work of hashing it.
    pub(super) fn check_key(&self, id: Id, depth: usize) -> Result<(), FormatError> {
        if depth > self.opts.max_depth {
            return Err(self.err("dict key nested too deeply"));
        }
        match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => self.charge(s.len()),
            Node::Text(s) => self.charge(s.len()),
            Node::Leaf(Value::Bytes(b)) => self.charge(b.len()),
            Node::Tuple(t) => {
                self.charge(t.len);
                for i in &self.tuples[t.range()] {
                    self.check_key(*i, depth + 1)?;
                }
            }
            Node::Global { name, .. } => self.charge(name.len()),
            Node::List(_) | Node::Dict(_) | Node::Set(_) => {
                return Err(self.err(format!("unhashable {} used as a dict key", self.kind(id))))
            }
            _ => {}
        }
        Ok(())
    }

    /// The comparable image of a key (checked with `check_key`).
    #[inline(always)]
    pub(super) fn key_ref(&self, id: Id) -> KeyRef<'_> {
        match &self.nodes[id] {
            Node::Leaf(v) => match v {
                Value::None => KeyRef::None,
                Value::Bool(b) => KeyRef::Int(i64::from(*b)),
                Value::Int(i) => KeyRef::Int(*i),
                Value::BigInt(s) => KeyRef::Big(s),
                Value::Float(f) => {
                    if f.fract() == 0.0 && f.abs() < 9.0e18 {
                        KeyRef::Int(*f as i64)
                    } else {
                        KeyRef::Float(f.to_bits())
                    }
                }
                Value::Str(s) => KeyRef::Str(s),
                Value::Bytes(b) => KeyRef::Bytes(b),
                _ => KeyRef::Ident(id),
            },
            Node::Text(s) => KeyRef::Str(s),
            Node::Tuple(t) => KeyRef::Tuple(&self.tuples[t.range()]),
            Node::Global { name, .. } => KeyRef::Global(name),
            _ => KeyRef::Ident(id),
        }
    }

    /// Whether two (checked) keys are equal as dict keys.
    pub(super) fn key_eq(&self, a: Id, b: Id) -> bool {
        if a == b {
            return true;
        }
        match (self.key_ref(a), self.key_ref(b)) {
            (KeyRef::Tuple(x), KeyRef::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| self.key_eq(*p, *q))
            }
            (x, y) => x == y,
        }
    }

    /// A keyed hash of a (checked) key, consistent with `key_eq`.
    pub(super) fn key_hash(&self, id: Id) -> u64 {
        let mut h = self.key_hasher.build_hasher();
        self.hash_key_into(id, &mut h);
        h.finish()
    }

    pub(super) fn hash_key_into(&self, id: Id, h: &mut impl Hasher) {
        match self.key_ref(id) {
            KeyRef::Tuple(items) => {
                h.write_u8(0xff);
                h.write_usize(items.len());
                for i in items {
                    self.hash_key_into(*i, h);
                }
            }
            k => k.hash(h),
        }
    }

    pub(super) fn dict_insert(&mut self, dict: Id, pairs: &[Id]) -> Result<(), FormatError> {
        self.charge(pairs.len());
        for pair in pairs.chunks_exact(2) {
            self.check_key(pair[0], 0)?;
        }
        if !matches!(self.nodes[dict], Node::Dict(_)) {
            return Ok(());
        }
        // Keys are never the dict itself (it is unhashable), so it can be taken out of
        // the arena while they are compared.
        let Node::Dict(mut d) =
            std::mem::replace(&mut self.nodes[dict], Node::Dict(DictNode::default()))
        else {
            return Ok(());
        };
        for pair in pairs.chunks_exact(2) {
            self.dict_set(&mut d, pair[0], pair[1]);
        }
        self.nodes[dict] = Node::Dict(d);
        Ok(())
    }

    /// `d[k] = v`: a new key goes last, an existing one keeps its place (and key).
    pub(super) fn dict_set(&self, d: &mut DictNode, k: Id, v: Id) {
        let Some(index) = d.index.as_mut() else {
            if let Some(i) = d.items.iter().position(|(e, _)| self.key_eq(*e, k)) {
                d.items[i].1 = v;
                return;
            }
            if d.items.len() >= DICT_SCAN {
                let mut index = HashMap::with_capacity_and_hasher(
                    d.items.len() * 2,
                    BuildHasherDefault::default(),
                );
                for (i, (e, _)) in d.items.iter().enumerate() {
                    index.entry(self.key_hash(*e)).or_insert(i);
                }
                index.entry(self.key_hash(k)).or_insert(d.items.len());
                d.index = Some(index);
            }
            d.items.push((k, v));
            return;
        };
        let h = self.key_hash(k);
        match index.get(&h) {
            Some(&i) if self.key_eq(d.items[i].0, k) => d.items[i].1 = v,
            // Two different keys with one 64-bit keyed hash: look at every key.
            Some(_) => match d.items.iter().position(|(e, _)| self.key_eq(*e, k)) {
                Some(i) => d.items[i].1 = v,
                None => d.items.push((k, v)),
            },
            None => {
                index.insert(h, d.items.len());
                d.items.push((k, v));
            }
        }
    }

    pub(super) fn set_items(&mut self, target: Id, pairs: Vec<Id>) -> Result<(), FormatError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        match &self.nodes[target] {
            Node::Dict(_) => self.dict_insert(target, &pairs),
            Node::Leaf(Value::Blocked { .. }) => Ok(()),
            _ => Err(self.err(format!("cannot set items on a {}", self.kind(target)))),
        }
    }

    pub(super) fn append_items(&mut self, target: Id, items: Vec<Id>) -> Result<(), FormatError> {
        let kind = self.kind(target);
        match &mut self.nodes[target] {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            Node::Leaf(Value::Blocked { .. }) => Ok(()),
            _ => Err(self.err(format!("cannot append to a {kind}"))),
        }
    }

    pub(super) fn new_dict(&mut self, pairs: Vec<Id>) -> Result<Id, FormatError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let id = self.add(Node::Dict(DictNode::default()))?;
        if !pairs.is_empty() {
            self.dict_insert(id, &pairs)?;
        }
        Ok(id)
    }

    pub(super) fn str_node(&mut self, s: &str) -> Result<Id, FormatError> {
        self.add(Node::Leaf(Value::Str(s.to_string())))
    }

    /// Convert a host-produced value into nodes.
    pub(super) fn intern(&mut self, v: Value) -> Result<Id, FormatError> {
        Ok(match v {
            Value::None => NONE_ID,
            Value::Bool(true) => TRUE_ID,
            Value::Bool(false) => FALSE_ID,
            Value::List(items) => {
                let ids = items
                    .into_iter()
                    .map(|v| self.intern(v))
                    .collect::<Result<_, _>>()?;
                self.add(Node::List(ids))?
            }
            Value::Tuple(items) => {
                let ids: Vec<Id> = items
                    .into_iter()
                    .map(|v| self.intern(v))
                    .collect::<Result<_, _>>()?;
                self.tuple(&ids)?
            }
            Value::Dict(items) => {
                let mut ids = Vec::with_capacity(items.len() * 2);
                for (k, v) in items {
                    ids.push(self.intern(k)?);
                    ids.push(self.intern(v)?);
                }
                self.new_dict(ids)?
            }
            Value::Global(name) => self.add(Node::Global {
                name: name.into(),
                ctor: None,
            })?,
            other => self.add(Node::Leaf(other))?,
        })
    }
}
