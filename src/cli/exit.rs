//! The process exit status: one variant per row of the README's "Exit codes" table.

use std::process::ExitCode;

/// What a command's run ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the command did its job and found nothing wrong.
    Ok,
    /// 1: findings (an unsafe or unreadable file, a failed check, a difference, a failed
    /// conversion or training step).
    Failure,
    /// 2: usage error (bad arguments, a path that does not exist, a missing feature).
    Usage,
    /// 130: a second Ctrl-C (or SIGINT) during training, which exits at once.
    Interrupted,
}

impl ExitStatus {
    /// `Failure` when `failed`, else `Ok`.
    pub fn failure_if(failed: bool) -> Self {
        if failed {
            ExitStatus::Failure
        } else {
            ExitStatus::Ok
        }
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Interrupted => 130,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s.code())
    }
}
