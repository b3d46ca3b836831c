//! `tvck train`: train a TernaryVAE v5.11-family model through the validated flow
//! (feature `train`).

use std::path::PathBuf;

use super::diagnostics::CliError;
use super::exit::ExitStatus;

#[derive(clap::Args)]
pub struct Args {
    /// The training config (YAML).
    #[arg(long)]
    config: PathBuf,
    /// Epochs (default: training.epochs).
    #[arg(long)]
    epochs: Option<u64>,
    /// Seed of every random choice (init, shuffling, pairs, dropout).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder (default: checkpoints.save_dir of the config).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train even when the initial coverage is critical (< 5%).
    #[arg(long)]
    force: bool,
}

#[cfg(not(feature = "train"))]
pub fn run(_: Args) -> Result<ExitStatus, CliError> {
    Err(super::diagnostics::no_train("train"))
}

/// A trainer error at the CLI edge.
#[cfg(feature = "train")]
pub fn train_error(e: tvck::train::TrainError) -> CliError {
    use tvck::train::TrainError;
    match e {
        TrainError::Usage(m) => CliError::usage(m, "see `tvck train --help`"),
        other => CliError::failure(other.to_string()),
    }
}

#[cfg(feature = "train")]
pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::diagnostics::require_exists;
    use super::output::print_out;

    require_exists(&a.config)?;
    let device = tvck::train::parse_device(&a.device).map_err(train_error)?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Ctrl-C: finish the current epoch, write latest.pt, stop. A second Ctrl-C exits.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(ExitStatus::Interrupted.code()));
        }
        eprintln!("\nCtrl-C: finishing the current epoch, then writing latest.pt");
    });
    let opts = tvck::train::TrainOptions {
        config: a.config,
        epochs: a.epochs,
        seed: a.seed,
        device,
        out: a.out,
        force: a.force,
        cwd: std::env::current_dir()
            .map_err(|e| CliError::failure(format!("no working directory: {e}")))?,
        progress: true,
        interrupt: Some(flag),
    };
    // A closed stdout does not stop a training run: the lines are dropped, the run goes on.
    let mut on_step = |s: &tvck::train::Step| {
        let _ = print_out(&format!("{s}\n"));
        // Step 5 decided, training (step 6) follows: only its batches profit, so the
        // allocator is tuned from here on (the frozen checkpoint read before is freed).
        if s.number == 5 {
            super::platform::keep_freed_memory();
        }
    };
    let mut on_line = |l: &str| {
        let _ = print_out(&format!("{l}\n"));
    };
    let r = tvck::train::train(&opts, &mut on_step, &mut on_line).map_err(train_error)?;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:+.4}"));
    print_out(&format!(
        "done: {} epoch{}{}; coverage {:.2}% → {:.2}%, hierarchy_B {} → {} (best {}), best Q {}; outputs in {}\n",
        r.epochs_run,
        if r.epochs_run == 1 { "" } else { "s" },
        if r.interrupted { " (interrupted)" } else { "" },
        r.initial.coverage * 100.0,
        r.last.coverage * 100.0,
        opt(r.initial.hierarchy_b),
        opt(r.last.hierarchy_b),
        opt(r.best_hierarchy),
        opt(r.best_q),
        r.out_dir.display()
    ))?;
    Ok(ExitStatus::Ok)
}
