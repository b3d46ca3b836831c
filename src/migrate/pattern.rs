//! Anchored key patterns with named captures: `encoder_{X}.encoder.0`, `decoder_B.{rest*}`.
//!
//! * `{name}` captures one or more characters other than `.` (one key segment or part of one);
//! * `{name*}` captures one or more characters, dots included (several segments);
//! * everything else is literal. A pattern matches the whole key, never a part of it.
//!
//! * `{expr}` (in a spec rule: any brace content that names a layout or loop variable, or is
//!   not a plain name, such as `{k * direction_stride}`) is an integer expression; a spec
//!   binds it to the layout's values ([`Pattern::bind`]) before the pattern matches anything.
//!
//! A rule may restrict a capture to a list of values (`where: {X: [A, B]}`); a pattern used to
//! *produce* keys is instantiated from the captures of the matched source key.

use std::collections::BTreeMap;

use crate::arch::expr::{self, Expr, ExprError};

/// Resolves an expression variable to its slot in the environment [`Pattern::bind`] gets.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<usize>;

/// The values bound to a pattern's captures.
pub type Captures = BTreeMap<String, String>;

/// Why a key pattern does not parse or bind; `pattern` is its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty key pattern")]
    Empty,
    #[error("`{pattern}`: `{{` without a closing `}}`")]
    Unclosed { pattern: String },
    #[error("`{pattern}`: `}}` without an opening `{{`")]
    Unopened { pattern: String },
    #[error("`{pattern}`: `{{{inner}}}` is neither a capture name nor an expression over the layout and loop variables: {source}")]
    Expression {
        pattern: String,
        inner: String,
        #[source]
        source: ExprError,
    },
    #[error("`{pattern}`: two {what} side by side make the match ambiguous")]
    Adjacent {
        pattern: String,
        /// `braces` or `captures`.
        what: &'static str,
    },
    #[error("`{pattern}`: capture names are letters, digits and `_` (got `{{{name}}}`)")]
    BadCaptureName { pattern: String, name: String },
    #[error("`{pattern}`: capture `{name}` appears twice")]
    CaptureTwice { pattern: String, name: String },
    #[error("`{pattern}`: `{{{expr}}}` is {value}, a key index cannot be negative")]
    NegativeIndex {
        pattern: String,
        expr: String,
        value: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Cap {
        name: String,
        dots: bool,
    },
    /// An integer expression (as written, compiled); never matches until bound.
    Expr {
        text: String,
        expr: Expr,
    },
}

/// A parsed key pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

impl Pattern {
    /// Parse `text`. Errors name the problem (unbalanced braces, empty or repeated names,
    /// two captures side by side, which would make a match ambiguous).
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse_with(text, None)
    }

    /// Parse `text` where brace contents may be integer expressions: a plain name that
    /// `vars` resolves, or anything that is not a plain name, is compiled with `vars`;
    /// other plain names are captures.
    pub fn parse_with(text: &str, vars: Option<Resolver<'_>>) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        let mut seen = Vec::<String>::new();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(PatternError::Unclosed {
                            pattern: text.to_string(),
                        });
                    }
                    let plain = |n: &str| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    };
                    if let Some(resolve) = vars {
                        let inner = name.trim();
                        let capture = (plain(inner) && resolve(inner).is_none())
                            || inner.strip_suffix('*').is_some_and(plain);
                        if !capture {
                            let expr = expr::parse(inner, resolve).map_err(|source| {
                                PatternError::Expression {
                                    pattern: text.to_string(),
                                    inner: inner.to_string(),
                                    source,
                                }
                            })?;
                            if lit.is_empty() && !parts.is_empty() {
                                if let Some(Part::Cap { .. } | Part::Expr { .. }) = parts.last() {
                                    return Err(PatternError::Adjacent {
                                        pattern: text.to_string(),
                                        what: "braces",
                                    });
                                }
                            }
                            if !lit.is_empty() {
                                parts.push(Part::Lit(std::mem::take(&mut lit)));
                            }
                            parts.push(Part::Expr {
                                text: inner.to_string(),
                                expr,
                            });
                            continue;
                        }
                    }
                    let (name, dots) = match name.strip_suffix('*') {
                        Some(n) => (n.to_string(), true),
                        None => (name, false),
                    };
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(PatternError::BadCaptureName {
                            pattern: text.to_string(),
                            name,
                        });
                    }
                    if seen.contains(&name) {
                        return Err(PatternError::CaptureTwice {
                            pattern: text.to_string(),
                            name,
                        });
                    }
                    if lit.is_empty()
                        && matches!(parts.last(), Some(Part::Cap { .. } | Part::Expr { .. }))
                    {
                        return Err(PatternError::Adjacent {
                            pattern: text.to_string(),
                            what: "captures",
                        });
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    seen.push(name.clone());
                    parts.push(Part::Cap { name, dots });
                }
                '}' => {
                    return Err(PatternError::Unopened {
                        pattern: text.to_string(),
                    })
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The capture names, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Cap { name, .. } => Some(name.as_str()),
            Part::Lit(_) | Part::Expr { .. } => None,
        })
    }

    /// Whether a capture may span dots (`{rest*}`).
    pub fn has_multi_segment_capture(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Cap { dots: true, .. }))
    }

    /// Whether the pattern has `{expr}` segments (to bind before it matches).
    pub fn has_exprs(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Expr { .. }))
    }

    /// This pattern with every `{expr}` segment replaced by its value in `env` (a negative
    /// value is an error: key indices are never negative).
    pub fn bind(&self, env: &[i64]) -> Result<Pattern, PatternError> {
        let mut parts: Vec<Part> = Vec::with_capacity(self.parts.len());
        let mut text = String::new();
        for p in &self.parts {
            let (lit, shown) = match p {
                Part::Expr { text: t, expr } => {
                    let v = expr.eval(env);
                    if v < 0 {
                        return Err(PatternError::NegativeIndex {
                            pattern: self.text.clone(),
                            expr: t.clone(),
                            value: v,
                        });
                    }
                    (Some(v.to_string()), v.to_string())
                }
                Part::Lit(l) => (Some(l.clone()), l.clone()),
                Part::Cap { name, dots } => {
                    parts.push(p.clone());
                    text.push_str(&format!("{{{name}{}}}", if *dots { "*" } else { "" }));
                    (None, String::new())
                }
            };
            if let Some(l) = lit {
                text.push_str(&shown);
                match parts.last_mut() {
                    Some(Part::Lit(prev)) => prev.push_str(&l),
                    _ => parts.push(Part::Lit(l)),
                }
            }
        }
        Ok(Pattern { text, parts })
    }

    /// This pattern followed by `.suffix` (a rule's module prefix plus a tensor name).
    pub fn with_suffix(&self, suffix: &str) -> Pattern {
        let mut parts = self.parts.clone();
        let tail = format!(".{suffix}");
        match parts.last_mut() {
            Some(Part::Lit(l)) => l.push_str(&tail),
            _ => parts.push(Part::Lit(tail)),
        }
        Pattern {
            text: format!("{}.{suffix}", self.text),
            parts,
        }
    }

    /// Match `key` whole; captures must take a value from `allowed` when it lists that capture.
    pub fn matches(&self, key: &str, allowed: &BTreeMap<String, Vec<String>>) -> Option<Captures> {
        let mut caps = Captures::new();
        if self.match_from(0, key, allowed, &mut caps) {
            Some(caps)
        } else {
            None
        }
    }

    fn match_from(
        &self,
        part: usize,
        rest: &str,
        allowed: &BTreeMap<String, Vec<String>>,
        caps: &mut Captures,
    ) -> bool {
        let Some(p) = self.parts.get(part) else {
            return rest.is_empty();
        };
        match p {
            Part::Lit(l) => {
                rest.starts_with(l.as_str())
                    && self.match_from(part + 1, &rest[l.len()..], allowed, caps)
            }
            Part::Expr { .. } => false,
            Part::Cap { name, dots } => {
                // Try every split point, shortest first (a literal must follow or the key end).
                let limit = if *dots {
                    rest.len()
                } else {
                    rest.find('.').unwrap_or(rest.len())
                };
                for end in (1..=limit).filter(|&e| rest.is_char_boundary(e)) {
                    let value = &rest[..end];
                    if let Some(list) = allowed.get(name) {
                        if !list.iter().any(|v| v == value) {
                            continue;
                        }
                    }
                    caps.insert(name.clone(), value.to_string());
                    if self.match_from(part + 1, &rest[end..], allowed, caps) {
                        return true;
                    }
                    caps.remove(name);
                }
                false
            }
        }
    }

    /// The key this pattern names for the given captures (`None` if one is unbound).
    pub fn instantiate(&self, caps: &Captures) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Cap { name, .. } => out.push_str(caps.get(name)?),
                Part::Expr { .. } => return None,
            }
        }
        Some(out)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeMap<String, Vec<String>> {
        BTreeMap::new()
    }

    #[test]
    fn literal_patterns_match_whole_keys_only() {
        let p = Pattern::parse("encoder_A.encoder.0.weight").unwrap();
        assert!(p.matches("encoder_A.encoder.0.weight", &none()).is_some());
        assert!(p.matches("encoder_A.encoder.0.weight2", &none()).is_none());
        assert!(p.matches("xencoder_A.encoder.0.weight", &none()).is_none());
    }

    #[test]
    fn captures_bind_one_segment_or_several() {
        let p = Pattern::parse("encoder_{X}.encoder.{i}.weight").unwrap();
        let c = p.matches("encoder_B.encoder.4.weight", &none()).unwrap();
        assert_eq!(c["X"], "B");
        assert_eq!(c["i"], "4");
        assert!(p.matches("encoder_B.x.encoder.4.weight", &none()).is_none());
        let p = Pattern::parse("decoder_B.{rest*}").unwrap();
        let c = p
            .matches("decoder_B.residual1.block.0.weight", &none())
            .unwrap();
        assert_eq!(c["rest"], "residual1.block.0.weight");
        assert!(p.matches("decoder_B.", &none()).is_none());
    }

    #[test]
    fn where_lists_restrict_captures() {
        let p = Pattern::parse("projection.direction_net.{i}.weight").unwrap();
        let mut allowed = BTreeMap::new();
        allowed.insert("i".to_string(), vec!["3".to_string(), "4".to_string()]);
        assert!(p
            .matches("projection.direction_net.4.weight", &allowed)
            .is_some());
        assert!(p
            .matches("projection.direction_net.0.weight", &allowed)
            .is_none());
    }

    #[test]
    fn instantiate_and_suffix() {
        let p = Pattern::parse("projection.proj_{Y}.radius_net.6").unwrap();
        let mut c = Captures::new();
        c.insert("Y".into(), "A".into());
        assert_eq!(
            p.with_suffix("bias").instantiate(&c).unwrap(),
            "projection.proj_A.radius_net.6.bias"
        );
        assert!(p.instantiate(&Captures::new()).is_none());
        assert_eq!(
            Pattern::parse("{m}").unwrap().with_suffix("w").text(),
            "{m}.w"
        );
    }

    #[test]
    fn expression_segments_bind_to_values() {
        // Slot 0: a layout variable `stride`, slot 1: a loop variable `k`.
        let vars = |n: &str| match n {
            "stride" => Some(0),
            "k" => Some(1),
            _ => None,
        };
        let p = Pattern::parse_with("proj_{Y}.net.{k * stride}", Some(&vars)).unwrap();
        assert!(p.has_exprs());
        assert_eq!(p.captures().collect::<Vec<_>>(), ["Y"]);
        assert!(p.matches("proj_A.net.8", &none()).is_none(), "unbound");
        let b = p.bind(&[4, 2]).unwrap();
        assert_eq!(b.text(), "proj_{Y}.net.8");
        assert!(!b.has_exprs());
        assert_eq!(b.matches("proj_A.net.8", &none()).unwrap()["Y"], "A");
        assert!(b.matches("proj_A.net.4", &none()).is_none());
        // A bare variable name is an expression; other names stay captures.
        let p = Pattern::parse_with("net.{k}.{i}", Some(&vars)).unwrap();
        assert_eq!(p.captures().collect::<Vec<_>>(), ["i"]);
        assert_eq!(p.bind(&[0, 3]).unwrap().text(), "net.3.{i}");
        assert!(p
            .bind(&[0, -1])
            .unwrap_err()
            .to_string()
            .contains("negative"));
        // Without variables, `parse` keeps plain names as captures and refuses the rest.
        assert!(Pattern::parse("net.{k * 2}").is_err());
        for bad in ["net.{k +}", "net.{nope + 1}", "net.{k}{i}", "net.{i}{k}"] {
            assert!(Pattern::parse_with(bad, Some(&vars)).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["", "a{", "a}", "{}", "{a}{b}", "{a}.{a}", "{a-b}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
