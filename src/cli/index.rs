//! `tvck index`: index (or refresh the index of) every checkpoint under some folders.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tvck::manager::{self, Index, IndexOptions};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out, progress_bar, progress_message};

#[derive(clap::Args)]
pub struct Args {
    /// Folders (or files) to index; the current folder when none.
    dirs: Vec<PathBuf>,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

/// The index file the options name.
pub fn index_file(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    manager::index_path(explicit).map_err(CliError::from)
}

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a manager::IndexReport,
    elapsed_s: f64,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    let dirs = if a.dirs.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.dirs.clone()
    };
    for d in &dirs {
        require_exists(d)?;
    }
    let path = index_file(a.index.as_deref())?;
    let started = Instant::now();
    let mut index = Index::open(&path, &IndexOptions::from_env()?).map_err(CliError::from)?;
    let pb = progress_bar("indexing");
    let report = index
        .update(
            &dirs,
            |n| pb.set_length(n as u64),
            |f| {
                progress_message(&pb, &f.path);
                pb.inc(1);
            },
        )
        .map_err(CliError::from)?;
    pb.finish_and_clear();
    let elapsed_s = started.elapsed().as_secs_f64();
    let failed = report.unreadable > 0 || report.unsafe_files > 0;
    if a.json {
        emit_json(&Output {
            report: &report,
            elapsed_s,
        })?;
    } else {
        let mut out = format!(
            "index {}: {} files — {} added, {} changed, {} renamed, {} dropped, {} unchanged",
            report::safe::value(&report.index),
            report.files,
            report.added,
            report.changed,
            report.renamed,
            report.removed,
            report.unchanged
        );
        if report.unreadable > 0 {
            out.push_str(&format!(", {} unreadable", report.unreadable));
        }
        if report.unsafe_files > 0 {
            out.push_str(&format!(", {} unsafe", report.unsafe_files));
        }
        if !report.skipped.is_empty() {
            out.push_str(&format!(", {} skipped", report.skipped.len()));
        }
        out.push_str(&format!(" ({elapsed_s:.2} s)\n"));
        print_out(&out)?;
    }
    Ok(ExitStatus::failure_if(failed))
}
