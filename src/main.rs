//! The `tvck` command line: a thin layer over the `tvck` library.
//!
//! Exit codes: 0 ok; 1 findings (an unsafe pickle global, an unreadable file, a failed
//! check); 2 usage error (bad arguments, a path that does not exist).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use tvck::format::Checkpoint;

/// mimalloc: the pickle trees of many small checkpoints are allocation-heavy (see
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tvck::report;
use tvck::scan::{self, ScanOptions};

/// See, check, compare, migrate and train TernaryVAE checkpoints, safely.
#[derive(Parser)]
#[command(name = "tvck", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every checkpoint under a folder: format, version, size, metrics, findings.
    Scan {
        /// Folder (or single file) to scan.
        dir: PathBuf,
        /// Hash every tensor and show weights fingerprints and duplicate groups.
        #[arg(long)]
        hash: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Worker threads for hashing (default: all cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
    },
    /// Show one checkpoint whole: every tensor, the non-tensor tree, findings.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Do not hash tensors.
        #[arg(long)]
        no_hash: bool,
    },
    /// Validate a training config before a job starts: frozen checkpoint, layout fit, sanity.
    ///
    /// Exit code 0 when no error, 1 when any error.
    Check {
        config: PathBuf,
        /// Extra folder to resolve a relative frozen_checkpoint.path against (repeatable).
        #[arg(long = "checkpoint-root", value_name = "DIR")]
        checkpoint_roots: Vec<PathBuf>,
        /// Also list config keys tvck does not model.
        #[arg(long)]
        strict: bool,
        /// Search for fitting checkpoints and print the config fix as a diff.
        #[arg(long)]
        auto_fix: bool,
        /// With --auto-fix: apply the fix (keeps CONFIG.bak; atomic replace).
        #[arg(long, requires = "auto_fix")]
        write: bool,
        /// With --auto-fix: evaluate every candidate (about a second each) and rank by the
        /// measured coverage (needs the `train` feature).
        #[arg(long, requires = "auto_fix")]
        measure: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Migrate a checkpoint (or a folder of them) to another layout with declarative specs.
    ///
    /// Exit code 0 when every file converted (or a dry run planned it), 1 when any failed,
    /// 2 on usage errors (an existing output without --force, a bad version…).
    Convert(ConvertArgs),
    /// Compare two checkpoints' model states, or a checkpoint and a layout, key by key.
    ///
    /// Exit code 0 when nothing differs, 1 when something does.
    Diff {
        /// First checkpoint.
        a: PathBuf,
        /// Second checkpoint (or use --arch / --config).
        #[arg(required_unless_present_any = ["arch", "config"], conflicts_with_all = ["arch", "config"])]
        b: Option<PathBuf>,
        /// Compare A with a catalog layout instead (v5_5, v5_11, v5_11_partial_freeze, v5_12, v5_12_4).
        #[arg(long, value_name = "VERSION", conflicts_with = "config")]
        arch: Option<String>,
        /// Compare A with the model a training config builds.
        #[arg(long, value_name = "CONFIG")]
        config: Option<PathBuf>,
        /// Only keys under this prefix (e.g. `encoder_A`).
        #[arg(long, value_name = "PREFIX")]
        only: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a checkpoint's model on all 19,683 operations (libtorch; `--features train`).
    ///
    /// Coverage, hierarchy_A/B, richness_A/B, dist_corr_A/B, r_v0, r_v9, mean/std radius, Q.
    /// Exit code 0 when evaluated, 1 when the checkpoint cannot be evaluated.
    Eval {
        checkpoint: PathBuf,
        /// Training config for the projection settings (curvature, max radius); default:
        /// the config stored in the checkpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Every loss term of the trainer's objective instead of the metrics: the full
        /// batch of 19,683 operations, eval mode, z = mu, weighted as at --epoch (needs
        /// --config for the loss settings).
        #[arg(long, requires = "config")]
        losses: bool,
        /// The 0-based training epoch whose weights apply (phase 2 from
        /// loss.geodesic.phase_start_epoch).
        #[arg(long, default_value_t = 0, requires = "losses")]
        epoch: u64,
        /// Seed of the random pairs (radial margin, rank, geodesic).
        #[arg(long, default_value_t = 0, requires = "losses")]
        seed: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train a TernaryVAE v5.11-family model through the validated flow (libtorch;
    /// `--features train`).
    ///
    /// Exit code 0 when training ran (also when interrupted with Ctrl-C), 1 when a
    /// checklist step refused (invalid config, incompatible checkpoint, critical initial
    /// coverage) or training failed.
    Train {
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
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Pt,
    Safetensors,
}

/// An error at the CLI edge: message, optional hint, exit code.
struct CliError {
    message: String,
    hint: Option<String>,
    code: u8,
}

impl CliError {
    fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: Some(hint.into()),
            code: 2,
        }
    }
}

/// No transparent huge pages for this process's heap (all commands but the trainer's): mimalloc would back its arenas with
/// 2 MB pages that the kernel zeroes whole, for a few kB of pickle nodes per file (5× the
/// resident memory of a scan, and no faster; docs/benchmarks.md).
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_THP_DISABLE: i32 = 41;
    // SAFETY: prctl(PR_SET_THP_DISABLE) only changes this process's paging policy; a
    // failure (old kernel) leaves the default, which is also correct.
    unsafe {
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

/// glibc's malloc returns freed blocks above its trim threshold to the kernel and maps
/// large ones fresh; the trainer frees and re-allocates the same activation buffers every
/// batch, so each batch paid page faults. Keep them in the heap instead (`tvck train`,
/// from its training step on).
#[cfg(all(feature = "train", target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes allocator tuning parameters; any value is valid.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(all(feature = "train", not(all(target_os = "linux", target_env = "gnu"))))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The trainer's tensors do profit from huge pages: keep the default for it.
    if !matches!(cli.command, Command::Eval { .. } | Command::Train { .. }) {
        no_huge_pages();
    }
    let result = match cli.command {
        Command::Scan {
            dir,
            hash,
            json,
            jobs,
        } => cmd_scan(&dir, hash, json, jobs),
        Command::Inspect {
            file,
            json,
            no_hash,
        } => cmd_inspect(&file, json, !no_hash),
        Command::Check {
            config,
            checkpoint_roots,
            strict,
            auto_fix,
            write,
            measure,
            json,
        } => cmd_check(
            &config,
            checkpoint_roots,
            strict,
            auto_fix,
            write,
            measure,
            json,
        ),
        Command::Convert(args) => cmd_convert(args),
        Command::Diff {
            a,
            b,
            arch,
            config,
            only,
            json,
        } => cmd_diff(
            &a,
            b.as_deref(),
            arch.as_deref(),
            config.as_deref(),
            only.as_deref(),
            json,
        ),
        Command::Eval {
            checkpoint,
            config,
            device,
            losses,
            epoch,
            seed,
            json,
        } => match losses.then_some(config.as_deref()).flatten() {
            Some(c) => cmd_eval_losses(&checkpoint, c, epoch, seed, &device, json),
            None => cmd_eval(&checkpoint, config.as_deref(), &device, json),
        },
        Command::Train {
            config,
            epochs,
            seed,
            device,
            out,
            force,
        } => cmd_train(&config, epochs, seed, &device, out, force),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", report::safe::output(&e.message));
            if let Some(h) = e.hint {
                eprintln!("hint: {}", report::safe::output(&h));
            }
            ExitCode::from(e.code)
        }
    }
}

fn require_exists(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CliError::usage(
            format!("{}: no such file or directory", path.display()),
            "check the path; `tvck scan .` scans the current folder",
        ))
    }
}

/// Write a human rendering: untrusted text in it is escaped (report::safe) on the way.
fn print_out(text: &str) -> Result<(), CliError> {
    write_stdout(&report::safe::output(text))
}

/// Write JSON: the same values, with the control characters serde_json leaves raw escaped
/// as `\uXXXX` (report::safe::json).
fn print_json(text: &str) -> Result<(), CliError> {
    write_stdout(&report::safe::json(text))
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`tvck scan . | head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError {
            message: format!("cannot write output: {e}"),
            hint: None,
            code: 1,
        }),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| CliError {
            message: format!("cannot encode JSON: {e}"),
            hint: None,
            code: 1,
        })
}

fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} files  {elapsed_precise}  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

fn cmd_scan(dir: &Path, hash: bool, json: bool, jobs: Option<usize>) -> Result<u8, CliError> {
    require_exists(dir)?;
    if let Some(j) = jobs {
        // Ignore the error if a pool already exists (tests calling twice).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build_global();
    }
    let pb = progress_bar();
    pb.set_prefix(if hash { "hashing" } else { "scanning" });
    let report = scan::scan(
        dir,
        &ScanOptions { hash },
        |n| pb.set_length(n as u64),
        |f| {
            pb.set_message(report::safe::value(&f.path).into_owned());
            pb.inc(1);
        },
    );
    pb.finish_and_clear();
    if json {
        print_json(&to_json(&report)?)?;
    } else {
        print_out(&report::scan::render(&report))?;
    }
    Ok(u8::from(report.has_findings()))
}

fn cmd_inspect(file: &Path, json: bool, hash: bool) -> Result<u8, CliError> {
    require_exists(file)?;
    if file.is_dir() {
        return Err(CliError::usage(
            format!("{} is a folder", file.display()),
            format!("use `tvck scan {}` for folders", file.display()),
        ));
    }
    let ckpt = open_checkpoint(file)?;
    let r = report::inspect::build(&ckpt, &file.display().to_string(), hash);
    if json {
        print_json(&to_json(&r)?)?;
    } else {
        print_out(&report::inspect::render(&r))?;
    }
    Ok(u8::from(r.has_findings()))
}

fn open_checkpoint(file: &Path) -> Result<Checkpoint, CliError> {
    require_exists(file)?;
    Checkpoint::open(file).map_err(|e| CliError {
        message: e.to_string(),
        hint: Some(
            e.source
                .hint()
                .unwrap_or("tvck reads torch.save files (zip or legacy) and .safetensors; the file may be damaged or not a checkpoint")
                .into(),
        ),
        code: 1,
    })
}

fn cmd_diff(
    a: &Path,
    b: Option<&Path>,
    arch: Option<&str>,
    config: Option<&Path>,
    only: Option<&str>,
    json: bool,
) -> Result<u8, CliError> {
    use tvck::diff::{self, Side};
    let ca = open_checkpoint(a)?;
    let cb;
    let side_b = match (b, arch, config) {
        (Some(b), _, _) => {
            cb = open_checkpoint(b)?;
            Side::Checkpoint(&cb)
        }
        (None, None, Some(path)) => {
            require_exists(path)?;
            let cfg = tvck::config::TrainingConfig::load(path).map_err(|e| CliError {
                message: e.to_string(),
                hint: None,
                code: 1,
            })?;
            diff::config_side(&cfg).ok_or_else(|| {
                CliError::usage(
                    format!("{}: model.name is missing or not a model class tvck knows", path.display()),
                    "set model.name (TernaryVAEV5_11, TernaryVAEV5_11_PartialFreeze or TernaryVAEV5_12)",
                )
            })?
        }
        (None, Some(v), _) => {
            let id: tvck::arch::VersionId = v.parse().map_err(|_| {
                CliError::usage(
                    format!("unknown version `{v}`"),
                    "use one of v5_5, v5_11, v5_11_partial_freeze, v5_12, v5_12_4",
                )
            })?;
            diff::arch_side(id, Some(&ca))
        }
        (None, None, None) => {
            return Err(CliError::usage(
                "nothing to compare A with",
                "give a second checkpoint, --arch VERSION or --config CONFIG.yaml",
            ))
        }
    };
    let report = diff::diff(&Side::Checkpoint(&ca), &side_b, only);
    if json {
        print_json(&to_json(&report)?)?;
    } else {
        print_out(&report::diff::render(&report))?;
    }
    Ok(u8::from(report.has_differences() || report.is_unsafe()))
}

fn cmd_check(
    config: &Path,
    checkpoint_roots: Vec<PathBuf>,
    strict: bool,
    auto_fix: bool,
    write: bool,
    measure: bool,
    json: bool,
) -> Result<u8, CliError> {
    require_exists(config)?;
    let measurer = if measure { Some(measurer()?) } else { None };
    let load = |path: &Path| {
        tvck::config::TrainingConfig::load(path).map_err(|e| CliError {
            message: e.to_string(),
            hint: Some(e.hint().into()),
            code: 1,
        })
    };
    let cfg = load(config)?;
    let cwd = std::env::current_dir().map_err(|e| CliError {
        message: format!("cannot read the working directory: {e}"),
        hint: None,
        code: 1,
    })?;
    let opts = tvck::check::CheckOptions {
        checkpoint_roots,
        cwd,
        strict,
    };
    let report = tvck::check::check(&cfg, &opts);
    let fix = auto_fix.then(|| tvck::autofix::propose(&cfg, &report, &opts, measurer.as_deref()));
    let mut backup = None;
    let mut after = None;
    if let (true, Some(new_text)) = (write, fix.as_ref().and_then(|f| f.new_text.as_deref())) {
        let bak = tvck::autofix::write_fix(config, new_text).map_err(|e| CliError {
            message: e.to_string(),
            hint: Some("the config was left unchanged; copy the diff above by hand or make the folder writable".into()),
            code: 1,
        })?;
        backup = Some(bak);
        after = Some(tvck::check::check(&load(config)?, &opts));
    }
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a tvck::check::CheckReport,
            #[serde(skip_serializing_if = "Option::is_none")]
            auto_fix: Option<&'a tvck::autofix::AutoFix>,
            #[serde(skip_serializing_if = "Option::is_none")]
            backup: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            after_write: Option<&'a tvck::check::CheckReport>,
        }
        print_json(&to_json(&Out {
            report: &report,
            auto_fix: fix.as_ref(),
            backup: backup.as_deref(),
            after_write: after.as_ref(),
        })?)?;
    } else {
        let mut text = report::check::render(&report);
        if let Some(f) = &fix {
            text.push_str(&report::check::render_autofix(f, backup.as_deref()));
        }
        if let Some(a) = &after {
            text.push_str(&format!("\nAfter the fix: {}\n", a.verdict()));
        }
        print_out(&text)?;
    }
    let final_report = after.as_ref().unwrap_or(&report);
    Ok(u8::from(!final_report.ok()))
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Checkpoint file (or folder with --recursive).
    input: PathBuf,
    /// Target version (v5_11, v5_12_4).
    #[arg(long, value_name = "VERSION")]
    to: String,
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
fn as_refine(r: &tvck::train::fit::ConvertRefiner) -> &dyn tvck::migrate::Refine {
    r
}

#[cfg(not(feature = "train"))]
fn as_refine<'a>(r: &&'a dyn tvck::migrate::Refine) -> &'a dyn tvck::migrate::Refine {
    *r
}

/// The refiner `--fit` / `--measure` ask for.
#[cfg(feature = "train")]
fn convert_refiner(a: &ConvertArgs) -> Result<Option<tvck::train::fit::ConvertRefiner>, CliError> {
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
fn convert_refiner(
    a: &ConvertArgs,
) -> Result<Option<&'static dyn tvck::migrate::Refine>, CliError> {
    if a.fit || a.measure {
        let flag = if a.fit { "--fit" } else { "--measure" };
        return no_train_feature(&format!("convert {flag}")).map(|_| None);
    }
    Ok(None)
}

fn cmd_convert(a: ConvertArgs) -> Result<u8, CliError> {
    use tvck::migrate::{self, ConvertOptions, MigrateError, OutputFormat, SpecSet};
    require_exists(&a.input)?;
    let to: tvck::arch::VersionId = a.to.parse().map_err(|_| {
        CliError::usage(
            format!("unknown target version `{}`", a.to),
            "use one of v5_11, v5_12_4 (the versions migration specs lead to)",
        )
    })?;
    let specs = match &a.specs {
        Some(dir) => SpecSet::with_dir(dir),
        None => SpecSet::embedded(),
    }
    .map_err(|e| CliError {
        message: e.to_string(),
        hint: Some("see docs/migrations.md for the spec format".into()),
        code: 2,
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
                    a.to
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
        let pb = progress_bar();
        pb.set_prefix("converting");
        let report = migrate::convert_tree(
            &a.input,
            &out_dir,
            &specs,
            &opts,
            |n| pb.set_length(n as u64),
            |f| {
                pb.set_message(report::safe::value(&f.input.display().to_string()).into_owned());
                pb.inc(1);
            },
        );
        pb.finish_and_clear();
        if a.json {
            print_json(&to_json(&report)?)?;
        } else {
            print_out(&report::convert::render_tree(&report))?;
        }
        return Ok(u8::from(
            report.failed() > 0 || !report.walk_errors.is_empty(),
        ));
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
    match migrate::convert_file(&a.input, &output, &specs, &opts) {
        Ok(c) => {
            if a.json {
                print_json(&to_json(&c)?)?;
            } else {
                print_out(&report::convert::render_converted(&c, &output, a.dry_run))?;
            }
            Ok(0)
        }
        Err(e) => {
            let hint = match &e {
                MigrateError::Violation(_) => Some("nothing was written; fix the spec (docs/migrations.md) or pass --specs DIR with one that fits".to_string()),
                MigrateError::NotAccepted { .. } => Some("write a spec for this layout (docs/migrations.md) and pass --specs DIR".to_string()),
                MigrateError::NoPath { .. } => Some("tvck inspect shows the file's version; --specs DIR adds specs".to_string()),
                MigrateError::SameFile { .. } => Some("tvck never overwrites its input".to_string()),
                MigrateError::OutputIsLink { .. } => Some("name the link's target, or another file, as -o".to_string()),
                MigrateError::Refine { .. } => Some("nothing was written; --fit-steps N raises the budget, --measure only evaluates".to_string()),
                MigrateError::Write(tvck::format::write::WriteError::Exists(_)) => Some("pass --force to replace it".to_string()),
                _ => None,
            };
            let code = match &e {
                MigrateError::SameFile { .. }
                | MigrateError::OutputIsLink { .. }
                | MigrateError::Write(tvck::format::write::WriteError::Exists(_)) => 2,
                _ => 1,
            };
            Err(CliError {
                message: format!("{}: {e}", a.input.display()),
                hint,
                code,
            })
        }
    }
}

#[cfg(not(feature = "train"))]
fn no_train_feature(cmd: &str) -> Result<u8, CliError> {
    Err(no_train(cmd))
}

#[cfg(not(feature = "train"))]
fn no_train(cmd: &str) -> CliError {
    CliError::usage(
        format!("`tvck {cmd}` needs libtorch: this tvck was built without the `train` feature"),
        "build with `cargo build --release --features train` (scripts/python-env provides libtorch 2.13.0)",
    )
}

/// The trainer's evaluation, for `check --auto-fix --measure`.
#[cfg(feature = "train")]
fn measurer() -> Result<Box<dyn tvck::autofix::Measure>, CliError> {
    Ok(Box::new(tvck::train::measure::EvalMeasure {
        device: tch::Device::Cpu,
    }))
}

#[cfg(not(feature = "train"))]
fn measurer() -> Result<Box<dyn tvck::autofix::Measure>, CliError> {
    Err(no_train("check --auto-fix --measure"))
}

#[cfg(not(feature = "train"))]
fn cmd_eval(_: &Path, _: Option<&Path>, _: &str, _: bool) -> Result<u8, CliError> {
    no_train_feature("eval")
}

#[cfg(not(feature = "train"))]
fn cmd_eval_losses(_: &Path, _: &Path, _: u64, _: u64, _: &str, _: bool) -> Result<u8, CliError> {
    no_train_feature("eval")
}

#[cfg(not(feature = "train"))]
fn cmd_train(
    _: &Path,
    _: Option<u64>,
    _: u64,
    _: &str,
    _: Option<PathBuf>,
    _: bool,
) -> Result<u8, CliError> {
    no_train_feature("train")
}

#[cfg(feature = "train")]
fn train_error(e: tvck::train::TrainError) -> CliError {
    use tvck::train::TrainError;
    match e {
        TrainError::Usage(m) => CliError::usage(m, "see `tvck train --help`"),
        other => CliError {
            message: other.to_string(),
            hint: None,
            code: 1,
        },
    }
}

#[cfg(feature = "train")]
fn cmd_eval(file: &Path, config: Option<&Path>, device: &str, json: bool) -> Result<u8, CliError> {
    require_exists(file)?;
    if let Some(c) = config {
        require_exists(c)?;
    }
    let device = tvck::train::parse_device(device).map_err(train_error)?;
    let r = tvck::train::eval_checkpoint(file, config, device).map_err(train_error)?;
    if json {
        print_json(&to_json(&r)?)?;
        return Ok(0);
    }
    print_out(&report::eval::render(&r))?;
    Ok(0)
}

#[cfg(feature = "train")]
fn cmd_eval_losses(
    file: &Path,
    config: &Path,
    epoch: u64,
    seed: u64,
    device: &str,
    json: bool,
) -> Result<u8, CliError> {
    require_exists(file)?;
    require_exists(config)?;
    let device = tvck::train::parse_device(device).map_err(train_error)?;
    let r = tvck::train::eval_losses(file, config, epoch, seed, device).map_err(train_error)?;
    if json {
        print_out(&to_json(&r)?)?;
        return Ok(0);
    }
    print_out(&report::eval::render_losses(&r))?;
    Ok(0)
}

#[cfg(feature = "train")]
fn cmd_train(
    config: &Path,
    epochs: Option<u64>,
    seed: u64,
    device: &str,
    out: Option<PathBuf>,
    force: bool,
) -> Result<u8, CliError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    require_exists(config)?;
    let device = tvck::train::parse_device(device).map_err(train_error)?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Ctrl-C: finish the current epoch, write latest.pt, stop. A second Ctrl-C exits.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing the current epoch, then writing latest.pt");
    });
    let opts = tvck::train::TrainOptions {
        config: config.to_path_buf(),
        epochs,
        seed,
        device,
        out,
        force,
        cwd: std::env::current_dir().map_err(|e| CliError {
            message: format!("no working directory: {e}"),
            hint: None,
            code: 1,
        })?,
        progress: true,
        interrupt: Some(flag),
    };
    let mut on_step = |s: &tvck::train::Step| {
        let _ = print_out(&format!("{s}\n"));
        // Step 5 decided, training (step 6) follows: only its batches profit, so the
        // allocator is tuned from here on (the frozen checkpoint read before is freed).
        if s.number == 5 {
            keep_freed_memory();
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
    Ok(0)
}
