use super::*;

use std::path::{Path, PathBuf};

use crate::config::{DecoderToLoad, EncoderToLoad, TrainingConfig};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream-configs")
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap()
}

fn fixtures() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// 1-based numbers of the lines that differ (same line count required).
fn changed_lines(old: &str, new: &str) -> Vec<usize> {
    let a: Vec<&str> = old.split('\n').collect();
    let b: Vec<&str> = new.split('\n').collect();
    assert_eq!(a.len(), b.len(), "line count changed");
    (0..a.len())
        .filter(|&i| a[i] != b[i])
        .map(|i| i + 1)
        .collect()
}

const BROKEN: &str = "v5_12_5_relaxed_D_from_scratch.yaml";

#[test]
fn fix_the_broken_config() {
    let text = read_fixture(BROKEN);
    let edits = [
        ("frozen_checkpoint.path", "checkpoints/v5_12_4/best_Q.pt"),
        ("frozen_checkpoint.encoder_to_load", "both"),
        ("frozen_checkpoint.decoder_to_load", "decoder_A"),
    ];
    let out = apply(&text, &edits).unwrap();
    assert_eq!(changed_lines(&text, &out), vec![51, 52, 53]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[50],
        "  path: checkpoints/v5_12_4/best_Q.pt  # CRITICAL: No frozen checkpoint - train from scratch!"
    );
    assert_eq!(lines[51], "  encoder_to_load: both");
    assert_eq!(lines[52], "  decoder_to_load: decoder_A");
    // Comments elsewhere are untouched, byte for byte.
    assert_eq!(
        out.lines().filter(|l| l.contains('#')).count(),
        text.lines().filter(|l| l.contains('#')).count()
    );

    let cfg = TrainingConfig::from_str(&out, BROKEN).unwrap();
    assert_eq!(cfg.checkpoint_path(), Some("checkpoints/v5_12_4/best_Q.pt"));
    let fc = cfg.frozen_checkpoint.as_ref().unwrap();
    assert_eq!(fc.encoder_to_load, Some(EncoderToLoad::Both));
    assert_eq!(fc.decoder_to_load, Some(DecoderToLoad::DecoderA));

    // Applying the same edits again is a no-op.
    assert_eq!(apply(&out, &edits).unwrap(), out);
}

#[test]
fn diff_of_the_fix() {
    let text = read_fixture(BROKEN);
    let out = set_scalar(
        &text,
        "frozen_checkpoint.path",
        "checkpoints/v5_12_4/best_Q.pt",
    )
    .unwrap();
    let diff = unified_diff(&text, &out, BROKEN, BROKEN);
    let expected = [
        format!("--- a/{BROKEN}"),
        format!("+++ b/{BROKEN}"),
        "@@ -48,7 +48,7 @@".to_string(),
        "   encoder_a_lr_scale: 1.0".to_string(),
        " ".to_string(),
        " frozen_checkpoint:".to_string(),
        "-  path: null  # CRITICAL: No frozen checkpoint - train from scratch!".to_string(),
        "+  path: checkpoints/v5_12_4/best_Q.pt  # CRITICAL: No frozen checkpoint - train from scratch!"
            .to_string(),
        "   encoder_to_load: null".to_string(),
        "   decoder_to_load: null".to_string(),
        " ".to_string(),
        String::new(),
    ]
    .join("\n");
    assert_eq!(diff, expected);
    assert_eq!(unified_diff(&text, &text, "a", "b"), "");
}

#[test]
fn editing_epochs_in_every_config_changes_one_line() {
    for (name, text) in fixtures() {
        let line = scan(&text).line_of("training.epochs").unwrap();
        let out =
            set_scalar(&text, "training.epochs", "777").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(changed_lines(&text, &out), vec![line], "{name}");
        let old_line = text.lines().nth(line - 1).unwrap();
        let new_line = out.lines().nth(line - 1).unwrap();
        let old_value = old_line.trim_start().strip_prefix("epochs: ").unwrap();
        let digits = old_value.chars().take_while(char::is_ascii_digit).count();
        assert_eq!(
            new_line,
            old_line.replacen(&old_value[..digits], "777", 1),
            "{name}"
        );
        let cfg = TrainingConfig::from_str(&out, &name).unwrap();
        assert_eq!(cfg.training.as_ref().unwrap().epochs, Some(777));
    }
}

#[test]
fn editing_every_scalar_of_every_config_is_local() {
    // Every key of every config that holds a one-line scalar: set a new string there.
    for (name, text) in fixtures() {
        let s = scan(&text);
        assert!(s.incomplete_at.is_none(), "{name}: {:?}", s.incomplete_at);
        for e in &s.entries {
            let scalar = matches!(
                e.kind,
                InlineKind::Plain | InlineKind::DoubleQuoted | InlineKind::SingleQuoted
            );
            if !scalar {
                continue;
            }
            let path = e.dotted();
            let out = set_scalar(&text, &path, "changed_value")
                .unwrap_or_else(|err| panic!("{name}: {path}: {err}"));
            assert_eq!(
                changed_lines(&text, &out),
                vec![e.line + 1],
                "{name}: {path}"
            );
        }
    }
}

#[test]
fn insert_missing_key_into_existing_block() {
    let text = read_fixture(BROKEN);
    let out = set_scalar(&text, "frozen_checkpoint.strict", "false").unwrap();
    let a: Vec<&str> = text.lines().collect();
    let b: Vec<&str> = out.lines().collect();
    assert_eq!(b.len(), a.len() + 1);
    // Inserted after `decoder_to_load: null` (line 53), before the blank line.
    assert_eq!(b[53], "  strict: false");
    assert_eq!(&b[..53], &a[..53]);
    assert_eq!(&b[54..], &a[53..]);

    // A missing intermediate level is created inside the deepest existing block.
    let out = set_scalar(&text, "training.scheduler.warmup.epochs", "5").unwrap();
    let s = scan(&out);
    let line = s.line_of("training.scheduler.warmup.epochs").unwrap();
    let b: Vec<&str> = out.lines().collect();
    assert_eq!(b[line - 2], "    warmup:");
    assert_eq!(b[line - 1], "      epochs: 5");
    assert_eq!(b[line - 3].trim(), "eta_min: 0.00001");
}

#[test]
fn insert_missing_section_at_the_end() {
    let name = "v5_11_11_homeostatic_rtx2060s.yaml";
    let text = read_fixture(name);
    let out = set_scalar(
        &text,
        "frozen_checkpoint.path",
        "checkpoints/v5_5/latest.pt",
    )
    .unwrap();
    assert!(out.starts_with(&text));
    assert_eq!(
        &out[text.len()..],
        "frozen_checkpoint:\n  path: checkpoints/v5_5/latest.pt\n"
    );
    let cfg = TrainingConfig::from_str(&out, name).unwrap();
    assert_eq!(cfg.checkpoint_path(), Some("checkpoints/v5_5/latest.pt"));

    // No final newline: one is added before the block, none after.
    let out = set_scalar("a: 1", "b.c", "x").unwrap();
    assert_eq!(out, "a: 1\nb:\n  c: x");
    let out = set_scalar("a:\n  b: 1", "a.c", "2").unwrap();
    assert_eq!(out, "a:\n  b: 1\n  c: 2");
    // Empty and comment-only documents.
    assert_eq!(set_scalar("", "a.b", "1").unwrap(), "a:\n  b: 1\n");
    assert_eq!(
        set_scalar("# header\n", "a", "1").unwrap(),
        "# header\na: 1\n"
    );
    // A null parent becomes a block; its comment is kept.
    assert_eq!(
        set_scalar("a:   # later\nb: 2\n", "a.x", "1").unwrap(),
        "a:   # later\n  x: 1\nb: 2\n"
    );
    // Indentation step of the document is used.
    assert_eq!(
        set_scalar("a:\n    b: 1\nc: 2\n", "c2.d.e", "1").unwrap(),
        "a:\n    b: 1\nc: 2\nc2:\n    d:\n        e: 1\n"
    );
}

#[test]
fn crlf_is_preserved() {
    let text = read_fixture(BROKEN).replace('\n', "\r\n");
    let out = apply(
        &text,
        &[
            ("frozen_checkpoint.path", "checkpoints/v5_12_4/best_Q.pt"),
            ("frozen_checkpoint.strict", "false"),
        ],
    )
    .unwrap();
    assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
    assert_eq!(
        out.matches("\r\n").count(),
        text.matches("\r\n").count() + 1
    );
    assert!(out.contains(
        "\r\n  path: checkpoints/v5_12_4/best_Q.pt  # CRITICAL: No frozen checkpoint - train from scratch!\r\n"
    ));
    assert!(out.contains("  decoder_to_load: null\r\n  strict: false\r\n\r\nhomeostasis:"));
    let cfg = TrainingConfig::from_str(&out, BROKEN).unwrap();
    assert_eq!(cfg.checkpoint_path(), Some("checkpoints/v5_12_4/best_Q.pt"));
    // Appending a section.
    let out = set_scalar("a: 1\r\n", "b.c", "2").unwrap();
    assert_eq!(out, "a: 1\r\nb:\r\n  c: 2\r\n");
}

#[test]
fn quoting() {
    let set = |text: &str, v: &str| set_scalar(text, "k", v).unwrap();
    // Plain stays plain.
    assert_eq!(set("k: a\n", "checkpoints/x.pt"), "k: checkpoints/x.pt\n");
    assert_eq!(set("k: a\n", "null"), "k: null\n");
    assert_eq!(set("k: a\n", "8.0e-4"), "k: 8.0e-4\n");
    assert_eq!(set("k: a\n", "-0.75"), "k: -0.75\n");
    assert_eq!(set("k: a\n", "true"), "k: true\n");
    // Strings that need quotes get them.
    assert_eq!(set("k: a\n", "my dir/best.pt"), "k: \"my dir/best.pt\"\n");
    assert_eq!(set("k: a\n", "C:/x.pt"), "k: \"C:/x.pt\"\n");
    assert_eq!(set("k: a\n", "a#b"), "k: \"a#b\"\n");
    assert_eq!(set("k: a\n", "*star"), "k: \"*star\"\n");
    assert_eq!(set("k: a\n", "[x]"), "k: \"[x]\"\n");
    assert_eq!(set("k: a\n", ""), "k: \"\"\n");
    assert_eq!(set("k: a\n", "yes"), "k: \"yes\"\n");
    assert_eq!(set("k: a\n", "say \"hi\"\n"), "k: \"say \\\"hi\\\"\\n\"\n");
    // The quoting style of a string being replaced is kept.
    assert_eq!(set("k: \"old\"  # c\n", "new"), "k: \"new\"  # c\n");
    assert_eq!(set("k: 'old'\n", "it's"), "k: 'it''s'\n");
    assert_eq!(set("k: 'old'\n", "null"), "k: null\n");
    // An explicitly quoted value is used as written.
    assert_eq!(set("k: a\n", "'100'"), "k: '100'\n");
    assert_eq!(set("k: a\n", "\"x\""), "k: \"x\"\n");
    assert!(matches!(
        set_scalar("k: a\n", "k", "\"unterminated"),
        Err(EditError::InvalidValue { .. })
    ));
    // Keys that need quotes when inserted.
    assert_eq!(set_scalar("a: 1\n", "b", "x").unwrap(), "a: 1\nb: x\n");
    let out = set_scalar("a: 1\n", "1", "x").unwrap();
    assert_eq!(out, "a: 1\n\"1\": x\n");
    // Quoted keys in the document are found.
    assert_eq!(
        set_scalar("\"a\":\n  'b c': 1\n", "a.b c", "2").unwrap(),
        "\"a\":\n  'b c': 2\n"
    );
}

#[test]
fn empty_value_and_comments() {
    assert_eq!(
        set_scalar("a:\n  path:   # set me\nb: 1\n", "a.path", "x.pt").unwrap(),
        "a:\n  path: x.pt   # set me\nb: 1\n"
    );
    assert_eq!(
        set_scalar("a:\n  path:\n", "a.path", "x.pt").unwrap(),
        "a:\n  path: x.pt\n"
    );
    assert_eq!(
        set_scalar("k: 1 # one\n", "k", "2").unwrap(),
        "k: 2 # one\n"
    );
    assert_eq!(
        set_scalar("k: \"a # b\" # c\n", "k", "z").unwrap(),
        "k: \"z\" # c\n"
    );
}

#[test]
fn flow_style_is_refused() {
    let text = "frozen_checkpoint: {path: null, encoder_to_load: both}\n";
    let err = set_scalar(text, "frozen_checkpoint.path", "x.pt").unwrap_err();
    assert!(
        matches!(err, EditError::FlowStyle { line: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("flow style"), "{err}");
    let err = set_scalar("a:\n  b: [1, 2]\n", "a.b.c", "x").unwrap_err();
    assert!(
        matches!(err, EditError::FlowStyle { line: 2, .. }),
        "{err:?}"
    );
    // Replacing a whole flow collection with a scalar is refused too.
    let err = set_scalar("a:\n  b: [1, 2]\n", "a.b", "x").unwrap_err();
    assert!(
        matches!(err, EditError::NotScalar { line: 2, .. }),
        "{err:?}"
    );
    // A flow-style document.
    let err = set_scalar("{a: 1}\n", "a", "2").unwrap_err();
    assert!(matches!(err, EditError::Unsupported { .. }), "{err:?}");
}

#[test]
fn other_refusals() {
    // Mapping / sequence / block scalar values.
    let text = read_fixture(BROKEN);
    let err = set_scalar(&text, "frozen_checkpoint", "null").unwrap_err();
    assert!(
        matches!(
            err,
            EditError::NotScalar {
                line: 50,
                what: "a mapping",
                ..
            }
        ),
        "{err:?}"
    );
    let err = set_scalar("v:\n  changes:\n    - a\n", "v.changes", "x").unwrap_err();
    assert!(
        matches!(
            err,
            EditError::NotScalar {
                what: "a sequence",
                ..
            }
        ),
        "{err:?}"
    );
    let err = set_scalar("k: |\n  text\n", "k", "x").unwrap_err();
    assert!(matches!(err, EditError::NotScalar { .. }), "{err:?}");
    let err = set_scalar("k: first\n  second\n", "k", "x").unwrap_err();
    assert!(
        matches!(
            err,
            EditError::NotScalar {
                what: "a multi-line scalar",
                ..
            }
        ),
        "{err:?}"
    );
    // A scalar ancestor.
    let err = set_scalar("a: 5\n", "a.b", "x").unwrap_err();
    assert!(
        matches!(err, EditError::NotMapping { line: 1, .. }),
        "{err:?}"
    );
    // Invalid input.
    assert!(matches!(
        set_scalar("a: [\n", "a", "1"),
        Err(EditError::Parse(_))
    ));
    assert!(matches!(
        set_scalar("a: 1\n", "", "1"),
        Err(EditError::BadPath(_))
    ));
    assert!(matches!(
        set_scalar("a: 1\n", "a..b", "1"),
        Err(EditError::BadPath(_))
    ));
    // Unfollowable structure.
    let err = set_scalar("a: \"multi\n  line\"\nb: 1\n", "b", "2").unwrap_err();
    assert!(
        matches!(err, EditError::Unsupported { line: 1, .. }),
        "{err:?}"
    );
    // An anchored block that an alias copies: the edit would change two values.
    let text = "base: &b\n  x: 1\nother: *b\n";
    let err = set_scalar(text, "base.x", "2").unwrap_err();
    assert!(matches!(err, EditError::Verify { .. }), "{err:?}");
}

#[test]
fn scanner_structure() {
    let text = "\u{feff}# c\n---\na:\n  b: 1\n  seq:\n  - x\n  - y: 1\n    z: 2\n  c: 'q'\nd: &anc\n  e: *x\n";
    let s = scan(text);
    assert!(s.incomplete_at.is_none(), "{:?}", s.incomplete_at);
    let paths: Vec<String> = s.entries.iter().map(KeyEntry::dotted).collect();
    assert_eq!(paths, ["a", "a.b", "a.seq", "a.c", "d", "d.e"]);
    let a = s.find(&["a"]).unwrap();
    assert_eq!((a.line, a.end_line, a.child_indent), (2, 8, Some(2)));
    let seq = s.find(&["a", "seq"]).unwrap();
    assert!(seq.has_sequence);
    assert_eq!(seq.end_line, 7);
    assert_eq!(s.find(&["a", "c"]).unwrap().kind, InlineKind::SingleQuoted);
    assert_eq!(s.find(&["d"]).unwrap().kind, InlineKind::Properties);
    assert_eq!(s.find(&["d", "e"]).unwrap().kind, InlineKind::Alias);
    assert_eq!(line_of(text, "a.c"), Some(9));
    assert_eq!(s.indent_step, 2);

    // Stops (keeping what came before) at what it cannot follow.
    let s = scan("a: 1\n\tb: 2\n");
    assert_eq!(s.incomplete_at.as_ref().map(|x| x.0), Some(1));
    assert_eq!(s.line_of("a"), Some(1));
    let s = scan("- a\n");
    assert!(s.incomplete_at.is_some());
}
