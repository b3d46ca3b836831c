//! `tvck report RUN_DIR -o report.html`: the page's structure (snapshot), that it is
//! self-contained and escapes what the run folder holds, and how it writes its file.

use crate::common::{run_text, tvck};
use crate::serve_cli::{runs_tree, tree_hash};

/// The page's structure: each heading, paragraph, table row, preformatted block and
/// curve on a line (its text without tags; a curve by its label, point count and lines),
/// the style sheet and the SVG coordinates left out.
fn outline(html: &str) -> String {
    fn attr(tag: &str, name: &str) -> Option<String> {
        let pat = format!(" {name}=\"");
        let at = tag.find(&pat)? + pat.len();
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    }
    fn text(inner: &str) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in inner.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        let name: String = tag[1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let close = format!("</{name}>");
        let shown = [
            "title",
            "h1",
            "h2",
            "h3",
            "p",
            "figcaption",
            "tr",
            "pre",
            "svg",
        ];
        if !shown.contains(&name.as_str()) {
            rest = &rest[end..];
            continue;
        }
        let Some(stop) = rest.find(&close) else { break };
        let inner = &rest[end..stop];
        let id = attr(tag, "id").map_or(String::new(), |i| format!("#{i}"));
        if name == "svg" {
            out.push_str(&format!(
                "<svg> {} points={} lines={} dots={}\n",
                attr(tag, "aria-label").unwrap_or_default(),
                attr(tag, "data-points").unwrap_or_default(),
                inner.matches("<polyline").count(),
                inner.matches("<circle").count()
            ));
        } else {
            let t = text(inner);
            let t = if name == "tr" {
                t
            } else {
                t.chars().take(100).collect()
            };
            let class = attr(tag, "class").map_or(String::new(), |c| format!(".{c}"));
            out.push_str(&format!("<{name}{id}{class}> {t}\n"));
        }
        rest = &rest[stop + close.len()..];
    }
    out
}

#[test]
fn report_of_a_run_is_one_self_contained_page() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let run = d.path().join("alpha");
    // A NaN epoch and a coverage drop, so the page has a gap and alerts.
    crate::serve_cli::append(
        &run.join("metrics.jsonl"),
        "{\"epoch\":22,\"lr\":0.001,\"loss\":{\"total\":NaN},\"metrics\":{\"coverage\":0.5,\"Q\":0.31},\"events\":[{\"kind\":\"unfreeze\",\"component\":\"encoder_A\",\"message\":\"coverage 50.0% < 99.5%\"}]}\n",
    );
    let out = d.path().join("report.html");
    let before = tree_hash(&run);
    let o = tvck(
        &["report", run.to_str().unwrap(), "-o", out.to_str().unwrap()],
        d.path(),
    );
    let tmp = d.path().display().to_string();
    snap_run!("report_alpha_run", o, &[(&tmp, "[TMP]")]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(tree_hash(&run), before, "the run folder is only read");
    let html = std::fs::read_to_string(&out).unwrap();
    // Self-contained: no script, no resource from elsewhere.
    for banned in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(banned), "{banned}");
    }
    // The config's markup is shown, not obeyed.
    assert!(html.contains("# &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("non-finite") && html.contains("coverage-drop"));
    let outline = outline(&html).replace(env!("CARGO_PKG_VERSION"), "[VERSION]");
    snap!("report_alpha_outline", outline);
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn report_never_overwrites_without_force_nor_an_input_at_all() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let run = d.path().join("beta");
    let out = d.path().join("r.html");
    std::fs::write(&out, "old").unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "report".to_string(),
            run.display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let tmp = d.path().display().to_string();
    let run_args = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        tvck(&refs, d.path())
    };
    let o = run_args(args(&[]));
    assert_eq!(o.status.code(), Some(2), "{}", run_text(&o, &[]));
    snap_run!("report_output_exists", o, &[(&tmp, "[TMP]")]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
    let o = run_args(args(&["--force"]));
    assert_eq!(o.status.code(), Some(0), "{}", run_text(&o, &[]));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("<!doctype html>"));
    // An input of the report, even with --force.
    for input in ["metrics.jsonl", "alerts.jsonl"] {
        let p = run.join(input);
        let before = std::fs::read(&p).unwrap();
        let o = tvck(
            &[
                "report",
                run.to_str().unwrap(),
                "-o",
                p.to_str().unwrap(),
                "--force",
            ],
            d.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{input}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("which the report reads"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}
