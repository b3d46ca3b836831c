//! Everything a command writes to stdout goes through here: human renderings escaped
//! (report::safe), JSON exact, a closed pipe (`tvck scan . | head`) not an error.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tvck::report;

use super::diagnostics::CliError;

/// Write a human rendering: untrusted text in it is escaped (report::safe) on the way.
pub fn print_out(text: &str) -> Result<(), CliError> {
    write_stdout(&report::safe::output(text))
}

/// Write JSON: the same values, with the control characters serde_json leaves raw escaped
/// as `\uXXXX` (report::safe::json).
pub fn print_json(text: &str) -> Result<(), CliError> {
    write_stdout(&report::safe::json(text))
}

/// Encode `v` as pretty JSON and write it ([`print_json`]).
pub fn emit_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    print_json(&to_json(v)?)
}

/// [`emit_json`] of `head` with `items` in its last field, `field` (which `head` holds
/// empty): the same text, the items written in parallel ([`json_with_list`]).
pub fn emit_json_with_list<H, T>(head: &H, field: &str, items: &[T]) -> Result<(), CliError>
where
    H: serde::Serialize,
    T: serde::Serialize + Sync,
{
    write_stdout(&json_with_list(head, field, items)?)
}

/// The text [`print_json`] writes for `head` with `items` in its last field, `field`
/// (which `head` holds empty), its items encoded in parallel, each as it would be nested
/// there (listing 20,200 `select` candidates spent a fifth of the
/// command in one thread writing their JSON).
fn json_with_list<H, T>(head: &H, field: &str, items: &[T]) -> Result<String, CliError>
where
    H: serde::Serialize,
    T: serde::Serialize + Sync,
{
    use rayon::prelude::*;
    let encode_err = |e: serde_json::Error| CliError::failure(format!("cannot encode JSON: {e}"));
    let escaped = |text: String| match report::safe::json(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    };
    let head_text = serde_json::to_string_pretty(head).map_err(encode_err)?;
    // `head` pretty-printed ends with its empty last field; the items go in its place, one
    // level deeper than the object that holds it (a JSON string holds no raw newline, so
    // indenting after every newline indents every line of an item and nothing else).
    let empty = format!("\n  \"{field}\": []\n}}");
    let Some(prefix) = head_text.strip_suffix(&empty[..]) else {
        // Not the shape this is written for: the whole value, in one piece (its keys keep
        // their order).
        let mut v = serde_json::to_value(head).map_err(encode_err)?;
        v[field] = serde_json::to_value(items).map_err(encode_err)?;
        return Ok(escaped(to_json(&v)?));
    };
    if items.is_empty() {
        return Ok(escaped(head_text + "\n"));
    }
    let chunks: Vec<String> = items
        .par_chunks(512)
        .enumerate()
        .map(|(i, chunk)| {
            let mut out = String::new();
            for (j, item) in chunk.iter().enumerate() {
                out.push_str(if i == 0 && j == 0 { "\n" } else { ",\n" });
                let text = serde_json::to_string_pretty(item).map_err(encode_err)?;
                for (k, line) in text.split('\n').enumerate() {
                    if k > 0 {
                        out.push('\n');
                    }
                    out.push_str("    ");
                    out.push_str(line);
                }
            }
            Ok(escaped(out))
        })
        .collect::<Result<_, CliError>>()?;
    let head = escaped(format!("{prefix}\n  \"{field}\": ["));
    Ok(format!("{head}{}\n  ]\n}}\n", chunks.concat()))
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failure(format!("cannot write output: {e}"))),
    }
}

/// Pretty JSON with a final newline.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| CliError::failure(format!("cannot encode JSON: {e}")))
}

/// A files progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(prefix: &'static str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} files  {elapsed_precise}  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// Show an untrusted name (a file path) as a progress message, escaped.
pub fn progress_message(pb: &ProgressBar, name: &str) {
    pb.set_message(report::safe::value(name).into_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Clone)]
    struct Item {
        name: String,
        n: Option<f64>,
        tags: Vec<String>,
        nested: Vec<Vec<u8>>,
    }

    #[derive(serde::Serialize)]
    struct Head<'a> {
        title: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        selected: Option<Item>,
        items: Vec<Item>,
    }

    #[derive(serde::Serialize)]
    struct NotLast {
        items: Vec<Item>,
        after: u8,
    }

    fn item(i: usize) -> Item {
        Item {
            // Text that needs escaping: quotes, a newline, a control character serde_json
            // leaves raw, non-ASCII.
            name: format!("run_{i}/\"é\"\n\u{9b}x.pt"),
            n: (!i.is_multiple_of(3)).then_some(i as f64 / 7.0),
            tags: (0..i % 3).map(|t| format!("t{t}")).collect(),
            nested: vec![vec![]; i % 2],
        }
    }

    /// The pieces make, byte for byte, the text `print_json` writes of the whole value.
    #[test]
    fn a_list_written_in_parallel_is_the_text_of_the_whole_value() {
        for n in [0, 1, 2, 511, 512, 513, 1300] {
            let items: Vec<Item> = (0..n).map(item).collect();
            for selected in [None, Some(item(7))] {
                let whole = Head {
                    title: "a \u{1b}[31m title",
                    selected: selected.clone(),
                    items: items.clone(),
                };
                let want = report::safe::json(&to_json(&whole).unwrap()).into_owned();
                let head = Head {
                    items: Vec::new(),
                    ..whole
                };
                let got = json_with_list(&head, "items", &items).unwrap();
                assert_eq!(got, want, "{n} items");
            }
            // Not the last field: the same text too, from the whole value.
            let got = json_with_list(
                &NotLast {
                    items: Vec::new(),
                    after: 1,
                },
                "items",
                &items,
            )
            .unwrap();
            let want =
                report::safe::json(&to_json(&NotLast { items, after: 1 }).unwrap()).into_owned();
            assert_eq!(got, want, "{n} items, not last");
        }
    }
}
