//! The main loop: one opcode at a time (`fast_step` for the commonest, `step` for all).

use super::*;

impl<'a> Vm<'a, '_> {
    // ----- main loop --------------------------------------------------------

    pub(super) fn run(&mut self) -> Result<Value, FormatError> {
        let work_cap = self.work_cap();
        loop {
            // (Checked before each opcode: the same as after each one, as nothing
            // charges work before the first opcode or after STOP.)
            if self.work.get() > work_cap {
                return Err(FormatError::Limit {
                    limit: Limit::PickleWork,
                    max: work_cap,
                    found: self.work.get(),
                    at: self.opts.location.clone(),
                });
            }
            self.op_pos = self.pos;
            let Some(&code) = self.data.get(self.pos) else {
                self.op = Op::End;
                self.ran_out.set(true);
                return Err(self.err("pickle cut short: no STOP opcode"));
            };
            self.pos += 1;
            self.op = Op::Code(code);
            if self.fast_step(code) {
                continue;
            }
            // The commonest heavy opcodes, without going through `step`.
            match code {
                op::REDUCE => {
                    self.reduce()?;
                    continue;
                }
                op::BINPERSID => {
                    self.binpersid()?;
                    continue;
                }
                _ => {}
            }
            if !op::is_known(code) {
                return Err(FormatError::Pickle {
                    offset: self.opts.base_offset + self.op_pos as u64,
                    opcode: Some(code),
                    message: format!(
                        "unknown opcode 0x{code:02x} at byte {} (in {})",
                        self.opts.base_offset + self.op_pos as u64,
                        self.opts.location
                    ),
                });
            }
            if self.step(code)? {
                let top = self.pop()?;
                return self.materialise_root(top);
            }
        }
    }

    /// The commonest opcodes that cannot fail here and charge no work (memo access,
    /// MARK, constants), done without `step`. `false`: not done (`step` does it, and
    /// reports any error).
    #[inline]
    pub(super) fn fast_step(&mut self, code: u8) -> bool {
        let arg = |n: usize| self.data.get(self.pos..self.pos + n);
        match code {
            op::BINGET | op::LONG_BINGET => {
                let n = if code == op::BINGET { 1 } else { 4 };
                let Some(key) = arg(n).map(le_u32) else {
                    return false;
                };
                let Some(id) = self.memo.get(u64::from(key)) else {
                    return false;
                };
                self.pos += n;
                self.stack.push(id);
            }
            op::BINPUT | op::LONG_BINPUT => {
                let n = if code == op::BINPUT { 1 } else { 4 };
                let Some(key) = arg(n).map(le_u32) else {
                    return false;
                };
                if self.stack.len() <= self.fence() {
                    return false;
                }
                let Some(&top) = self.stack.last() else {
                    return false;
                };
                self.pos += n;
                self.memo.insert(u64::from(key), top);
            }
            op::MARK => self.marks.push(self.stack.len()),
            op::NONE => self.stack.push(NONE_ID),
            op::NEWTRUE => self.stack.push(TRUE_ID),
            op::NEWFALSE => self.stack.push(FALSE_ID),
            // BININT1 of an int already seen: its shared node.
            op::BININT1 => {
                let Some(&v) = self.data.get(self.pos) else {
                    return false;
                };
                let id = self.small_ints[usize::from(v)];
                if id == NO_ID || !self.has_room() {
                    return false;
                }
                self.pos += 1;
                self.charge(1);
                self.shared += 1;
                self.stack.push(id);
            }
            op::EMPTY_TUPLE => {
                if !self.has_room() {
                    return false;
                }
                let id = self.add_in_room(Node::Tuple(Span { start: 0, len: 0 }));
                self.stack.push(id);
            }
            // BININT2 past the shared small ints
            op::BININT2 => {
                let Some(v) = arg(2).map(le_u32) else {
                    return false;
                };
                if v < 256 || !self.has_room() {
                    return false;
                }
                self.pos += 2;
                let id = self.add_in_room(Node::Leaf(Value::Int(i64::from(v))));
                self.stack.push(id);
            }
            // TUPLE1..3, TUPLE
            op::TUPLE1..=op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1) + 1;
                if self.stack.len() < self.fence() + n || !self.has_room() {
                    return false;
                }
                self.push_tuple_in_room(self.stack.len() - n);
            }
            op::TUPLE => {
                let Some(&m) = self.marks.last() else {
                    return false;
                };
                if !self.has_room() {
                    return false;
                }
                self.marks.pop();
                self.push_tuple_in_room(m.min(self.stack.len()));
            }
            // BINUNICODE, SHORT_BINUNICODE of valid UTF-8
            op::BINUNICODE | op::SHORT_BINUNICODE => {
                let w = if code == op::BINUNICODE { 4 } else { 1 };
                let Some(n) = arg(w).map(|b| le_u32(b) as usize) else {
                    return false;
                };
                let start = self.pos + w;
                let Some(text) = self
                    .data
                    .get(start..start.saturating_add(n))
                    .and_then(|b| std::str::from_utf8(b).ok())
                else {
                    return false;
                };
                if !self.has_room() {
                    return false;
                }
                self.pos = start + n;
                let id = self.add_in_room(Node::Text(text));
                self.stack.push(id);
            }
            _ => return false,
        }
        true
    }

    /// Execute one opcode; `true` on STOP.
    pub(super) fn step(&mut self, code: u8) -> Result<bool, FormatError> {
        match code {
            op::PROTO => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(self.err(format!("unsupported pickle protocol {v}")));
                }
            }
            op::FRAME => {
                let n = self.u64()?;
                let left = (self.data.len() - self.pos) as u64;
                if n > left {
                    self.ran_out.set(true);
                    return Err(self.err(format!(
                        "pickle cut short: frame of {n} bytes, only {left} remain"
                    )));
                }
            }
            op::STOP => return Ok(true),
            op::MARK => self.marks.push(self.stack.len()),
            op::POP => {
                if self.stack.len() > self.fence() {
                    self.stack.pop();
                } else if self.marks.pop().is_none() {
                    return Err(self.err("stack underflow"));
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let t = self.top()?;
                self.stack.push(t);
            }
            // ----- numbers
            op::NONE => self.stack.push(NONE_ID),
            op::NEWTRUE => self.stack.push(TRUE_ID),
            op::NEWFALSE => self.stack.push(FALSE_ID),
            op::INT => {
                let l = self.line()?;
                let v = match l {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => self.parse_int_text(l)?,
                };
                self.push_value(v)?;
            }
            op::LONG => {
                let mut l = self.line()?;
                if let Some(rest) = l.strip_suffix(b"L") {
                    l = rest;
                }
                let v = self.parse_int_text(l)?;
                self.push_value(v)?;
            }
            op::BININT => {
                let v = self.u32()? as i32;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            op::BININT1 => {
                let v = self.u8()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            op::BININT2 => {
                let v = self.u16()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            op::LONG1 => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?;
                let v = self.decode_long(b)?;
                self.push_value(v)?;
            }
            op::LONG4 => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return Err(self.err("negative LONG4 length"));
                }
                let b = self.take(n as u64)?;
                let v = self.decode_long(b)?;
                self.push_value(v)?;
            }
            op::FLOAT => {
                let l = self.line()?;
                let s = std::str::from_utf8(l).unwrap_or("").trim();
                let f: f64 = s
                    .parse()
                    .map_err(|_| self.err(format!("bad float {:?}", String::from_utf8_lossy(l))))?;
                self.push_value(Value::Float(f))?;
            }
            op::BINFLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push_value(Value::Float(f64::from_be_bytes(a)))?;
            }
            // ----- strings and bytes
            op::STRING => {
                let l = self.line()?;
                let inner = match l {
                    [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
                    _ => return Err(self.err("STRING argument is not quoted")),
                };
                let b = escape_decode(inner);
                self.push_value(py2_str(b))?;
            }
            op::BINSTRING => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return Err(self.err("negative BINSTRING length"));
                }
                let b = self.take(n as u64)?.to_vec();
                self.push_value(py2_str(b))?;
            }
            op::SHORT_BINSTRING => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.push_value(py2_str(b))?;
            }
            op::UNICODE => {
                let l = self.line()?;
                self.push_value(Value::Str(raw_unicode_escape_decode(l)))?;
            }
            op::BINUNICODE => {
                let n = u64::from(self.u32()?);
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            op::SHORT_BINUNICODE => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            op::BINUNICODE8 => {
                let n = self.u64()?;
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            op::BINBYTES => {
                let n = u64::from(self.u32()?);
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            op::SHORT_BINBYTES => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.u64()?;
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            op::NEXT_BUFFER | op::READONLY_BUFFER => {
                return Err(self.err("out-of-band buffers (protocol 5) are not supported"));
            }
            // ----- containers
            op::EMPTY_LIST => self.push_node(Node::List(Vec::new()))?,
            op::EMPTY_TUPLE => self.push_node(Node::Tuple(Span { start: 0, len: 0 }))?,
            op::EMPTY_DICT => self.push_node(Node::Dict(DictNode::default()))?,
            op::EMPTY_SET => self.push_node(Node::Set(Vec::new()))?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items))?;
            }
            op::TUPLE => {
                let m = self
                    .marks
                    .pop()
                    .ok_or_else(|| self.err("no MARK on the stack"))?;
                let id = self.tuple_from_stack(m.min(self.stack.len()))?;
                self.stack.push(id);
            }
            op::TUPLE1..=op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1) + 1;
                if self.stack.len() < self.fence() + n {
                    return Err(self.err("stack underflow"));
                }
                let id = self.tuple_from_stack(self.stack.len() - n)?;
                self.stack.push(id);
            }
            op::DICT => {
                let items = self.pop_mark()?;
                let id = self.new_dict(items)?;
                self.stack.push(id);
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items))?;
            }
            op::APPEND => {
                let v = self.pop()?;
                let list = self.top()?;
                self.append_items(list, vec![v])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.append_items(list, items)?;
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.set_items(d, vec![k, v])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let d = self.top()?;
                self.set_items(d, items)?;
            }
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                let s = self.top()?;
                let kind = self.kind(s);
                match &mut self.nodes[s] {
                    Node::Set(v) => v.extend(items),
                    Node::Leaf(Value::Blocked { .. }) => {}
                    _ => return Err(self.err(format!("ADDITEMS on a {kind}"))),
                }
            }
            // ----- memo
            op::GET => {
                let l = self.line()?;
                let k = self.parse_memo_key(l)?;
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            op::BINGET => {
                let k = u64::from(self.u8()?);
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            op::LONG_BINGET => {
                let k = u64::from(self.u32()?);
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            op::PUT => {
                let l = self.line()?;
                let k = self.parse_memo_key(l)?;
                self.memo_put(k)?;
            }
            op::BINPUT => {
                let k = u64::from(self.u8()?);
                self.memo_put(k)?;
            }
            op::LONG_BINPUT => {
                let k = u64::from(self.u32()?);
                self.memo_put(k)?;
            }
            op::MEMOIZE => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            // ----- globals, objects
            op::GLOBAL => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                self.global(module, name)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.as_str(module), self.as_str(name)) else {
                    return Err(self.err("STACK_GLOBAL needs two strings"));
                };
                let (m, n) = (m.to_string(), n.to_string());
                self.global(&m, &n)?;
            }
            op::EXT1..=op::EXT4 => {
                let code = match code {
                    op::EXT1 => u32::from(self.u8()?),
                    op::EXT2 => u32::from(self.u16()?),
                    _ => self.u32()?,
                };
                let g = format!("copyreg extension code {code}");
                self.flag(&g);
                let id = self.blocked(g)?;
                self.stack.push(id);
            }
            op::REDUCE => self.reduce()?,
            op::NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = Args::new(self.seq(args).unwrap_or_default());
                let id = self.call(cls, &args, None)?;
                self.stack.push(id);
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = Args::new(self.seq(args).unwrap_or_default());
                let id = self.call(cls, &args, Some(kwargs))?;
                self.stack.push(id);
            }
            op::INST => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let args = self.pop_mark()?;
                self.global(module, name)?;
                let cls = self.pop()?;
                let id = self.call(cls, &args, None)?;
                self.stack.push(id);
            }
            op::OBJ => {
                let items = self.pop_mark()?;
                let Some((&cls, args)) = items.split_first() else {
                    return Err(self.err("stack underflow"));
                };
                let id = self.call(cls, args, None)?;
                self.stack.push(id);
            }
            op::BUILD => {
                let state = self.pop()?;
                let inst = self.top()?;
                self.build(inst, state)?;
            }
            // ----- persistent ids
            op::PERSID => {
                let l = self.line()?;
                let pid = Value::Str(utf8(l));
                self.persistent(pid)?;
            }
            op::BINPERSID => self.binpersid()?,
            _ => return Err(self.err(format!("unknown opcode 0x{code:02x}"))),
        }
        Ok(false)
    }

    /// REDUCE.
    pub(super) fn reduce(&mut self) -> Result<(), FormatError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let args = match self.seq(args) {
            Some(a) if matches!(self.nodes[args], Node::Tuple(_)) => Args::new(a),
            _ => match &self.nodes[callable] {
                Node::Global { ctor: None, .. } | Node::Leaf(Value::Blocked { .. }) => {
                    Args::new(&[])
                }
                _ => {
                    return Err(self.err(format!(
                        "arguments are a {}, expected a tuple",
                        self.kind(args)
                    )))
                }
            },
        };
        let id = self.call(callable, &args, None)?;
        self.stack.push(id);
        Ok(())
    }

    /// BINPERSID.
    pub(super) fn binpersid(&mut self) -> Result<(), FormatError> {
        let pid = self.pop()?;
        if !self.persistent_items(pid)? {
            let pid = self.materialise(pid)?;
            self.persistent(pid)?;
        }
        Ok(())
    }

    pub(super) fn persistent(&mut self, pid: Value) -> Result<(), FormatError> {
        let loaded = self.host.persistent_load(pid);
        self.loaded(loaded)
    }

    /// A persistent id that is a short tuple of strings, ints and globals, offered to
    /// the host borrowed ([`Host::persistent_load_items`]). The materialisation budget
    /// is charged exactly as materialising it would. `false`: not such a tuple, or the
    /// host wants the value (nothing was charged).
    pub(super) fn persistent_items(&mut self, pid: Id) -> Result<bool, FormatError> {
        const MAX_ITEMS: usize = 8;
        let Node::Tuple(t) = &self.nodes[pid] else {
            return Ok(false);
        };
        let ids = &self.tuples[t.range()];
        if ids.len() > MAX_ITEMS || self.opts.max_depth < 1 {
            return Ok(false);
        }
        let mut items = [PidItem::Int(0); MAX_ITEMS];
        for (slot, id) in items.iter_mut().zip(ids.iter()) {
            *slot = match &self.nodes[*id] {
                Node::Text(s) => PidItem::Str(s),
                Node::Leaf(Value::Str(s)) => PidItem::Str(s),
                Node::Leaf(Value::Bytes(b)) => PidItem::Bytes(b),
                Node::Leaf(Value::Int(i)) => PidItem::Int(*i),
                Node::Global { name, .. } => PidItem::Global(name),
                _ => return Ok(false),
            };
        }
        let items = &items[..ids.len()];
        // The budget as `materialise` charges it: the tuple, then each item.
        let (value_cap, byte_cap) = (self.value_cap(), self.byte_cap());
        let (mut values, mut bytes) = (self.budget.values + 1, self.budget.bytes);
        if values > value_cap {
            return Err(self.values_limit(values));
        }
        for item in items {
            values += 1;
            if values > value_cap {
                return Err(self.values_limit(values));
            }
            bytes += match item {
                PidItem::Str(s) => s.len() as u64,
                PidItem::Bytes(b) => b.len() as u64,
                _ => 0,
            };
            if bytes > byte_cap {
                return Err(self.bytes_limit(bytes));
            }
        }
        let Some(loaded) = self.host.persistent_load_items(items) else {
            return Ok(false);
        };
        self.budget.values = values;
        self.budget.bytes = bytes;
        self.loaded(loaded)?;
        Ok(true)
    }

    pub(super) fn loaded(&mut self, loaded: Result<Loaded, HostError>) -> Result<(), FormatError> {
        let loaded = loaded.map_err(|m| self.err(format!("persistent id: {m}")))?;
        let id = match loaded {
            Loaded::Storage(i) => self.add(Node::Storage(i))?,
            Loaded::Value(v) => self.intern(v)?,
        };
        self.stack.push(id);
        Ok(())
    }

    pub(super) fn parse_memo_key(&self, l: &[u8]) -> Result<u64, FormatError> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| self.err(format!("bad memo key {:?}", String::from_utf8_lossy(l))))
    }

    pub(super) fn parse_int_text(&self, l: &[u8]) -> Result<Value, FormatError> {
        let s = std::str::from_utf8(l).unwrap_or("").trim();
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        let (neg, digits) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(format!("bad integer {:?}", String::from_utf8_lossy(l))));
        }
        let digits = digits.trim_start_matches('0');
        if digits.len() > limits::MAX_INT_DIGITS {
            return Err(self.err(format!("integer of {} digits is too large", digits.len())));
        }
        if digits.is_empty() {
            return Ok(Value::Int(0));
        }
        Ok(Value::BigInt(format!(
            "{}{digits}",
            if neg { "-" } else { "" }
        )))
    }

    pub(super) fn decode_long(&self, b: &[u8]) -> Result<Value, FormatError> {
        if b.len() > limits::MAX_LONG_BYTES {
            return Err(self.err(format!("integer of {} bytes is too large", b.len())));
        }
        Ok(decode_long(b))
    }
}
