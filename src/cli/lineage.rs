//! `tvck lineage FILE`: where each part of a checkpoint's weights also lives; `--dot` for
//! Graphviz (of a whole tree when PATH is a folder).

use std::path::PathBuf;

use tvck::manager::{lineage, Index};
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::index::index_file;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// An indexed checkpoint (with --dot, also a folder: its whole tree).
    path: PathBuf,
    /// Print Graphviz DOT instead of a table.
    #[arg(long, conflicts_with = "json")]
    dot: bool,
    /// The index file (default: $TVCK_INDEX, else $XDG_CACHE_HOME/tvck/index.sqlite).
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.path)?;
    if a.path.is_dir() && !a.dot {
        return Err(CliError::usage(
            format!("{}: a folder", a.path.display()),
            "give a checkpoint file, or --dot for a whole tree",
        ));
    }
    let path = index_file(a.index.as_deref())?;
    let Some(index) = Index::open_existing(&path).map_err(CliError::from)? else {
        return Err(CliError::failure_with(
            format!("{}: no index", path.display()),
            "create it with `tvck index DIR`",
        ));
    };
    if a.dot {
        let root = a
            .path
            .canonicalize()
            .map_err(|e| CliError::failure(format!("{}: {e}", a.path.display())))?;
        print_out(&lineage::dot(&index, &[root]).map_err(CliError::from)?)?;
        return Ok(ExitStatus::Ok);
    }
    let l = lineage::lineage(&index, &a.path).map_err(CliError::from)?;
    if a.json {
        emit_json(&l)?;
        return Ok(ExitStatus::Ok);
    }
    let v = |s: &str| report::safe::value(s).into_owned();
    let mut out = format!(
        "{}  {}\n",
        v(&l.file),
        l.version.as_deref().map_or_else(|| "-".into(), v)
    );
    if let Some(m) = &l.migration {
        out.push_str(&format!(
            "converted by tvck: {} → {} ({}){}\n",
            m.from_version.as_deref().map_or_else(|| "?".into(), v),
            m.to_version.as_deref().map_or_else(|| "?".into(), v),
            v(&m.specs.join(", ")),
            m.utc
                .as_deref()
                .map_or_else(String::new, |u| format!(", {}", v(u)))
        ));
    }
    for p in &l.parts {
        out.push_str(&format!("{} ({} tensors)\n", v(&p.part), p.tensors));
        if p.holders.is_empty() {
            out.push_str("  only here\n");
        }
        for h in &p.holders {
            out.push_str(&format!(
                "  {} {} as {} ({}/{} tensors{}{})\n",
                if h.older { "from" } else { "also in" },
                v(&h.path),
                v(&h.part),
                h.shared,
                p.tensors,
                h.version
                    .as_deref()
                    .map_or_else(String::new, |x| format!(", {}", v(x))),
                h.epoch.map_or_else(String::new, |e| format!(", epoch {e}"))
            ));
        }
    }
    print_out(&out)?;
    Ok(ExitStatus::Ok)
}
