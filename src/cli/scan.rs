//! `tvck scan`: every checkpoint under a folder.

use std::path::PathBuf;

use tvck::report;
use tvck::scan::{self, ScanOptions};

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out, progress_bar, progress_message};

#[derive(clap::Args)]
pub struct Args {
    /// Folder (or single file) to scan.
    dir: PathBuf,
    /// Hash every tensor and show weights fingerprints and duplicate groups.
    #[arg(long)]
    hash: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The index to answer from when it holds every file unchanged (default: $TVCK_INDEX,
    /// else $XDG_CACHE_HOME/tvck/index.sqlite); the files are read otherwise.
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Worker threads for hashing (default: all cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.dir)?;
    if let Some(j) = a.jobs {
        // Ignore the error if a pool already exists (tests calling twice).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build_global();
    }
    // The index is only a cache here: one that is absent or does not open is not used.
    let index = tvck::manager::index_path(a.index.as_deref())
        .ok()
        .and_then(|p| tvck::manager::Index::open_existing(&p).ok().flatten());
    let pb = progress_bar(if a.hash { "hashing" } else { "scanning" });
    let report = scan::scan_cached(
        &a.dir,
        &ScanOptions { hash: a.hash },
        |paths| {
            index
                .as_ref()
                .and_then(|ix| ix.fresh_summaries(&a.dir, paths, a.hash).ok().flatten())
        },
        |n| pb.set_length(n as u64),
        |f| {
            progress_message(&pb, &f.path);
            pb.inc(1);
        },
    );
    pb.finish_and_clear();
    if a.json {
        emit_json(&report)?;
    } else {
        print_out(&report::scan::render(&report))?;
    }
    // A file named on the command line that is not read (a FIFO, a device…) is a
    // failure: the user asked for that file. In a folder it is only listed as skipped.
    let named_file_skipped = !a.dir.is_dir() && !report.skipped.is_empty();
    Ok(ExitStatus::failure_if(
        report.has_findings() || named_file_skipped,
    ))
}
