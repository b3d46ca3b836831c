//! Minimal, verified text edits of block-style YAML documents.
//!
//! The training configs are hand-written YAML full of comments; a fix such as
//! `frozen_checkpoint.path: null` → `checkpoints/v5_12_4/best_Q.pt` must change that one
//! value and leave every other byte alone (comments, alignment, quoting, line endings).
//! Re-serialising with `serde_yaml` would lose all of that, so this module edits the text:
//!
//! * [`scan`] follows the indentation of block-style mappings line by line and records
//!   where every `key:` is (line, indentation, the span of its inline value, the extent of
//!   its block). It gives up (see [`Scan::incomplete_at`]) at constructs it does not follow
//!   (multi-line quoted scalars, root sequences, tabs, `? ` keys, a second document …).
//! * [`set_scalar`] replaces one scalar value (or inserts the key), [`apply`] does several.
//!   Each edit is verified: the result is parsed again and must equal the original
//!   document with only that path changed; otherwise the edit is refused.
//! * [`unified_diff`] shows what an edit does.
//!
//! ```
//! use tvck::yamledit;
//! let text = "frozen_checkpoint:\n  path: null  # CRITICAL\n  encoder_to_load: null\n";
//! let out = yamledit::set_scalar(text, "frozen_checkpoint.path", "checkpoints/v5_12_4/best_Q.pt").unwrap();
//! assert_eq!(out, "frozen_checkpoint:\n  path: checkpoints/v5_12_4/best_Q.pt  # CRITICAL\n  encoder_to_load: null\n");
//! ```

use serde_yaml::{Mapping, Value};

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The key path is empty or has an empty segment (`a..b`).
    #[error("invalid key path `{0}`")]
    BadPath(String),
    /// The document to edit is not valid YAML.
    #[error("the document does not parse as YAML: {0}")]
    Parse(#[source] serde_yaml::Error),
    /// An ancestor of the path is a flow-style collection (`{…}` / `[…]`).
    #[error(
        "line {line}: `{path}` is written in flow style ({{…}} or […]); refusing to edit inside it \
         (rewrite it as a block mapping first)"
    )]
    FlowStyle { path: String, line: usize },
    /// The path exists but does not hold a single-line scalar.
    #[error(
        "line {line}: `{path}` holds {what}, not a single-line scalar; refusing to replace it"
    )]
    NotScalar {
        path: String,
        line: usize,
        what: &'static str,
    },
    /// An ancestor of the path holds a scalar or a sequence, so the key cannot be added.
    #[error("line {line}: `{path}` holds {what}, not a mapping; cannot set `{target}` under it")]
    NotMapping {
        path: String,
        line: usize,
        what: &'static str,
        target: String,
    },
    /// The text uses a construct the line scanner does not follow.
    #[error("line {line}: {reason}; refusing to edit")]
    Unsupported { line: usize, reason: String },
    /// The new value is not a usable scalar.
    #[error("invalid value {value:?}: {reason}")]
    InvalidValue { value: String, reason: String },
    /// The edited text did not parse back to the expected document.
    #[error("edit of `{path}` failed verification: {reason}")]
    Verify { path: String, reason: String },
}

// ---------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------

/// What follows `key:` on its own line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineKind {
    /// Nothing (or only a comment): a nested block, a sequence, or null.
    Empty,
    /// Only properties (`&anchor`, `!tag`) followed by a nested block.
    Properties,
    /// A plain scalar (`null`, `16`, `checkpoints/v5_5/latest.pt`).
    Plain,
    /// A `"double-quoted"` scalar.
    DoubleQuoted,
    /// A `'single-quoted'` scalar.
    SingleQuoted,
    /// A flow collection (`{…}` or `[…]`).
    Flow,
    /// A block scalar indicator (`|`, `>`).
    BlockScalar,
    /// An alias (`*name`).
    Alias,
    /// A value with properties (`&a 5`, `!!str 5`).
    Decorated,
}

/// One `key:` of a block mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Keys from the root (unquoted).
    pub path: Vec<String>,
    /// 0-based line index.
    pub line: usize,
    /// Column of the key (spaces before it).
    pub indent: usize,
    /// What follows the colon.
    pub kind: InlineKind,
    /// Byte range of the inline value within the line (without the line ending); for
    /// [`InlineKind::Empty`] an empty range just after the colon.
    pub value_span: (usize, usize),
    /// Indentation of the nested keys, once one was seen.
    pub child_indent: Option<usize>,
    /// True when the nested block is a sequence (`- item` lines).
    pub has_sequence: bool,
    /// 0-based index of the last non-blank, non-comment line belonging to this entry
    /// (its own line, continuation lines, its nested block).
    pub end_line: usize,
}

impl KeyEntry {
    /// The dotted path (`frozen_checkpoint.path`).
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    fn holds_block(&self) -> bool {
        matches!(self.kind, InlineKind::Empty | InlineKind::Properties)
    }

    fn describe(&self) -> &'static str {
        match self.kind {
            InlineKind::Empty | InlineKind::Properties if self.has_sequence => "a sequence",
            InlineKind::Empty | InlineKind::Properties if self.child_indent.is_some() => {
                "a mapping"
            }
            InlineKind::Empty | InlineKind::Properties => "nothing (null)",
            InlineKind::Plain | InlineKind::DoubleQuoted | InlineKind::SingleQuoted => {
                if self.end_line > self.line {
                    "a multi-line scalar"
                } else {
                    "a scalar"
                }
            }
            InlineKind::Flow => "a flow-style collection",
            InlineKind::BlockScalar => "a block scalar (| or >)",
            InlineKind::Alias => "an alias",
            InlineKind::Decorated => "a value with an anchor or tag",
        }
    }
}

/// A line of the text: byte offsets of its start, the end of its content (before `\r\n` /
/// `\n`) and its end (after the line ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub start: usize,
    pub content_end: usize,
    pub end: usize,
}

/// The key structure of a block-style YAML text.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub lines: Vec<Line>,
    /// Every key, in text order.
    pub entries: Vec<KeyEntry>,
    /// Indentation of the top-level keys, once one was seen.
    pub root_child_indent: Option<usize>,
    /// Indentation step (child indent minus parent indent of the first nested key; 2 if none).
    pub indent_step: usize,
    /// `Some((line, reason))` when the scanner stopped following the structure at that
    /// 0-based line: entries before it are right, later keys are missing.
    pub incomplete_at: Option<(usize, String)>,
}

impl Scan {
    /// The entry of a key path (first occurrence).
    pub fn find(&self, path: &[&str]) -> Option<&KeyEntry> {
        self.entries
            .iter()
            .find(|e| e.path.len() == path.len() && e.path.iter().zip(path).all(|(a, b)| a == b))
    }

    /// 1-based line of a dotted key path.
    pub fn line_of(&self, dotted: &str) -> Option<usize> {
        let path: Vec<&str> = dotted.split('.').collect();
        self.find(&path).map(|e| e.line + 1)
    }
}

/// 1-based line where a dotted key path is defined, or `None` when it is not there or the
/// scanner could not follow the text up to it.
pub fn line_of(text: &str, dotted: &str) -> Option<usize> {
    scan(text).line_of(dotted)
}

/// Split a text into lines (a final line without line ending included; none for "").
pub fn split_lines(text: &str) -> Vec<Line> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let (content_end, end) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                let nl = start + p;
                let ce = if nl > start && bytes[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                (ce, nl + 1)
            }
            None => (bytes.len(), bytes.len()),
        };
        lines.push(Line {
            start,
            content_end,
            end,
        });
        start = end;
    }
    lines
}

/// The end of a quoted scalar starting at `s[0]` (`"` or `'`): the index just after the
/// closing quote, or `None` when it does not close on this line.
fn quoted_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let q = *b.first()?;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            c if c == q => {
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Unquote a quoted key (simple escapes only); `None` when unsure.
fn unquote_key(q: &str) -> Option<String> {
    let inner = &q[1..q.len() - 1];
    if q.starts_with('\'') {
        return Some(inner.replace("''", "'"));
    }
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'n' => '\n',
            't' => '\t',
            ' ' => ' ',
            _ => return None,
        });
    }
    Some(out)
}

/// Parse `key:` at the start of `s` (the line after its indentation): the key and the
/// offset just after the colon. `None` when it is not a simple key.
fn parse_key(s: &str) -> Option<(String, usize)> {
    let first = s.chars().next()?;
    if first == '"' || first == '\'' {
        let end = quoted_end(s)?;
        let key = unquote_key(&s[..end])?;
        let rest = &s[end..];
        let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        let after = &rest[ws..];
        if !after.starts_with(':') {
            return None;
        }
        let next = after[1..].chars().next();
        if !matches!(next, None | Some(' ') | Some('\t')) {
            return None;
        }
        return Some((key, end + ws + 1));
    }
    if "?{[&*!|>%@`#,]}-".contains(first) {
        return None;
    }
    let b = s.as_bytes();
    let colon = (0..b.len())
        .find(|&i| b[i] == b':' && matches!(b.get(i + 1), None | Some(b' ') | Some(b'\t')))?;
    let key = s[..colon].trim_end_matches([' ', '\t']);
    if key.is_empty() || key.contains(" #") || key.contains("\t#") {
        return None;
    }
    Some((key.to_string(), colon + 1))
}

/// Classify the inline value of a key line; `rest` is the line after the colon, `base`
/// its offset in the line. Returns the kind and the value's byte span in the line, or
/// `Err(reason)` when unsure.
fn parse_inline(rest: &str, base: usize) -> Result<(InlineKind, (usize, usize)), &'static str> {
    let trimmed = rest.trim_start_matches([' ', '\t']);
    let start = base + rest.len() - trimmed.len();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok((InlineKind::Empty, (base, base)));
    }
    // The end of a plain token / value: before " #" or at the end, trailing blanks trimmed.
    let plain_end = |s: &str| -> usize {
        let b = s.as_bytes();
        let cut = (1..b.len())
            .find(|&i| b[i] == b'#' && matches!(b[i - 1], b' ' | b'\t'))
            .unwrap_or(b.len());
        s[..cut].trim_end_matches([' ', '\t']).len()
    };
    let only_comment_after = |s: &str| {
        let t = s.trim_start_matches([' ', '\t']);
        t.is_empty() || (t.starts_with('#') && t.len() < s.len())
    };
    match trimmed.as_bytes()[0] {
        q @ (b'"' | b'\'') => {
            let end = quoted_end(trimmed).ok_or("multi-line quoted scalar")?;
            if !only_comment_after(&trimmed[end..]) {
                return Err("text after a quoted scalar");
            }
            let kind = if q == b'"' {
                InlineKind::DoubleQuoted
            } else {
                InlineKind::SingleQuoted
            };
            Ok((kind, (start, start + end)))
        }
        b'{' | b'[' => Ok((InlineKind::Flow, (start, start + plain_end(trimmed)))),
        b'|' | b'>' => Ok((InlineKind::BlockScalar, (start, start + plain_end(trimmed)))),
        b'*' => Ok((InlineKind::Alias, (start, start + plain_end(trimmed)))),
        b'&' | b'!' => {
            // Properties: tokens up to whitespace; anything else after them is the value.
            let mut s = trimmed;
            while s.starts_with('&') || s.starts_with('!') {
                let tok = s.find([' ', '\t']).unwrap_or(s.len());
                s = s[tok..].trim_start_matches([' ', '\t']);
            }
            if s.is_empty() || s.starts_with('#') {
                Ok((InlineKind::Properties, (base, base)))
            } else {
                Ok((InlineKind::Decorated, (start, start + plain_end(trimmed))))
            }
        }
        _ => Ok((InlineKind::Plain, (start, start + plain_end(trimmed)))),
    }
}

struct Frame {
    /// Index into `entries`; `None` for the root.
    entry: Option<usize>,
    indent: isize,
    inline: bool,
    seq: bool,
    map_children: bool,
}

/// Follow the key structure of a block-style YAML text (see the module docs).
pub fn scan(text: &str) -> Scan {
    let lines = split_lines(text);
    let mut out = Scan {
        indent_step: 0,
        ..Scan::default()
    };
    let mut stack = vec![Frame {
        entry: None,
        indent: -1,
        inline: false,
        seq: false,
        map_children: false,
    }];
    for (i, l) in lines.iter().enumerate() {
        let mut content = &text[l.start..l.content_end];
        if i == 0 {
            content = content.strip_prefix('\u{feff}').unwrap_or(content);
        }
        if content.contains('\r') {
            out.incomplete_at = Some((i, "carriage return inside a line".into()));
            break;
        }
        let trimmed = content.trim_start_matches(' ');
        let rest = trimmed.trim_start_matches([' ', '\t']);
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let n = content.len() - trimmed.len();
        if n == 0 && (trimmed.starts_with("---") || trimmed.starts_with("...")) {
            let marker_only =
                trimmed[3..].trim_start().is_empty() || trimmed[3..].trim_start().starts_with('#');
            if trimmed.starts_with("---") && marker_only && out.entries.is_empty() {
                continue;
            }
            out.incomplete_at = Some((i, "document marker (multi-document YAML)".into()));
            break;
        }
        if trimmed.starts_with('\t') {
            out.incomplete_at = Some((i, "tab used for indentation".into()));
            break;
        }
        let is_item = trimmed == "-" || trimmed.starts_with("- ") || trimmed.starts_with("-\t");
        let ni = n as isize;
        while stack.len() > 1 {
            let top = stack.last().expect("non-empty");
            if ni > top.indent || (ni == top.indent && is_item && !top.inline && !top.map_children)
            {
                break;
            }
            stack.pop();
        }
        for f in &stack {
            if let Some(e) = f.entry {
                out.entries[e].end_line = i;
            }
        }
        let top = stack.last_mut().expect("root frame");
        if top.inline || top.seq {
            continue;
        }
        if is_item {
            if top.entry.is_none() || top.map_children {
                out.incomplete_at = Some((i, "sequence where a key was expected".into()));
                break;
            }
            top.seq = true;
            if let Some(e) = top.entry {
                out.entries[e].has_sequence = true;
            }
            continue;
        }
        let child_indent = match top.entry {
            Some(e) => &mut out.entries[e].child_indent,
            None => &mut out.root_child_indent,
        };
        match *child_indent {
            Some(ci) if ci != n => {
                out.incomplete_at = Some((i, "inconsistent indentation".into()));
                break;
            }
            Some(_) => {}
            None => *child_indent = Some(n),
        }
        let Some((key, colon_end)) = parse_key(trimmed) else {
            out.incomplete_at = Some((i, "not a simple `key: value` line".into()));
            break;
        };
        let (kind, (vs, ve)) = match parse_inline(&trimmed[colon_end..], colon_end) {
            Ok(v) => v,
            Err(reason) => {
                out.incomplete_at = Some((i, reason.into()));
                break;
            }
        };
        let offset = l.content_end - l.start - content.len() + n;
        top.map_children = true;
        let mut path = match top.entry {
            Some(e) => out.entries[e].path.clone(),
            None => Vec::new(),
        };
        if out.indent_step == 0 {
            if let Some(e) = top.entry {
                out.indent_step = n - out.entries[e].indent;
            }
        }
        path.push(key);
        let inline = !matches!(kind, InlineKind::Empty | InlineKind::Properties);
        out.entries.push(KeyEntry {
            path,
            line: i,
            indent: n,
            kind,
            value_span: (offset + vs, offset + ve),
            child_indent: None,
            has_sequence: false,
            end_line: i,
        });
        stack.push(Frame {
            entry: Some(out.entries.len() - 1),
            indent: ni,
            inline,
            seq: false,
            map_children: false,
        });
    }
    if out.indent_step == 0 {
        out.indent_step = 2;
    }
    out.lines = lines;
    out
}

// ---------------------------------------------------------------------------------------
// Rendering scalars
// ---------------------------------------------------------------------------------------

/// True when `s`, written plain, could be misread (or not read at all) as a scalar.
fn needs_quoting(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    if s.trim() != s
        || s.chars().any(|c| c.is_control() || c == '\u{feff}')
        || s.contains([' ', ':', '#'])
        || s.starts_with("---")
        || s.starts_with("...")
        || ",[]{}#&*!|>'\"%@`".contains(first)
    {
        return true;
    }
    if "-?".contains(first) && s.len() == 1 {
        return true;
    }
    // YAML 1.1 booleans: strings for serde_yaml, but PyYAML (the trainer) reads bools.
    matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off"
    )
}

fn double_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote(s: &str, style: char) -> String {
    if style == '\'' && !s.chars().any(|c| c.is_control() || c == '\u{feff}') {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        double_quote(s)
    }
}

/// How `value` is written. A value starting with a quote is taken as a YAML quoted scalar
/// as-is; `null`, `true`, numbers … stay plain (their YAML meaning); other strings are
/// written plain when that reads back as the same string, else quoted. `old_quote` keeps
/// the quoting style of the value being replaced for string values.
pub fn render_scalar(value: &str, old_quote: Option<char>) -> Result<String, EditError> {
    let invalid = |reason: &str| EditError::InvalidValue {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.starts_with('"') || value.starts_with('\'') {
        if quoted_end(value) != Some(value.len()) {
            return Err(invalid("not a single quoted YAML scalar"));
        }
        return match serde_yaml::from_str::<Value>(value) {
            Ok(Value::String(_)) => Ok(value.to_string()),
            _ => Err(invalid("not a valid quoted YAML scalar")),
        };
    }
    if !needs_quoting(value) {
        match serde_yaml::from_str::<Value>(value) {
            Ok(Value::String(s)) if s == value => {
                return Ok(match old_quote {
                    Some(q) => quote(value, q),
                    None => value.to_string(),
                })
            }
            Ok(Value::Null | Value::Bool(_) | Value::Number(_)) => return Ok(value.to_string()),
            _ => {}
        }
    }
    Ok(quote(value, old_quote.unwrap_or('"')))
}

fn render_key(key: &str) -> String {
    if !needs_quoting(key) && key != "<<" {
        if let Ok(Value::String(s)) = serde_yaml::from_str::<Value>(key) {
            if s == key {
                return key.to_string();
            }
        }
    }
    double_quote(key)
}

// ---------------------------------------------------------------------------------------
// Editing
// ---------------------------------------------------------------------------------------

fn split_path(path: &str) -> Result<Vec<&str>, EditError> {
    let keys: Vec<&str> = path.split('.').collect();
    if path.is_empty() || keys.iter().any(|k| k.is_empty()) {
        return Err(EditError::BadPath(path.to_string()));
    }
    Ok(keys)
}

fn key_matches(k: &Value, key: &str) -> bool {
    match k {
        Value::String(s) => s == key,
        Value::Number(n) => n.to_string() == key,
        Value::Bool(b) => b.to_string() == key,
        _ => false,
    }
}

/// A key of a path under a value that is not a mapping ([`set_in`]).
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is under a value that is not a mapping")]
struct UnderNonMapping(String);

/// Set `keys` in a parsed document (creating mappings for missing or null levels).
fn set_in(doc: &mut Value, keys: &[&str], value: Value) -> Result<(), UnderNonMapping> {
    let Some((first, rest)) = keys.split_first() else {
        *doc = value;
        return Ok(());
    };
    if doc.is_null() {
        *doc = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = doc else {
        return Err(UnderNonMapping((*first).to_string()));
    };
    let key = map
        .keys()
        .find(|k| key_matches(k, first))
        .cloned()
        .unwrap_or_else(|| Value::String((*first).to_string()));
    let slot = map.entry(key).or_insert(Value::Null);
    set_in(slot, rest, value)
}

fn get_in<'a>(doc: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(doc, |v, key| match v {
        Value::Mapping(m) => m.iter().find(|(k, _)| key_matches(k, key)).map(|(_, v)| v),
        _ => None,
    })
}

fn detect_eol(text: &str) -> &'static str {
    match text.find('\n') {
        Some(p) if p > 0 && text.as_bytes()[p - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// Set the scalar at a dotted key path of a block-style YAML text, changing nothing else.
///
/// * Existing key: its inline value is replaced in place; indentation, the trailing
///   comment, the line ending and (for strings) the quoting style are kept.
/// * Missing key under an existing block mapping: `key: value` becomes the last line of
///   that block, at its children's indentation (missing intermediate levels are created).
/// * No ancestor at all: the block is appended at the end of the document.
///
/// `value` is YAML scalar text: `null`, `100`, `true`, `8.0e-4`, a path … (strings that
/// need quotes get them; a value starting with a quote is used as that quoted scalar).
/// The result is parsed again and must equal the input document with only this path
/// changed, else [`EditError::Verify`].
pub fn set_scalar(text: &str, path: &str, value: &str) -> Result<String, EditError> {
    let keys = split_path(path)?;
    let before: Value = serde_yaml::from_str(text).map_err(EditError::Parse)?;
    if !matches!(before, Value::Mapping(_) | Value::Null) {
        return Err(EditError::Unsupported {
            line: 1,
            reason: "the document is not a mapping".into(),
        });
    }
    let scan = scan(text);
    if let Some((line, reason)) = &scan.incomplete_at {
        return Err(EditError::Unsupported {
            line: line + 1,
            reason: format!("cannot follow the YAML structure ({reason})"),
        });
    }
    if scan.entries.is_empty() && !before.is_null() {
        return Err(EditError::Unsupported {
            line: 1,
            reason: "no block-style keys found (flow-style document?)".into(),
        });
    }

    // The deepest existing prefix of the path.
    let mut parent: Option<&KeyEntry> = None;
    let mut depth = 0;
    for d in 1..=keys.len() {
        let Some(e) = scan.find(&keys[..d]) else {
            break;
        };
        if d < keys.len() {
            if e.kind == InlineKind::Flow {
                return Err(EditError::FlowStyle {
                    path: e.dotted(),
                    line: e.line + 1,
                });
            }
            if !e.holds_block() || e.has_sequence {
                return Err(EditError::NotMapping {
                    path: e.dotted(),
                    line: e.line + 1,
                    what: e.describe(),
                    target: path.to_string(),
                });
            }
        }
        parent = Some(e);
        depth = d;
    }

    let (new_text, rendered) = if depth == keys.len() {
        let e = parent.expect("found entry");
        replace_value(text, &scan, e, path, value)?
    } else {
        insert_keys(text, &scan, parent, &keys[depth..], value)?
    };

    // Verify: the target reads the new value, everything else is unchanged.
    let expected: Value = serde_yaml::from_str(&rendered).map_err(|e| EditError::InvalidValue {
        value: value.to_string(),
        reason: e.to_string(),
    })?;
    let verify = |reason: String| EditError::Verify {
        path: path.to_string(),
        reason,
    };
    let after: Value = serde_yaml::from_str(&new_text)
        .map_err(|e| verify(format!("the edited text does not parse: {e}")))?;
    match get_in(&after, &keys) {
        Some(v) if *v == expected => {}
        Some(v) => {
            return Err(verify(format!(
                "it reads {} instead of {}",
                short(v),
                short(&expected)
            )))
        }
        None => return Err(verify("the key is not found after the edit".into())),
    }
    let mut want = before;
    set_in(&mut want, &keys, expected).map_err(|e| verify(e.to_string()))?;
    if after != want {
        return Err(verify("other values of the document changed".into()));
    }
    Ok(new_text)
}

fn short(v: &Value) -> String {
    let s = serde_yaml::to_string(v).unwrap_or_default();
    s.trim_end().to_string()
}

/// Replace the inline value of an existing key. Returns the new text and the rendered
/// scalar.
fn replace_value(
    text: &str,
    scan: &Scan,
    e: &KeyEntry,
    path: &str,
    value: &str,
) -> Result<(String, String), EditError> {
    let scalar = matches!(
        e.kind,
        InlineKind::Plain | InlineKind::DoubleQuoted | InlineKind::SingleQuoted
    ) || (e.kind == InlineKind::Empty && e.child_indent.is_none() && !e.has_sequence);
    if !scalar || e.end_line > e.line {
        return Err(EditError::NotScalar {
            path: path.to_string(),
            line: e.line + 1,
            what: e.describe(),
        });
    }
    let old_quote = match e.kind {
        InlineKind::DoubleQuoted => Some('"'),
        InlineKind::SingleQuoted => Some('\''),
        _ => None,
    };
    let rendered = render_scalar(value, old_quote)?;
    let line = scan.lines[e.line];
    let (vs, ve) = (line.start + e.value_span.0, line.start + e.value_span.1);
    let mut out = String::with_capacity(text.len() + rendered.len() + 1);
    out.push_str(&text[..vs]);
    if e.kind == InlineKind::Empty {
        out.push(' ');
    }
    out.push_str(&rendered);
    out.push_str(&text[ve..]);
    Ok((out, rendered))
}

/// Insert the missing `keys` (with `value` at the last) under `parent` (`None`: at the end
/// of the document).
fn insert_keys(
    text: &str,
    scan: &Scan,
    parent: Option<&KeyEntry>,
    keys: &[&str],
    value: &str,
) -> Result<(String, String), EditError> {
    let rendered = render_scalar(value, None)?;
    let eol = detect_eol(text);
    let step = scan.indent_step;
    let (indent, at) = match parent {
        Some(p) => (
            p.child_indent.unwrap_or(p.indent + step),
            Some(scan.lines[p.end_line]),
        ),
        None => (
            scan.root_child_indent.unwrap_or(0),
            scan.lines.last().copied(),
        ),
    };
    let mut block = Vec::with_capacity(keys.len());
    for (j, k) in keys.iter().enumerate() {
        let pad = " ".repeat(indent + j * step);
        if j + 1 < keys.len() {
            block.push(format!("{pad}{}:", render_key(k)));
        } else {
            block.push(format!("{pad}{}: {rendered}", render_key(k)));
        }
    }
    let block = block.join(eol);
    let mut out = String::with_capacity(text.len() + block.len() + 2 * eol.len());
    match at {
        Some(line) => {
            out.push_str(&text[..line.end]);
            if line.end == line.content_end {
                // The last line has no line ending: give it one, keep none at the end.
                out.push_str(eol);
                out.push_str(&block);
            } else {
                out.push_str(&block);
                out.push_str(eol);
            }
            out.push_str(&text[line.end..]);
        }
        None => {
            out.push_str(text);
            out.push_str(&block);
            out.push_str(eol);
        }
    }
    Ok((out, rendered))
}

/// Apply several [`set_scalar`] edits in order.
pub fn apply<P: AsRef<str>, V: AsRef<str>>(
    text: &str,
    edits: &[(P, V)],
) -> Result<String, EditError> {
    edits.iter().try_fold(text.to_string(), |t, (p, v)| {
        set_scalar(&t, p.as_ref(), v.as_ref())
    })
}

/// A unified diff (3 lines of context) with `--- a/{old_name}` / `+++ b/{new_name}`
/// headers; empty when the texts are equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{old_name}"), &format!("b/{new_name}"))
        .to_string()
}

#[cfg(test)]
mod tests;
