//! Everything a command writes to stdout goes through here: human renderings escaped
//! (report::safe), JSON exact, a closed pipe (`tvck scan . | head`) not an error.

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
