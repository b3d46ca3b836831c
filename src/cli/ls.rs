//! `tvck ls`: the indexed checkpoints under a folder, filtered and sorted.

use std::path::PathBuf;

use tvck::manager::query::Fields;
use tvck::manager::{Entry, Index, Query, QueryError, SortKey};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::index::index_file;
use super::output::{print_json, print_out, to_json};

#[derive(clap::Args)]
pub struct Args {
    /// The folder whose indexed checkpoints to list (the current folder when absent).
    dir: Option<PathBuf>,
    /// A filter, e.g. `version == v5_12_4 and coverage >= 0.99 and epoch > 20`.
    #[arg(long = "where", value_name = "EXPR")]
    where_: Option<String>,
    /// Sort by a field (`FIELD`, `FIELD:asc`, `FIELD:desc`).
    #[arg(long, value_name = "KEY")]
    sort: Option<String>,
    /// At most N rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn query_error(flag: &str, e: QueryError) -> CliError {
    CliError::usage(format!("--{flag}: {e}\n{}", e.pointer()), e.hint())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    require_exists(&dir)?;
    let query = a
        .where_
        .as_deref()
        .map(Query::parse)
        .transpose()
        .map_err(|e| query_error("where", e))?;
    let sort = a
        .sort
        .as_deref()
        .map(SortKey::parse)
        .transpose()
        .map_err(|e| query_error("sort", e))?;
    let path = index_file(a.index.as_deref())?;
    let Some(index) = Index::open_existing(&path).map_err(CliError::from)? else {
        return Err(CliError::failure_with(
            format!("{}: no index", path.display()),
            format!("create it with `tvck index {}`", dir.display()),
        ));
    };
    let canon = dir
        .canonicalize()
        .map_err(|e| CliError::failure(format!("{}: {e}", dir.display())))?;
    // Filtered, sorted and cut in the index (SQL over its query columns), and made JSON,
    // while the files under DIR are walked: the rows are the index's, said to be out of
    // date when the files moved on since.
    let (rows, fresh) = index.is_fresh_tree_while(&dir, |index| {
        let rows: Vec<Entry> = index
            .query(
                std::slice::from_ref(&canon),
                query.as_ref(),
                sort.as_ref(),
                a.limit,
            )
            .map_err(CliError::from)?;
        // The JSON text too (its one `path` is the summary's: see `Entry`).
        let json = if a.json { Some(to_json(&rows)?) } else { None };
        Ok::<_, CliError>((rows, json))
    });
    let (rows, json) = rows?;
    let fresh = fresh.unwrap_or(false);
    if !fresh {
        eprintln!(
            "warning: {}",
            report::safe::output(&format!(
                "the index is out of date for {}: files were added, changed or removed since",
                dir.display()
            ))
        );
        eprintln!(
            "hint: {}",
            report::safe::output(&format!("refresh it with `tvck index {}`", dir.display()))
        );
    }
    if let Some(json) = json {
        print_json(&json)?;
        return Ok(ExitStatus::Ok);
    }
    let mut out = format!(
        "{:<60} {:<21} {:>6} {:>9} {:>7} {:<12} {:>10}  {}\n",
        "PATH", "VERSION", "EPOCH", "COVERAGE", "Q", "METRICS", "SIZE", "ALIASES"
    );
    for e in &rows {
        let rel = std::path::Path::new(&e.path)
            .strip_prefix(&canon)
            .map_or_else(|_| e.path.clone(), |p| p.to_string_lossy().into_owned());
        out.push_str(&format!(
            "{:<60} {:<21} {:>6} {:>9} {:>7} {:<12} {:>10}  {}\n",
            report::safe::value(&rel),
            e.summary.version.as_ref().map_or_else(
                || "-".into(),
                |v| report::safe::value(&v.version).into_owned()
            ),
            e.summary
                .epoch
                .map_or_else(|| "-".into(), |x| x.to_string()),
            num(e.number("coverage"), 4),
            num(e.number("Q"), 3),
            // Where the metrics come from (trained, measured, fitted, not_measured).
            e.text("provenance").first().map_or("-", String::as_str),
            e.summary.size,
            e.aliases
                .iter()
                .map(|s| report::safe::value(s).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    out.push_str(&format!("{} checkpoints\n", rows.len()));
    print_out(&out)?;
    Ok(ExitStatus::Ok)
}
