//! The `--where` expression language of `tvck ls` and `tvck select`, typed.
//!
//! ```text
//! expr       := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" expr ")" | comparison | BOOL_FIELD
//! comparison := FIELD ("==" | "!=" | "<" | "<=" | ">" | ">=" | "~") VALUE
//! VALUE      := number | 'text' | "text" | word | none | true | false
//! ```
//!
//! Fields are numbers (`epoch`, `coverage`, `Q`, `hierarchy_B`, `size` …), text
//! (`path`, `version`, `format`, `layout`, `provenance`, `fingerprint`, `alias`) or flags
//! (`unsafe`, `unreadable`, `converted`, `measured`). Numbers compare with all six
//! operators, text with `==`, `!=` and `~` (contains); `version == v5_12_4` also matches
//! the display name (`v5.12.4`). A comparison with a value the file does not have is
//! false (`coverage == none` asks for that). Names are case-insensitive. Every error
//! names the column of the token at fault.

use std::cmp::Ordering;

use serde::Serialize;

use crate::arch::VersionId;

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
    Flag,
}

/// Every field: (name, kind, what it is).
pub const FIELDS: &[(&str, Kind, &str)] = &[
    ("path", Kind::Text, "absolute path"),
    (
        "version",
        Kind::Text,
        "inferred version id (v5_12_4) or name (v5.12.4)",
    ),
    (
        "format",
        Kind::Text,
        "container: pt-zip, pt-legacy, pickle, safetensors",
    ),
    (
        "layout",
        Kind::Text,
        "inferred layout (L16 H64 dual 2L drop ctrl improved)",
    ),
    (
        "provenance",
        Kind::Text,
        "trained, measured, fitted, not_measured",
    ),
    ("fingerprint", Kind::Text, "weights fingerprint (hex)"),
    ("alias", Kind::Text, "an alias given by `tvck tag`"),
    ("epoch", Kind::Number, "stored epoch"),
    ("coverage", Kind::Number, "stored coverage (0..1)"),
    ("Q", Kind::Number, "stored Q"),
    ("hierarchy_B", Kind::Number, "stored hierarchy_B"),
    ("hierarchy_A", Kind::Number, "stored hierarchy_A"),
    ("richness", Kind::Number, "stored richness"),
    ("dist_corr", Kind::Number, "stored dist_corr_A"),
    ("r_v0", Kind::Number, "stored mean radius of valuation 0"),
    ("r_v9", Kind::Number, "stored mean radius of valuation 9"),
    ("mean_radius", Kind::Number, "stored mean radius"),
    ("std_radius", Kind::Number, "stored radius spread"),
    ("size", Kind::Number, "bytes"),
    ("tensors", Kind::Number, "tensor count"),
    ("parameters", Kind::Number, "model-state parameter count"),
    (
        "confidence",
        Kind::Number,
        "version inference confidence (0..1)",
    ),
    (
        "modified",
        Kind::Number,
        "mtime, seconds since the Unix epoch",
    ),
    (
        "unsafe",
        Kind::Flag,
        "an unsafe pickle global or an ambiguous file",
    ),
    ("unreadable", Kind::Flag, "could not be read"),
    ("converted", Kind::Flag, "carries a tvck migration record"),
    (
        "measured",
        Kind::Flag,
        "has metrics measured on its current weights",
    ),
];

/// The field named `name` (case-insensitive; `hierarchy` is `hierarchy_B`).
pub fn field(name: &str) -> Option<&'static str> {
    let name = if name.eq_ignore_ascii_case("hierarchy") {
        "hierarchy_B"
    } else {
        name
    };
    FIELDS
        .iter()
        .find(|(f, _, _)| f.eq_ignore_ascii_case(name))
        .map(|(f, _, _)| *f)
}

fn kind(field: &str) -> Kind {
    FIELDS
        .iter()
        .find(|(f, _, _)| *f == field)
        .map_or(Kind::Text, |(_, k, _)| *k)
}

/// The column of the index's `files` table that holds a field's value (what [`Fields`]
/// says of it when the file was indexed); `None` for `alias`, which lives in the `aliases`
/// table.
pub(crate) fn column(field: &str) -> Option<String> {
    match field {
        "alias" => None,
        "path" | "fingerprint" => Some(field.to_string()),
        f => Some(format!("f_{}", f.to_ascii_lowercase())),
    }
}

/// The fields the `files` table stores in a column of their own (`f_…`): every field but
/// `alias` (the `aliases` table), `path` and `fingerprint` (columns of the file's row
/// anyway).
pub(crate) fn stored_fields() -> impl Iterator<Item = (&'static str, Kind)> {
    FIELDS
        .iter()
        .filter(|(f, _, _)| !matches!(*f, "alias" | "path" | "fingerprint"))
        .map(|(f, k, _)| (*f, *k))
}

/// The value a stored field's column holds for a record: what [`Fields`] says (the first
/// text value; a version id in its catalog form, `v5_12_4`).
pub(crate) fn column_value(r: &impl Fields, field: &str, kind: Kind) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match kind {
        Kind::Number => r.number(field).map_or(Value::Null, Value::Real),
        Kind::Flag => Value::Integer(i64::from(r.flag(field))),
        Kind::Text => match r.text(field).into_iter().next() {
            None => Value::Null,
            Some(v) if field == "version" => Value::Text(
                v.parse::<VersionId>()
                    .map_or(v, |id| id.as_str().to_string()),
            ),
            Some(v) => Value::Text(v),
        },
    }
}

/// What a record says of a field.
pub trait Fields {
    /// A number field's value.
    fn number(&self, field: &str) -> Option<f64>;
    /// A text field's values (several for `alias`).
    fn text(&self, field: &str) -> Vec<String>;
    /// A flag field's value.
    fn flag(&self, field: &str) -> bool;
}

/// A bad query: the message, the 1-based column of the token at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct QueryError {
    pub column: usize,
    pub message: String,
    /// The query text, for [`QueryError::pointer`].
    pub text: String,
}

impl QueryError {
    /// The query with a caret under the bad token.
    pub fn pointer(&self) -> String {
        format!(
            "{}\n{}^",
            self.text,
            " ".repeat(self.column.saturating_sub(1))
        )
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        let names: Vec<&str> = FIELDS.iter().map(|(f, _, _)| *f).collect();
        format!(
            "fields: {}; e.g. `version == v5_12_4 and coverage >= 0.99 and epoch > 20`",
            names.join(", ")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "~",
        }
    }
}

/// A comparison's right side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
    None,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        field: &'static str,
        op: Op,
        value: Literal,
    },
    Flag(&'static str),
}

/// A parsed `--where`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub text: String,
    pub expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Number(f64),
    Op(Op),
    Open,
    Close,
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let err = |column: usize, message: String| QueryError {
        column,
        message,
        text: text.to_string(),
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "==" => Some((Op::Eq, 2)),
            "!=" => Some((Op::Ne, 2)),
            "<=" => Some((Op::Le, 2)),
            ">=" => Some((Op::Ge, 2)),
            _ => match c {
                '<' => Some((Op::Lt, 1)),
                '>' => Some((Op::Gt, 1)),
                '~' => Some((Op::Contains, 1)),
                '=' => Some((Op::Eq, 1)),
                _ => None,
            },
        };
        if let Some((op, n)) = op {
            out.push((Tok::Op(op), col));
            i += n;
            continue;
        }
        match c {
            '(' => {
                out.push((Tok::Open, col));
                i += 1;
            }
            ')' => {
                out.push((Tok::Close, col));
                i += 1;
            }
            '\'' | '"' => {
                let end = chars[i + 1..].iter().position(|&d| d == c).ok_or_else(|| {
                    err(
                        col,
                        format!("the text opened here with {c} is never closed"),
                    )
                })?;
                out.push((Tok::Quoted(chars[i + 1..i + 1 + end].iter().collect()), col));
                i += end + 2;
            }
            _ => {
                let start = i;
                while i < chars.len() && {
                    let d = chars[i];
                    d.is_alphanumeric() || matches!(d, '_' | '.' | '-' | '+' | '/' | ':' | '*')
                } {
                    i += 1;
                }
                if i == start {
                    return Err(err(col, format!("unexpected character `{c}`")));
                }
                let word: String = chars[start..i].iter().collect();
                let numeric = word
                    .starts_with(|d: char| d.is_ascii_digit() || d == '-' || d == '.')
                    && word.parse::<f64>().is_ok();
                out.push((
                    if numeric {
                        Tok::Number(word.parse().expect("checked"))
                    } else {
                        Tok::Word(word)
                    },
                    col,
                ));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self, column: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            column,
            message: message.into(),
            text: self.text.to_string(),
        }
    }

    fn end_column(&self) -> usize {
        self.text.chars().count() + 1
    }

    fn peek(&self) -> Option<&(Tok, usize)> {
        self.toks.get(self.pos)
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some((Tok::Word(w), _)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let Some((tok, col)) = self.peek().cloned() else {
            return Err(self.err(self.end_column(), "a condition is missing at the end"));
        };
        match tok {
            Tok::Open => {
                self.pos += 1;
                let e = self.or()?;
                match self.peek() {
                    Some((Tok::Close, _)) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    Some((_, c)) => Err(self.err(*c, "expected `)`")),
                    None => Err(self.err(col, "this `(` is never closed")),
                }
            }
            Tok::Word(w) => {
                self.pos += 1;
                let f = field(&w).ok_or_else(|| self.err(col, format!("unknown field `{w}`")))?;
                self.comparison(f)
            }
            Tok::Close => Err(self.err(col, "`)` without a condition before it")),
            Tok::Op(op) => {
                Err(self.err(col, format!("`{}` needs a field on its left", op.symbol())))
            }
            Tok::Number(_) | Tok::Quoted(_) => {
                Err(self.err(col, "a condition starts with a field name"))
            }
        }
    }

    fn comparison(&mut self, field: &'static str) -> Result<Expr, QueryError> {
        let k = kind(field);
        let (op, op_col) = match self.peek() {
            Some((Tok::Op(op), c)) => (*op, *c),
            _ if k == Kind::Flag => return Ok(Expr::Flag(field)),
            Some((_, c)) => {
                return Err(self.err(
                    *c,
                    format!("expected an operator (==, !=, <, <=, >, >=, ~) after `{field}`"),
                ))
            }
            None => {
                return Err(self.err(
                    self.end_column(),
                    format!("expected an operator after `{field}`"),
                ))
            }
        };
        self.pos += 1;
        let Some((tok, col)) = self.peek().cloned() else {
            return Err(self.err(
                self.end_column(),
                format!("`{field} {}` needs a value", op.symbol()),
            ));
        };
        self.pos += 1;
        let value = match tok {
            Tok::Number(n) => Literal::Number(n),
            Tok::Quoted(s) => Literal::Text(s),
            Tok::Word(w) if w.eq_ignore_ascii_case("none") => Literal::None,
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Tok::Word(w) => Literal::Text(w),
            _ => return Err(self.err(col, format!("`{field} {}` needs a value here", op.symbol()))),
        };
        let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
        match (k, &value) {
            (_, Literal::None) if !matches!(op, Op::Eq | Op::Ne) => {
                return Err(self.err(op_col, "`none` compares only with == and !="))
            }
            (_, Literal::None) => {}
            (Kind::Number, Literal::Number(_)) => {
                if op == Op::Contains {
                    return Err(self.err(
                        op_col,
                        format!("`~` (contains) is for text; `{field}` is a number"),
                    ));
                }
            }
            (Kind::Number, _) => {
                return Err(self.err(
                    col,
                    format!("`{field}` is a number: compare it with a number"),
                ))
            }
            (Kind::Text, Literal::Text(_)) | (Kind::Text, Literal::Number(_)) => {
                if ordering {
                    return Err(self.err(
                        op_col,
                        format!("`{field}` is text: use ==, != or ~ (contains)"),
                    ));
                }
            }
            (Kind::Text, Literal::Bool(_)) => {
                return Err(self.err(col, format!("`{field}` is text, not true/false")))
            }
            (Kind::Flag, Literal::Bool(_)) => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(
                        self.err(op_col, format!("`{field}` is true or false: use == or !="))
                    );
                }
            }
            (Kind::Flag, _) => return Err(self.err(col, format!("`{field}` is true or false"))),
        }
        if field == "version" {
            if let Literal::Text(v) = &value {
                if v.parse::<VersionId>().is_err() && op != Op::Contains {
                    let ids: Vec<&str> = VersionId::ALL.iter().map(|v| v.as_str()).collect();
                    return Err(self.err(
                        col,
                        format!("unknown version `{v}` (known: {})", ids.join(", ")),
                    ));
                }
            }
        }
        let value = match value {
            // Text fields compare with a number as its text (`epoch`-like names).
            Literal::Number(n) if k == Kind::Text => Literal::Text(format_number(n)),
            v => v,
        };
        Ok(Expr::Compare { field, op, value })
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl Query {
    /// Parse a `--where` text.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let toks = lex(text)?;
        let mut p = Parser { toks, pos: 0, text };
        let expr = p.or()?;
        if let Some((tok, col)) = p.peek() {
            let what = match tok {
                Tok::Close => "`)` without a matching `(`".to_string(),
                _ => "expected `and`, `or` or the end here".to_string(),
            };
            return Err(p.err(*col, what));
        }
        Ok(Query {
            text: text.to_string(),
            expr,
        })
    }

    /// Whether a record matches.
    pub fn matches(&self, r: &impl Fields) -> bool {
        eval(&self.expr, r)
    }
}

fn eval(e: &Expr, r: &impl Fields) -> bool {
    match e {
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
        Expr::Not(a) => !eval(a, r),
        Expr::Flag(f) => r.flag(f),
        Expr::Compare { field, op, value } => compare(field, *op, value, r),
    }
}

fn compare(field: &str, op: Op, value: &Literal, r: &impl Fields) -> bool {
    match kind(field) {
        Kind::Flag => {
            let v = r.flag(field);
            match value {
                Literal::Bool(b) => (v == *b) == (op == Op::Eq),
                _ => false,
            }
        }
        Kind::Number => {
            let v = r.number(field);
            match (value, v) {
                (Literal::None, v) => v.is_none() == (op == Op::Eq),
                (Literal::Number(n), Some(v)) => match op {
                    Op::Eq => v == *n,
                    Op::Ne => v != *n,
                    Op::Lt => v < *n,
                    Op::Le => v <= *n,
                    Op::Gt => v > *n,
                    Op::Ge => v >= *n,
                    Op::Contains => false,
                },
                _ => false,
            }
        }
        Kind::Text => {
            let vals = r.text(field);
            match value {
                Literal::None => vals.is_empty() == (op == Op::Eq),
                Literal::Text(t) => {
                    let same = |v: &str| {
                        if field == "version" {
                            match (v.parse::<VersionId>(), t.parse::<VersionId>()) {
                                (Ok(a), Ok(b)) => a == b,
                                _ => v == t,
                            }
                        } else if field == "path" || field == "fingerprint" {
                            v == t
                        } else {
                            v.eq_ignore_ascii_case(t)
                        }
                    };
                    match op {
                        Op::Eq => vals.iter().any(|v| same(v)),
                        Op::Ne => !vals.iter().any(|v| same(v)),
                        Op::Contains => vals.iter().any(|v| v.contains(t.as_str())),
                        _ => false,
                    }
                }
                _ => false,
            }
        }
    }
}

/// The SQL form of a query: a condition over a row of the index's `files` table (its
/// columns by [`column`], its aliases in `aliases`), every value a parameter appended to
/// `params` (`?N` numbered from the ones already there). It is [`Query::matches`]
/// translated: a comparison with a missing value is false (never SQL's unknown), so `not`,
/// `and` and `or` combine the same truth values; tests check the two agree on every
/// field and operator.
impl Query {
    pub(crate) fn to_sql(&self, params: &mut Vec<rusqlite::types::Value>) -> String {
        sql(&self.expr, params)
    }
}

fn sql(e: &Expr, p: &mut Vec<rusqlite::types::Value>) -> String {
    match e {
        Expr::And(a, b) => format!("({} AND {})", sql(a, p), sql(b, p)),
        Expr::Or(a, b) => format!("({} OR {})", sql(a, p), sql(b, p)),
        Expr::Not(a) => format!("(NOT {})", sql(a, p)),
        Expr::Flag(f) => format!("({} <> 0)", column(f).unwrap_or_default()),
        Expr::Compare { field, op, value } => compare_sql(field, *op, value, p),
    }
}

/// A false condition.
const FALSE: &str = "0";

fn compare_sql(
    field: &str,
    op: Op,
    value: &Literal,
    p: &mut Vec<rusqlite::types::Value>,
) -> String {
    use rusqlite::types::Value;
    let mut param = |v: Value| {
        p.push(v);
        format!("?{}", p.len())
    };
    let Some(c) = column(field) else {
        // `alias`: any of the file's aliases.
        let any = |cond: &str| {
            format!("EXISTS (SELECT 1 FROM aliases AS a WHERE a.path = files.path AND {cond})")
        };
        return match (value, op) {
            (Literal::None, Op::Eq) => format!("(NOT {})", any("1")),
            (Literal::None, _) => any("1"),
            (Literal::Text(t), Op::Eq) => any(&format!(
                "a.name = {} COLLATE NOCASE",
                param(Value::Text(t.clone()))
            )),
            (Literal::Text(t), Op::Ne) => {
                format!(
                    "(NOT {})",
                    any(&format!(
                        "a.name = {} COLLATE NOCASE",
                        param(Value::Text(t.clone()))
                    ))
                )
            }
            (Literal::Text(t), Op::Contains) => any(&format!(
                "instr(a.name, {}) > 0",
                param(Value::Text(t.clone()))
            )),
            _ => FALSE.into(),
        };
    };
    match kind(field) {
        Kind::Flag => match value {
            Literal::Bool(b) => format!("(({c} <> 0) = {})", i32::from(*b == (op == Op::Eq))),
            _ => FALSE.into(),
        },
        Kind::Number => match value {
            Literal::None if op == Op::Eq => format!("({c} IS NULL)"),
            Literal::None => format!("({c} IS NOT NULL)"),
            Literal::Number(n) => {
                let sym = match op {
                    Op::Eq => "=",
                    Op::Ne => "<>",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Contains => return FALSE.into(),
                };
                format!("coalesce({c} {sym} {}, 0)", param(Value::Real(*n)))
            }
            _ => FALSE.into(),
        },
        Kind::Text => match value {
            Literal::None if op == Op::Eq => format!("({c} IS NULL)"),
            Literal::None => format!("({c} IS NOT NULL)"),
            Literal::Text(t) if op == Op::Contains => {
                format!(
                    "coalesce(instr({c}, {}) > 0, 0)",
                    param(Value::Text(t.clone()))
                )
            }
            Literal::Text(t) if matches!(op, Op::Eq | Op::Ne) => {
                let same = match field {
                    // The column holds the catalog id of a version that parses.
                    "version" => {
                        let t = t
                            .parse::<VersionId>()
                            .map_or(t.clone(), |id| id.as_str().to_string());
                        format!("{c} = {}", param(Value::Text(t)))
                    }
                    "path" | "fingerprint" => format!("{c} = {}", param(Value::Text(t.clone()))),
                    _ => format!("{c} = {} COLLATE NOCASE", param(Value::Text(t.clone()))),
                };
                if op == Op::Eq {
                    format!("coalesce({same}, 0)")
                } else {
                    format!("(NOT coalesce({same}, 0))")
                }
            }
            _ => FALSE.into(),
        },
    }
}

/// A `--sort` key: a field, ascending unless `:desc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: &'static str,
    pub descending: bool,
}

impl SortKey {
    /// `FIELD`, `FIELD:asc` or `FIELD:desc`.
    pub fn parse(text: &str) -> Result<SortKey, QueryError> {
        let err = |column: usize, message: String| QueryError {
            column,
            message,
            text: text.to_string(),
        };
        let (name, dir) = match text.rsplit_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        let descending = match dir {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(d) => {
                return Err(err(
                    name.chars().count() + 2,
                    format!("`{d}`: the direction is asc or desc"),
                ))
            }
        };
        let field = field(name).ok_or_else(|| err(1, format!("unknown field `{name}`")))?;
        if kind(field) == Kind::Flag {
            return Err(err(
                1,
                format!("`{field}` is true or false: sort by a number or text"),
            ));
        }
        Ok(SortKey { field, descending })
    }

    /// Compare two records; values they lack sort last, whatever the direction.
    pub fn compare(&self, a: &impl Fields, b: &impl Fields) -> Ordering {
        let ord = match kind(self.field) {
            Kind::Number => match (a.number(self.field), b.number(self.field)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            _ => {
                let (x, y) = (a.text(self.field), b.text(self.field));
                match (x.first(), y.first()) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => return Ordering::Less,
                    (None, Some(_)) => return Ordering::Greater,
                    (None, None) => Ordering::Equal,
                }
            }
        };
        if self.descending {
            ord.reverse()
        } else {
            ord
        }
    }
}

impl SortKey {
    /// The SQL `ORDER BY` terms of [`SortKey::compare`] over the index's `files` table:
    /// values a file lacks last, whatever the direction; ties in path order (the order
    /// [`SortKey::compare`] keeps, sorting rows listed by path).
    pub(crate) fn to_sql(&self) -> String {
        let value = column(self.field).unwrap_or_else(|| {
            // A file's first alias (its aliases are listed by name).
            "(SELECT min(a.name) FROM aliases AS a WHERE a.path = files.path)".to_string()
        });
        let dir = if self.descending { "DESC" } else { "ASC" };
        format!("({value}) IS NULL, ({value}) {dir}, path")
    }
}

impl Fields for super::Entry {
    fn number(&self, field: &str) -> Option<f64> {
        let s = &self.summary;
        let m = &s.metrics;
        match field {
            "epoch" => s.epoch.map(|e| e as f64),
            "size" => Some(s.size as f64),
            "tensors" => Some(s.tensors as f64),
            "parameters" => Some(s.parameters as f64),
            "confidence" => s.version.as_ref().map(|v| v.confidence),
            "modified" => Some(self.modified as f64),
            metric => m.by_name(metric),
        }
    }

    fn text(&self, field: &str) -> Vec<String> {
        let s = &self.summary;
        match field {
            "path" => vec![self.path.clone()],
            "version" => s.version.iter().map(|v| v.version.clone()).collect(),
            "format" => s.format.iter().map(|f| f.label().to_string()).collect(),
            "layout" => s.version.iter().map(|v| v.layout.clone()).collect(),
            "provenance" => s
                .metrics
                .provenance
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            "fingerprint" => s.fingerprint.iter().cloned().collect(),
            "alias" => self.aliases.clone(),
            _ => Vec::new(),
        }
    }

    fn flag(&self, field: &str) -> bool {
        let s = &self.summary;
        match field {
            "unsafe" => !s.unsafe_globals.is_empty(),
            "unreadable" => s.error.is_some(),
            "converted" => self.migration.is_some(),
            "measured" => s.metrics.is_measured(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct R {
        nums: Vec<(&'static str, f64)>,
        texts: Vec<(&'static str, &'static str)>,
        flags: Vec<&'static str>,
    }

    impl Fields for R {
        fn number(&self, f: &str) -> Option<f64> {
            self.nums.iter().find(|(k, _)| *k == f).map(|(_, v)| *v)
        }
        fn text(&self, f: &str) -> Vec<String> {
            self.texts
                .iter()
                .filter(|(k, _)| *k == f)
                .map(|(_, v)| v.to_string())
                .collect()
        }
        fn flag(&self, f: &str) -> bool {
            self.flags.contains(&f)
        }
    }

    fn rec() -> R {
        R {
            nums: vec![("coverage", 0.995), ("epoch", 30.0), ("Q", 1.07)],
            texts: vec![
                ("version", "v5_12_4"),
                ("path", "/runs/a/best_Q.pt"),
                ("alias", "production"),
                ("alias", "paper"),
            ],
            flags: vec!["measured"],
        }
    }

    fn m(q: &str) -> bool {
        Query::parse(q).unwrap().matches(&rec())
    }

    #[test]
    fn evaluates() {
        assert!(m("version == v5_12_4 and coverage >= 0.99 and epoch > 20"));
        assert!(m("version == 'v5.12.4'"));
        assert!(!m("version == v5_11"));
        assert!(m("version != v5_11 and not (epoch < 10 or Q < 1)"));
        assert!(m("alias == production") && m("alias == paper") && !m("alias == old"));
        assert!(m("alias != old") && !m("alias != paper"));
        assert!(m("path ~ best_ and measured and not unsafe"));
        assert!(m("measured == true and unsafe == false"));
        assert!(m("hierarchy_B == none and coverage != none"));
        assert!(!m("hierarchy_B < 0"), "a missing value compares false");
        assert!(m("Q > 1 or hierarchy_B < 0"));
        assert!(
            m("q > 1 and HIERARCHY == none"),
            "names are case-insensitive"
        );
        // `and` binds tighter than `or`.
        assert!(m("epoch < 10 and Q < 1 or coverage > 0.9"));
        assert!(!m("epoch < 10 and (Q < 1 or coverage > 0.9)"));
    }

    fn e(q: &str) -> (usize, String) {
        let err = Query::parse(q).unwrap_err();
        (err.column, err.message)
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(e("versoin == v5_11"), (1, "unknown field `versoin`".into()));
        assert_eq!(e("epoch > 20 and coverage >= high").0, 28);
        assert_eq!(
            e("coverage >= high").1,
            "`coverage` is a number: compare it with a number"
        );
        assert_eq!(
            e("version < v5_11"),
            (9, "`version` is text: use ==, != or ~ (contains)".into())
        );
        assert_eq!(
            e("version == v6").1,
            "unknown version `v6` (known: v5_5, v5_11, v5_11_partial_freeze, v5_12, v5_12_4)"
        );
        assert_eq!(e("epoch > 20 and").0, 15);
        assert_eq!(e("(epoch > 20").0, 1);
        assert_eq!(e("epoch > 20)").0, 11);
        assert_eq!(e("epoch 20").0, 7);
        assert_eq!(
            e("epoch > 20 coverage > 1"),
            (12, "expected `and`, `or` or the end here".into())
        );
        assert_eq!(e("path == 'abc").0, 9);
        assert_eq!(e("epoch > 1 & Q > 1").0, 11);
        assert_eq!(e("coverage > none").0, 10);
        let err = Query::parse("epoch >> 2").unwrap_err();
        assert_eq!(err.pointer(), "epoch >> 2\n       ^");
    }

    #[test]
    fn sort_keys() {
        let k = SortKey::parse("Q:desc").unwrap();
        assert_eq!(
            k,
            SortKey {
                field: "Q",
                descending: true
            }
        );
        assert!(!SortKey::parse("epoch").unwrap().descending);
        assert_eq!(SortKey::parse("Q:up").unwrap_err().column, 3);
        assert!(SortKey::parse("nope").is_err());
        let a = rec();
        let b = R::default();
        // A missing value sorts last both ways.
        assert_eq!(k.compare(&a, &b), Ordering::Less);
        assert_eq!(SortKey::parse("Q").unwrap().compare(&a, &b), Ordering::Less);
    }
}
