//! torch zip and legacy checkpoint layouts.
//!
//! Both layouts pickle the checkpoint object with storages as persistent ids; the
//! [`pickle`] VM runs with a host that turns those ids into [`Storage`]s and every
//! `_rebuild_tensor*` call into a [`TensorInfo`]. Afterwards each tensor gets the path
//! under which it first appears in the tree.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::input::{pickle_at, Input, Whole};
use super::pickle::{self, Host, HostError, Loaded, PidItem, TensorSpec};
use super::zip::{self, Method, ZipArchive};
use super::{
    limits, DType, Finding, FormatError, InflateBudget, Parsed, Storage, StorageData, TensorInfo,
    Value,
};

/// The legacy magic number, `0x1950a86a20f9469cfc6c`, as the pickle VM decodes it.
const LEGACY_MAGIC: &str = "119547037146038801333356";
const LEGACY_PROTOCOL: i64 = 1001;

/// Storage keys → positions. torch numbers its storages `0`, `1`, …: such keys index a
/// table directly (no hashing, no copy); any other key goes to a hash map.
#[derive(Debug, Default, Clone)]
struct KeyIndex<'k> {
    /// By the number a key spells; `usize::MAX`: none.
    numbered: Vec<usize>,
    named: HashMap<Cow<'k, str>, usize>,
}

/// Keys spelling a number below this (canonically: no sign, no leading zero) are
/// numbered; the table is at most this long.
const MAX_NUMBERED: usize = 1 << 16;

/// The number `key` spells canonically, if it is below [`MAX_NUMBERED`].
fn key_number(key: &str) -> Option<usize> {
    let b = key.as_bytes();
    if b.is_empty()
        || b.len() > 5
        || !b.iter().all(u8::is_ascii_digit)
        || (b[0] == b'0' && b.len() > 1)
    {
        return None;
    }
    let n = b.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    (n < MAX_NUMBERED).then_some(n)
}

impl<'k> KeyIndex<'k> {
    fn get(&self, key: &str) -> Option<usize> {
        match key_number(key) {
            Some(n) => self.numbered.get(n).copied().filter(|i| *i != usize::MAX),
            None => self.named.get(key).copied(),
        }
    }

    /// Map `key` to `value`; `stored` gives the key to keep when it is not a number.
    fn insert(&mut self, key: &str, value: usize, stored: impl FnOnce() -> Cow<'k, str>) {
        match key_number(key) {
            Some(n) => {
                if n >= self.numbered.len() {
                    self.numbered.resize(n + 1, usize::MAX);
                }
                self.numbered[n] = value;
            }
            None => {
                self.named.insert(stored(), value);
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = usize> + '_ {
        self.numbered
            .iter()
            .copied()
            .filter(|i| *i != usize::MAX)
            .chain(self.named.values().copied())
    }
}

/// Storages and tensors collected while a pickle runs.
#[derive(Debug, Default, Clone)]
struct Table {
    storages: Vec<Storage>,
    /// Key → the first storage with that key.
    by_key: KeyIndex<'static>,
    /// `same_key[i]`: the next storage with the key of storage `i` (another dtype).
    same_key: Vec<Option<usize>>,
    tensors: Vec<TensorInfo>,
    notes: Vec<Finding>,
}

/// A storage reference decoded from a persistent id.
struct StorageRef {
    dtype: DType,
    key: String,
    location: String,
    numel: u64,
    /// Legacy view: (view key, offset in elements, size in elements).
    view: Option<(String, u64, u64)>,
}

impl Table {
    fn note(&mut self, message: String) {
        self.notes.push(Finding::Note { message });
    }

    fn rebuild(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        let storage = self
            .storages
            .get(spec.storage)
            .ok_or(HostError::NoStorage(spec.storage))?;
        let dtype = spec.dtype.unwrap_or(storage.dtype);
        if spec.shape.len() > limits::MAX_DIMS {
            return Err(HostError::TooManyDims {
                found: spec.shape.len(),
                max: limits::MAX_DIMS,
            });
        }
        // No real tensor has more bytes than u64 counts (keeps numel()/nbytes() exact).
        let fits = spec
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, d| acc.checked_mul(*d))
            .is_some();
        if !fits {
            return Err(HostError::ImpossiblyLarge(spec.shape));
        }
        self.tensors.push(TensorInfo {
            path: String::new(),
            dtype,
            shape: spec.shape,
            strides: spec.strides,
            storage_offset: spec.storage_offset,
            storage: spec.storage,
            requires_grad: spec.requires_grad,
        });
        Ok(self.tensors.len() - 1)
    }

    fn set_requires_grad(&mut self, index: usize, rg: bool) {
        if let Some(t) = self.tensors.get_mut(index) {
            t.requires_grad = rg;
        }
    }

    /// The storage with this key and dtype, if there is one yet.
    fn find(&self, key: &str, dtype: DType) -> Option<usize> {
        self.lookup(key, dtype).ok()
    }

    /// `Ok`: the storage with this key and dtype; `Err`: there is none yet (with the
    /// first storage of that key, if any).
    fn lookup(&self, key: &str, dtype: DType) -> Result<usize, Option<usize>> {
        let Some(first) = self.by_key.get(key) else {
            return Err(None);
        };
        let mut i = first;
        loop {
            if self.storages[i].dtype == dtype {
                return Ok(i);
            }
            match self.same_key[i] {
                Some(next) => i = next,
                None => return Err(Some(first)),
            }
        }
    }

    /// The storage for `r`, created with `data()` on first sight.
    fn storage(&mut self, r: StorageRef, data: impl FnOnce() -> StorageData) -> usize {
        match self.lookup(&r.key, r.dtype) {
            Ok(i) => self.seen(i, &r),
            Err(first) => self.create(r, first, data()),
        }
    }

    /// Storage `i` referenced again by `r`.
    fn seen(&mut self, i: usize, r: &StorageRef) -> usize {
        if self.storages[i].numel != r.numel {
            self.note(format!(
                "storage `{}` is declared with {} and with {} elements; using the first",
                r.key, self.storages[i].numel, r.numel
            ));
        }
        i
    }

    /// A new storage for `r`; `first`: the first storage with its key, if any.
    fn create(&mut self, r: StorageRef, first: Option<usize>, data: StorageData) -> usize {
        if first.is_some() {
            self.note(format!(
                "storage `{}` is viewed with more than one dtype",
                r.key
            ));
        }
        let index = self.storages.len();
        if first.is_none() {
            self.by_key
                .insert(&r.key, index, || Cow::Owned(r.key.clone()));
        }
        self.storages.push(Storage {
            key: r.key,
            dtype: r.dtype,
            location: r.location,
            numel: r.numel,
            data,
        });
        self.same_key.push(None);
        match first {
            None => {}
            Some(mut j) => {
                while let Some(next) = self.same_key[j] {
                    j = next;
                }
                self.same_key[j] = Some(index);
            }
        }
        index
    }
}

/// Decode `('storage', storage_type, key, location, numel[, view_metadata])`.
fn parse_storage_pid(pid: Value, legacy: bool) -> Result<StorageRef, HostError> {
    let mut items = match pid {
        Value::Tuple(items) | Value::List(items) => items,
        other => return Err(HostError::NotATuple(other.kind())),
    };
    let typename = match items.first() {
        Some(Value::Str(s)) => s.as_str(),
        Some(Value::Bytes(b)) => std::str::from_utf8(b).unwrap_or("?"),
        _ => return Err(HostError::NoTypeName),
    };
    if typename != "storage" {
        return Err(HostError::UnsupportedType(typename.to_string()));
    }
    let want = if legacy { 6 } else { 5 };
    if items.len() < 5 {
        return Err(HostError::StorageFields {
            found: items.len(),
            expected: want,
        });
    }
    let dtype = match &items[1] {
        Value::Global(name) => {
            storage_dtype(name).ok_or_else(|| HostError::UnknownStorageType(name.to_string()))?
        }
        // torch ≥ 2 may pass a dtype-tagged untyped storage as `torch.float32`
        other => return Err(HostError::StorageTypeNotAClass(other.kind())),
    };
    let key = match std::mem::take(&mut items[2]) {
        Value::Str(s) => s,
        Value::Int(i) => i.to_string(),
        other => return Err(HostError::StorageKey(other.kind())),
    };
    let location = match std::mem::take(&mut items[3]) {
        Value::Str(s) => s,
        _ => "?".into(),
    };
    let numel = match &items[4] {
        Value::Int(n) if *n >= 0 => *n as u64,
        other => return Err(HostError::StorageSize(other.kind())),
    };
    let view = match items.get_mut(5) {
        Some(Value::Tuple(v)) if legacy => match v.as_mut_slice() {
            [Value::Str(k), Value::Int(o), Value::Int(s)] if *o >= 0 && *s >= 0 => {
                Some((std::mem::take(k), *o as u64, *s as u64))
            }
            _ => return Err(HostError::ViewMetadata),
        },
        _ => None,
    };
    Ok(StorageRef {
        dtype,
        key,
        location,
        numel,
        view,
    })
}

/// [`parse_storage_pid`] (zip layout) for a borrowed tuple: the same results and messages.
fn parse_storage_items(items: &[PidItem<'_>]) -> Result<StorageRef, HostError> {
    let typename = match items.first() {
        Some(PidItem::Str(s)) => *s,
        Some(PidItem::Bytes(b)) => std::str::from_utf8(b).unwrap_or("?"),
        _ => return Err(HostError::NoTypeName),
    };
    if typename != "storage" {
        return Err(HostError::UnsupportedType(typename.to_string()));
    }
    if items.len() < 5 {
        return Err(HostError::StorageFields {
            found: items.len(),
            expected: 5,
        });
    }
    let dtype = match items[1] {
        PidItem::Global(name) => {
            storage_dtype(name).ok_or_else(|| HostError::UnknownStorageType(name.to_string()))?
        }
        other => return Err(HostError::StorageTypeNotAClass(other.kind())),
    };
    let key = match items[2] {
        PidItem::Str(s) => s.to_string(),
        PidItem::Int(i) => i.to_string(),
        other => return Err(HostError::StorageKey(other.kind())),
    };
    let location = match items[3] {
        PidItem::Str(s) => s.to_string(),
        _ => "?".into(),
    };
    let numel = match items[4] {
        PidItem::Int(n) if n >= 0 => n as u64,
        other => return Err(HostError::StorageSize(other.kind())),
    };
    Ok(StorageRef {
        dtype,
        key,
        location,
        numel,
        view: None,
    })
}

/// `torch.FloatStorage` → F32, `torch.UntypedStorage` → U8, a dtype global → itself.
fn storage_dtype(global: &str) -> Option<DType> {
    let name = match global.bytes().rposition(|b| b == b'.') {
        Some(i) => &global[i + 1..],
        None => global,
    };
    if name == "UntypedStorage" {
        return Some(DType::U8);
    }
    if let Some(d) = DType::from_storage_name(name) {
        return global.starts_with("torch.").then_some(d);
    }
    global
        .strip_prefix("torch.")
        .and_then(DType::from_torch_name)
}

// ----- zip layout ---------------------------------------------------------------

struct ZipHost<'z, 'a> {
    zip: &'z ZipArchive<'a>,
    budget: &'z InflateBudget,
    prefix: String,
    /// Storage key → index of its entry `<prefix>data/<key>`.
    data_entries: KeyIndex<'z>,
    table: Table,
    /// Entries (by index) that some storage was read from.
    used_entries: Vec<bool>,
    /// An error that fails the whole file (an inflation limit).
    fatal: Option<FormatError>,
}

impl ZipHost<'_, '_> {
    fn storage_data(&mut self, r: &StorageRef) -> (StorageData, Option<String>) {
        let Some(index) = self.data_entries.get(&r.key) else {
            return (
                StorageData::Missing,
                Some(format!(
                    "storage `{}` has no entry `{}data/{}` in the archive",
                    r.key, self.prefix, r.key
                )),
            );
        };
        let entry = &self.zip.entries()[index];
        let name = &entry.name;
        self.used_entries[index] = true;
        let esize = r.dtype.size() as u64;
        let expected = r.numel.checked_mul(esize);
        let actual = entry.uncompressed_size;
        let mut note = None;
        let mut len = actual;
        match expected {
            Some(e) if e == actual => {}
            Some(e) => {
                note = Some(format!(
                    "storage `{}` declares {} {} elements ({e} bytes) but `{name}` holds {actual} bytes",
                    r.key, r.numel, r.dtype
                ));
                len = e.min(actual);
            }
            None => {
                note = Some(format!("storage `{}` declares an impossible size", r.key));
                len = actual;
            }
        }
        let data = match (entry.method, zip::stored_len(entry)) {
            (_, Err(e)) => {
                let note = format!("storage `{}` cannot be read: {e}", r.key);
                return (StorageData::Missing, Some(note));
            }
            // The local header is read when the bytes are first needed (not by `scan`).
            (_, Ok(Some(entry_size))) => StorageData::ZipEntry {
                local_header_offset: entry.local_header_offset,
                name: name.clone(),
                entry_size,
                len,
            },
            (Method::Stored, Ok(None)) => StorageData::Missing, // encrypted
            (Method::Deflate, _) if !entry.is_encrypted() => {
                // Located now, inflated when read: only its declared size is checked.
                if let Err(e) = self.budget.declare(name, entry.uncompressed_size) {
                    self.fatal.get_or_insert(e);
                    return (StorageData::Missing, None);
                }
                StorageData::Deflated {
                    local_header_offset: entry.local_header_offset,
                    name: name.clone(),
                    compressed_size: entry.compressed_size,
                    uncompressed_size: entry.uncompressed_size,
                    len,
                }
            }
            (method, _) => {
                let why = match method {
                    Method::Other(m) => format!("`{name}` uses unsupported compression method {m}"),
                    _ => format!("`{name}` is encrypted"),
                };
                let note = format!("storage `{}` cannot be read: {why}", r.key);
                return (StorageData::Missing, Some(note));
            }
        };
        (data, note)
    }
}

impl Host for ZipHost<'_, '_> {
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError> {
        let r = parse_storage_pid(pid, false)?;
        self.load(r)
    }
    fn persistent_load_items(
        &mut self,
        items: &[PidItem<'_>],
    ) -> Option<Result<Loaded, HostError>> {
        Some(parse_storage_items(items).and_then(|r| self.load(r)))
    }
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        self.table.rebuild(spec)
    }
    fn set_requires_grad(&mut self, index: usize, rg: bool) {
        self.table.set_requires_grad(index, rg);
    }
}

impl ZipHost<'_, '_> {
    fn load(&mut self, r: StorageRef) -> Result<Loaded, HostError> {
        let first = match self.table.lookup(&r.key, r.dtype) {
            Ok(i) => return Ok(Loaded::Storage(self.table.seen(i, &r))),
            Err(first) => first,
        };
        let (data, note) = self.storage_data(&r);
        if self.fatal.is_some() {
            return Err(HostError::InflationLimit);
        }
        if let Some(n) = note {
            self.table.note(n);
        }
        Ok(Loaded::Storage(self.table.create(r, first, data)))
    }
}

/// The entries that may be the archive's pickle: `data.pkl` at the top or in the single
/// top folder, which may have any name (`<prefix>data.pkl`). A `torch.save` file has one.
pub(crate) fn pickle_names(entries: &[zip::Entry]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .collect()
}

/// Read a `torch.save` zip archive.
pub fn read_zip(bytes: &[u8]) -> Result<Parsed, FormatError> {
    read_zip_with(bytes, &InflateBudget::default())
}

/// [`read_zip`], inflating deflated entries within `budget`.
pub fn read_zip_with(bytes: &[u8], budget: &InflateBudget) -> Result<Parsed, FormatError> {
    let zip = ZipArchive::parse(bytes)?;
    let candidates = pickle_names(zip.entries());
    let pkl_name = match candidates.as_slice() {
        [one] => one.to_string(),
        [] => {
            let names: Vec<&str> = zip
                .entries()
                .iter()
                .take(5)
                .map(|e| e.name.as_str())
                .collect();
            return Err(FormatError::NotACheckpoint(format!(
                "zip archive without a data.pkl (entries: {}{})",
                names.join(", "),
                if zip.entries().len() > 5 { ", …" } else { "" }
            )));
        }
        many => {
            return Err(FormatError::Zip(format!(
                "several pickles in one archive: {}",
                many.join(", ")
            )))
        }
    };
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    let pkl_entry = zip
        .find(&pkl_name)
        .ok_or_else(|| FormatError::Zip(format!("`{pkl_name}` vanished")))?;
    if pkl_entry.method == Method::Deflate && !pkl_entry.is_encrypted() {
        budget.charge(&pkl_name, pkl_entry.uncompressed_size)?;
    }
    let pkl = zip.read(pkl_entry, limits::MAX_PICKLE_BYTES)?;

    let big_endian = match zip.find(&format!("{prefix}byteorder")) {
        None => false,
        Some(e) => {
            let b = zip.read(e, 64)?;
            match std::str::from_utf8(&b).map(str::trim) {
                Ok("little") => false,
                Ok("big") => true,
                _ => {
                    return Err(FormatError::Zip(format!(
                        "unknown byteorder {:?}",
                        String::from_utf8_lossy(&b)
                    )))
                }
            }
        }
    };

    let data_prefix = format!("{prefix}data/");
    let mut data_entries = KeyIndex::default();
    let mut count = 0;
    for (i, e) in zip.entries().iter().enumerate() {
        if let Some(key) = e.name.strip_prefix(data_prefix.as_str()) {
            data_entries.insert(key, i, || Cow::Borrowed(key));
            count += 1;
        }
    }
    // Usually one storage per entry and one tensor per storage (a hint only: bounded).
    let count = count.min(4096);
    let mut table = Table::default();
    table.storages.reserve(count);
    table.same_key.reserve(count);
    table.tensors.reserve(count);
    let mut host = ZipHost {
        zip: &zip,
        budget,
        prefix: prefix.clone(),
        data_entries,
        table,
        used_entries: vec![false; zip.entries().len()],
        fatal: None,
    };
    let out = pickle::run(&pkl, &mut host, &pickle::Options::new("data.pkl"));
    if let Some(e) = host.fatal.take() {
        return Err(e);
    }
    let out = out?;
    let unused = host
        .data_entries
        .values()
        .filter(|i| !host.used_entries[*i])
        .count();
    let mut table = host.table;
    if unused > 0 {
        table.note(format!(
            "{unused} storage entr{} in the archive that no tensor uses",
            if unused == 1 { "y" } else { "ies" }
        ));
    }
    Ok(finish(out.value, table, out.findings, big_endian))
}

// ----- legacy layout ------------------------------------------------------------

#[derive(Default)]
struct LegacyHost {
    table: Table,
    /// (view storage, root storage, offset in bytes, length in bytes)
    views: Vec<(usize, usize, u64, u64)>,
}

impl Host for LegacyHost {
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError> {
        if let Value::Tuple(items) = &pid {
            // Whole-module saves reference their class source: keep the class value.
            if matches!(items.first(), Some(Value::Str(s)) if s == "module") {
                return Ok(Loaded::Value(items.get(1).cloned().unwrap_or(Value::None)));
            }
        }
        let StorageRef {
            dtype,
            key,
            location,
            numel,
            view,
        } = parse_storage_pid(pid, true)?;
        let root = StorageRef {
            dtype,
            key,
            location: location.clone(),
            numel,
            view: None,
        };
        let root = self.table.storage(root, || StorageData::Missing);
        match view {
            None => Ok(Loaded::Storage(root)),
            Some((view_key, offset, size)) => {
                let esize = dtype.size() as u64;
                let fresh = self.table.find(&view_key, dtype).is_none();
                let vr = StorageRef {
                    dtype,
                    key: view_key,
                    location,
                    numel: size,
                    view: None,
                };
                let v = self.table.storage(vr, || StorageData::Missing);
                if fresh {
                    let off = offset
                        .checked_mul(esize)
                        .ok_or(HostError::ViewOverflows("offset"))?;
                    let len = size
                        .checked_mul(esize)
                        .ok_or(HostError::ViewOverflows("size"))?;
                    self.views.push((v, root, off, len));
                }
                Ok(Loaded::Storage(v))
            }
        }
    }
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        self.table.rebuild(spec)
    }
    fn set_requires_grad(&mut self, index: usize, rg: bool) {
        self.table.set_requires_grad(index, rg);
    }
}

fn legacy_opts(n: usize, base: usize) -> pickle::Options {
    let mut o = pickle::Options::new(format!("legacy pickle #{n}"));
    o.base_offset = base as u64;
    o
}

fn is_magic(v: &Value) -> bool {
    matches!(v, Value::BigInt(s) if s == LEGACY_MAGIC)
}

/// Read a legacy (`_use_new_zipfile_serialization=False`) torch file, or a plain
/// pickle when the stream does not start with the torch magic number.
pub fn read_legacy(bytes: &[u8]) -> Result<Parsed, FormatError> {
    read_legacy_input(&mut Whole(bytes))
}

/// [`read_legacy`] of a file read as it goes: the five pickles (each in windows, at most
/// [`limits::MAX_PICKLE_BYTES`]) and the 8-byte count before each storage; a storage's
/// bytes are not read.
pub fn read_legacy_input(input: &mut dyn Input) -> Result<Parsed, FormatError> {
    let file_len = input.len();
    let plain = |input: &mut dyn Input, n: usize, pos: u64| {
        pickle_at(input, pos, file_len, &legacy_opts(n, pos as usize), || {
            pickle::PlainHost
        })
        .map(|(o, _)| o)
    };
    let mut findings = Vec::new();
    let first = plain(input, 1, 0);
    let first = match first {
        Ok(o) if is_magic(&o.value) => o,
        Ok(o) => {
            // A plain pickle.
            let mut findings = relocate(o.findings, "pickle");
            if (o.end as u64) < file_len {
                findings.push(Finding::Note {
                    message: format!("{} bytes follow the pickle", file_len - o.end as u64),
                });
            }
            return Ok(Parsed {
                root: o.value,
                findings,
                ..Parsed::default()
            });
        }
        Err(e) => return Err(relocate_err(e)),
    };
    let mut pos = first.end as u64;
    findings.extend(first.findings);

    let proto = plain(input, 2, pos)?;
    pos += proto.end as u64;
    findings.extend(proto.findings);
    if proto.value != Value::Int(LEGACY_PROTOCOL) {
        return Err(FormatError::NotACheckpoint(format!(
            "legacy torch file with unsupported protocol version (of type {})",
            proto.value.kind()
        )));
    }

    let sys = plain(input, 3, pos)?;
    pos += sys.end as u64;
    findings.extend(sys.findings);
    let big_endian = match sys.value.get("little_endian") {
        Some(Value::Bool(le)) => !le,
        _ => {
            findings.push(Finding::Note {
                message: "legacy sys_info has no little_endian flag; assuming little-endian".into(),
            });
            false
        }
    };

    let (main, host) = pickle_at(
        input,
        pos,
        file_len,
        &legacy_opts(4, pos as usize),
        LegacyHost::default,
    )?;
    pos += main.end as u64;
    findings.extend(main.findings);

    let keys_out = plain(input, 5, pos)?;
    let keys_pos = pos;
    pos += keys_out.end as u64;
    findings.extend(keys_out.findings);
    let keys = match &keys_out.value {
        Value::List(items) | Value::Tuple(items) => items,
        other => {
            return Err(FormatError::Pickle {
                offset: keys_pos,
                opcode: None,
                message: format!("legacy storage key list is a {}", other.kind()),
            })
        }
    };

    let mut table = host.table;
    let mut root_of_key: HashMap<String, usize> = HashMap::new();
    for (i, s) in table.storages.iter().enumerate() {
        root_of_key.entry(s.key.clone()).or_insert(i);
    }
    let views = host.views;
    let view_ids: HashSet<usize> = views.iter().map(|v| v.0).collect();
    let mut seen = HashSet::new();
    for key in keys {
        let key = match key {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => {
                return Err(FormatError::Pickle {
                    offset: keys_pos as u64,
                    opcode: None,
                    message: format!("legacy storage key is a {}", other.kind()),
                })
            }
        };
        let Some(&idx) = root_of_key.get(&key) else {
            return Err(FormatError::NotACheckpoint(format!(
                "legacy storage `{key}` is listed but never referenced, so its element size is unknown"
            )));
        };
        if !seen.insert(key.clone()) {
            return Err(FormatError::NotACheckpoint(format!(
                "legacy storage `{key}` is listed twice"
            )));
        }
        let esize = table.storages[idx].dtype.size() as u64;
        let head = input.get(pos, pos + 8)?;
        let a: [u8; 8] = head.try_into().map_err(|_| {
            FormatError::Truncated(format!(
                "legacy file cut short: storage `{key}` has no size at byte {pos} of {file_len}"
            ))
        })?;
        let count = if big_endian {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        };
        pos += 8;
        let left = file_len - pos;
        let nbytes = u64::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(esize))
            .filter(|n| *n <= left)
            .ok_or_else(|| {
                FormatError::Truncated(format!(
                    "legacy file cut short: storage `{key}` claims {count} elements of {esize} bytes at byte {pos}, but only {left} bytes remain"
                ))
            })?;
        let declared = table.storages[idx].numel;
        if count as u64 != declared {
            table.note(format!(
                "legacy storage `{key}` declares {declared} elements but holds {count}"
            ));
        }
        // Every dtype view of this key shares the bytes.
        for s in table.storages.iter_mut().filter(|s| s.key == key) {
            let len = if s.dtype.size() as u64 == esize {
                nbytes
            } else {
                nbytes / s.dtype.size() as u64 * s.dtype.size() as u64
            };
            s.data = StorageData::Mapped { offset: pos, len };
        }
        pos += nbytes;
    }
    for (view, root, off, len) in views {
        let data = match &table.storages[root].data {
            StorageData::Mapped { offset, len: rlen }
                if off.checked_add(len).is_some_and(|e| e <= *rlen) =>
            {
                StorageData::Mapped {
                    offset: offset + off,
                    len,
                }
            }
            _ => {
                let key = table.storages[view].key.clone();
                table.note(format!(
                    "legacy storage view `{key}` lies outside its storage"
                ));
                StorageData::Missing
            }
        };
        table.storages[view].data = data;
    }
    for i in 0..table.storages.len() {
        if table.storages[i].data == StorageData::Missing && !view_ids.contains(&i) {
            let key = table.storages[i].key.clone();
            table.note(format!(
                "legacy storage `{key}` is referenced but its data is not in the file"
            ));
        }
    }
    if pos < file_len {
        table.note(format!("{} bytes follow the last storage", file_len - pos));
    }
    Ok(finish(main.value, table, findings, big_endian))
}

// ----- legacy tar layout (torch < 1.0) ----------------------------------------------

/// Resolves the persistent ids of a tar checkpoint's `pickle` member: a string or int
/// key names a tensor of the `tensors` member or a storage of `storages`
/// (`deserialized_objects[int(saved_id)]`, the tensors written last); a tuple is a
/// module class with its source (its first item is what torch returns).
struct TarHost {
    table: Table,
    tensors: HashMap<String, usize>,
}

impl Host for TarHost {
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError> {
        match pid {
            Value::Tuple(items) => Ok(Loaded::Value(
                items.into_iter().next().unwrap_or(Value::None),
            )),
            other => {
                let key = tar_key(&other).ok_or_else(|| HostError::PidKind(other.kind()))?;
                if let Some(&t) = self.tensors.get(&key) {
                    return Ok(Loaded::Value(Value::Tensor(t)));
                }
                match self.table.by_key.get(&key) {
                    Some(i) => Ok(Loaded::Storage(i)),
                    None => Err(HostError::UnknownKey(key)),
                }
            }
        }
    }
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        self.table.rebuild(spec)
    }
    fn set_requires_grad(&mut self, index: usize, rg: bool) {
        self.table.set_requires_grad(index, rg);
    }
}

/// A tar checkpoint's object key as Python's `int(key)` reads it, in decimal.
fn tar_key(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        Value::BigInt(s) => Some(s.clone()),
        Value::Str(s) => match s.trim().parse::<i64>() {
            Ok(i) => Some(i.to_string()),
            Err(_) => Some(s.clone()),
        },
        _ => None,
    }
}

/// One tar member being read: where its data starts in the file, its length, a cursor.
struct Member {
    name: &'static str,
    start: u64,
    len: u64,
    pos: u64,
}

impl Member {
    fn location(&self) -> String {
        format!("tar member `{}`", self.name)
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    /// The next pickle (plain: no persistent ids), its findings kept.
    fn pickle(
        &mut self,
        input: &mut dyn Input,
        findings: &mut Vec<Finding>,
    ) -> Result<Value, FormatError> {
        let mut opts = pickle::Options::new(self.location());
        let at = self.start + self.pos;
        opts.base_offset = at;
        let (o, _) = pickle_at(input, at, self.start + self.len, &opts, || {
            pickle::PlainHost
        })?;
        self.pos += o.end as u64;
        findings.extend(relocate(o.findings, &self.location()));
        Ok(o.value)
    }

    /// Step over `n` bytes (a storage's data, which is not read).
    fn skip(&mut self, n: u64, what: &str) -> Result<(), FormatError> {
        let at = self.start + self.pos;
        let left = self.left();
        if n > left {
            return Err(FormatError::Truncated(format!(
                "{} cut short: {what} needs {n} bytes at byte {at}, {left} remain",
                self.location()
            )));
        }
        self.pos += n;
        Ok(())
    }

    fn bytes<const N: usize>(
        &mut self,
        input: &mut dyn Input,
        what: &str,
    ) -> Result<[u8; N], FormatError> {
        let at = self.start + self.pos;
        self.skip(N as u64, what)?;
        // The member lies inside the file only as far as the file goes.
        input.get(at, at + N as u64)?.try_into().map_err(|_| {
            FormatError::Truncated(format!(
                "{} cut short: {what} needs {N} bytes at byte {at}, past the end of the file",
                self.location()
            ))
        })
    }

    fn i64(&mut self, input: &mut dyn Input, what: &str) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.bytes::<8>(input, what)?))
    }

    /// A count or size that must be a non-negative number no larger than `max`.
    fn count(&self, v: i64, what: &str, max: u64) -> Result<u64, FormatError> {
        u64::try_from(v).ok().filter(|n| *n <= max).ok_or_else(|| {
            FormatError::NotACheckpoint(format!(
                "{}: {what} is {v} (at most {max} fit)",
                self.location()
            ))
        })
    }

    fn bad(&self, message: String) -> FormatError {
        FormatError::Pickle {
            offset: self.start + self.pos,
            opcode: None,
            message: format!("{} {message}", self.location()),
        }
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Tuple(items) | Value::List(items) => Some(items),
        _ => None,
    }
}

/// Read a pre-1.0 tar checkpoint as torch 2.13's `legacy_load` does: the last member of
/// each name is used; `storages` holds a count, then per storage a pickled
/// `(key, location, storage_type)` followed by an int64 element count and the raw
/// little-endian elements, then a pickled list of views `(key, root key, offset, numel)`;
/// `tensors` holds a count, then per tensor a pickled `(key, storage key, type)`
/// followed by int32 ndim, 4 skipped bytes, ndim int64 sizes, ndim int64 strides and an
/// int64 storage offset; `pickle` is the object, whose persistent ids name tensors and
/// storages by key. (`sys_info` is not read by torch 2.13.)
pub fn read_tar(bytes: &[u8]) -> Result<Parsed, FormatError> {
    read_tar_input(&mut Whole(bytes))
}

/// [`read_tar`] of a file read as it goes: tar headers, pickles and the counts and
/// shapes between them; a storage's bytes are not read.
pub fn read_tar_input(input: &mut dyn Input) -> Result<Parsed, FormatError> {
    let mut findings = Vec::new();
    let (root, table) = read_tar_into(input, &mut findings)?;
    Ok(finish(root, table, findings, false))
}

/// Every unsafe global the pickles of a tar checkpoint hold, as far as it can be read
/// (the rest of a member is not, once its structure breaks).
pub(crate) fn tar_findings(input: &mut dyn Input) -> Vec<Finding> {
    let mut findings = Vec::new();
    let _ = read_tar_into(input, &mut findings);
    findings.retain(|f| matches!(f, Finding::UnsafeGlobal { .. }));
    findings
}

fn read_tar_into(
    input: &mut dyn Input,
    findings: &mut Vec<Finding>,
) -> Result<(Value, Table), FormatError> {
    let archive = super::tar::tar_archive(input)?;
    let member = |name: &'static str| -> Result<Member, FormatError> {
        let m = archive.member(name).ok_or_else(|| {
            FormatError::NotACheckpoint(format!(
                "a tar archive without a `{name}` member (torch's legacy tar checkpoints have `storages`, `tensors` and `pickle`)"
            ))
        })?;
        Ok(Member {
            name,
            start: m.data,
            len: m.len,
            pos: 0,
        })
    };
    let mut table = Table::default();

    let mut m = member("storages")?;
    let v = m.pickle(input, findings)?;
    let n = as_int(&v).ok_or_else(|| m.bad(format!("starts with a {}, not a count", v.kind())))?;
    // Each storage takes at least its 8-byte size.
    let n = m.count(n, "the storage count", m.len / 8)?;
    for _ in 0..n {
        let args = m.pickle(input, findings)?;
        let kind = args.kind();
        let [key, location, storage_type] = <[Value; 3]>::try_from(items(args).unwrap_or_default())
            .map_err(|_| {
                m.bad(format!(
                    "storage record is a {kind}, not (key, location, type)"
                ))
            })?;
        let key = tar_key(&key).ok_or_else(|| m.bad("storage key is not a number".into()))?;
        let location = match location {
            Value::Str(s) => s,
            other => return Err(m.bad(format!("storage location is a {}", other.kind()))),
        };
        let dtype = match &storage_type {
            Value::Global(g) => storage_dtype(g),
            _ => None,
        }
        .ok_or_else(|| m.bad(format!("storage `{key}` has no storage type")))?;
        let count = m.i64(input, "a storage size")?;
        let esize = dtype.size() as u64;
        let left = m.left();
        let numel = m.count(
            count,
            &format!("storage `{key}`'s element count"),
            left / esize,
        )?;
        let offset = m.start + m.pos;
        let len = numel * esize;
        m.skip(len, "a storage's data")?;
        let r = StorageRef {
            dtype,
            key,
            location,
            numel,
            view: None,
        };
        table.storage(r, || StorageData::Mapped { offset, len });
    }
    let views = m.pickle(input, findings)?;
    let kind = views.kind();
    let views = items(views).ok_or_else(|| m.bad(format!("storage views are a {kind}")))?;
    for view in views {
        let fields = items(view).unwrap_or_default();
        let bad_view = || m.bad("storage view is not (key, root key, offset, numel)".into());
        let [target, root, offset, numel] =
            <[Value; 4]>::try_from(fields).map_err(|_| bad_view())?;
        let (Some(target), Some(root), Some(offset), Some(numel)) = (
            tar_key(&target),
            tar_key(&root),
            as_int(&offset),
            as_int(&numel),
        ) else {
            return Err(bad_view());
        };
        let r = table
            .by_key
            .get(&root)
            .ok_or_else(|| m.bad(format!("storage view of `{root}`, which is not a storage")))?;
        let (dtype, location) = (table.storages[r].dtype, table.storages[r].location.clone());
        let esize = dtype.size() as u64;
        let data = match table.storages[r].data.clone() {
            StorageData::Mapped { offset: at, len } => {
                let range = u64::try_from(offset).ok().zip(u64::try_from(numel).ok());
                match range {
                    Some((o, n))
                        if o.checked_add(n)
                            .and_then(|e| e.checked_mul(esize))
                            .is_some_and(|e| e <= len) =>
                    {
                        StorageData::Mapped {
                            offset: at + o * esize,
                            len: n * esize,
                        }
                    }
                    _ => {
                        table.note(format!(
                            "legacy storage view `{target}` lies outside its storage `{root}`"
                        ));
                        StorageData::Missing
                    }
                }
            }
            other => other,
        };
        let r = StorageRef {
            dtype,
            key: target,
            location,
            numel: u64::try_from(numel).unwrap_or(0),
            view: None,
        };
        table.storage(r, || data);
    }

    let mut m = member("tensors")?;
    let v = m.pickle(input, findings)?;
    let n = as_int(&v).ok_or_else(|| m.bad(format!("starts with a {}, not a count", v.kind())))?;
    // Each tensor takes at least 16 bytes after its record.
    let n = m.count(n, "the tensor count", m.len / 16)?;
    let mut tensors = HashMap::new();
    for _ in 0..n {
        let args = m.pickle(input, findings)?;
        let kind = args.kind();
        let [key, storage, _type] = <[Value; 3]>::try_from(items(args).unwrap_or_default())
            .map_err(|_| {
                m.bad(format!(
                    "tensor record is a {kind}, not (key, storage key, type)"
                ))
            })?;
        let (Some(key), Some(storage)) = (tar_key(&key), tar_key(&storage)) else {
            return Err(m.bad("tensor or storage key is not a number".into()));
        };
        let index = table.by_key.get(&storage).ok_or_else(|| {
            m.bad(format!(
                "tensor `{key}` views `{storage}`, which is not a storage"
            ))
        })?;
        let ndim = i32::from_le_bytes(m.bytes::<4>(input, "a tensor's ndim")?);
        m.bytes::<4>(input, "a tensor's ndim")?;
        let ndim = m.count(
            i64::from(ndim),
            &format!("tensor `{key}`'s ndim"),
            limits::MAX_DIMS as u64,
        )?;
        let mut dims = Vec::with_capacity(ndim as usize * 2);
        for _ in 0..ndim * 2 {
            let d = m.i64(input, "a tensor's sizes and strides")?;
            dims.push(m.count(d, &format!("a size or stride of tensor `{key}`"), u64::MAX)?);
        }
        let offset = m.i64(input, "a tensor's storage offset")?;
        let storage_offset = m.count(
            offset,
            &format!("tensor `{key}`'s storage offset"),
            u64::MAX,
        )?;
        let strides = dims.split_off(ndim as usize);
        let spec = TensorSpec {
            storage: index,
            storage_offset,
            shape: dims,
            strides,
            requires_grad: false,
            dtype: None,
        };
        let t = table
            .rebuild(spec)
            .map_err(|e| m.bad(format!("tensor `{key}`: {e}")))?;
        tensors.insert(key, t);
    }

    let m = member("pickle")?;
    let mut opts = pickle::Options::new(m.location());
    opts.base_offset = m.start;
    let (out, host) = pickle_at(input, m.start, m.start + m.len, &opts, || TarHost {
        table: table.clone(),
        tensors: tensors.clone(),
    })?;
    findings.extend(relocate(out.findings, &m.location()));
    Ok((out.value, host.table))
}

/// Give findings of a plain pickle the location `loc`.
fn relocate(findings: Vec<Finding>, loc: &str) -> Vec<Finding> {
    findings
        .into_iter()
        .map(|f| match f {
            Finding::UnsafeGlobal { global, .. } => Finding::UnsafeGlobal {
                global,
                location: loc.to_string(),
            },
            other => other,
        })
        .collect()
}

fn relocate_err(e: FormatError) -> FormatError {
    match e {
        FormatError::Pickle {
            offset,
            opcode,
            message,
        } => FormatError::Pickle {
            offset,
            opcode,
            message: message.replace("(in legacy pickle #1,", "(in pickle,"),
        },
        other => other,
    }
}

/// Whether a pickle stream starts with the legacy torch magic number.
pub fn is_legacy_torch(bytes: &[u8]) -> bool {
    // The magic pickle is ~15 bytes; look no further than that (a plain pickle may be huge).
    let head = &bytes[..bytes.len().min(64)];
    matches!(
        pickle::run(head, &mut pickle::PlainHost, &pickle::Options::new("head")),
        Ok(o) if is_magic(&o.value)
    )
}

// ----- shared -------------------------------------------------------------------

/// Assign tensor paths, check views against storages, merge findings.
fn finish(root: Value, mut table: Table, vm_findings: Vec<Finding>, big_endian: bool) -> Parsed {
    let paths = tensor_paths(&root, table.tensors.len());
    for (i, (t, p)) in table.tensors.iter_mut().zip(paths).enumerate() {
        t.path = p.unwrap_or_else(|| format!("<tensor #{i}>"));
    }
    // Views reaching past their storage (logical_bytes refuses them later).
    let mut notes = Vec::new();
    for t in &table.tensors {
        let Some(s) = table.storages.get(t.storage) else {
            continue;
        };
        let avail = match &s.data {
            StorageData::Mapped { len, .. }
            | StorageData::ZipEntry { len, .. }
            | StorageData::Deflated { len, .. } => *len,
            StorageData::Owned(v) => v.len() as u64,
            StorageData::Missing => continue,
        };
        if let Some(need) = view_extent(t) {
            if need > avail {
                notes.push(format!(
                    "tensor `{}` needs {need} bytes of storage `{}`, which holds {avail}",
                    t.path, s.key
                ));
            }
        } else {
            notes.push(format!(
                "tensor `{}` has an impossible shape/stride",
                t.path
            ));
        }
    }
    for n in notes {
        table.note(n);
    }
    let mut findings = Vec::new();
    let mut seen_unsafe = HashSet::new();
    for f in vm_findings.into_iter().chain(table.notes) {
        if let Finding::UnsafeGlobal { global, .. } = &f {
            if !seen_unsafe.insert(global.clone()) {
                continue;
            }
        }
        findings.push(f);
    }
    Parsed {
        root,
        tensors: table.tensors,
        storages: table.storages,
        findings,
        big_endian,
    }
}

/// Bytes of storage a view touches (0 for an empty tensor); `None` on overflow.
fn view_extent(t: &TensorInfo) -> Option<u64> {
    if t.shape.contains(&0) {
        return Some(0);
    }
    let mut last = t.storage_offset;
    for (d, s) in t.shape.iter().zip(&t.strides) {
        last = last.checked_add((d - 1).checked_mul(*s)?)?;
    }
    last.checked_add(1)?.checked_mul(t.dtype.size() as u64)
}

/// Append a dict key as a path segment.
fn push_key_segment(path: &mut String, k: &Value) {
    use std::fmt::Write;
    match k {
        Value::Str(s) | Value::BigInt(s) => path.push_str(s),
        Value::Int(i) => {
            let _ = write!(path, "{i}");
        }
        Value::Bool(b) => path.push_str(if *b { "True" } else { "False" }),
        Value::None => path.push_str("None"),
        Value::Float(f) => {
            let _ = write!(path, "{f}");
        }
        other => {
            let _ = write!(path, "<{}>", other.kind());
        }
    }
}

/// A path segment: a dict key, a position, or `state`.
enum Segment<'v> {
    Key(&'v Value),
    Index(usize),
    State,
}

/// Each of the `count` tensors' path in `root`: the first path it appears under, dict
/// keys and positions joined by `.` (`model_state_dict.encoder_A.encoder.0.weight`);
/// `None` for a tensor the tree never reaches.
pub(crate) fn tensor_paths(root: &Value, count: usize) -> Vec<Option<String>> {
    let mut paths = vec![None; count];
    assign_paths(root, &mut String::new(), &mut paths, 0);
    paths
}

/// Name every tensor not yet named by the current path (`path`; `depth` is its number of
/// segments), then descend.
fn assign_paths(v: &Value, path: &mut String, paths: &mut [Option<String>], depth: usize) {
    if depth > limits::MAX_DEPTH {
        return;
    }
    let mut child = |seg: Segment<'_>, v: &Value, path: &mut String| {
        // Scalars hold no tensor: nothing to name below them.
        if !matches!(
            v,
            Value::Tensor(_)
                | Value::Dict(_)
                | Value::List(_)
                | Value::Tuple(_)
                | Value::Object { .. }
        ) {
            return;
        }
        let len = path.len();
        if depth > 0 {
            path.push('.');
        }
        match seg {
            Segment::Key(k) => push_key_segment(path, k),
            Segment::Index(i) => {
                use std::fmt::Write;
                let _ = write!(path, "{i}");
            }
            Segment::State => path.push_str("state"),
        }
        assign_paths(v, path, paths, depth + 1);
        path.truncate(len);
    };
    match v {
        Value::Tensor(i) => {
            if let Some(slot @ None) = paths.get_mut(*i) {
                *slot = Some(path.clone());
            }
        }
        Value::Dict(items) => {
            for (k, v) in items {
                child(Segment::Key(k), v, path);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                child(Segment::Index(i), v, path);
            }
        }
        Value::Object { args, state, .. } => {
            for (i, v) in args.iter().enumerate() {
                child(Segment::Index(i), v, path);
            }
            if let Some(s) = state {
                // An object's attributes read like dict keys (`args.lr`).
                match &**s {
                    Value::Dict(items) => {
                        for (k, v) in items {
                            child(Segment::Key(k), v, path);
                        }
                    }
                    other => child(Segment::State, other, path),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::zip::build::{zip, Spec};
    use crate::format::{detect_and_parse, Checkpoint, Format};

    #[test]
    fn storage_keys_by_number_or_name() {
        for (k, n) in [("0", Some(0)), ("7", Some(7)), ("65535", Some(65535))] {
            assert_eq!(key_number(k), n, "{k}");
        }
        for k in [
            "", "00", "07", "+1", "-1", "65536", "123456", "1a", " 1", "x",
        ] {
            assert_eq!(key_number(k), None, "{k}");
        }
        let mut idx = KeyIndex::default();
        for (i, k) in ["3", "03", "a", "0", "99999"].iter().enumerate() {
            idx.insert(k, i, || Cow::Owned(k.to_string()));
        }
        for (i, k) in ["3", "03", "a", "0", "99999"].iter().enumerate() {
            assert_eq!(idx.get(k), Some(i), "{k}");
        }
        for k in ["1", "2", "4", "003", "b", "9999"] {
            assert_eq!(idx.get(k), None, "{k}");
        }
        let mut all: Vec<usize> = idx.values().collect();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn borrowed_storage_ids_parse_like_values() {
        use PidItem::{Bytes, Global, Int, Str};
        let firsts = [
            Str("storage"),
            Bytes(b"storage"),
            Bytes(b"\xff"),
            Str("x"),
            Int(1),
        ];
        let types = [
            Global("torch.FloatStorage"),
            Global("torch.UntypedStorage"),
            Global("torch.float16"),
            Global("torch.Nope"),
            Global("numpy.FloatStorage"),
            Str("torch.FloatStorage"),
            Int(3),
        ];
        let keys = [Str("0"), Int(7), Int(-2), Bytes(b"0"), Global("g")];
        let locations = [Str("cpu"), Int(0), Bytes(b"cpu")];
        let sizes = [
            Int(0),
            Int(12),
            Int(-1),
            Str("12"),
            Bytes(b"1"),
            Global("g"),
        ];
        let mut ids: Vec<Vec<PidItem<'_>>> = vec![vec![], vec![Str("storage")]];
        for f in firsts {
            for t in types {
                for k in keys {
                    for l in locations {
                        for n in sizes {
                            ids.push(vec![f, t, k, l, n]);
                            ids.push(vec![f, t, k, l, n, Int(5)]);
                        }
                    }
                    ids.push(vec![f, t, k]);
                }
            }
        }
        let show = |r: Result<StorageRef, HostError>| {
            r.map(|r| (r.dtype, r.key, r.location, r.numel, r.view.is_none()))
        };
        for items in ids {
            let value = Value::Tuple(items.iter().map(PidItem::to_value).collect());
            assert_eq!(
                show(parse_storage_items(&items)),
                show(parse_storage_pid(value, false)),
                "{items:?}"
            );
        }
    }

    const VIEWS_PKL: &[u8] = include_bytes!("../../tests/fixtures/pickles/torch_views_p2.pkl");
    const LEGACY_VIEWS: &[u8] = include_bytes!("../../tests/fixtures/pickles/legacy_views.pt");

    fn f32s(v: &[f32], big: bool) -> Vec<u8> {
        v.iter()
            .flat_map(|x| {
                if big {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                }
            })
            .collect()
    }

    fn floats(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    struct Layout {
        big: bool,
        deflate: bool,
        drop_step: bool,
        short_1: bool,
        prefix: &'static str,
    }

    const PLAIN: Layout = Layout {
        big: false,
        deflate: false,
        drop_step: false,
        short_1: false,
        prefix: "archive",
    };

    /// A torch-style archive around `torch_views_p2.pkl`: storage 0 = 0..6 (f32),
    /// storage 1 = 10..15 (f32), storage 2 = [7] (i64).
    fn archive(l: Layout) -> Vec<u8> {
        let s0 = f32s(&[0., 1., 2., 3., 4., 5.], l.big);
        let s1 = if l.short_1 {
            f32s(&[10., 11., 12., 13.], l.big)
        } else {
            f32s(&[10., 11., 12., 13., 14.], l.big)
        };
        let s2: Vec<u8> = if l.big {
            7i64.to_be_bytes().to_vec()
        } else {
            7i64.to_le_bytes().to_vec()
        };
        let names: Vec<String> = [
            "data.pkl",
            "byteorder",
            "data/0",
            "data/1",
            "data/2",
            "version",
        ]
        .iter()
        .map(|n| format!("{}/{n}", l.prefix))
        .collect();
        let order: &[u8] = if l.big { b"big" } else { b"little" };
        let mut specs = vec![
            Spec {
                name: &names[0],
                data: VIEWS_PKL,
                deflate: l.deflate,
            },
            Spec {
                name: &names[1],
                data: order,
                deflate: false,
            },
            Spec {
                name: &names[2],
                data: &s0,
                deflate: l.deflate,
            },
            Spec {
                name: &names[3],
                data: &s1,
                deflate: l.deflate,
            },
            Spec {
                name: &names[5],
                data: b"3\n",
                deflate: false,
            },
        ];
        if !l.drop_step {
            specs.push(Spec {
                name: &names[4],
                data: &s2,
                deflate: l.deflate,
            });
        }
        zip(&specs, false)
    }

    fn open(bytes: Vec<u8>) -> Checkpoint {
        Checkpoint::from_bytes("test.pt", bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tensor<'c>(c: &'c Checkpoint, path: &str) -> (usize, &'c TensorInfo) {
        c.tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.path == path)
            .unwrap_or_else(|| panic!("no tensor {path}"))
    }

    fn values(c: &Checkpoint, path: &str) -> Vec<f32> {
        floats(&c.tensor_bytes(tensor(c, path).0).unwrap())
    }

    #[test]
    fn views_offsets_and_shared_storages() {
        for deflate in [false, true] {
            let c = open(archive(Layout { deflate, ..PLAIN }));
            assert_eq!(c.format, Format::TorchZip);
            assert!(c.findings.is_empty(), "{:?}", c.findings);
            assert!(!c.big_endian);
            let paths: Vec<&str> = c.tensors.iter().map(|t| t.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "state.a",
                    "state.at",
                    "state.b",
                    "state.p",
                    "state.step",
                    "list.0"
                ]
            );
            // three storages, `a` and `at` share one
            assert_eq!(c.storages.len(), 3);
            let (_, a) = tensor(&c, "state.a");
            let (_, at) = tensor(&c, "state.at");
            assert_eq!(a.storage, at.storage);
            assert_eq!(c.storages[a.storage].numel, 6);
            assert_eq!(c.storages[a.storage].dtype, DType::F32);
            if deflate {
                // located, inflated only when read
                assert!(matches!(
                    c.storages[0].data,
                    StorageData::Deflated {
                        len: 24,
                        uncompressed_size: 24,
                        ..
                    }
                ));
            } else {
                // read in place; the local header is only read on access
                assert!(matches!(
                    c.storages[0].data,
                    StorageData::ZipEntry { len: 24, .. }
                ));
            }
            // the transposed view is gathered
            assert_eq!(
                (at.shape.clone(), at.strides.clone()),
                (vec![3, 2], vec![1, 3])
            );
            assert!(!at.is_contiguous());
            assert_eq!(values(&c, "state.a"), [0., 1., 2., 3., 4., 5.]);
            assert_eq!(values(&c, "state.at"), [0., 3., 1., 4., 2., 5.]);
            // storage_offset
            let (_, b) = tensor(&c, "state.b");
            assert_eq!(b.storage_offset, 2);
            assert_eq!(values(&c, "state.b"), [12., 13., 14.]);
            assert_eq!(values(&c, "list.0"), [1., 4.]);
            // parameter
            let (_, p) = tensor(&c, "state.p");
            assert!(p.requires_grad);
            assert!(!b.requires_grad);
            assert_eq!(values(&c, "state.p"), [10., 11.]);
            // a 0-dim int64 tensor
            let (i, step) = tensor(&c, "state.step");
            assert_eq!((step.dtype, step.shape.len()), (DType::I64, 0));
            assert_eq!(&*c.tensor_bytes(i).unwrap(), &7i64.to_le_bytes());
            assert_eq!(c.root.get("epoch"), Some(&Value::Int(3)));
            assert!(
                c.model_state().is_none(),
                "`state` is not a model-state key"
            );
        }
    }

    #[test]
    fn big_endian_archives() {
        let c = open(archive(Layout { big: true, ..PLAIN }));
        assert!(c.big_endian);
        assert_eq!(values(&c, "state.at"), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(values(&c, "state.b"), [12., 13., 14.]);
        let (i, _) = tensor(&c, "state.step");
        assert_eq!(&*c.tensor_bytes(i).unwrap(), &7i64.to_le_bytes());
    }

    #[test]
    fn any_top_folder_name() {
        let c = open(archive(Layout {
            prefix: "v5_12_4_state_dict",
            ..PLAIN
        }));
        assert_eq!(c.tensors.len(), 6);
    }

    #[test]
    fn missing_and_short_storages_are_noted() {
        let c = open(archive(Layout {
            drop_step: true,
            ..PLAIN
        }));
        let (i, step) = tensor(&c, "state.step");
        assert_eq!(c.storages[step.storage].data, StorageData::Missing);
        assert!(c.tensor_bytes(i).is_err());
        assert!(c
            .findings
            .iter()
            .any(|f| f.message().contains("has no entry `archive/data/2`")));
        assert_eq!(values(&c, "state.a").len(), 6);

        let c = open(archive(Layout {
            short_1: true,
            ..PLAIN
        }));
        let msgs: Vec<String> = c.findings.iter().map(Finding::message).collect();
        assert!(
            msgs.iter().any(|m| m.contains("declares 5 float32")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("tensor `state.b` needs 20 bytes")),
            "{msgs:?}"
        );
        assert!(c.tensor_bytes(tensor(&c, "state.b").0).is_err());
        assert_eq!(values(&c, "state.p"), [10., 11.]);
    }

    #[test]
    fn archive_structure_errors() {
        let no_pkl = zip(
            &[Spec {
                name: "a/x",
                data: b"1",
                deflate: false,
            }],
            false,
        );
        assert!(matches!(
            read_zip(&no_pkl),
            Err(FormatError::NotACheckpoint(_))
        ));
        let two = zip(
            &[
                Spec {
                    name: "a/data.pkl",
                    data: b"N.",
                    deflate: false,
                },
                Spec {
                    name: "b/data.pkl",
                    data: b"N.",
                    deflate: false,
                },
            ],
            false,
        );
        assert!(read_zip(&two).unwrap_err().to_string().contains("several"));
        let bad_order = zip(
            &[
                Spec {
                    name: "a/data.pkl",
                    data: b"N.",
                    deflate: false,
                },
                Spec {
                    name: "a/byteorder",
                    data: b"middle",
                    deflate: false,
                },
            ],
            false,
        );
        assert!(read_zip(&bad_order)
            .unwrap_err()
            .to_string()
            .contains("byteorder"));
        let bare = zip(
            &[Spec {
                name: "data.pkl",
                data: b"K\x07.",
                deflate: false,
            }],
            false,
        );
        assert_eq!(read_zip(&bare).unwrap().root, Value::Int(7));
        // a persistent id that is not a storage
        let odd = zip(
            &[Spec {
                name: "a/data.pkl",
                data: b"\x80\x02X\x01\x00\x00\x00xQ.",
                deflate: false,
            }],
            false,
        );
        assert!(read_zip(&odd)
            .unwrap_err()
            .to_string()
            .contains("persistent id"));
    }

    #[test]
    fn storage_types() {
        assert_eq!(storage_dtype("torch.FloatStorage"), Some(DType::F32));
        assert_eq!(storage_dtype("torch.BFloat16Storage"), Some(DType::BF16));
        assert_eq!(storage_dtype("torch.UntypedStorage"), Some(DType::U8));
        assert_eq!(
            storage_dtype("torch.storage.UntypedStorage"),
            Some(DType::U8)
        );
        assert_eq!(storage_dtype("evil.FloatStorage"), None);
        assert_eq!(storage_dtype("torch.NopeStorage"), None);
    }

    #[test]
    fn legacy_stream_with_views() {
        let (format, p) = detect_and_parse(LEGACY_VIEWS).unwrap();
        assert_eq!(format, Format::TorchLegacy);
        assert!(is_legacy_torch(LEGACY_VIEWS));
        assert!(p.findings.is_empty(), "{:?}", p.findings);
        let c = open(LEGACY_VIEWS.to_vec());
        let paths: Vec<&str> = c.tensors.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(paths, ["a", "at", "b", "view"]);
        assert_eq!(values(&c, "a"), [0., 1., 2., 3., 4., 5.]);
        assert_eq!(values(&c, "at"), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(values(&c, "b"), [12., 13., 14.]);
        // view storage v1 = elements 1..4 of storage 101; the tensor starts 1 further in
        assert_eq!(values(&c, "view"), [12., 13.]);
        let (_, v) = tensor(&c, "view");
        assert_eq!(c.storages[v.storage].key, "v1");
        assert_eq!(c.storages[v.storage].numel, 3);
        // one storage per key (plus the view)
        assert_eq!(c.storages.len(), 3);
        let (_, a) = tensor(&c, "a");
        let (_, at) = tensor(&c, "at");
        assert_eq!(a.storage, at.storage);
    }

    #[test]
    fn legacy_truncation_is_an_error() {
        for cut in 1..LEGACY_VIEWS.len() {
            let r = read_legacy(&LEGACY_VIEWS[..cut]);
            // Cutting inside the first pickle leaves a (broken) plain pickle.
            assert!(r.is_err(), "cut at {cut} parsed");
        }
        let cut = &LEGACY_VIEWS[..LEGACY_VIEWS.len() - 3];
        let e = read_legacy(cut).unwrap_err().to_string();
        assert!(e.contains("claims 6 elements"), "{e}");
        // a count larger than the file
        let mut big = LEGACY_VIEWS.to_vec();
        let at = big.len() - 24 - 8;
        big[at..at + 8].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(matches!(read_legacy(&big), Err(FormatError::Truncated(_))));
        // trailing bytes are noted
        let mut more = LEGACY_VIEWS.to_vec();
        more.extend_from_slice(b"xyz");
        let p = read_legacy(&more).unwrap();
        assert!(p
            .findings
            .iter()
            .any(|f| f.message().contains("3 bytes follow")));
    }

    #[test]
    fn plain_pickles() {
        let (format, p) = detect_and_parse(b"\x80\x02K\x05.").unwrap();
        assert_eq!((format, p.root), (Format::Pickle, Value::Int(5)));
        assert!(!is_legacy_torch(b"\x80\x02K\x05."));
        assert!(!is_legacy_torch(b"\x80"));
        let e = read_legacy(b"\x80\x02K\x05").unwrap_err().to_string();
        assert!(e.contains("(in pickle,"), "{e}");
    }

    #[test]
    fn paths_follow_the_tree() {
        let t = |i| Value::Tensor(i);
        let root = Value::Dict(vec![
            (
                Value::Str("m".into()),
                Value::Dict(vec![(Value::Int(0), t(0))]),
            ),
            (
                Value::Str("l".into()),
                Value::List(vec![Value::None, Value::Tuple(vec![t(1), t(0)])]),
            ),
            (
                Value::Str("ns".into()),
                Value::Object {
                    class: "argparse.Namespace".into(),
                    args: vec![],
                    state: Some(Box::new(Value::Dict(vec![(Value::Str("w".into()), t(2))]))),
                },
            ),
        ]);
        let mut table = Table::default();
        for _ in 0..4 {
            table.tensors.push(TensorInfo {
                path: String::new(),
                dtype: DType::F32,
                shape: vec![],
                strides: vec![],
                storage_offset: 0,
                storage: 0,
                requires_grad: false,
            });
        }
        let p = finish(root, table, vec![], false);
        let paths: Vec<&str> = p.tensors.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(paths, ["m.0", "l.1.0", "ns.w", "<tensor #3>"]);
    }
}
