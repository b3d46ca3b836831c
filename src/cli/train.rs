//! `tvck train`: train a TernaryVAE v5.11-family model through the validated flow
//! (feature `train`).

use std::path::PathBuf;

use super::diagnostics::CliError;
use super::exit::ExitStatus;

#[derive(clap::Args)]
pub struct Args {
    /// The training config (YAML); with --resume, default: the run's own.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Epochs (default: training.epochs; with --resume, the run's: a larger count
    /// extends it).
    #[arg(long)]
    epochs: Option<u64>,
    /// Seed of every random choice (init, shuffling, pairs, dropout) [default: 42;
    /// with --resume, the run's].
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder (default: checkpoints.save_dir of the config).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train even when the initial coverage is critical (< 5%).
    #[arg(long)]
    force: bool,
    /// Continue the run in RUN_DIR from its latest.pt (model, optimizer, schedule,
    /// homeostasis, bests, random streams, epoch; metrics.jsonl appended).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Also write epoch_N.pt every save_every epochs and keep only what these rules keep
    /// (`latest:2,best:Q:3,every:10`, as `tvck prune`; or a rules YAML file); stored in
    /// latest.pt, so --resume goes on applying them.
    #[arg(long, value_name = "RULES")]
    keep: Option<String>,
    /// Alert settings: the `monitoring:` section of FILE (a training config or a file
    /// with only that section), over the config's (docs/monitoring.md).
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// Run CMD (through `sh -c`) for each alert, the alert as JSON on its stdin.
    #[arg(long, value_name = "CMD")]
    alert_cmd: Option<String>,
    /// POST each alert as JSON to an http:// URL.
    #[arg(long, value_name = "URL")]
    alert_webhook: Option<String>,
    /// Also write a TensorBoard event file (events.out.tfevents.*) in the run folder.
    #[arg(long)]
    tensorboard: bool,
}

/// `--alerts`, `--alert-cmd`, `--alert-webhook`, `--tensorboard`, checked before a run
/// starts (a bad alerts file or URL is a usage error).
#[cfg(feature = "train")]
fn monitor_options(a: &Args) -> Result<tvck::train::monitor::MonitorOptions, CliError> {
    let alerts = match &a.alerts {
        None => None,
        Some(f) => {
            super::diagnostics::require_exists(f)?;
            let m = tvck::monitor::load_alerts_file(f)
                .map_err(|e| CliError::usage(e.to_string(), e.hint()))?;
            let (_, problems) = tvck::monitor::Settings::from_config(None, Some(&m));
            if let Some(p) = problems.iter().find(|p| p.error) {
                return Err(CliError::usage(
                    format!("{}: {}", f.display(), p.message),
                    p.fix.clone(),
                ));
            }
            Some(m)
        }
    };
    let delivery = tvck::monitor::Delivery {
        command: a.alert_cmd.clone(),
        webhook: a.alert_webhook.clone(),
    };
    delivery
        .validate()
        .map_err(|e| CliError::usage(e.to_string(), e.hint()))?;
    Ok(tvck::train::monitor::MonitorOptions {
        alerts,
        delivery,
        tensorboard: a.tensorboard,
    })
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
        other => {
            let hint = other.hint().map(String::from);
            CliError {
                hint,
                ..CliError::failure(other.to_string())
            }
        }
    }
}

#[cfg(feature = "train")]
pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::diagnostics::require_exists;
    use super::output::print_out;

    if let Some(c) = &a.config {
        require_exists(c)?;
    }
    let keep = a
        .keep
        .as_deref()
        .map(tvck::manager::keep::Rules::from_arg)
        .transpose()?;
    let device = tvck::train::parse_device(&a.device).map_err(train_error)?;
    let monitor = monitor_options(&a)?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Ctrl-C or SIGTERM (a scheduler's stop; ctrlc's `termination` feature): finish the
    // current epoch, write latest.pt, stop. A second one exits at once.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(ExitStatus::Interrupted.code()));
        }
        eprintln!("\ninterrupted: finishing the current epoch, then writing latest.pt");
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
        resume: a.resume,
        keep,
        monitor,
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
    if let Some(f) = r.already_finished {
        use tvck::train::resume::Finished;
        let why = match f {
            Finished::EarlyStop => "stopped early (patience)",
            Finished::Completed => "completed",
        };
        print_out(&format!(
            "nothing to do: the run in {} already {why} after epoch {} of {}{}\n",
            r.out_dir.display(),
            r.epochs_run,
            r.epochs,
            if f == Finished::Completed {
                " (--epochs N with a larger N extends it)"
            } else {
                ""
            }
        ))?;
        return Ok(ExitStatus::Ok);
    }
    if let Some(k) = r.resumed_from {
        print_out(&format!("continued after epoch {k}\n"))?;
    }
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
