//! `tvck select --for CONFIG.yaml`: the best checkpoint the config's trainer loads.

use std::path::PathBuf;

use tvck::check::{self, CheckOptions};
use tvck::config::TrainingConfig;
use tvck::manager::select::{self, RankBy};
use tvck::manager::{Index, Query};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::index::index_file;
use super::output::{emit_json_with_list, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// The training config to select a frozen checkpoint for.
    #[arg(long = "for", value_name = "CONFIG")]
    config: PathBuf,
    /// Folders to search (the current folder when none).
    dirs: Vec<PathBuf>,
    /// Rank by this metric after fit: hierarchy_B (default), hierarchy_A, Q, coverage,
    /// richness, dist_corr.
    #[arg(long, value_name = "METRIC")]
    by: Option<String>,
    /// Only candidates whose index entry matches this filter (needs a fresh index).
    #[arg(long = "where", value_name = "EXPR")]
    where_: Option<String>,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// List at most N candidates (the selection is still made over all of them): 10 by
    /// default in the summary, every one in JSON; 0 lists every one.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

/// How many candidates the summary lists when no limit is given.
const SUMMARY_LIMIT: usize = 10;

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.config)?;
    let by = match a.by.as_deref() {
        None => RankBy::default(),
        Some(s) => RankBy::parse(s).ok_or_else(|| {
            CliError::usage(
                format!("--by {s}: not a ranking metric"),
                "one of hierarchy_B, hierarchy_A, Q, coverage, richness, dist_corr",
            )
        })?,
    };
    let query = a
        .where_
        .as_deref()
        .map(Query::parse)
        .transpose()
        .map_err(|e| CliError::usage(format!("--where: {e}\n{}", e.pointer()), e.hint()))?;
    let dirs = if a.dirs.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.dirs.clone()
    };
    require_exists(&a.config)?;
    for d in &dirs {
        require_exists(d)?;
    }
    let cfg = TrainingConfig::load(&a.config)
        .map_err(|e| CliError::failure_with(e.to_string(), e.hint()))?;
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failure(format!("cannot read the working directory: {e}")))?;
    let path = index_file(a.index.as_deref())?;
    // An index named explicitly must open; the default one is only a cache.
    let index = match Index::open_existing(&path) {
        Ok(i) => i,
        Err(e) if a.index.is_some() => return Err(e.into()),
        Err(_) => None,
    };
    let opts = CheckOptions {
        checkpoint_roots: Vec::new(),
        cwd: cwd.clone(),
        strict: false,
    };
    let report = check::check(&cfg, &opts);
    // A --where filter is evaluated on the index's entries of the candidates.
    if query.is_some() && index.is_none() {
        return Err(CliError::failure_with(
            format!("{}: no index for --where", path.display()),
            "create it with `tvck index DIR`",
        ));
    }
    let limit = match a.limit {
        Some(0) => None,
        Some(n) => Some(n),
        None if a.json => None,
        None => Some(SUMMARY_LIMIT),
    };
    let mut sel = select::select(
        &cfg,
        &report,
        &dirs,
        index.as_ref(),
        &cwd,
        by,
        limit,
        query.as_ref(),
    );
    if a.json {
        // Thousands of candidates: written in parallel, in the same text.
        let candidates = std::mem::take(&mut sel.candidates);
        emit_json_with_list(&sel, "candidates", &candidates)?;
    } else {
        let mut out = String::new();
        match &sel.selected {
            Some(c) if c.fits && c.migration.is_empty() => {
                out.push_str(&format!(
                    "selected: {} ({}, {})\n",
                    report::safe::value(&c.path),
                    report::safe::value(&c.layout),
                    if c.exact { "exact fit" } else { "fits" }
                ));
            }
            Some(c) => {
                out.push_str(&format!(
                    "no checkpoint loads as it is; after conversion: {} (migration {})\n",
                    report::safe::value(&c.path),
                    report::safe::value(&c.migration.join(" → "))
                ));
            }
            None => out.push_str("no checkpoint fits this config\n"),
        }
        for c in &sel.candidates {
            out.push_str(&format!(
                "  {} {:<50} {}\n",
                if c.fits { "✓" } else { "·" },
                report::safe::value(&c.path),
                report::safe::value(&c.why)
            ));
        }
        if sel.ranked > sel.candidates.len() {
            out.push_str(&format!(
                "  … {} more (--limit 0 lists every one)\n",
                sel.ranked - sel.candidates.len()
            ));
        }
        out.push_str(&format!(
            "ranked by {} over {} candidates{}\n",
            sel.by.name(),
            sel.ranked,
            if sel.from_index {
                " (from the index)"
            } else {
                ""
            }
        ));
        print_out(&out)?;
    }
    Ok(ExitStatus::failure_if(!sel.found()))
}
