//! The checkpoint manager's small languages, typed by users and kept in scripts and rules
//! files: `--where` expressions (`ls`, `select`), `--sort` keys and `--keep` rules. Any text
//! must give a value or an error whose caret line renders, never a panic; a parsed query
//! evaluates on a record; a parsed rule list's label parses back to the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvck::manager::keep::Rules;
use tvck::manager::query::Fields;
use tvck::manager::{Query, SortKey};

/// A record with a value for a few fields of each kind.
struct Record;

impl Fields for Record {
    fn number(&self, field: &str) -> Option<f64> {
        match field {
            "coverage" => Some(0.995),
            "epoch" => Some(30.0),
            "Q" => Some(f64::NAN),
            "size" => Some(1e300),
            _ => None,
        }
    }
    fn text(&self, field: &str) -> Vec<String> {
        match field {
            "version" => vec!["v5_12_4".into()],
            "path" => vec!["/runs/a/best_Q.pt".into()],
            "alias" => vec!["production".into(), "é\u{202e}".into()],
            _ => Vec::new(),
        }
    }
    fn flag(&self, field: &str) -> bool {
        field == "measured"
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Query::parse(text) {
        Ok(q) => {
            let _ = q.matches(&Record);
        }
        Err(e) => {
            let _ = (e.to_string(), e.pointer(), e.hint());
        }
    }
    if let Err(e) = SortKey::parse(text) {
        let _ = (e.to_string(), e.pointer(), e.hint());
    }
    if let Ok(rules) = Rules::parse(text) {
        let again = Rules::parse(&rules.label()).expect("a rule list's label parses");
        assert_eq!(again, rules, "{text:?} → {}", rules.label());
    }
});
