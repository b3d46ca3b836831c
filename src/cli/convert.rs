//! `tvck convert`: migrate a checkpoint (or a tree) to another layout.

use std::path::PathBuf;

use tvck::format::write::WriteError;
use tvck::migrate::{self, ConvertOptions, MigrateError, OutputFormat, SpecSet};
use tvck::report;

use super::args::{FormatArg, Version};
use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out, progress_bar, progress_message};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint file (or folder with --recursive).
    input: PathBuf,
    /// Target version (a version migration specs lead to: v5_11, v5_12_4 built in).
    #[arg(long, value_name = "VERSION", value_enum)]
    to: Version,
    /// Output file (folder with --recursive). Default: IN's folder, `<stem>.<VERSION>.<ext>`.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// Output format (default: from OUT's extension, else pt).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Print the plan; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace an existing OUT (never the input).
    #[arg(long)]
    force: bool,
    /// Convert every checkpoint under the folder IN into the same tree under -o DIR.
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Also load migration specs from this folder (*.yaml; same name replaces a built-in).
    #[arg(long, value_name = "DIR")]
    specs: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Fit the converted model to the source on all 19,683 operations, then measure it
    /// (feature `train`).
    #[arg(long, conflicts_with = "measure")]
    fit: bool,
    /// Measure the converted weights (coverage, radius metrics) without fitting (feature
    /// `train`).
    #[arg(long)]
    measure: bool,
    /// Seed of --fit.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Step budget of --fit: when it runs out first, nothing is written (exit 1).
    #[arg(long, value_name = "N")]
    fit_steps: Option<usize>,
    /// Device of --fit / --measure (cpu, cuda, cuda:N).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[cfg(feature = "train")]
fn as_refine(r: &tvck::train::fit::ConvertRefiner) -> &dyn migrate::Refine {
    r
}

#[cfg(not(feature = "train"))]
fn as_refine<'a>(r: &&'a dyn migrate::Refine) -> &'a dyn migrate::Refine {
    *r
}

/// The refiner `--fit` / `--measure` ask for.
#[cfg(feature = "train")]
fn convert_refiner(a: &Args) -> Result<Option<tvck::train::fit::ConvertRefiner>, CliError> {
    use tvck::train::fit::{ConvertRefiner, RefineMode, Tolerances, DEFAULT_MAX_STEPS};
    if !a.fit && !a.measure {
        return Ok(None);
    }
    let device = tvck::train::parse_device(&a.device)
        .map_err(|e| CliError::usage(e.to_string(), "use --device cpu, cuda or cuda:N"))?;
    let mode = if a.fit {
        RefineMode::Fit {
            seed: a.seed,
            max_steps: a.fit_steps.unwrap_or(DEFAULT_MAX_STEPS),
            tolerances: Tolerances::default(),
        }
    } else {
        RefineMode::Measure
    };
    Ok(Some(ConvertRefiner { mode, device }))
}

#[cfg(not(feature = "train"))]
fn convert_refiner(a: &Args) -> Result<Option<&'static dyn migrate::Refine>, CliError> {
    if a.fit || a.measure {
        let flag = if a.fit { "--fit" } else { "--measure" };
        return Err(super::diagnostics::no_train(&format!("convert {flag}")));
    }
    Ok(None)
}

/// The CLI's advice for a failed conversion (it names flags, so it lives here), and the
/// exit status: refusals to touch a file are usage errors.
fn failure(input: &std::path::Path, e: MigrateError) -> CliError {
    let hint = match &e {
        MigrateError::Violation(_) => Some("nothing was written; fix the spec (docs/migrations.md) or pass --specs DIR with one that fits"),
        MigrateError::NotAccepted { .. } => Some("write a spec for this layout (docs/migrations.md) and pass --specs DIR"),
        MigrateError::NoPath { .. } => Some("tvck inspect shows the file's version; --specs DIR adds specs"),
        MigrateError::SameFile { .. } => {
            Some("tvck never overwrites its input; choose another -o")
        }
        MigrateError::OutputIsLink { .. } => Some("name the link's target, or another file, as -o"),
        MigrateError::Refine { .. } => Some("nothing was written; --fit-steps N raises the budget, --measure only evaluates"),
        MigrateError::Write(WriteError::Exists(_)) => Some("pass --force to replace it"),
        _ => None,
    };
    let status = match &e {
        MigrateError::SameFile { .. }
        | MigrateError::OutputIsLink { .. }
        | MigrateError::Write(WriteError::Exists(_)) => ExitStatus::Usage,
        _ => ExitStatus::Failure,
    };
    CliError {
        message: format!("{}: {e}", input.display()),
        hint: hint.map(str::to_string),
        status,
    }
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.input)?;
    let Version(to) = a.to;
    let specs = match &a.specs {
        Some(dir) => SpecSet::with_dir(dir),
        None => SpecSet::embedded(),
    }
    .map_err(|e| CliError {
        message: e.to_string(),
        hint: Some("see docs/migrations.md for the spec format".into()),
        status: ExitStatus::Usage,
    })?;
    let format = match (a.format, &a.output) {
        (Some(FormatArg::Pt), _) => OutputFormat::Pt,
        (Some(FormatArg::Safetensors), _) => OutputFormat::Safetensors,
        (None, Some(o)) if !a.recursive => OutputFormat::from_path(o).unwrap_or(OutputFormat::Pt),
        (None, _) => OutputFormat::Pt,
    };
    let refiner = convert_refiner(&a)?;
    let opts = ConvertOptions {
        to,
        format,
        force: a.force,
        dry_run: a.dry_run,
        refine: refiner.as_ref().map(as_refine),
    };
    if a.recursive || a.input.is_dir() {
        return convert_tree(&a, &specs, &opts);
    }
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| migrate::default_output(&a.input, to, format));
    if output.is_dir() {
        return Err(CliError::usage(
            format!("-o {} is a folder", output.display()),
            "name the output file, e.g. -o best.v5_12_4.pt",
        ));
    }
    if !a.dry_run && !a.force && output.exists() {
        return Err(CliError::usage(
            format!("{} already exists", output.display()),
            "pass --force to replace it, or choose another -o",
        ));
    }
    let c = migrate::convert_file(&a.input, &output, &specs, &opts)
        .map_err(|e| failure(&a.input, e))?;
    if a.json {
        emit_json(&c)?;
    } else {
        print_out(&report::convert::render_converted(&c, &output, a.dry_run))?;
    }
    Ok(ExitStatus::Ok)
}

fn convert_tree(a: &Args, specs: &SpecSet, opts: &ConvertOptions) -> Result<ExitStatus, CliError> {
    if !a.input.is_dir() {
        return Err(CliError::usage(
            format!(
                "--recursive needs a folder; {} is a file",
                a.input.display()
            ),
            "drop --recursive to convert one file",
        ));
    }
    let Some(out_dir) = a.output.clone() else {
        return Err(CliError::usage(
            format!("{} is a folder: name the output folder", a.input.display()),
            format!(
                "tvck convert {} --recursive --to {} -o OUT_DIR",
                a.input.display(),
                a.to.0.as_str()
            ),
        ));
    };
    if out_dir.is_file() {
        return Err(CliError::usage(
            format!(
                "-o {} is a file; a folder conversion writes into a folder",
                out_dir.display()
            ),
            "choose a folder (it is created if needed)",
        ));
    }
    let pb = progress_bar("converting");
    let report = migrate::convert_tree(
        &a.input,
        &out_dir,
        specs,
        opts,
        |n| pb.set_length(n as u64),
        |f| {
            progress_message(&pb, &f.input.display().to_string());
            pb.inc(1);
        },
    );
    pb.finish_and_clear();
    if a.json {
        emit_json(&report)?;
    } else {
        print_out(&report::convert::render_tree(&report))?;
    }
    Ok(ExitStatus::failure_if(
        report.failed() > 0 || !report.walk_errors.is_empty(),
    ))
}
