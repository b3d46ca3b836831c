//! `tvck tag FILE NAME` and `tvck untag NAME`: aliases of indexed checkpoints.

use std::path::PathBuf;

use tvck::manager::{tag::AliasChange, Index, IndexOptions};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::index::index_file;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct TagArgs {
    /// An indexed checkpoint.
    file: PathBuf,
    /// The alias (letters, digits, `_`, `-`, `.`), e.g. `production`.
    name: String,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct UntagArgs {
    /// The alias to remove.
    name: String,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn open(explicit: Option<&std::path::Path>) -> Result<Index, CliError> {
    let path = index_file(explicit)?;
    if !path.exists() {
        return Err(CliError::failure_with(
            format!("{}: no index", path.display()),
            "create it with `tvck index DIR`",
        ));
    }
    Index::open(&path, &IndexOptions::from_env()?).map_err(CliError::from)
}

fn show(change: &AliasChange, json: bool) -> Result<(), CliError> {
    if json {
        return emit_json(change);
    }
    let name = report::safe::value(&change.name);
    let line = match (change.action.as_str(), &change.path, &change.previous) {
        ("untag", _, Some(prev)) => {
            format!("untagged {name} (was {})\n", report::safe::value(prev))
        }
        ("move", Some(p), Some(prev)) => format!(
            "tagged {} as {name} (moved from {})\n",
            report::safe::value(p),
            report::safe::value(prev)
        ),
        (_, Some(p), _) => format!("tagged {} as {name}\n", report::safe::value(p)),
        _ => format!("{} {name}\n", change.action),
    };
    print_out(&line)
}

pub fn run_tag(a: TagArgs) -> Result<ExitStatus, CliError> {
    require_exists(&a.file)?;
    let mut index = open(a.index.as_deref())?;
    let change = index.tag(&a.file, &a.name).map_err(CliError::from)?;
    show(&change, a.json)?;
    Ok(ExitStatus::Ok)
}

pub fn run_untag(a: UntagArgs) -> Result<ExitStatus, CliError> {
    let mut index = open(a.index.as_deref())?;
    let change = index.untag(&a.name).map_err(CliError::from)?;
    show(&change, a.json)?;
    Ok(ExitStatus::Ok)
}
