//! `tvck prune DIR`: what the keep-rules let go, as a dry run by default; `--apply`
//! deletes (the library re-checks every file right before, and audits each deletion).

use std::path::PathBuf;

use tvck::manager::index::{Index, IndexOptions};
use tvck::manager::keep::Rules;
use tvck::manager::{self, prune};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// Folder to prune (its run folders are ranked each on their own).
    dir: PathBuf,
    /// Keep-rules: `latest:2,best:Q:3,best:coverage:1,every:10` (or a YAML file of them).
    #[arg(long, value_name = "RULES", conflicts_with = "keep_file")]
    keep: Option<String>,
    /// A YAML file of keep-rules (a list under `keep:`).
    #[arg(long, value_name = "RULES.yaml")]
    keep_file: Option<PathBuf>,
    /// Delete what the plan deletes (without it: a dry run, nothing is deleted).
    #[arg(long)]
    apply: bool,
    /// With --apply: carry out this saved plan (the JSON of a dry run) instead of a new
    /// one; only files that a fresh plan also deletes and that did not change since go.
    #[arg(long, value_name = "PLAN.json", requires = "apply")]
    plan: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.dir)?;
    let saved = match &a.plan {
        Some(p) => {
            require_exists(p)?;
            Some(prune::load_plan(p, &a.dir)?)
        }
        None => None,
    };
    let rules = match (&a.keep, &a.keep_file, &saved) {
        (Some(r), _, _) => Rules::from_arg(r)?,
        (None, Some(f), _) => {
            require_exists(f)?;
            Rules::from_file(f)?
        }
        (None, None, Some(s)) => s.rules.clone(),
        (None, None, None) => {
            return Err(CliError::usage(
                "no keep-rules: prune deletes only what rules let go",
                "pass --keep latest:2,best:Q:1 (or --keep-file RULES.yaml)",
            ))
        }
    };
    if let Some(s) = &saved {
        if s.rules != rules {
            return Err(CliError::usage(
                format!(
                    "the saved plan was made with the rules {}, not {}",
                    s.rules.label(),
                    rules.label()
                ),
                "drop --keep to use the plan's own rules, or make the plan again",
            ));
        }
    }
    let path = manager::index_path(a.index.as_deref())?;
    let mut index = Index::open(&path, &IndexOptions::from_env()?)?;
    let fresh = prune::plan(&mut index, &a.dir, &rules)?;
    let plan = match &saved {
        Some(s) => prune::reconcile(s, &fresh),
        None => fresh,
    };
    let applied = if a.apply {
        Some(prune::apply(&mut index, &plan, |_| {})?)
    } else {
        None
    };
    if a.json {
        emit_json(&report::prune::PruneJson {
            dry_run: !a.apply,
            plan: &plan,
            applied: applied.as_ref(),
        })?;
    } else {
        let mut text = report::prune::render_plan(&plan);
        match &applied {
            Some(done) => text.push_str(&report::prune::render_applied(done)),
            None if plan.delete > 0 => text
                .push_str("Dry run: nothing was deleted; --apply deletes what is marked DELETE.\n"),
            None => {}
        }
        print_out(&text)?;
    }
    let failed = applied
        .as_ref()
        .is_some_and(|d| d.deletions.iter().any(|x| x.outcome.starts_with("failed")));
    Ok(ExitStatus::failure_if(failed))
}
