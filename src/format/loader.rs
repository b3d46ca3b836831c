//! What `torch.load(weights_only=False)` (PyTorch 2.13) would read, independently of
//! how tvck's own parsers read the file.
//!
//! torch picks its loader by the file's name and first bytes, not by what parses:
//!
//! * a path ending in `.safetensors` goes to `safetensors.torch.load_file` (no pickle);
//! * otherwise, a file starting with `PK\x03\x04` goes to the zip reader (miniz: the
//!   *last* end-of-central-directory signature in the file's tail wins, entry names are
//!   matched case-insensitively, the archive's folder is the first entry's), and an
//!   archive with a `constants.pkl` record goes on to `torch.jit.load`;
//! * anything else goes to `_legacy_load`: a valid tar archive is read as the pre-1.0
//!   tar layout (the pickles of its `storages`, `tensors` and `pickle` members are
//!   unpickled; see [`super::torch::read_tar`]), else the pickles from byte 0 are unpickled one after the other, and the
//!   first runs before its magic number is ever checked.
//!
//! [`torch_reading`] follows those rules, sweeps every pickle torch would unpickle for
//! globals with [`sweep`] (a linear opcode walk that builds nothing, so no nesting depth
//! or value budget can hide a payload from it), and names every place where two
//! readings are possible as a [`Finding::Ambiguous`].

use std::collections::HashMap;
use std::rc::Rc;

use super::input::{windowed, Input, Window};
use super::pickle::allowlist;
use super::pickle::opcodes as op;
use super::zip::{self, ZipArchive};
use super::{limits, safetensors, Finding, FormatError, InflateBudget};

/// The loader torch 2.13 would use for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    Safetensors,
    Zip,
    TorchScript,
    Tar,
    Pickle,
}

/// What a [`sweep`] of one pickle found.
#[derive(Debug, Default, Clone)]
pub struct Sweep {
    /// Globals not on the allow-list, escaped for display, in order of appearance.
    pub globals: Vec<String>,
    /// Position after its `STOP`, if it has one.
    pub end: Option<usize>,
    /// Number of opcodes walked.
    pub opcodes: usize,
    /// Whether it stopped at the end of the data (wanting more), not at a `STOP` or
    /// an opcode that cannot be decoded.
    pub ran_out: bool,
}

/// The most memo entries a sweep keeps track of (strings for `STACK_GLOBAL`).
const MAX_SWEEP_MEMO: usize = 1 << 20;
/// Longest global name kept in a finding.
const MAX_NAME: usize = 200;

/// Untrusted text made printable: control and non-ASCII-graphic characters escaped, length
/// capped.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= MAX_NAME {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{feff}' || ('\u{200b}'..='\u{200f}').contains(&c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Python 2 module names that `pickle` maps to their Python 3 names (`fix_imports`).
fn py3_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "exceptions" => "builtins",
        "cPickle" => "pickle",
        "commands" => "subprocess",
        m => m,
    }
}

fn classify(module: &str, name: &str, out: &mut Vec<String>) {
    let module = py3_module(module);
    if allowlist(module, name).is_some() {
        return;
    }
    let full = printable(&format!("{module}.{name}"));
    if !out.contains(&full) {
        out.push(full);
    }
}

/// Walk the pickle at the start of `data` opcode by opcode up to its `STOP` (or the first
/// opcode that cannot be decoded, where Python's unpickler would stop too, after running
/// everything before it) and collect the globals it references that are not on the
/// allow-list. Linear in the pickle's length; builds no values.
pub fn sweep(data: &[u8]) -> Sweep {
    let mut out = Sweep::default();
    let mut pos = 0usize;
    // The most recent pushes (strings known, anything else `None`), for STACK_GLOBAL.
    let mut recent: Vec<Option<Rc<str>>> = Vec::new();
    let mut memo: HashMap<u64, Option<Rc<str>>> = HashMap::new();
    let push = |recent: &mut Vec<Option<Rc<str>>>, v: Option<Rc<str>>| {
        recent.push(v);
        if recent.len() > 8 {
            recent.remove(0);
        }
    };
    let text = |b: &[u8]| -> Rc<str> { Rc::from(String::from_utf8_lossy(b).as_ref()) };
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            match pos.checked_add(n).filter(|e| *e <= data.len()) {
                Some(e) => {
                    let s = &data[pos..e];
                    pos = e;
                    s
                }
                None => {
                    out.ran_out = true;
                    return out;
                }
            }
        }};
    }
    macro_rules! line {
        () => {{
            match data[pos.min(data.len())..].iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let s = &data[pos..pos + i];
                    pos += i + 1;
                    s
                }
                None => {
                    out.ran_out = true;
                    return out;
                }
            }
        }};
    }
    macro_rules! le {
        ($n:expr) => {{
            let b = take!($n);
            let mut v = 0u64;
            for (i, x) in b.iter().enumerate() {
                v |= u64::from(*x) << (8 * i);
            }
            v
        }};
    }
    loop {
        let Some(&code) = data.get(pos) else {
            out.ran_out = true;
            return out;
        };
        pos += 1;
        out.opcodes += 1;
        match code {
            op::STOP => {
                out.end = Some(pos);
                return out;
            }
            op::GLOBAL | op::INST => {
                let module = line!();
                let name = line!();
                let module = String::from_utf8_lossy(module);
                let name = String::from_utf8_lossy(name);
                classify(module.trim(), name.trim(), &mut out.globals);
                push(&mut recent, None);
            }
            op::STACK_GLOBAL => {
                let n = recent.len();
                match (n >= 2).then(|| (recent[n - 2].clone(), recent[n - 1].clone())) {
                    Some((Some(m), Some(g))) => classify(&m, &g, &mut out.globals),
                    _ => {
                        let what = "<STACK_GLOBAL whose module and name are not literal strings>";
                        if !out.globals.iter().any(|g| g == what) {
                            out.globals.push(what.to_string());
                        }
                    }
                }
                recent.truncate(n.saturating_sub(2));
                push(&mut recent, None);
            }
            // Strings.
            op::STRING | op::UNICODE => {
                let l = line!();
                let l = match l {
                    [q, inner @ .., q2]
                        if code == op::STRING && (*q == b'\'' || *q == b'"') && q == q2 =>
                    {
                        inner
                    }
                    other => other,
                };
                push(&mut recent, Some(text(l)));
            }
            op::BINSTRING | op::BINUNICODE => {
                let n = le!(4) as usize;
                let s = take!(n);
                push(&mut recent, Some(text(s)));
            }
            op::SHORT_BINSTRING | op::SHORT_BINUNICODE => {
                let n = le!(1) as usize;
                let s = take!(n);
                push(&mut recent, Some(text(s)));
            }
            op::BINUNICODE8 => {
                let n = usize::try_from(le!(8)).unwrap_or(usize::MAX);
                let s = take!(n);
                push(&mut recent, Some(text(s)));
            }
            // Memo.
            op::GET => {
                let l = line!();
                let k = std::str::from_utf8(l)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                push(&mut recent, k.and_then(|k| memo.get(&k).cloned()).flatten());
            }
            op::BINGET | op::LONG_BINGET => {
                let k = if code == op::BINGET { le!(1) } else { le!(4) };
                push(&mut recent, memo.get(&k).cloned().flatten());
            }
            op::PUT | op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                let k = match code {
                    op::PUT => {
                        let l = line!();
                        std::str::from_utf8(l)
                            .ok()
                            .and_then(|t| t.trim().parse().ok())
                    }
                    op::BINPUT => Some(le!(1)),
                    op::LONG_BINPUT => Some(le!(4)),
                    _ => Some(memo.len() as u64),
                };
                if let Some(k) = k {
                    if memo.len() < MAX_SWEEP_MEMO || memo.contains_key(&k) {
                        memo.insert(k, recent.last().cloned().flatten());
                    }
                }
            }
            // No argument, no push that matters.
            op::MARK | op::PROTO | op::FRAME => {
                if code == op::PROTO {
                    take!(1);
                } else if code == op::FRAME {
                    take!(8);
                }
            }
            op::POP => {
                recent.pop();
            }
            op::DUP => {
                let top = recent.last().cloned().flatten();
                push(&mut recent, top);
            }
            // Everything else pushes (or changes) something that is not a string.
            op::POP_MARK
            | op::NONE
            | op::REDUCE
            | op::BINPERSID
            | op::APPEND
            | op::BUILD
            | op::DICT
            | op::EMPTY_DICT
            | op::APPENDS
            | op::LIST
            | op::EMPTY_LIST
            | op::OBJ
            | op::SETITEM
            | op::TUPLE
            | op::EMPTY_TUPLE
            | op::SETITEMS
            | op::NEWOBJ
            | op::TUPLE1
            | op::TUPLE2
            | op::TUPLE3
            | op::NEWTRUE
            | op::NEWFALSE
            | op::EMPTY_SET
            | op::ADDITEMS
            | op::FROZENSET
            | op::NEWOBJ_EX
            | op::NEXT_BUFFER
            | op::READONLY_BUFFER => push(&mut recent, None),
            op::FLOAT | op::INT | op::LONG | op::PERSID => {
                line!();
                push(&mut recent, None);
            }
            op::BININT1 | op::EXT1 => {
                take!(1);
                push(&mut recent, None);
            }
            op::BININT2 | op::EXT2 => {
                take!(2);
                push(&mut recent, None);
            }
            op::BININT | op::EXT4 => {
                take!(4);
                push(&mut recent, None);
            }
            op::BINFLOAT => {
                take!(8);
                push(&mut recent, None);
            }
            op::SHORT_BINBYTES | op::LONG1 => {
                let n = le!(1) as usize;
                take!(n);
                push(&mut recent, None);
            }
            op::BINBYTES | op::LONG4 => {
                let n = le!(4) as usize;
                take!(n);
                push(&mut recent, None);
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = usize::try_from(le!(8)).unwrap_or(usize::MAX);
                take!(n);
                push(&mut recent, None);
            }
            _ => return out,
        }
    }
}

/// [`sweep`] the pickle at `start` (it may run up to `end`), read in growing windows of
/// at most [`limits::MAX_PICKLE_BYTES`] (see [`super::input`]); `true` with it when it
/// was cut there.
pub fn sweep_at(input: &mut dyn Input, start: u64, end: u64) -> Result<(Sweep, bool), FormatError> {
    windowed(input, start, end, limits::MAX_PICKLE_BYTES, |data| {
        let s = sweep(data);
        if s.ran_out {
            Window::More(s)
        } else {
            Window::Done(s)
        }
    })
}

/// Sweep the pickles Python would unpickle one after another from `start` (at most
/// `max`, none past `end`), as `location #n` findings; the number that end.
fn sweep_sequence(
    input: &mut dyn Input,
    start: u64,
    end: u64,
    max: usize,
    location: &str,
    findings: &mut Vec<Finding>,
) -> Result<usize, FormatError> {
    let mut pos = start;
    let end = end.min(input.len());
    let mut complete = 0;
    for n in 1..=max {
        let (s, capped) = sweep_at(input, pos, end)?;
        let loc = if max == 1 {
            location.to_string()
        } else {
            format!("{location} #{n}")
        };
        push_globals(findings, &s.globals, &loc);
        if capped {
            findings.push(Finding::Note {
                message: format!(
                    "{loc} was swept as far as MAX_PICKLE_BYTES ({} bytes) only",
                    limits::MAX_PICKLE_BYTES
                ),
            });
        }
        match s.end {
            Some(e) => {
                complete += 1;
                pos += e as u64;
                if pos >= end {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(complete)
}

fn push_globals(findings: &mut Vec<Finding>, globals: &[String], location: &str) {
    for g in globals {
        let seen = findings
            .iter()
            .any(|f| matches!(f, Finding::UnsafeGlobal { global, .. } if global == g));
        if !seen {
            findings.push(Finding::UnsafeGlobal {
                global: g.clone(),
                location: location.to_string(),
            });
        }
    }
}

fn ambiguous(trick: &str, detail: String) -> Finding {
    Finding::Ambiguous {
        trick: trick.to_string(),
        detail,
    }
}

/// What torch would do with a file called `name` holding `bytes`.
#[derive(Debug)]
pub struct TorchReading {
    pub loader: Loader,
    /// Unsafe globals in what torch would unpickle, ambiguities, TorchScript.
    pub findings: Vec<Finding>,
}

/// Read the file `name` through `input` the way `torch.load(weights_only=False)`
/// would. A zip is in memory (whole, or but for its storages: `input.unread` says which
/// ranges were not read, and nothing is taken from them).
pub fn torch_reading(
    name: &str,
    input: &mut dyn Input,
    budget: &InflateBudget,
) -> Result<TorchReading, FormatError> {
    let mut findings = Vec::new();
    let len = input.len();
    let loader = if name.ends_with(".safetensors") {
        // torch reads the safetensors header only. Another loader given this file
        // (renamed, or torch.load on a copy) would unpickle it from byte 0.
        let (s, _) = sweep_at(input, 0, len)?;
        if s.end.is_some() || !s.globals.is_empty() {
            findings.push(ambiguous(
                "safetensors/pickle polyglot",
                "the file is a safetensors header and also a pickle from byte 0 (torch.load of a copy not named .safetensors would unpickle it)".into(),
            ));
            push_globals(&mut findings, &s.globals, "the pickle at byte 0");
        }
        Loader::Safetensors
    } else {
        let head = input.get(0, 512)?.to_vec();
        if head.starts_with(b"PK\x03\x04") {
            let unread = |start: u64, end: u64| input.unread(start, end);
            zip_reading(input.all(), budget, &unread, &mut findings)
        } else if is_tar(&head) {
            tar_reading(input, &mut findings)?;
            Loader::Tar
        } else {
            let complete = sweep_sequence(input, 0, len, 5, "pickle", &mut findings)?;
            if complete > 0 && safetensors::looks_like_safetensors_head(&head, len) {
                findings.push(ambiguous(
                    "safetensors/pickle polyglot",
                    "the file parses as a safetensors header, but torch.load (the file is not named .safetensors) unpickles it from byte 0".into(),
                ));
            }
            Loader::Pickle
        }
    };
    Ok(TorchReading { loader, findings })
}

// ----- zip ----------------------------------------------------------------------

fn zip_reading(
    bytes: &[u8],
    budget: &InflateBudget,
    unread: &dyn Fn(u64, u64) -> bool,
    findings: &mut Vec<Finding>,
) -> Loader {
    let mut candidates = zip::eocd_candidates(bytes);
    candidates.retain(|&p| !unread(p as u64, p as u64 + 22));
    let Some(&torch_eocd) = candidates.first() else {
        return Loader::Zip;
    };
    // Every end record that describes a readable directory.
    let readable: Vec<(usize, ZipArchive<'_>)> = candidates
        .iter()
        .filter_map(|&p| ZipArchive::parse_at(bytes, p, true).ok().map(|z| (p, z)))
        .collect();
    let tvck = zip::tvck_eocd(bytes);
    if readable.len() > 1 {
        let names = |z: &ZipArchive<'_>| -> Vec<(String, u64)> {
            z.entries()
                .iter()
                .map(|e| (e.name.clone(), e.local_header_offset))
                .collect()
        };
        let first = names(&readable[0].1);
        if readable.iter().any(|(_, z)| names(z) != first) {
            let at: Vec<String> = readable.iter().map(|(p, _)| format!("byte {p}")).collect();
            findings.push(ambiguous(
                "several zip end-of-central-directory records",
                format!(
                    "end records at {} describe different directories; torch (miniz) uses the last one (byte {torch_eocd}){}",
                    at.join(", "),
                    match tvck {
                        Some(t) if t != torch_eocd => format!(", other readers the one at byte {t}"),
                        _ => String::new(),
                    }
                ),
            ));
        }
    }
    let mut loader = Loader::Zip;
    for (i, (pos, z)) in readable.iter().enumerate() {
        let which = if *pos == torch_eocd {
            String::new()
        } else {
            format!(" (directory of the end record at byte {pos})")
        };
        if zip_archive_reading(z, &which, budget, findings) && i == 0 && *pos == torch_eocd {
            loader = Loader::TorchScript;
        }
    }
    loader
}

/// Sweep what torch would unpickle from one directory; `true` for a TorchScript archive.
fn zip_archive_reading(
    z: &ZipArchive<'_>,
    which: &str,
    budget: &InflateBudget,
    findings: &mut Vec<Finding>,
) -> bool {
    let entries = z.entries();
    let Some(first) = entries.first() else {
        return false;
    };
    // PyTorchStreamReader: the archive's folder is the first entry's.
    let prefix = match first.name.find('/') {
        Some(i) => first.name[..=i].to_string(),
        None => String::new(),
    };
    // Names that only case (or nothing) tells apart: miniz finds either.
    let mut by_lower: HashMap<String, Vec<&str>> = HashMap::new();
    for e in entries {
        by_lower
            .entry(e.name.to_ascii_lowercase())
            .or_default()
            .push(&e.name);
    }
    let mut clashes: Vec<String> = by_lower
        .values()
        .filter(|v| v.len() > 1)
        .map(|v| {
            v.iter()
                .map(|n| format!("`{}`", printable(n)))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .collect();
    clashes.sort();
    if !clashes.is_empty() {
        findings.push(ambiguous(
            "zip entry names that differ only in case (or not at all)",
            format!(
                "{}{which}: torch's zip reader matches names case-insensitively and may load any of them",
                clashes.join(", ")
            ),
        ));
    }
    let wanted = format!("{prefix}data.pkl").to_ascii_lowercase();
    for e in entries
        .iter()
        .filter(|e| e.name.to_ascii_lowercase() == wanted)
    {
        if e.name != format!("{prefix}data.pkl") {
            findings.push(ambiguous(
                "case-insensitive zip name match",
                format!(
                    "`{}`{which} is what torch loads as `{prefix}data.pkl`",
                    printable(&e.name)
                ),
            ));
        }
        sweep_entry(z, e, which, budget, findings);
    }
    let records: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.name.strip_prefix(prefix.as_str()))
        .collect();
    if !records.contains(&"constants.pkl") {
        return false;
    }
    let mut executes: Vec<String> = Vec::new();
    for e in entries {
        let rec = e.name.strip_prefix(prefix.as_str()).unwrap_or(&e.name);
        if rec == "constants.pkl" || rec.starts_with("code/") || rec.ends_with(".pkl") {
            if executes.len() < 20 {
                executes.push(format!("`{}`", printable(&e.name)));
            }
            if rec.ends_with(".pkl") {
                sweep_entry(z, e, which, budget, findings);
            }
        }
    }
    findings.push(Finding::TorchScript { executes });
    true
}

fn sweep_entry(
    z: &ZipArchive<'_>,
    e: &zip::Entry,
    which: &str,
    budget: &InflateBudget,
    findings: &mut Vec<Finding>,
) {
    let location = format!("`{}`{which}", printable(&e.name));
    if e.method == zip::Method::Deflate && !e.is_encrypted() {
        if let Err(err) = budget.charge(&e.name, e.uncompressed_size) {
            findings.push(Finding::Note {
                message: format!("{location} was not swept: {err}"),
            });
            return;
        }
    }
    match z.read_unchecked(e, limits::MAX_PICKLE_BYTES) {
        Ok(data) => {
            let mut whole = super::input::Whole(&data);
            sweep_sequence(&mut whole, 0, data.len() as u64, 1, &location, findings).unwrap_or(0)
        }
        Err(err) => {
            findings.push(Finding::Note {
                message: format!("{location} cannot be read: {err}"),
            });
            0
        }
    };
}

// ----- tar (the archive itself: super::tar) -------------------------------------

pub use super::tar::is_tar;

/// The members torch's `legacy_load` reads (and `sys_info`, which old torch wrote).
const TAR_MEMBERS: [&str; 4] = ["sys_info", "storages", "tensors", "pickle"];

fn tar_reading(input: &mut dyn Input, findings: &mut Vec<Finding>) -> Result<(), FormatError> {
    let len = input.len();
    let (s, _) = sweep_at(input, 0, len)?;
    if s.end.is_some() || !s.globals.is_empty() {
        findings.push(ambiguous(
            "tar/pickle polyglot",
            "the file is a tar archive (torch.load reads it as a legacy tar checkpoint) and also a pickle from byte 0".into(),
        ));
        push_globals(findings, &s.globals, "the pickle at byte 0");
    }
    let archive = match super::tar::tar_archive(input) {
        Ok(a) => a,
        Err(e) => {
            findings.push(Finding::Note {
                message: format!("the tar archive cannot be read: {e}"),
            });
            return Ok(());
        }
    };
    tar_names(&archive, findings);
    // The first pickle of each member (sys_info too, which torch 2.13 does not read),
    // swept whatever their structure; then every pickle the reading of the members
    // meets. `tar.extract(name)` takes the last member of a name.
    for wanted in TAR_MEMBERS {
        if let Some(m) = archive.member(wanted) {
            let loc = format!("tar member `{wanted}`");
            sweep_sequence(
                input,
                m.data,
                m.data.saturating_add(m.len),
                1,
                &loc,
                findings,
            )?;
        }
    }
    let found = super::torch::tar_findings(input);
    for f in found {
        if let Finding::UnsafeGlobal { global, location } = f {
            push_globals(findings, &[global], &location);
        }
    }
    if let Some(why) = &archive.broken {
        findings.push(Finding::Note {
            message: format!(
                "Python's tarfile stops reading this archive with an error ({}): torch.load would then unpickle the file from byte 0",
                printable(why)
            ),
        });
    }
    // Its members as Python's tarfile names them (`getnames()`), the first 20.
    let mut names: Vec<String> = archive
        .members
        .iter()
        .take(20)
        .map(|m| format!("`{}`", printable(&String::from_utf8_lossy(&m.name))))
        .collect();
    if archive.members.len() > 20 {
        names.push("…".into());
    }
    findings.push(Finding::Note {
        message: format!(
            "legacy tar checkpoint (torch < 1.0 layout, {} members: {}): torch.load unpickles the pickles of its storages, tensors and pickle members",
            archive.members.len(),
            names.join(", ")
        ),
    });
    Ok(())
}

/// The differential rule for tar names: a member whose name comes from a GNU long name
/// or a PAX `path` record, where either that name or the one its own header gives is
/// one torch reads, is read one way by Python's `tarfile` (and torch) and another by a
/// reader that ignores extended headers; so is an extended header named like one.
fn tar_names(archive: &super::tar::TarArchive, findings: &mut Vec<Finding>) {
    let matters = |n: &[u8]| TAR_MEMBERS.iter().any(|w| w.as_bytes() == n);
    let text = |n: &[u8]| format!("`{}`", printable(&String::from_utf8_lossy(n)));
    let mut seen: Vec<String> = Vec::new();
    for m in &archive.members {
        if m.name != m.header_name && (matters(&m.name) || matters(&m.header_name)) {
            seen.push(format!(
                "{} (its header says {})",
                text(&m.name),
                text(&m.header_name)
            ));
        }
    }
    for n in &archive.extended_names {
        if matters(n) {
            seen.push(format!("an extended header named {}", text(n)));
        }
    }
    if !seen.is_empty() {
        seen.truncate(20);
        findings.push(ambiguous(
            "tar member names that readers disagree on",
            format!(
                "{}: Python's tarfile (torch.load) takes long names and PAX path records, a reader that ignores them takes the header names",
                seen.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_finds_globals_of_every_protocol() {
        // protocol 0: GLOBAL + REDUCE
        let p0 = b"cposix\nsystem\n(S'echo hi'\ntR.";
        assert_eq!(sweep(p0).globals, vec!["posix.system"]);
        assert!(sweep(p0).end.is_some());
        // protocol 4: STACK_GLOBAL through the memo
        let mut p4 = vec![0x80, 4, 0x8c, 8];
        p4.extend_from_slice(b"builtins");
        p4.extend_from_slice(&[0x94, 0x8c, 4]);
        p4.extend_from_slice(b"eval");
        p4.extend_from_slice(&[0x94, b'h', 0, b'h', 1, 0x93, b'N', b'.']);
        let s = sweep(&p4);
        assert_eq!(s.globals, vec!["builtins.eval"]);
        // allow-listed globals are not findings; INST is
        assert!(sweep(b"ccollections\nOrderedDict\n)R.").globals.is_empty());
        assert_eq!(sweep(b"(ios\nsystem\nS'x'\n.").globals, vec!["os.system"]);
        // Python 2 names map to Python 3 ones
        assert_eq!(
            sweep(b"c__builtin__\neval\n.").globals,
            vec!["builtins.eval"]
        );
    }

    #[test]
    fn sweep_is_not_stopped_by_depth_or_garbage() {
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 100_000));
        deep.extend_from_slice(b"cos\nsystem\n");
        let s = sweep(&deep);
        assert_eq!(s.globals, vec!["os.system"]);
        assert!(s.end.is_none());
        for cut in 0..20 {
            let _ = sweep(&b"cposix\nsystem\n(S'echo hi'\ntR."[..cut]);
        }
        assert!(sweep(&[0xff, 0x00]).globals.is_empty());
    }

    #[test]
    fn untrusted_names_are_escaped() {
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert!(printable(&"x".repeat(1000)).chars().count() <= MAX_NAME + 1);
    }

    #[test]
    fn tar_headers_follow_python() {
        let mut h = vec![0u8; 1024];
        h[..8].copy_from_slice(b"storages");
        h[124..135].copy_from_slice(b"00000000000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h[..512].iter().map(|b| u32::from(*b)).sum();
        let chk = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chk.as_bytes());
        assert!(is_tar(&h));
        h[0] = b'S';
        assert!(!is_tar(&h));
        assert!(!is_tar(&[0u8; 1024]));
    }
}
