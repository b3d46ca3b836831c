//! Anchored key patterns with named captures: `encoder_{X}.encoder.0`, `decoder_B.{rest*}`.
//!
//! * `{name}` captures one or more characters other than `.` (one key segment or part of one);
//! * `{name*}` captures one or more characters, dots included (several segments);
//! * everything else is literal. A pattern matches the whole key, never a part of it.
//!
//! A rule may restrict a capture to a list of values (`where: {X: [A, B]}`); a pattern used to
//! *produce* keys is instantiated from the captures of the matched source key.

use std::collections::BTreeMap;

/// The values bound to a pattern's captures.
pub type Captures = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Cap { name: String, dots: bool },
}

/// A parsed key pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

impl Pattern {
    /// Parse `text`. Errors name the problem (unbalanced braces, empty or repeated names,
    /// two captures side by side, which would make a match ambiguous).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty key pattern".into());
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
                        return Err(format!("`{text}`: `{{` without a closing `}}`"));
                    }
                    let (name, dots) = match name.strip_suffix('*') {
                        Some(n) => (n.to_string(), true),
                        None => (name, false),
                    };
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!(
                            "`{text}`: capture names are letters, digits and `_` (got `{{{name}}}`)"
                        ));
                    }
                    if seen.contains(&name) {
                        return Err(format!("`{text}`: capture `{name}` appears twice"));
                    }
                    if lit.is_empty() && matches!(parts.last(), Some(Part::Cap { .. })) {
                        return Err(format!(
                            "`{text}`: two captures side by side make the match ambiguous"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    seen.push(name.clone());
                    parts.push(Part::Cap { name, dots });
                }
                '}' => return Err(format!("`{text}`: `}}` without an opening `{{`")),
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
            Part::Lit(_) => None,
        })
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
    fn malformed_patterns_are_rejected() {
        for bad in ["", "a{", "a}", "{}", "{a}{b}", "{a}.{a}", "{a-b}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
