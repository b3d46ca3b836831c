//! Human tables and stable JSON for every command.
//!
//! Tables are built with comfy-table with no terminal-width dependence when output is
//! not a terminal, so snapshots are stable. JSON shapes are documented in docs/json.md.

pub mod check;
pub mod convert;
pub mod dashboard;
pub mod diff;
#[cfg(feature = "train")]
pub mod eval;
pub mod html;
pub mod inspect;
pub mod prune;
pub mod safe;
pub mod scan;
pub mod tree;
pub mod watch;

use comfy_table::{presets, ContentArrangement, Table};

/// A new table in tvck's style.
pub fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// `1.2 MB` style sizes (decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1,234,567` style counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub use crate::format::shape_text as shape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_102_869), "1.1 MB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(shape(&[]), "[]");
    }
}
