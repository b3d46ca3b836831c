//! `tvck report`: one self-contained HTML page of a run folder (docs/monitoring.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use tvck::format::write::{write_atomic, WriteError};

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::print_out;
use super::serve::{alert_settings, dashboard_error};

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (it holds the metrics.jsonl the trainer writes).
    run_dir: PathBuf,
    /// The HTML file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace FILE when it exists.
    #[arg(long)]
    force: bool,
    /// Alert thresholds and rules: a file with a `monitoring:` section (a training
    /// config works too).
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

/// The file of the run folder that `output` is, when it is one the report reads.
fn input_named(run_dir: &Path, output: &Path) -> Option<PathBuf> {
    let out = std::fs::metadata(output).ok()?;
    let inputs = [run_dir.to_path_buf(), run_dir.join("..")];
    std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|x| x != "html"))
        .chain(inputs)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| same_file(&m, &out)))
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.run_dir)?;
    if let Some(input) = input_named(&a.run_dir, &a.output) {
        return Err(CliError::usage(
            format!(
                "{}: this is {}, which the report reads",
                a.output.display(),
                input.display()
            ),
            "tvck never overwrites its input; choose another -o",
        ));
    }
    let settings = alert_settings(a.alerts.as_deref())?;
    let report =
        tvck::dashboard::runs::run_report(&a.run_dir, settings).map_err(dashboard_error)?;
    let html = tvck::report::html::render(&report);
    write_atomic(&a.output, a.force, |w| {
        w.write_all(html.as_bytes()).map_err(WriteError::Io)
    })
    .map_err(|e| match e {
        WriteError::Exists(_) => CliError::usage(e.to_string(), "pass --force to replace it"),
        e => CliError::failure_with(
            e.to_string(),
            "nothing was replaced: check the output folder's permissions and free space",
        ),
    })?;
    print_out(&format!(
        "wrote {} ({} epochs, {} alerts, {} checkpoints)\n",
        a.output.display(),
        report.series.len(),
        report.alerts.len(),
        report.detail.checkpoints.len()
    ))?;
    Ok(ExitStatus::Ok)
}
