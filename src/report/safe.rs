//! Terminal safety: text that came from a file, a file name or a config is shown, never
//! obeyed. Escape sequences (`ESC [ 2 J`, OSC window titles, …), other C0/C1 control
//! characters, DEL and Unicode bidirectional overrides are written visibly escaped
//! (`\x1b`, `\u{202e}`), so a file cannot rewrite the screen, retitle the window, or hide
//! a finding.
//!
//! Every human rendering passes through [`output`] once before it is written (the CLI's
//! writer does it), which keeps the layout's own newlines and tabs; [`value`] escapes those
//! too, for one untrusted string inside a line (a file name in a progress message). JSON
//! output is not touched: serde_json escapes control characters itself, and its strings
//! must stay exact.

use std::borrow::Cow;
use std::fmt::Write;

/// Unicode's explicit directional formatting characters (UAX #9): embeddings, overrides,
/// isolates and marks, which reorder what a terminal shows.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

fn needs_escape(c: char, keep_layout: bool) -> bool {
    if keep_layout && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control() || is_bidi(c)
}

/// Whether nothing in `s` needs escaping. ASCII text, the common case, is checked byte by
/// byte (its controls are 0x00–0x1f and 0x7f; the C1 controls and the bidi controls are
/// not ASCII): megabytes of JSON went through [`needs_escape`] a character at a time.
fn is_clean(s: &str, keep_layout: bool) -> bool {
    if s.is_ascii() {
        let clean = |b: u8| (b >= 0x20 && b != 0x7f) || (keep_layout && (b == b'\n' || b == b'\t'));
        // A chunk at a time without stopping early, which the compiler turns into vector
        // instructions (megabytes of JSON are checked here).
        return s
            .as_bytes()
            .chunks(64)
            .all(|c| c.iter().fold(true, |ok, &b| ok & clean(b)));
    }
    !s.chars().any(|c| needs_escape(c, keep_layout))
}

fn escape(s: &str, keep_layout: bool) -> Cow<'_, str> {
    if is_clean(s, keep_layout) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c, keep_layout) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// A whole rendering for the terminal: every control character but newline and tab, and
/// every bidi control, escaped.
pub fn output(s: &str) -> Cow<'_, str> {
    escape(s, KEEP_LAYOUT)
}

/// One untrusted string inside a line: newlines and tabs escaped too.
pub fn value(s: &str) -> Cow<'_, str> {
    escape(s, !KEEP_LAYOUT)
}

/// JSON text for the terminal, with the same value: serde_json already escapes C0
/// controls; DEL, C1 controls and bidi controls (legal raw in JSON strings, and the only
/// place they can be) become `\uXXXX` escapes, which decode to the same strings.
pub fn json(s: &str) -> Cow<'_, str> {
    if is_clean(s, KEEP_LAYOUT) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c, KEEP_LAYOUT) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Untrusted text inside HTML (element content or a quoted attribute): `& < > " '` become
/// entities, and controls and bidi overrides are escaped visibly as for a terminal
/// ([`output`] when `keep_layout`, for preformatted text; else [`value`]).
pub fn html(s: &str, keep_layout: bool) -> String {
    let shown = escape(s, keep_layout);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`]'s flag: newline and tab are the layout's own.
const KEEP_LAYOUT: bool = true;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_fast_path_agrees_with_the_definition() {
        for keep_layout in [false, true] {
            for c in (0u32..0x3000).filter_map(char::from_u32) {
                let text = format!("a{c}b");
                assert_eq!(
                    is_clean(&text, keep_layout),
                    !text.chars().any(|c| needs_escape(c, keep_layout)),
                    "U+{:04X}, keep_layout {keep_layout}",
                    c as u32
                );
            }
        }
        assert!(!is_clean("plain \u{202e}txt", true));
        assert!(is_clean("a\tb\nc", true) && !is_clean("a\tb", false));
    }

    #[test]
    fn escape_sequences_and_bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(value("best.pt"), "best.pt");
        assert!(matches!(value("best.pt"), Cow::Borrowed(_)));
        assert_eq!(value("os\u{1b}[2J.system"), "os\\x1b[2J.system");
        assert_eq!(value("\u{1b}]0;pwned\u{7}title"), "\\x1b]0;pwned\\x07title");
        assert_eq!(value("a\rb\nc\td\u{7f}"), "a\\rb\\nc\\td\\x7f");
        // C1 CSI (one character), a right-to-left override, an isolate.
        assert_eq!(value("x\u{9b}2J"), "x\\u{9b}2J");
        assert_eq!(value("evil\u{202e}tp.exe"), "evil\\u{202e}tp.exe");
        assert_eq!(value("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
        // Non-ASCII text that is not a control stays as it is.
        assert_eq!(value("Poincaré │ ≥ 0.995"), "Poincaré │ ≥ 0.995");
    }

    #[test]
    fn json_keeps_its_values() {
        let v = serde_json::json!({"name": "a\u{1b}b\u{9b}\u{202e}c\u{7f}", "n": 1});
        let text = serde_json::to_string_pretty(&v).unwrap();
        let safe = json(&text);
        assert!(
            !safe.chars().any(|c| needs_escape(c, KEEP_LAYOUT)),
            "{safe}"
        );
        assert!(
            safe.contains("\\u009b") && safe.contains("\\u202e"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn html_escapes_markup_and_controls() {
        assert_eq!(
            html("<script>alert('x')</script>&\"\u{202e}", false),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{202e}"
        );
        assert_eq!(html("a\n<b>", true), "a\n&lt;b&gt;");
        assert_eq!(html("a\n", false), "a\\n");
    }

    #[test]
    fn output_keeps_the_layout() {
        let table = "┌─┐\n│a\u{1b}[31m│\tb\r\n";
        assert_eq!(output(table), "┌─┐\n│a\\x1b[31m│\tb\\r\n");
        assert!(!output(table).contains('\u{1b}'));
        assert!(matches!(output("plain\ntext\n"), Cow::Borrowed(_)));
    }
}
