//! The command line: argument types, one file per command, one renderer of errors, one
//! exit-status table. Each command's `run` parses nothing and renders through `output`;
//! the engines live in the library.

mod args;
mod check;
mod convert;
mod diagnostics;
mod diff;
mod eval;
mod exit;
mod export_tb;
mod index;
mod init;
mod inspect;
mod lineage;
mod ls;
mod output;
mod platform;
mod prune;
mod report;
mod scan;
mod select;
mod serve;
mod tag;
mod train;
mod watch;

use clap::{Parser, Subcommand};

pub use exit::ExitStatus;

/// See, check, compare, migrate and train TernaryVAE checkpoints, safely.
#[derive(Parser)]
#[command(name = "tvck", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every checkpoint under a folder: format, version, size, metrics, findings.
    Scan(scan::Args),
    /// Show one checkpoint whole: every tensor, the non-tensor tree, findings.
    Inspect(inspect::Args),
    /// Validate a training config before a job starts: frozen checkpoint, layout fit, sanity.
    ///
    /// Exit code 0 when no error, 1 when any error.
    Check(check::Args),
    /// Migrate a checkpoint (or a folder of them) to another layout with declarative specs.
    ///
    /// Exit code 0 when every file converted (or a dry run planned it), 1 when any failed,
    /// 2 on usage errors (an existing output without --force, a bad version…).
    Convert(convert::Args),
    /// Compare two checkpoints' model states, or a checkpoint and a layout, key by key.
    ///
    /// Exit code 0 when nothing differs, 1 when something does.
    Diff(diff::Args),
    /// Run a checkpoint's model on all 19,683 operations (libtorch; `--features train`).
    ///
    /// Coverage, hierarchy_A/B, richness_A/B, dist_corr_A/B, r_v0, r_v9, mean/std radius, Q.
    /// Exit code 0 when evaluated, 1 when the checkpoint cannot be evaluated.
    Eval(eval::Args),
    /// Train a TernaryVAE v5.11-family model through the validated flow (libtorch;
    /// `--features train`).
    ///
    /// Exit code 0 when training ran (also when interrupted with Ctrl-C or SIGTERM, and
    /// for `--resume` of a run that had already finished), 1 when a checklist step refused
    /// (invalid config, incompatible checkpoint, critical initial coverage), a run cannot
    /// be continued, or training failed.
    Train(train::Args),
    /// Index (or refresh the index of) every checkpoint under some folders.
    ///
    /// Exit code 0 when every file was read, 1 when any is unreadable or unsafe or the
    /// index cannot be opened (corrupt, foreign, locked), 2 on usage errors.
    Index(index::Args),
    /// List the indexed checkpoints under a folder, filtered (`--where`) and sorted.
    ///
    /// Exit code 0 when listed, 1 when there is no index, 2 on a bad `--where`/`--sort`.
    Ls(ls::Args),
    /// The best checkpoint a training config's trainer loads (`tvck check` accepts).
    ///
    /// Exit code 0 when one loads as it is, 1 when none does (a migration path is shown
    /// when a conversion would make one loadable), 2 on usage errors.
    Select(select::Args),
    /// Where each part of an indexed checkpoint's weights also lives (frozen encoders, conversions)
    ///
    /// `--dot` prints Graphviz of a file's or a whole tree's lineage.
    Lineage(lineage::Args),
    /// Give an indexed checkpoint an alias (e.g. `production`); moves the alias if set.
    Tag(tag::TagArgs),
    /// Remove an alias.
    Untag(tag::UntagArgs),
    /// Delete what keep-rules let go under a folder: a dry run (a table of every file,
    /// keep or delete, and why) unless --apply.
    ///
    /// Never deleted: a file a config under the folder names as frozen_checkpoint.path,
    /// a file with an alias, the last holder of a kept file's lineage origin, an
    /// unreadable or unsafe file, a file changed since the plan. Exit code 0 when the
    /// plan was made (and carried out), 1 when a deletion failed or the index cannot be
    /// used, 2 on usage errors (no or bad rules).
    Prune(prune::Args),
    /// Write a commented training config from a template that `tvck check` passes.
    ///
    /// production (v5.12.4), quick-test (seconds on a CPU) or from-checkpoint (--from
    /// CKPT decides the model); the frozen checkpoint is the one `tvck select` ranks best.
    /// Exit code 0 when written, 1 when no checkpoint fits or the file cannot be written,
    /// 2 on usage errors (an existing output without --force, --from missing or misplaced).
    Init(init::Args),
    /// Follow training runs live: a terminal dashboard of curves, freeze state, events
    /// and alerts (keys: tab/←→ run, ↑↓ chart, q quit), or `--once` for scripts.
    ///
    /// Exit code 0, or with --once / --json 1 when a CRITICAL alert stands; 2 on usage
    /// errors.
    Watch(watch::Args),
    /// Write a TensorBoard event file of a run's metrics.jsonl.
    ///
    /// Exit code 0 when written, 1 when the run cannot be read or the file written.
    #[command(name = "export-tb")]
    ExportTb(export_tb::Args),
    /// A local web dashboard of the training runs under a folder: live curves, alerts,
    /// configs and checkpoints (bound to 127.0.0.1 unless --bind says otherwise).
    ///
    /// Read-only: it never writes in the runs folder. Runs until stopped (Ctrl-C); exit
    /// code 2 when the folder or the address cannot be used.
    Serve(serve::Args),
    /// Write one self-contained HTML page of a run: curves, alerts, final metrics,
    /// config, checkpoints.
    ///
    /// Exit code 0 when written, 1 when the run cannot be read or the file written, 2 on
    /// usage errors (not a run folder, an existing output without --force).
    Report(report::Args),
}

/// Run the parsed command line; errors are rendered here, once.
pub fn run(cli: Cli) -> ExitStatus {
    // The trainer's tensors do profit from huge pages: keep the default for it.
    if !matches!(cli.command, Command::Eval(_) | Command::Train(_)) {
        platform::no_huge_pages();
    }
    let result = match cli.command {
        Command::Scan(a) => scan::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Check(a) => check::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Train(a) => train::run(a),
        Command::Index(a) => index::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Select(a) => select::run(a),
        Command::Lineage(a) => lineage::run(a),
        Command::Tag(a) => tag::run_tag(a),
        Command::Untag(a) => tag::run_untag(a),
        Command::Prune(a) => prune::run(a),
        Command::Init(a) => init::run(a),
        Command::Watch(a) => watch::run(a),
        Command::ExportTb(a) => export_tb::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Report(a) => report::run(a),
    };
    result.unwrap_or_else(|e| {
        e.render();
        e.status
    })
}
