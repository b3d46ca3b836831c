//! The tiny integer expression language of the catalog (`max(32, H / 2)`, `!dual_projection`).
//!
//! Expressions are parsed once, when the catalog loads; variables are resolved to slots of an
//! environment (`&[i64]`) then, so evaluating one is a short walk over a small tree with no
//! lookups and no allocation.

/// Why an expression does not parse, and where: `column` is the 1-based byte column of
/// the expression text (the end of the text plus one for an unexpected end).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ExprError {
    pub column: usize,
    pub kind: ExprErrorKind,
}

/// What is wrong with an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprErrorKind {
    #[error("integer `{0}` out of range")]
    IntegerOutOfRange(String),
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    #[error("`=` is not an operator (use `==`)")]
    SingleEquals,
    #[error("unexpected `{0}`")]
    Unexpected(String),
    #[error("unexpected end of expression")]
    UnexpectedEnd,
    #[error("expected `{expected}`, found `{found}`")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("expected `{0}`, found the end")]
    ExpectedAtEnd(&'static str),
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    #[error("unknown variable `{0}`")]
    UnknownVariable(String),
}

/// A parsed expression. Variables are slot indices into the evaluation environment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Int(i64),
    Var(usize),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Max(Vec<Expr>),
    Min(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl Expr {
    /// Evaluate against an environment. Never panics: arithmetic saturates, a division by
    /// zero gives 0, an out-of-range slot reads 0.
    pub(crate) fn eval(&self, env: &[i64]) -> i64 {
        match self {
            Expr::Int(v) => *v,
            Expr::Var(slot) => env.get(*slot).copied().unwrap_or(0),
            Expr::Not(e) => i64::from(e.eval(env) == 0),
            Expr::Neg(e) => e.eval(env).saturating_neg(),
            Expr::Max(args) => args.iter().map(|a| a.eval(env)).max().unwrap_or(0),
            Expr::Min(args) => args.iter().map(|a| a.eval(env)).min().unwrap_or(0),
            Expr::Bin(op, a, b) => {
                let x = a.eval(env);
                // Short-circuit the logical operators.
                match op {
                    BinOp::And if x == 0 => return 0,
                    BinOp::Or if x != 0 => return 1,
                    _ => {}
                }
                let y = b.eval(env);
                match op {
                    BinOp::Add => x.saturating_add(y),
                    BinOp::Sub => x.saturating_sub(y),
                    BinOp::Mul => x.saturating_mul(y),
                    BinOp::Div => x.checked_div(y).unwrap_or(0),
                    BinOp::Eq => i64::from(x == y),
                    BinOp::Ne => i64::from(x != y),
                    BinOp::Lt => i64::from(x < y),
                    BinOp::Le => i64::from(x <= y),
                    BinOp::Gt => i64::from(x > y),
                    BinOp::Ge => i64::from(x >= y),
                    BinOp::And | BinOp::Or => i64::from(y != 0),
                }
            }
        }
    }

    /// True when the expression is non-zero.
    pub(crate) fn truthy(&self, env: &[i64]) -> bool {
        self.eval(env) != 0
    }
}

/// Parse `src`, resolving each variable name with `resolve` (None = unknown variable).
pub(crate) fn parse(src: &str, resolve: &dyn Fn(&str) -> Option<usize>) -> Result<Expr, ExprError> {
    let (tokens, columns) = lex(src)?.into_iter().unzip();
    let mut p = Parser {
        tokens,
        columns,
        end: src.len() + 1,
        pos: 0,
        resolve,
    };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(p.error(ExprErrorKind::Unexpected(t.text()))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Ident(String),
    Op(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Int(v) => v.to_string(),
            Tok::Ident(s) => s.clone(),
            Tok::Op(o) => (*o).to_string(),
        }
    }
}

const OPS: [&str; 17] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "!", "(", ")", ",", "=",
];

/// The tokens of `src`, each with its 1-based column.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let v = src[start..i].parse::<i64>().map_err(|_| ExprError {
                column: start + 1,
                kind: ExprErrorKind::IntegerOutOfRange(src[start..i].to_string()),
            })?;
            out.push((Tok::Int(v), start + 1));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            // `source.NAME` / `target.NAME` (migration specs) are one identifier: a dot
            // followed by a letter or `_` continues it.
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || (bytes[i] == b'.'
                        && bytes
                            .get(i + 1)
                            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')))
            {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), start + 1));
        } else {
            let op = OPS
                .iter()
                .find(|op| src[i..].starts_with(**op))
                .ok_or_else(|| ExprError {
                    column: i + 1,
                    kind: ExprErrorKind::UnexpectedChar(src[i..].chars().next().unwrap_or('?')),
                })?;
            if *op == "=" {
                return Err(ExprError {
                    column: i + 1,
                    kind: ExprErrorKind::SingleEquals,
                });
            }
            out.push((Tok::Op(op), i + 1));
            i += op.len();
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Tok>,
    /// The column of each token.
    columns: Vec<usize>,
    /// The column just past the text.
    end: usize,
    pos: usize,
    resolve: &'a dyn Fn(&str) -> Option<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    /// An error at the token `pos` (the end when there is none).
    fn error_at(&self, pos: usize, kind: ExprErrorKind) -> ExprError {
        let column = self.columns.get(pos).copied().unwrap_or(self.end);
        ExprError { column, kind }
    }

    /// An error at the current token.
    fn error(&self, kind: ExprErrorKind) -> ExprError {
        self.error_at(self.pos, kind)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &'static str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.error(match self.peek() {
                Some(t) => ExprErrorKind::Expected {
                    expected: op,
                    found: t.text(),
                },
                None => ExprErrorKind::ExpectedAtEnd(op),
            }))
        }
    }

    fn binary(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Expr, ExprError>,
        chain: bool,
    ) -> Result<Expr, ExprError> {
        let mut lhs = next(self)?;
        'outer: loop {
            for (text, op) in ops {
                if self.eat_op(text) {
                    let rhs = next(self)?;
                    lhs = Expr::Bin(*op, Box::new(lhs), Box::new(rhs));
                    if chain {
                        continue 'outer;
                    }
                    break 'outer;
                }
            }
            break;
        }
        Ok(lhs)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("||", BinOp::Or)], Self::and, true)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("&&", BinOp::And)], Self::cmp, true)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        self.binary(
            &[
                ("==", BinOp::Eq),
                ("!=", BinOp::Ne),
                ("<=", BinOp::Le),
                (">=", BinOp::Ge),
                ("<", BinOp::Lt),
                (">", BinOp::Gt),
            ],
            Self::add,
            false,
        )
    }

    fn add(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::mul, true)
    }

    fn mul(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("*", BinOp::Mul), ("/", BinOp::Div)], Self::unary, true)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_op("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        match self.tokens.get(self.pos).cloned() {
            Some(Tok::Int(v)) => {
                self.pos += 1;
                Ok(Expr::Int(v))
            }
            Some(Tok::Ident(name)) => {
                let at = self.pos;
                self.pos += 1;
                match name.as_str() {
                    "true" => return Ok(Expr::Int(1)),
                    "false" => return Ok(Expr::Int(0)),
                    _ => {}
                }
                if self.eat_op("(") {
                    let mut args = vec![self.or()?];
                    while self.eat_op(",") {
                        args.push(self.or()?);
                    }
                    self.expect_op(")")?;
                    return match name.as_str() {
                        "max" => Ok(Expr::Max(args)),
                        "min" => Ok(Expr::Min(args)),
                        _ => Err(self.error_at(at, ExprErrorKind::UnknownFunction(name))),
                    };
                }
                match (self.resolve)(&name) {
                    Some(slot) => Ok(Expr::Var(slot)),
                    None => Err(self.error_at(at, ExprErrorKind::UnknownVariable(name))),
                }
            }
            Some(Tok::Op("(")) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Some(t) => Err(self.error(ExprErrorKind::Unexpected(t.text()))),
            None => Err(self.error(ExprErrorKind::UnexpectedEnd)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<usize> {
        ["a", "b", "c"].iter().position(|v| *v == name)
    }

    fn ev(src: &str, env: &[i64]) -> i64 {
        parse(src, &vars).unwrap().eval(env)
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(ev("1 + 2 * 3", &[]), 7);
        assert_eq!(ev("(1 + 2) * 3", &[]), 9);
        assert_eq!(ev("10 - 3 - 2", &[]), 5);
        assert_eq!(ev("a / 2", &[65]), 32);
        assert_eq!(ev("max(32, a / 2)", &[64]), 32);
        assert_eq!(ev("max(32, a / 2)", &[128]), 64);
        assert_eq!(ev("min(a, b, 3)", &[5, 4]), 3);
        assert_eq!(ev("-a + 1", &[3]), -2);
        assert_eq!(ev("a / b", &[3, 0]), 0);
    }

    #[test]
    fn logic() {
        assert_eq!(ev("!a", &[0]), 1);
        assert_eq!(ev("!a", &[2]), 0);
        assert_eq!(ev("a && !b", &[1, 0]), 1);
        assert_eq!(ev("a || b", &[0, 0]), 0);
        assert_eq!(ev("a == 2 && b >= 1", &[2, 1]), 1);
        assert_eq!(ev("true", &[]), 1);
        assert_eq!(ev("false || c", &[0, 0, 7]), 1);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a +",
            "(a",
            "d",
            "foo(1)",
            "a = 1",
            "1 $ 2",
            "a b",
            "99999999999999999999",
        ] {
            assert!(parse(bad, &vars).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn errors_carry_the_column() {
        let e = |src: &str| parse(src, &vars).unwrap_err();
        assert_eq!(e("a + d").column, 5);
        assert_eq!(e("a + d").kind, ExprErrorKind::UnknownVariable("d".into()));
        assert_eq!(e("a +").column, 4);
        assert_eq!(e("a +").to_string(), "unexpected end of expression");
        assert_eq!(e("1 $ 2").column, 3);
        assert_eq!(e("a = 1").kind, ExprErrorKind::SingleEquals);
        assert_eq!(e("foo(1)").column, 1);
        assert_eq!(e("(a b").to_string(), "expected `)`, found `b`");
        assert_eq!(e("(a b").column, 4);
    }
}
