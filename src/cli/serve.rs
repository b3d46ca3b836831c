//! `tvck serve`: the web dashboard of the runs under a folder (docs/monitoring.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tvck::dashboard::{DashboardError, Server, ServerOptions};
use tvck::monitor::rules::Settings;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::print_out;

#[derive(clap::Args)]
pub struct Args {
    /// The folder whose runs to show (folders holding a metrics.jsonl, up to 3 levels
    /// down; the current folder when absent).
    runs_dir: Option<PathBuf>,
    /// The port to listen on (0: any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// The address to listen on. Any other than a loopback address shows the runs to
    /// the network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Alert thresholds and rules: a file with a `monitoring:` section (a training
    /// config works too).
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
}

/// A dashboard error at the edge: a bad folder or port is a usage error.
pub fn dashboard_error(e: DashboardError) -> CliError {
    let hint = e.hint();
    match e {
        DashboardError::Monitor(_) | DashboardError::Io { .. } => {
            CliError::failure_with(e.to_string(), hint)
        }
        _ => CliError::usage(e.to_string(), hint),
    }
}

/// The rules' settings: the defaults, with `--alerts FILE`'s section over them.
pub fn alert_settings(file: Option<&Path>) -> Result<Settings, CliError> {
    let Some(file) = file else {
        return Ok(Settings::default());
    };
    require_exists(file)?;
    let m = tvck::monitor::load_alerts_file(file).map_err(|e| {
        let hint = e.hint();
        CliError::usage(e.to_string(), hint)
    })?;
    let (settings, problems) = Settings::from_config(None, Some(&m));
    for p in &problems {
        let label = if p.error { "error" } else { "warning" };
        eprintln!(
            "{label}: {}: {}: {}",
            tvck::report::safe::value(&file.display().to_string()),
            tvck::report::safe::value(&p.key),
            tvck::report::safe::value(&p.message)
        );
    }
    if let Some(p) = problems.iter().find(|p| p.error) {
        return Err(CliError::usage(
            format!("--alerts {}: {}: {}", file.display(), p.key, p.message),
            p.fix.clone(),
        ));
    }
    Ok(settings)
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    let dir = a.runs_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    require_exists(&dir)?;
    let settings = alert_settings(a.alerts.as_deref())?;
    let server = Server::bind(&dir, ServerOptions::new(a.bind, a.port, settings))
        .map_err(dashboard_error)?;
    let addr = server
        .local_addr()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let n = server.runs();
    print_out(&format!(
        "tvck serve: http://{host}:{}/ ({n} run{} under {}; Ctrl-C stops)\n",
        addr.port(),
        if n == 1 { "" } else { "s" },
        dir.display()
    ))?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {}: every machine that reaches it sees these runs",
            addr.ip()
        );
    }
    server.serve().map_err(dashboard_error)?;
    Ok(ExitStatus::Ok)
}
