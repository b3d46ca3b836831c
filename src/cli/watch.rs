//! `tvck watch RUN_DIR...`: follow training runs live in a terminal dashboard, or print
//! each run's state once (`--once`, for scripts and CI).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tvck::monitor::{find_runs, RunState, RunSummary, RunView, Settings, METRICS_FILE};
use tvck::report;
use tvck::report::dashboard::{Action, Dashboard, Key};

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// Run folders (each holding a metrics.jsonl), or folders of runs.
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// Print each run's state and every alert once, without the dashboard; exit code 1
    /// when a CRITICAL alert stands.
    #[arg(long)]
    once: bool,
    /// Print JSON (implies --once).
    #[arg(long)]
    json: bool,
    /// Alert settings: the `monitoring:` section of FILE (a training config works) [default:
    /// the defaults of docs/monitoring.md].
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
}

/// The run folders the arguments name: a folder with a metrics.jsonl is a run; a folder
/// without one holds the runs found under it, or is a run that has not started yet.
fn run_dirs(args: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for a in args {
        require_exists(a)?;
        if !a.is_dir() {
            return Err(CliError::usage(
                format!("{}: not a folder", a.display()),
                "give a run folder (the --out of `tvck train`), which holds metrics.jsonl",
            ));
        }
        if a.join(METRICS_FILE).exists() {
            out.push(a.clone());
            continue;
        }
        let found = find_runs(a);
        if found.is_empty() {
            out.push(a.clone());
        } else {
            out.extend(found);
        }
    }
    Ok(out)
}

fn settings(file: Option<&Path>) -> Result<Settings, CliError> {
    let Some(f) = file else {
        return Ok(Settings::default());
    };
    require_exists(f)?;
    let m =
        tvck::monitor::load_alerts_file(f).map_err(|e| CliError::usage(e.to_string(), e.hint()))?;
    let (s, problems) = Settings::from_config(None, Some(&m));
    if let Some(p) = problems.iter().find(|p| p.error) {
        return Err(CliError::usage(
            format!("{}: {}", f.display(), p.message),
            p.fix.clone(),
        ));
    }
    Ok(s)
}

fn poll(v: &mut RunView) -> Result<bool, CliError> {
    let before = (v.state(), v.engine.alerts.len());
    let (n, alerts) = v
        .poll()
        .map_err(|e| CliError::failure_with(e.to_string(), e.hint()))?;
    Ok(n > 0 || !alerts.is_empty() || (v.state(), v.engine.alerts.len()) != before)
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    let dirs = run_dirs(&a.runs)?;
    let settings = settings(a.alerts.as_deref())?;
    let mut views: Vec<RunView> = dirs
        .iter()
        .map(|d| RunView::new(d, settings.clone()))
        .collect();
    for v in &mut views {
        poll(v)?;
    }
    if a.once || a.json {
        let summaries: Vec<RunSummary> = views.iter().map(RunSummary::of).collect();
        let critical = summaries.iter().any(|s| s.critical);
        if a.json {
            emit_json(&serde_json::json!({ "runs": summaries, "critical": critical }))?;
        } else {
            print_out(&report::watch::text(&summaries))?;
        }
        return Ok(ExitStatus::failure_if(critical));
    }
    if !std::io::stdout().is_terminal() {
        return Err(CliError::usage(
            "the dashboard needs a terminal (stdout is not one)",
            "use `tvck watch --once` (or --json) in scripts",
        ));
    }
    let mut term = ratatui::try_init()
        .map_err(|e| CliError::failure(format!("cannot set up the terminal: {e}")))?;
    let result = dashboard(&mut term, &mut views);
    // Always give the terminal back as it was (raw mode off, main screen).
    let restored = ratatui::try_restore();
    result?;
    restored.map_err(|e| CliError::failure(format!("cannot restore the terminal: {e}")))?;
    Ok(ExitStatus::Ok)
}

/// How often the run files are read.
const POLL: Duration = Duration::from_millis(500);

fn dashboard(term: &mut ratatui::DefaultTerminal, views: &mut [RunView]) -> Result<(), CliError> {
    use ratatui::crossterm::event::{self, Event};
    let io = |e: std::io::Error| CliError::failure(format!("terminal: {e}"));
    let mut d = Dashboard::default();
    let mut dirty = true;
    let mut polled = Instant::now();
    let mut states: Vec<RunState> = views.iter().map(RunView::state).collect();
    loop {
        // Drawn only when something changed; ratatui writes only the cells that differ.
        if dirty {
            term.draw(|f| d.draw(f, views)).map_err(io)?;
            dirty = false;
        }
        let wait = POLL.saturating_sub(polled.elapsed());
        if event::poll(wait).map_err(io)? {
            match event::read().map_err(io)? {
                Event::Key(k) => match d.key(Key::of(&k), views.len()) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => dirty = true,
                    Action::Nothing => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if polled.elapsed() >= POLL {
            polled = Instant::now();
            for (v, s) in views.iter_mut().zip(states.iter_mut()) {
                if poll(v)? || v.state() != *s {
                    *s = v.state();
                    dirty = true;
                }
            }
        }
    }
}
