//! The one renderer of `error:` / `hint:` lines, and the error type every command returns.
//!
//! Library errors carry their own `hint()`; this edge adds only what names the command
//! line (flags, commands to run).

use std::path::Path;

use tvck::report;

use super::exit::ExitStatus;

/// An error at the CLI edge: message, optional hint, exit status.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
    pub status: ExitStatus,
}

impl CliError {
    /// A usage error (exit 2) with its hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: Some(hint.into()),
            status: ExitStatus::Usage,
        }
    }

    /// A failure (exit 1) without a hint.
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            status: ExitStatus::Failure,
        }
    }

    /// A failure (exit 1) with a hint.
    pub fn failure_with(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: Some(hint.into()),
            status: ExitStatus::Failure,
        }
    }

    /// Print `error:` and `hint:` to stderr, escaped (the text may hold file names and
    /// values read from files).
    pub fn render(&self) {
        eprintln!("error: {}", report::safe::output(&self.message));
        if let Some(h) = &self.hint {
            eprintln!("hint: {}", report::safe::output(h));
        }
    }
}

/// A usage error unless `path` exists.
pub fn require_exists(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CliError::usage(
            format!("{}: no such file or directory", path.display()),
            "check the path; `tvck scan .` scans the current folder",
        ))
    }
}

/// The error of a command that needs the `train` feature in a build without it.
#[cfg(not(feature = "train"))]
pub fn no_train(cmd: &str) -> CliError {
    CliError::usage(
        format!("`tvck {cmd}` needs libtorch: this tvck was built without the `train` feature"),
        "build with `cargo build --release --features train` (scripts/python-env provides libtorch 2.13.0)",
    )
}

/// A manager error at the edge, the one mapping every manager command uses (the README's
/// exit-code table): bad rules, an unusable plan, a folder that does not exist, a bad alias
/// name or a bad setting are usage errors (exit 2); the rest (no index, a corrupt, foreign,
/// newer or locked one, a file not indexed, an unknown alias) failures (exit 1).
impl From<tvck::manager::ManagerError> for CliError {
    fn from(e: tvck::manager::ManagerError) -> Self {
        use tvck::manager::ManagerError as M;
        let status = match e {
            M::BadRule { .. }
            | M::RulesFile { .. }
            | M::PlanFile { .. }
            | M::Root { .. }
            | M::BadAliasName { .. }
            | M::BadSetting { .. } => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        };
        CliError {
            message: e.to_string(),
            hint: e.hint(),
            status,
        }
    }
}
