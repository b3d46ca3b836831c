//! `tvck init --template NAME -o CONFIG.yaml`: a commented training config that `tvck
//! check` passes.

use std::path::PathBuf;

use tvck::report;
use tvck::template::{self, InitOptions, Template, TemplateError};

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

/// The templates, as the command line names them.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TemplateArg {
    /// v5.12.4 production (PartialFreeze, homeostasis, every loss), 100 epochs.
    Production,
    /// TernaryVAEV5_11, projection only, 2 epochs: seconds on a CPU.
    QuickTest,
    /// Continue from --from CKPT: its version and layout decide the model.
    FromCheckpoint,
}

impl From<TemplateArg> for Template {
    fn from(t: TemplateArg) -> Template {
        match t {
            TemplateArg::Production => Template::Production,
            TemplateArg::QuickTest => Template::QuickTest,
            TemplateArg::FromCheckpoint => Template::FromCheckpoint,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Which config to write.
    #[arg(long, value_enum)]
    template: TemplateArg,
    /// The checkpoint to start from (from-checkpoint only).
    #[arg(long, value_name = "CKPT")]
    from: Option<PathBuf>,
    /// Extra folder to search for the frozen checkpoint (repeatable); ./checkpoints,
    /// ./sandbox-training/checkpoints and the output's folder are always searched.
    #[arg(long = "checkpoint-root", value_name = "DIR")]
    checkpoint_roots: Vec<PathBuf>,
    /// The config file to write.
    #[arg(short = 'o', long = "out", value_name = "CONFIG.yaml")]
    out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

/// A template error at the edge: refusals of the arguments are usage errors (exit 2),
/// the rest failures (exit 1); hints name the flags.
fn cli_error(e: TemplateError) -> CliError {
    let usage = |hint: &str| CliError::usage(e.to_string(), hint);
    match &e {
        TemplateError::FromMissing => usage("pass --from CKPT"),
        TemplateError::FromNotUsed { .. } => {
            usage("drop --from, or use --template from-checkpoint")
        }
        TemplateError::Exists { .. } => usage("choose another -o, or pass --force to replace it"),
        TemplateError::OutIsInput { .. } => usage("choose another -o"),
        TemplateError::NoCheckpoint { .. } => CliError::failure_with(
            e.to_string(),
            format!(
                "{}; --checkpoint-root DIR adds a folder to search",
                e.hint().unwrap_or_default()
            ),
        ),
        _ => CliError {
            message: e.to_string(),
            hint: e.hint(),
            status: ExitStatus::Failure,
        },
    }
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    if let Some(f) = &a.from {
        require_exists(f)?;
    }
    for r in &a.checkpoint_roots {
        require_exists(r)?;
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failure(format!("cannot read the working directory: {e}")))?;
    let index = tvck::manager::default_index();
    let r = template::init(&InitOptions {
        template: a.template.into(),
        from: a.from,
        checkpoint_roots: a.checkpoint_roots,
        out: a.out,
        force: a.force,
        cwd,
        index: index.as_ref(),
    })
    .map_err(cli_error)?;
    if a.json {
        emit_json(&r)?;
    } else {
        print_out(&format!(
            "wrote {} (template {}): {} {} {}\n  frozen checkpoint: {}\n    {}\n  tvck check: {} errors, {} warnings\n",
            report::safe::value(&r.out.display().to_string()),
            r.template.name(),
            r.model_class,
            r.version.as_str(),
            r.layout,
            report::safe::value(&r.frozen_checkpoint),
            report::safe::value(&r.why),
            r.errors,
            r.warnings
        ))?;
    }
    Ok(ExitStatus::Ok)
}
